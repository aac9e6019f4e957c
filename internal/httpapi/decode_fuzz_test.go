package httpapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/httpapi"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/user"
)

// loginRequestBody mirrors the unexported body of POST /v1/auth/login.
type loginRequestBody struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// requestTargets are the request structs the API decodes bodies into.
var requestTargets = map[string]func() any{
	"user.SignUp":      func() any { return new(user.SignUp) },
	"user.AdminCreate": func() any { return new(user.AdminCreate) },
	"user.Update":      func() any { return new(user.Update) },
	"user.AdminUpdate": func() any { return new(user.AdminUpdate) },
	"catalog.Create":   func() any { return new(catalog.Create) },
	"catalog.Update":   func() any { return new(catalog.Update) },
	"login":            func() any { return new(loginRequestBody) },
}

func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	type result struct {
		code   string
		fields []string
	}
	ok := result{}
	malformed := result{code: "common.errors.malformedJson"}
	invalid := func(fields ...string) result { return result{code: "common.errors.validation", fields: fields} }
	for _, tc := range []struct {
		raw      string
		optional bool
		want     result
	}{
		{`{"name":"Lamp","price":1,"stock":0}`, false, ok},
		{" \n{\"name\":\"Lamp\"}\n ", false, ok},
		{`null`, false, malformed}, // a body is an object
		{` null `, true, ok},       // an optional body: null is none (SPEC §11)
		{``, false, malformed},
		{"  \n", false, malformed},
		{``, true, ok},
		{"  \n", true, ok},
		{`{`, true, malformed},
		{`{"name":"Lamp"}{}`, false, malformed},
		{`{"name":"Lamp"} x`, false, malformed},
		{`{"name":"Lamp"}]`, false, malformed},
		{`[]`, false, malformed},
		{`"text"`, false, malformed},
		{`12`, false, malformed},
		{`{"name":"Lamp",}`, false, malformed},
		{`{'name':'Lamp'}`, false, malformed},
		{`{"price":1.5}`, false, invalid("price")},
		{`{"price":"1"}`, false, invalid("price")},
		{`{"price":1e2}`, false, invalid("price")},
		{`{"price":-9223372036854775809}`, false, invalid("price")},
		{`{"stock":true}`, false, invalid("stock")},
		{`{"name":5}`, false, invalid("name")},
		{`{"currency":["usd"]}`, false, invalid("currency")},
		{`{"colour":"red"}`, false, invalid("colour")},
		{"{\"name\":\"L\xffmp\"}", false, invalid("name")},
		{`{"name":"L\ud800mp"}`, false, invalid("name")},
		{`{"name":"L\udfffmp"}`, false, invalid("name")},
		{`{"name":"L\ud83d\ude00mp"}`, false, ok},
		{`{"name":"L\\ud800mp"}`, false, ok}, // an escaped backslash, not an escape
		{`{"description":"a\u0000b"}`, false, invalid("description")},
	} {
		var dst catalog.Create
		err := httpapi.DecodeJSON([]byte(tc.raw), &dst, tc.optional)
		var got result
		if err != nil {
			var e *apperr.Error
			if !errors.As(err, &e) {
				t.Fatalf("%q: error %v is not an *apperr.Error", tc.raw, err)
			}
			got.code = e.Code
			for _, d := range e.Details {
				got.fields = append(got.fields, d.Field)
			}
		}
		if got.code != tc.want.code || strings.Join(got.fields, ",") != strings.Join(tc.want.fields, ",") {
			t.Errorf("DecodeJSON(%q, optional=%v) = %+v, want %+v", tc.raw, tc.optional, got, tc.want)
		}
	}
	// Nested fields are named by their path.
	var su user.SignUp
	err := httpapi.DecodeJSON([]byte(`{"address":{"line1":7}}`), &su, false)
	var e *apperr.Error
	if !errors.As(err, &e) || len(e.Details) != 1 || e.Details[0].Field != "address.line1" {
		t.Fatalf("nested type error: %v", err)
	}
	// Values inside arrays are named with their index, however the body is spaced.
	for raw, want := range map[string]string{
		`{"items":[{"itemId":"a","quantity":"1"}]}`:                              "items[0].quantity",
		`{"items":[{"itemId":"a","quantity":1},{"itemId":"b","quantity":true}]}`: "items[1].quantity",
		"{ \"items\" : [ {\"quantity\":1} ,\n {\"quantity\": {\"n\": 1}} ] }":    "items[1].quantity",
		`{"items":[{"itemId":"a"},{"itemId":["b"]}]}`:                            "items[1].itemId",
		`{"items":{"itemId":"a"}}`:                                               "items",
		`{"items":[1]}`:                                                          "items[0]",
	} {
		var in order.CreateInput
		err := httpapi.DecodeJSON([]byte(raw), &in, false)
		if !errors.As(err, &e) || len(e.Details) != 1 || e.Details[0].Field != want {
			t.Errorf("DecodeJSON(%s): %v, want a type error on %s", raw, err, want)
		}
	}
	// Embedded structs accept their fields at the top level.
	var ac user.AdminCreate
	if err := httpapi.DecodeJSON([]byte(`{"name":"Ann","email":"a@b.co","password":"12345678","role":"user"}`), &ac, false); err != nil ||
		ac.Name != "Ann" || ac.Role == nil || *ac.Role != "user" {
		t.Fatalf("AdminCreate: %+v %v", ac, err)
	}
}

