// Package cursor encodes keyset pagination positions as opaque base64url tokens.
//
// A cursor names the last row of a page by its sort key (a timestamp with full precision and a
// tie-breaking id) and carries the page size, so that a client following nextCursor keeps its
// limit. Rows sharing a timestamp are never skipped or repeated because the id breaks the tie.
package cursor

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"time"
)

// ErrMalformed is returned for any token that is not a cursor this package produced.
var ErrMalformed = errors.New("cursor: malformed")

// MaxLen bounds the accepted token length; real cursors are under 150 bytes.
const MaxLen = 512

// Cursor is a position in a list ordered by (At, ID).
type Cursor struct {
	At    time.Time
	ID    string
	Limit int
}

type wire struct {
	At    string `json:"t"`
	ID    string `json:"i"`
	Limit int    `json:"l"`
}

// Encode returns the opaque token for c.
func (c Cursor) Encode() string {
	raw, _ := json.Marshal(wire{At: c.At.UTC().Format(time.RFC3339Nano), ID: c.ID, Limit: c.Limit})
	return base64.RawURLEncoding.EncodeToString(raw)
}

// Decode parses a token made by Encode. validID checks the id's format (e.g. a UUID parser);
// maxLimit bounds the carried limit.
func Decode(token string, validID func(string) bool, maxLimit int) (Cursor, error) {
	if token == "" || len(token) > MaxLen {
		return Cursor{}, ErrMalformed
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return Cursor{}, ErrMalformed
	}
	var w wire
	if err := json.Unmarshal(raw, &w); err != nil {
		return Cursor{}, ErrMalformed
	}
	// The time must be in the exact form Encode writes (UTC, RFC 3339 with trimmed nanoseconds):
	// other offsets or precisions are not ours, and PostgreSQL refuses some offsets Go parses.
	at, err := time.Parse(time.RFC3339Nano, w.At)
	if err != nil || at.UTC().Format(time.RFC3339Nano) != w.At || w.Limit < 1 || w.Limit > maxLimit || !validID(w.ID) {
		return Cursor{}, ErrMalformed
	}
	return Cursor{At: at, ID: w.ID, Limit: w.Limit}, nil
}
