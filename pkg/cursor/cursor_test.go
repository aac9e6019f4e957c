package cursor_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/dispatchhq/dispatch/pkg/cursor"
)

const uuidA = "0193a000-0000-7000-8000-000000000001"

func anyID(string) bool { return true }

func isUUIDish(s string) bool { return len(s) == 36 && strings.Count(s, "-") == 4 }

func TestEncodeDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	sp := time.FixedZone("BRT", -3*3600)
	for _, c := range []cursor.Cursor{
		{At: time.Date(2024, 3, 1, 12, 0, 0, 123456000, time.UTC), ID: uuidA, Limit: 20},
		{At: time.Date(2024, 3, 1, 12, 0, 0, 123456789, time.UTC), ID: uuidA, Limit: 1},
		{At: time.Date(2024, 3, 1, 9, 0, 0, 0, sp), ID: uuidA, Limit: 100},
		{At: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), ID: uuidA, Limit: 7},
		{At: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), ID: uuidA, Limit: 7},
	} {
		tok := c.Encode()
		if strings.ContainsAny(tok, "+/=") {
			t.Fatalf("token %q is not unpadded base64url", tok)
		}
		got, err := cursor.Decode(tok, isUUIDish, 100)
		if err != nil {
			t.Fatalf("Decode(Encode(%+v)): %v", c, err)
		}
		if !got.At.Equal(c.At) || got.ID != c.ID || got.Limit != c.Limit {
			t.Fatalf("round trip %+v → %+v", c, got)
		}
		if got.At.Location() != time.UTC {
			t.Fatalf("decoded time is in %v, want UTC", got.At.Location())
		}
	}
}

func TestEncodeIsDeterministicAndOpaque(t *testing.T) {
	t.Parallel()
	at := time.Date(2024, 3, 1, 12, 0, 0, 5000, time.UTC)
	a := cursor.Cursor{At: at, ID: uuidA, Limit: 5}.Encode()
	b := cursor.Cursor{At: at.In(time.FixedZone("X", 7200)), ID: uuidA, Limit: 5}.Encode()
	if a != b {
		t.Fatalf("the same instant in two zones encodes differently: %q vs %q", a, b)
	}
	if c := (cursor.Cursor{At: at, ID: uuidA, Limit: 6}).Encode(); c == a {
		t.Fatal("the limit is not part of the token")
	}
	if strings.Contains(a, uuidA) || strings.Contains(a, "2024") {
		t.Fatalf("token %q is not opaque", a)
	}
}

func TestDecodeRejectsMalformedTokens(t *testing.T) {
	t.Parallel()
	enc := func(v any) string {
		raw, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(raw)
	}
	now := "2024-03-01T12:00:00.123456Z"
	valid := enc(map[string]any{"t": now, "i": uuidA, "l": 5})
	if _, err := cursor.Decode(valid, isUUIDish, 100); err != nil {
		t.Fatalf("the reference token is refused: %v", err)
	}
	for name, tok := range map[string]string{
		"empty":           "",
		"too long":        strings.Repeat("A", cursor.MaxLen+1),
		"not base64":      "***",
		"std alphabet":    strings.TrimRight(base64.StdEncoding.EncodeToString([]byte(`{"t":"`+now+`","i":"`+uuidA+`","l":5}>>>`)), "="),
		"padding":         valid + "==",
		"not json":        base64.RawURLEncoding.EncodeToString([]byte("plain")),
		"json string":     enc("cursor"),
		"json null":       enc(nil),
		"no time":         enc(map[string]any{"i": uuidA, "l": 5}),
		"no id":           enc(map[string]any{"t": now, "l": 5}),
		"no limit":        enc(map[string]any{"t": now, "i": uuidA}),
		"date only":       enc(map[string]any{"t": "2024-03-01", "i": uuidA, "l": 5}),
		"unix time":       enc(map[string]any{"t": 1709294400, "i": uuidA, "l": 5}),
		"bad id":          enc(map[string]any{"t": now, "i": "x", "l": 5}),
		"limit zero":      enc(map[string]any{"t": now, "i": uuidA, "l": 0}),
		"limit negative":  enc(map[string]any{"t": now, "i": uuidA, "l": -1}),
		"limit above max": enc(map[string]any{"t": now, "i": uuidA, "l": 101}),
		"limit float":     enc(map[string]any{"t": now, "i": uuidA, "l": 5.5}),
		"trailing json":   base64.RawURLEncoding.EncodeToString([]byte(`{"t":"` + now + `","i":"` + uuidA + `","l":5}{}`)),
		// Times in any form but the one Encode writes (UTC, trimmed nanoseconds).
		"offset":         enc(map[string]any{"t": "2024-03-01T12:00:00+02:00", "i": uuidA, "l": 5}),
		"offset +23:59":  enc(map[string]any{"t": "2024-01-01T00:00:00+23:59", "i": uuidA, "l": 5}),
		"year -1 in UTC": enc(map[string]any{"t": "0000-01-01T00:00:00+01:00", "i": uuidA, "l": 5}),
		"trailing zeros": enc(map[string]any{"t": "2024-03-01T12:00:00.120Z", "i": uuidA, "l": 5}),
		"12 digits":      enc(map[string]any{"t": "2024-03-01T12:00:00.123456789123Z", "i": uuidA, "l": 5}),
		"lowercase z":    enc(map[string]any{"t": "2024-03-01T12:00:00z", "i": uuidA, "l": 5}),
	} {
		if c, err := cursor.Decode(tok, isUUIDish, 100); err != cursor.ErrMalformed {
			t.Errorf("%s: Decode(%q) = %+v, %v; want ErrMalformed", name, tok, c, err)
		}
	}
	// The bound on the carried limit is the caller's.
	if _, err := cursor.Decode(valid, isUUIDish, 4); err != cursor.ErrMalformed {
		t.Fatalf("limit 5 accepted with maxLimit 4: %v", err)
	}
}

