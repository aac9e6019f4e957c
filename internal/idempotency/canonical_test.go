package idempotency_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"github.com/dispatchhq/dispatch/internal/idempotency"
)

func TestCanonical(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{`{"b":1,"a":2}`, `{"a":2,"b":1}`},
		{" {\n\t\"b\" : 1 ,\r\n \"a\":2 }\n", `{"a":2,"b":1}`},
		{`{"z":{"y":[3,{"d":1,"c":2}],"x":null},"a":true}`, `{"a":true,"z":{"x":null,"y":[3,{"c":2,"d":1}]}}`},
		// Arrays keep their order: it is meaningful.
		{`[3,1,2]`, `[3,1,2]`},
		// Numbers stay as written: no float rounding of big integers, 1.0 is not 1.
		{`{"n":12345678901234567890}`, `{"n":12345678901234567890}`},
		{`{"n":1.0}`, `{"n":1.0}`},
		{`{"n":1e3}`, `{"n":1e3}`},
		// Equal strings written differently are equal.
		{`{"s":"\u00e9"}`, `{"s":"é"}`},
		{`{"s":"\/"}`, `{"s":"/"}`},
		{`"x"`, `"x"`},
		{` 7 `, `7`},
	} {
		if got := string(idempotency.Canonical([]byte(tc.in))); got != tc.want {
			t.Errorf("Canonical(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Whitespace-only bodies, empty objects and null are no body.
	for _, in := range []string{"", "  ", "\n\t", "{}", " { }\n", "null", " null\n"} {
		if got := idempotency.Canonical([]byte(in)); got != nil {
			t.Errorf("Canonical(%q) = %q, want nil", in, got)
		}
	}
	// What is not one JSON value is kept as sent.
	for _, in := range []string{`{`, `{"a":1} {"b":2}`, `{"a":1} x`, `not json`, `{"a":01}`, "\xff"} {
		if got := idempotency.Canonical([]byte(in)); string(got) != in {
			t.Errorf("Canonical(%q) = %q, want the input unchanged", in, got)
		}
	}
	// Different values stay different.
	for _, pair := range [][2]string{
		{`{"a":1}`, `{"a":2}`},
		{`{"a":1}`, `{"a":"1"}`},
		{`{"a":1}`, `{"a":1.0}`},
		{`{"a":null}`, `{}`},
		{`[1,2]`, `[2,1]`},
		{`{"a":"x "}`, `{"a":"x"}`},
		// Text a decoder would turn into U+FFFD is not the U+FFFD it becomes: such a body is
		// refused (400), so it must not replay one that was not.
		{`{"a":"\ud800"}`, `{"a":"\ufffd"}`},
		{"{\"a\":\"\xff\"}", `{"a":"\ufffd"}`},
		{"{\"a\":\"\xff\"}", "{\"a\":\"\xef\xbf\xbd\"}"},
	} {
		if bytes.Equal(idempotency.Canonical([]byte(pair[0])), idempotency.Canonical([]byte(pair[1]))) {
			t.Errorf("%s and %s canonicalize alike", pair[0], pair[1])
		}
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	store := idempotency.NewStore(nil, "a server secret")
	fingerprint := store.Fingerprint
	base := fingerprint("POST", "/v1/admin/items", []byte(`{"name":"x","price":1}`))
	if len(base) != 32 {
		t.Fatalf("fingerprint of %d bytes, want a SHA-256", len(base))
	}
	if !bytes.Equal(base, fingerprint("POST", "/v1/admin/items", []byte("{ \"price\" : 1,\n\"name\":\"x\" }"))) {
		t.Fatal("key order and whitespace changed the fingerprint")
	}
	plain := sha256.Sum256([]byte("POST\n/v1/admin/items\n" + `{"name":"x","price":1}`))
	for name, fp := range map[string][]byte{
		"method": fingerprint("PATCH", "/v1/admin/items", []byte(`{"name":"x","price":1}`)),
		"path":   fingerprint("POST", "/v1/admin/items/1", []byte(`{"name":"x","price":1}`)),
		"body":   fingerprint("POST", "/v1/admin/items", []byte(`{"name":"x","price":2}`)),
		// The separators keep method and path apart.
		"split": fingerprint("POST\n/v1", "admin/items", []byte(`{"name":"x","price":1}`)),
		// Keyed: a body's password cannot be guessed from its fingerprint without the secret.
		"secret": idempotency.NewStore(nil, "another secret").Fingerprint("POST", "/v1/admin/items", []byte(`{"name":"x","price":1}`)),
		"no key": plain[:],
	} {
		if bytes.Equal(base, fp) {
			t.Errorf("a different %s gives the same fingerprint", name)
		}
	}
	if !bytes.Equal(fingerprint("POST", "/p", nil), fingerprint("POST", "/p", []byte("  "))) {
		t.Fatal("an empty and a blank body differ")
	}
}

func TestValidKey(t *testing.T) {
	t.Parallel()
	valid := []string{"a", "~", " ", "order-42", strings.Repeat("k", 255), "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"}
	invalid := []string{"", strings.Repeat("k", 256), "tab\there", "new\nline", "nul\x00", "del\x7f", "é", "\x1f", "🙂"}
	for _, k := range valid {
		if !idempotency.ValidKey(k) {
			t.Errorf("ValidKey(%q) = false", k)
		}
	}
	for _, k := range invalid {
		if idempotency.ValidKey(k) {
			t.Errorf("ValidKey(%q) = true", k)
		}
	}
	// Every printable ASCII character alone is a key; no other byte is.
	for b := 0; b < 256; b++ {
		want := b >= 0x20 && b <= 0x7e
		if got := idempotency.ValidKey(string([]byte{byte(b)})); got != want {
			t.Errorf("ValidKey(%#x) = %v", b, got)
		}
	}
}

// FuzzCanonical checks that Canonical is idempotent on any input, and that for JSON input
// neither key order nor whitespace changes its output.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{
		`{"b":1,"a":[1,{"d":null,"c":"x"}]}`, `[]`, `{}`, `"\u0000"`, `1e999`, `-0`, `{"a":1,"a":2}`,
		` {"name":"Lamp","price":12.50} `, `{"x":"\ud800"}`, "{\"k\":\"\xff\"}", `[[[[[]]]]]`, `{`, ``, `nul`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := idempotency.Canonical(data)
		if cc := idempotency.Canonical(c); !bytes.Equal(cc, c) {
			t.Fatalf("Canonical is not idempotent:\n in  %q\n c   %q\n cc  %q", data, c, cc)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil || dec.More() {
			return
		}
		if m, _ := json.Marshal(v); !json.Valid(data) || bytes.Contains(m, []byte("\uFFFD")) {
			return // U+FFFD in the value: fingerprinted as sent (see Canonical)
		}
		// The same value written with keys in reverse order and loose whitespace.
		var b strings.Builder
		writeReversed(&b, v)
		if got := idempotency.Canonical([]byte(b.String())); !bytes.Equal(got, c) {
			t.Fatalf("key order or whitespace changed the canonical form:\n in  %q\n alt %q\n %q vs %q", data, b.String(), c, got)
		}
	})
}

// writeReversed writes v as JSON with object keys in reverse order and extra whitespace.
func writeReversed(b *strings.Builder, v any) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Sort(sort.Reverse(sort.StringSlice(keys)))
		b.WriteString("{ ")
		for i, k := range keys {
			if i > 0 {
				b.WriteString(" ,\n ")
			}
			kb, _ := json.Marshal(k)
			b.Write(kb)
			b.WriteString(" :\t")
			writeReversed(b, x[k])
		}
		b.WriteString(" }")
	case []any:
		b.WriteString("[ ")
		for i, e := range x {
			if i > 0 {
				b.WriteString(" , ")
			}
			writeReversed(b, e)
		}
		b.WriteString(" ]")
	case json.Number:
		b.WriteString(x.String())
	default:
		raw, _ := json.Marshal(x)
		b.Write(raw)
	}
}
