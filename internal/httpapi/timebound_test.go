package httpapi

import (
	"testing"
	"time"
)

func TestParseBound(t *testing.T) {
	t.Parallel()
	at := func(s string) time.Time {
		ts, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return ts
	}
	for _, tc := range []struct {
		in   string
		end  bool
		want string // "" means refused
	}{
		{"2026-03-04T10:20:30.123Z", false, "2026-03-04T10:20:30.123Z"},
		{"2026-03-04t10:20:30z", false, "2026-03-04T10:20:30Z"},
		{"2026-03-04T10:20:30+02:00", false, "2026-03-04T08:20:30Z"},
		{"2026-03-04T10:20:30 02:00", false, "2026-03-04T08:20:30Z"}, // "+" sent unencoded
		{"2026-03-04 10:20:30Z", false, "2026-03-04T10:20:30Z"},
		{"2026-03-04 10:20:30.5 00:00", true, "2026-03-04T10:20:30.5Z"},
		{"2026-03-04T10:20:30", false, "2026-03-04T10:20:30Z"},
		{"2026-03-04T10:20:30.250", true, "2026-03-04T10:20:30.25Z"},
		{"2026-03-04", false, "2026-03-04T00:00:00Z"},
		{"2026-03-04", true, "2026-03-04T23:59:59.999Z"},
		{"2026-12-31", true, "2026-12-31T23:59:59.999Z"},
		{"0001-01-01T05:00:00+05:00", false, "0001-01-01T00:00:00Z"},
		{"yesterday", false, ""},
		{"2024-13-01", false, ""},
		{"2026-03-04T10:20", false, ""},
		{"2026-03-04T23:59:60Z", false, ""},
		{"2026-03-04 ", false, ""},
		{"1712345678", false, ""},
		{"2026-03-04T10:20:30-24:00", false, ""},
		{"2026-03-04T10:20:30+24:00", false, ""},
		{"2026-03-04T10:20:30+05:60", false, ""},
		{"2026-03-04T10:20:30-23:59", false, "2026-03-05T10:19:30Z"},
	} {
		got, ok := parseBound(tc.in, tc.end)
		switch {
		case tc.want == "" && ok:
			t.Errorf("%q: %v, want refused", tc.in, got)
		case tc.want != "" && (!ok || !got.Equal(at(tc.want)) || got.Location() != time.UTC):
			t.Errorf("%q (end %v): %v %v, want %s", tc.in, tc.end, got, ok, tc.want)
		}
	}
}
