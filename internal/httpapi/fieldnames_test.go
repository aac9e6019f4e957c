package httpapi_test

import (
	"errors"
	"testing"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/httpapi"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/user"
)

func TestFieldNamesAreExact(t *testing.T) {
	for _, tc := range []struct {
		body  string
		dst   any
		field string // "" when accepted
	}{
		{`{"name":"Ana","email":"a@b.co","password":"12345678"}`, &user.SignUp{}, ""},
		{`{"Name":"Ana","email":"a@b.co","password":"12345678"}`, &user.SignUp{}, "Name"},
		{`{"name":"Ana","EMAIL":"a@b.co","password":"12345678"}`, &user.SignUp{}, "EMAIL"},
		{`{"name":"Ana","address":{"LINE1":"x"}}`, &user.SignUp{}, "address.LINE1"},
		{`{"name":"Ana","address":null}`, &user.SignUp{}, ""},
		{`{"name":"Ana","role":"user"}`, &user.AdminCreate{}, ""},
		{`{"Role":"user"}`, &user.AdminCreate{}, "Role"},
		{`{"items":[{"itemId":"x","quantity":1},{"ItemId":"y","quantity":1}]}`, &order.CreateInput{}, "items[1].ItemId"},
	} {
		err := httpapi.DecodeJSON([]byte(tc.body), tc.dst, false)
		if tc.field == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.body, err)
			}
			continue
		}
		var e *apperr.Error
		if !errors.As(err, &e) || e.Code != "common.errors.validation" || len(e.Details) != 1 ||
			e.Details[0].Field != tc.field || e.Details[0].Code != "validation.unknownField" {
			t.Errorf("%s: got %v, want unknownField on %s", tc.body, err, tc.field)
		}
	}
}
