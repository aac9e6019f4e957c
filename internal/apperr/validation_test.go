package apperr_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/dispatchhq/dispatch/internal/apperr"
)

func fields(t *testing.T, v *apperr.Validation) []apperr.FieldError {
	t.Helper()
	err := v.Err()
	if err == nil {
		return nil
	}
	var e *apperr.Error
	if !errors.As(err, &e) || !errors.Is(err, apperr.ErrValidation) {
		t.Fatalf("Err() = %v, want a common.errors.validation error", err)
	}
	return e.Details
}

// textCase is a value checked against min..max and the code it is refused with, "" when valid.
type textCase struct {
	name     string
	s        string
	min, max int
	code     string
}

// runTextCases runs each case through check on field "f".
func runTextCases(t *testing.T, check func(v *apperr.Validation, field, s string, min, max int) bool, cases []textCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var v apperr.Validation
			ok := check(&v, "f", tc.s, tc.min, tc.max)
			got := fields(t, &v)
			if tc.code == "" {
				if !ok || len(got) != 0 {
					t.Fatalf("refused: %+v", got)
				}
				return
			}
			if ok || len(got) != 1 || got[0].Field != "f" || got[0].Code != tc.code {
				t.Fatalf("got ok=%v %+v, want one %s", ok, got, tc.code)
			}
			if tc.code == "validation.length" && (got[0].Params["min"] != tc.min || got[0].Params["max"] != tc.max) {
				t.Fatalf("params %v", got[0].Params)
			}
		})
	}
}

func TestLengthCountsCharacters(t *testing.T) {
	runTextCases(t, (*apperr.Validation).Length, []textCase{
		{"empty required", "", 2, 10, "validation.required"},
		{"empty optional", "", 0, 10, ""},
		{"too short", "a", 2, 10, "validation.length"},
		{"two ASCII", "ab", 2, 10, ""},
		{"two multibyte", "李明", 2, 2, ""},
		{"two emoji (8 bytes)", "😀😀", 2, 2, ""},
		{"max multibyte", strings.Repeat("ç", 100), 2, 100, ""},
		{"over max multibyte", strings.Repeat("ç", 101), 2, 100, "validation.length"},
		{"over max ASCII", strings.Repeat("a", 11), 2, 10, "validation.length"},
		{"invalid UTF-8", "ab\xff", 2, 10, "validation.length"},
		{"NUL", "a\x00b", 2, 10, "validation.nulCharacter"},
		{"only NUL", "\x00", 0, 10, "validation.nulCharacter"},
	})
}

func TestValidationCollectsEveryField(t *testing.T) {
	var v apperr.Validation
	if v.Err() != nil {
		t.Fatal("empty validation is an error")
	}
	v.Required("a", "")
	v.OneOf("b", "x", "y", "z")
	v.Range("c", 0, 1, 5)
	v.Check(false, "d", "validation.email")
	v.Check(true, "e", "validation.email")
	got := fields(t, &v)
	want := []string{"a=validation.required", "b=validation.oneOf", "c=validation.range", "d=validation.email"}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i, f := range got {
		if f.Field+"="+f.Code != want[i] {
			t.Fatalf("field %d = %s=%s, want %s", i, f.Field, f.Code, want[i])
		}
	}
	if got[1].Params["values"] != "y, z" {
		t.Fatalf("oneOf values = %v", got[1].Params["values"])
	}
}

func TestErrorCopiesMatchTheirSentinel(t *testing.T) {
	e := apperr.ErrRateLimited.WithRetryAfter(5).With("k", "v").WithDetails(apperr.Field("f", "validation.required")).Wrap(errors.New("cause"))
	if !errors.Is(e, apperr.ErrRateLimited) || errors.Is(e, apperr.ErrForbidden) {
		t.Fatal("copies must match their sentinel and only it")
	}
	if apperr.KindOf(e) != apperr.RateLimited || apperr.KindOf(errors.New("x")) != apperr.Internal {
		t.Fatal("KindOf")
	}
	// Copies never mutate the shared sentinel.
	if apperr.ErrRateLimited.RetryAfter != 0 || len(apperr.ErrRateLimited.Params) != 0 || len(apperr.ErrRateLimited.Details) != 0 {
		t.Fatal("a With* call changed the sentinel")
	}
}

// TestTextRefusesControlsAndInvisibleText: text people read takes no control characters but
// tab and line breaks, and a required one with nothing visible is missing.
func TestTextRefusesControlsAndInvisibleText(t *testing.T) {
	runTextCases(t, (*apperr.Validation).Text, []textCase{
		{"plain", "Ana Souza", 2, 10, ""},
		{"lines and tabs", "a\tb\r\nc", 1, 10, ""},
		{"page breaks and NEL", "a\fb\vc\u0085d", 1, 10, ""},
		{"emoji with joiners", "👨\u200d👩\u200d👧", 1, 10, ""},
		{"zero width spaces", "\u200b\u200b", 2, 10, "validation.required"},
		{"word joiner and BOM", "\u2060\ufeff", 1, 10, "validation.required"},
		{"line breaks only", "\n\n", 1, 10, "validation.required"},
		{"invisible but optional", "\u200b", 0, 10, ""},
		{"escape", "a\x1bb", 1, 10, "validation.controlCharacter"},
		{"DEL", "ab\x7f", 1, 10, "validation.controlCharacter"},
		{"C1 control", "a\u009b", 1, 10, "validation.controlCharacter"},
		{"length first", strings.Repeat("\x1b", 11), 1, 10, "validation.length"},
	})
}
