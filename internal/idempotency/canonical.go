package idempotency

import (
	"bytes"
	"encoding/json"
	"io"
)

// Canonical returns body in canonical JSON (object keys sorted, no insignificant whitespace,
// numbers as written), so key order and formatting do not change a fingerprint. A body that is
// not JSON, or holds U+FFFD, is returned as is. An empty object, and null, are no body: where a
// body is optional they all ask for the same thing (SPEC §11); elsewhere an empty body is
// refused (400) and forgets its key, so it never stands for a request that ran.
func Canonical(body []byte) []byte {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return body
	}
	if _, err := dec.Token(); err != io.EOF {
		return body
	}
	if m, ok := v.(map[string]any); v == nil || ok && len(m) == 0 {
		return nil // null and {} are no body, as the routes whose body is optional read them
	}
	out, err := json.Marshal(v) // maps marshal with sorted keys
	if err != nil || bytes.Contains(out, replacement) {
		// The decoder turns text that is not UTF-8, and unpaired surrogate escapes, into
		// U+FFFD: such a body (refused, 400) would fingerprint like one holding U+FFFD itself,
		// and replay its response. A body with U+FFFD is fingerprinted as sent.
		return body
	}
	return out
}

var replacement = []byte("\uFFFD")

// ValidKey reports whether k is 1..255 printable ASCII characters.
func ValidKey(k string) bool {
	if len(k) == 0 || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}
