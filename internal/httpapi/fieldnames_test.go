package httpapi_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/httpapi"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/user"
)

// keyCase is a body decoded into dst and the field it is refused on, "" when accepted.
type keyCase struct {
	body  string
	dst   any
	field string
}

// expectKeyCases decodes each case and checks it is accepted, or refused with code on its field.
func expectKeyCases(t *testing.T, code string, cases []keyCase) {
	t.Helper()
	for _, tc := range cases {
		err := httpapi.DecodeJSON([]byte(tc.body), tc.dst, false)
		if tc.field == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.body, err)
			}
			continue
		}
		var e *apperr.Error
		if !errors.As(err, &e) || e.Code != "common.errors.validation" || len(e.Details) != 1 ||
			e.Details[0].Field != tc.field || e.Details[0].Code != code {
			t.Errorf("%s: got %v, want %s on %s", tc.body, err, code, tc.field)
		}
	}
}

func TestFieldNamesAreExact(t *testing.T) {
	expectKeyCases(t, "validation.unknownField", []keyCase{
		{`{"name":"Ana","email":"a@b.co","password":"12345678"}`, &user.SignUp{}, ""},
		{`{"Name":"Ana","email":"a@b.co","password":"12345678"}`, &user.SignUp{}, "Name"},
		{`{"name":"Ana","EMAIL":"a@b.co","password":"12345678"}`, &user.SignUp{}, "EMAIL"},
		{`{"name":"Ana","address":{"LINE1":"x"}}`, &user.SignUp{}, "address.LINE1"},
		{`{"name":"Ana","address":null}`, &user.SignUp{}, ""},
		{`{"name":"Ana","role":"user"}`, &user.AdminCreate{}, ""},
		{`{"Role":"user"}`, &user.AdminCreate{}, "Role"},
		{`{"items":[{"itemId":"x","quantity":1},{"ItemId":"y","quantity":1}]}`, &order.CreateInput{}, "items[1].ItemId"},
	})
}

// TestRepeatedKeysAreRefused: encoding/json keeps the last of a repeated key; a proxy or a
// firewall in front may read the first, so the API would run another request than the one they
// judged. A key repeated in an object is refused, named by its path; the same key in two
// objects is fine.
func TestRepeatedKeysAreRefused(t *testing.T) {
	expectKeyCases(t, "validation.duplicateField", []keyCase{
		{`{"email":"a@b.co","password":"wrong","password":"right"}`, &struct {
			Email    string `json:"email"`
			Password string `json:"password"`
		}{}, "password"},
		{`{"name":"Ana","email":"a@b.co","password":"12345678","name":"Bob"}`, &user.SignUp{}, "name"},
		{`{"name":"Ana","n\u0061me":"Bob"}`, &user.SignUp{}, "name"},
		{`{"name":"Ana","address":{"line1":"x","city":"a","city":"b"}}`, &user.SignUp{}, "address.city"},
		{`{"items":[{"itemId":"x","quantity":1}],"items":[{"itemId":"y","quantity":5}]}`, &order.CreateInput{}, "items"},
		{`{"items":[{"itemId":"x","quantity":1},{"itemId":"y","quantity":1,"quantity":9}]}`, &order.CreateInput{}, "items[1].quantity"},
		{`{"items":[{"itemId":"x","quantity":1},{"itemId":"y","quantity":1}]}`, &order.CreateInput{}, ""},
		// Strings that are values, in arrays or with quotes and colons in them, are not keys.
		{`{"name":"a \"name\": b","email":"name","extra":[{},"name",{},"name",{"name":1},["name"]],"password":"x"}`, &map[string]any{}, ""},
		{`{"a":{"b":[{"c":1},{"c":2,"d":{"c":3}}],"c":4},"b":5}`, &map[string]any{}, ""},
		{`{"a":{"b":[{"c":1},{"c":2,"d":{"c":3,"c":3}}]}}`, &map[string]any{}, "a.b[1].d.c"},
	})
}

// TestDeepBodiesAreNamedCheaply: text the database cannot store, deep inside a body of brackets
// (the decoder's depth limit is not reached, the string is found first), is named "body"
// instead of by a path of megabytes built on a stack of a million frames.
func TestDeepBodiesAreNamedCheaply(t *testing.T) {
	for _, depth := range []int{33, 1_000_000} {
		body := `{"a":` + strings.Repeat("[", depth) + `"\u0000"`
		var dst user.SignUp
		err := httpapi.DecodeJSON([]byte(body), &dst, false)
		var e *apperr.Error
		if !errors.As(err, &e) || len(e.Details) != 1 || e.Details[0].Field != "body" || e.Details[0].Code != "validation.nulCharacter" {
			field := ""
			if e != nil && len(e.Details) > 0 {
				field = e.Details[0].Field
			}
			t.Fatalf("depth %d: got %v naming a field of %d bytes, want nulCharacter on body", depth, err, len(field))
		}
	}
	// Within the bound the value is still named.
	err := httpapi.DecodeJSON([]byte(`{"name":"A\u0000"}`), &user.SignUp{}, false)
	var e *apperr.Error
	if !errors.As(err, &e) || len(e.Details) != 1 || e.Details[0].Field != "name" {
		t.Fatalf("shallow NUL: %v", err)
	}
}