// FuzzDecodeJSON feeds arbitrary bodies to the strict decoder with every request struct: it
// never panics, fails only with a 400 or 413 kind of error, and accepts only exactly one JSON
// value whose decoded form encodes and decodes again.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"name":"Lamp","description":"d","price":1,"stock":0,"currency":"usd","pricePaymentId":"p"}`,
		`{"name":"Ann","email":"ann@example.com","password":"password123","language":"pt-BR","address":{"line1":"Rua 1","line2":null,"city":"SP","state":"SP","postalCode":"01000-000","country":"BR"}}`,
		`{"role":"admin","password":"x"}`, `{"email":"a@b.co","password":"pw"}`,
		`{"price":1.5}`, `{"stock":"3"}`, `{"address":{"line1":1}}`, `{"unknown":1}`, `{"":1}`,
		`null`, `[]`, `{}`, `{} {}`, `{"name":"\u0000"}`, `{"name":"\ud800"}`, "{\"name\":\"\xff\"}",
		`{"price":99999999999999999999}`, `{"address":[]}`, `{"a":{"b":{"c":[[[]]]}}}`, ``, ` `,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, raw []byte, optional bool) {
		for name, target := range requestTargets {
			dst := target()
			err := httpapi.DecodeJSON(raw, dst, optional)
			if err != nil {
				var e *apperr.Error
				if !errors.As(err, &e) {
					t.Fatalf("%s: %q: error %T %v is not an *apperr.Error", name, raw, err, err)
				}
				if e.Kind != apperr.Invalid && e.Kind != apperr.TooLarge {
					t.Fatalf("%s: %q: error kind %v (%s) is neither Invalid nor TooLarge", name, raw, e.Kind, e.Code)
				}
				if e.Code == "" {
					t.Fatalf("%s: %q: error without a code", name, raw)
				}
				continue
			}
			if body := bytes.TrimSpace(raw); len(body) == 0 || string(body) == "null" {
				if !optional {
					t.Fatalf("%s: %q was accepted as a required body", name, raw)
				}
				continue
			}
			if !json.Valid(raw) || !utf8.Valid(raw) || bytes.TrimSpace(raw)[0] != '{' {
				t.Fatalf("%s: accepted %q, which is not one JSON object in UTF-8", name, raw)
			}
			again, err := json.Marshal(dst)
			if err != nil {
				t.Fatalf("%s: re-encode %+v: %v", name, dst, err)
			}
			if err := httpapi.DecodeJSON(again, target(), false); err != nil {
				t.Fatalf("%s: its own encoding %s is refused: %v", name, again, err)
			}
		}
	})
}