func TestNewPage(t *testing.T) {
	t.Parallel()
	type row struct {
		at time.Time
		id string
	}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	rows := make([]row, 6)
	for i := range rows {
		rows[i] = row{at: base.Add(-time.Duration(i) * time.Microsecond), id: string(rune('a' + i))}
	}
	key := func(r row) (time.Time, string) { return r.at, r.id }

	// LIMIT limit+1 returned the extra row: the page drops it and points at the last kept row.
	p := cursor.NewPage(rows[:4], 3, key)
	if len(p.Items) != 3 || !p.HasMore || p.NextCursor == nil {
		t.Fatalf("page with an extra row: %+v", p)
	}
	c, err := cursor.Decode(*p.NextCursor, anyID, 100)
	if err != nil || c.ID != "c" || !c.At.Equal(rows[2].at) || c.Limit != 3 {
		t.Fatalf("next cursor %+v (%v), want row c with limit 3", c, err)
	}
	// Exactly limit rows, or fewer: the last page.
	for _, n := range []int{3, 2, 0} {
		p := cursor.NewPage(rows[:n], 3, key)
		if len(p.Items) != n || p.HasMore || p.NextCursor != nil {
			t.Fatalf("last page of %d rows: %+v", n, p)
		}
	}
	// Never null items.
	empty := cursor.NewPage[row](nil, 20, key)
	raw, _ := json.Marshal(cursor.Map(empty, func(r row) string { return r.id }))
	if string(raw) != `{"items":[],"nextCursor":null,"hasMore":false}` {
		t.Fatalf("empty page JSON %s", raw)
	}
	// Map keeps the position.
	m := cursor.Map(p, func(r row) string { return strings.ToUpper(r.id) })
	if strings.Join(m.Items, "") != "ABC" || m.NextCursor != p.NextCursor || m.HasMore != p.HasMore {
		t.Fatalf("Map: %+v", m)
	}
}

// FuzzDecode checks that no token makes Decode panic, and that whatever it accepts encodes
// back to a token that decodes to the same cursor.
func FuzzDecode(f *testing.F) {
	f.Add(cursor.Cursor{At: time.Date(2024, 3, 1, 12, 0, 0, 123456000, time.UTC), ID: uuidA, Limit: 20}.Encode())
	f.Add("")
	f.Add("eyJ0IjoiIiwiaSI6IiIsImwiOjB9")
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"t":"2024-03-01T12:00:00+02:00","i":"x","l":1}`)))
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"t":"0000-01-01T00:00:00Z","i":"x","l":100}`)))
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"t":"2024-03-01T12:00:00.999999999999Z","i":"\ud800","l":1}`)))
	f.Add("%%%")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := cursor.Decode(tok, anyID, 100)
		if err != nil {
			if err != cursor.ErrMalformed {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if c.Limit < 1 || c.Limit > 100 {
			t.Fatalf("accepted limit %d", c.Limit)
		}
		again, err := cursor.Decode(c.Encode(), anyID, 100)
		if err != nil {
			t.Fatalf("re-encoding %+v gives a token Decode refuses: %v", c, err)
		}
		if !again.At.Equal(c.At) || again.ID != c.ID || again.Limit != c.Limit {
			t.Fatalf("round trip %+v → %+v", c, again)
		}
	})
}

// FuzzEncodeRoundTrip checks Decode(Encode(c)) == c for every cursor the API can produce.
func FuzzEncodeRoundTrip(f *testing.F) {
	f.Add(int64(1709294400123456000), uuidA, 20)
	f.Add(int64(0), "", 1)
	f.Add(int64(-1), "id with \"quotes\" and \\ and \u00e9", 100)
	f.Fuzz(func(t *testing.T, nanos int64, id string, limit int) {
		if limit < 1 || limit > 100 || !utf8.ValidString(id) {
			return // not a cursor the API makes: ids are UUIDs, limits 1..100
		}
		c := cursor.Cursor{At: time.Unix(0, nanos), ID: id, Limit: limit}
		tok := c.Encode()
		if len(tok) > cursor.MaxLen {
			return // Decode bounds token length; real ids are short
		}
		got, err := cursor.Decode(tok, anyID, 100)
		if err != nil {
			t.Fatalf("Decode(Encode(%+v)): %v", c, err)
		}
		if !got.At.Equal(c.At) || got.ID != c.ID || got.Limit != c.Limit {
			t.Fatalf("round trip %+v → %+v", c, got)
		}
	})
}
