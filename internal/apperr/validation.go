package apperr

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Required records a missing value when s is empty.
func (v *Validation) Required(field, s string) bool {
	if s == "" {
		v.Add(field, "validation.required")
		return false
	}
	return true
}

// Length checks that s has min..max characters (not bytes), recording "required" when a
// required value is empty. Text with U+0000 is refused: PostgreSQL text cannot store it.
func (v *Validation) Length(field, s string, min, max int) bool {
	if min > 0 && s == "" {
		return v.Required(field, s)
	}
	if strings.ContainsRune(s, 0) {
		v.Add(field, "validation.nulCharacter")
		return false
	}
	if n := utf8.RuneCountInString(s); n < min || n > max || !utf8.ValidString(s) {
		v.Add(field, "validation.length", "min", min, "max", max)
		return false
	}
	return true
}

// Text is Length for text people read (names, descriptions, addresses): it also refuses control
// characters other than spacing ones (tab, line and page breaks), and a required text with
// nothing visible in it (only spaces, format characters such as U+200B, or controls) is missing.
func (v *Validation) Text(field, s string, min, max int) bool {
	if !v.Length(field, s, min, max) {
		return false
	}
	if strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) && !unicode.IsSpace(r) }) {
		v.Add(field, "validation.controlCharacter")
		return false
	}
	if min > 0 && !strings.ContainsFunc(s, visible) {
		return v.Required(field, "")
	}
	return true
}

func visible(r rune) bool {
	return !unicode.IsSpace(r) && !unicode.IsControl(r) && !unicode.Is(unicode.Cf, r)
}

// Range checks that n is within min..max.
func (v *Validation) Range(field string, n, min, max int64) bool {
	if n < min || n > max {
		v.Add(field, "validation.range", "min", min, "max", max)
		return false
	}
	return true
}

// OneOf checks that s is one of allowed.
func (v *Validation) OneOf(field, s string, allowed ...string) bool {
	for _, a := range allowed {
		if s == a {
			return true
		}
	}
	v.Add(field, "validation.oneOf", "values", strings.Join(allowed, ", "))
	return false
}

// Check records code on field when ok is false.
func (v *Validation) Check(ok bool, field, code string, kv ...any) bool {
	if !ok {
		v.Add(field, code, kv...)
	}
	return ok
}
