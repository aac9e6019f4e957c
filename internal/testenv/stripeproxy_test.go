package testenv

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// The proxy keeps Stripe's rule for a key sent again: the same parameters get the first answer
// (the object made then, even when that answer was lost on the way), other parameters a 400.
func TestStripeProxyAnswersAKeyAsStripeDoes(t *testing.T) {
	t.Parallel()
	p := NewStripeProxy(t, StripeURL(t))
	create := func(key, userID string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("POST", p.URL+"/v1/customers", strings.NewReader(url.Values{"metadata[user_id]": {userID}}.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer sk_test_proxy")
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var obj struct{ ID string }
		_ = json.NewDecoder(res.Body).Decode(&obj)
		return res.StatusCode, obj.ID
	}
	p.Fail("POST", "/v1/customers", Fault{Status: 500, Type: "api_error", Message: "lost", Times: 1, Forward: true})
	if st, _ := create("k1", "u1"); st != 500 {
		t.Fatalf("the lost answer: %d", st)
	}
	st, first := create("k1", "u1")
	if st != 200 || first == "" {
		t.Fatalf("the retry: %d %q", st, first)
	}
	if st, again := create("k1", "u1"); st != 200 || again != first {
		t.Fatalf("sent again: %d %q, want %q", st, again, first)
	}
	if calls := p.Calls("POST", "/v1/customers"); len(calls) != 3 || calls[0].Object != first || calls[0].Status != 500 {
		t.Fatalf("calls %+v, want the lost one to have made %s", calls, first)
	}
	if st, _ := create("k1", "u2"); st != 400 {
		t.Fatalf("other parameters under the key: %d, want 400", st)
	}
	_, a := create("", "u1")
	_, b := create("", "u1")
	if _, other := create("k2", "u1"); a == b || other == first {
		t.Fatalf("calls under no key or another key answered alike: %q %q %q", a, b, other)
	}
}
