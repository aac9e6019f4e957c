package auth

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTruncateKeepsValidUTF8(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"short", "short"},
		{strings.Repeat("a", 600), strings.Repeat("a", 512)},
		{strings.Repeat("€", 600), strings.Repeat("€", 170)}, // 3-byte runes: 510 bytes, not 512
		{strings.Repeat("😀", 200), strings.Repeat("😀", 128)},
		{"caf\xe9", "caf\uFFFD"},
	} {
		got := truncate(tc.in, 512)
		if got != tc.want || !utf8.ValidString(got) || len(got) > 512 {
			t.Errorf("truncate(%.20q…) = %.20q… (%d bytes), want %.20q…", tc.in, got, len(got), tc.want)
		}
	}
}
