package httpapi

import (
	"bytes"
	"unicode/utf8"

	"github.com/dispatchhq/dispatch/internal/apperr"
)

// checkText refuses JSON strings that encoding/json would silently change or PostgreSQL cannot
// store: bytes that are not UTF-8 and unpaired surrogate escapes ("\ud800"), which both decode
// to U+FFFD, and NUL ("\u0000"), which text columns refuse. The error names the value's field.
func checkText(raw []byte) error {
	if utf8.Valid(raw) && !bytes.Contains(raw, []byte(`\u`)) {
		return nil // the common case costs one pass
	}
	inString := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case !inString:
			inString = c == '"'
		case c == '"':
			inString = false
		case c == '\\':
			code, n := escapeProblem(raw[i:])
			if code != "" {
				return textError(raw, i, code)
			}
			i += n - 1
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(raw[i:])
			if r == utf8.RuneError && size == 1 {
				return textError(raw, i, "validation.utf8")
			}
			i += size - 1
		}
	}
	return nil
}

// escapeProblem judges the escape at the start of s and returns its length. Malformed escapes
// are left to the decoder, which reports them as bad syntax.
func escapeProblem(s []byte) (code string, n int) {
	if len(s) < 2 || s[1] != 'u' {
		return "", 2
	}
	r, ok := hex4(s[2:])
	switch {
	case !ok:
		return "", 2
	case r == 0:
		return "validation.nulCharacter", 6
	case r >= 0xdc00 && r <= 0xdfff:
		return "validation.utf8", 6 // a low surrogate with no high one before it
	case r >= 0xd800 && r <= 0xdbff:
		if len(s) >= 12 && s[6] == '\\' && s[7] == 'u' {
			if low, ok := hex4(s[8:]); ok && low >= 0xdc00 && low <= 0xdfff {
				return "", 12
			}
		}
		return "validation.utf8", 6
	}
	return "", 6
}

func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s[:4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// textError is the validation error of the string holding raw[at], named by its path.
func textError(raw []byte, at int, code string) error {
	end := at
	for end < len(raw) && raw[end] != '"' {
		if raw[end] == '\\' {
			end++
		}
		end++
	}
	field := valuePath(raw, int64(end+1))
	if field == "" {
		field = "body" // an object key, or a string the decoder never reaches
	}
	return apperr.ErrValidation.WithDetails(apperr.Field(field, code))
}
