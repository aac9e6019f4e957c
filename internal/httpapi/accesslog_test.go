package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// accessLine returns the access line of the request that answered r.
func (a *app) accessLine(t *testing.T, r testenv.Response) (map[string]any, string) {
	t.Helper()
	cid := r.Header.Get("X-Correlation-Id")
	var line string
	for l := range strings.Lines(a.logs.String()) {
		if strings.Contains(l, `"msg":"request"`) && strings.Contains(l, cid) {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no access line with correlation id %q", cid)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatal(err)
	}
	return m, line
}

// An authenticated request's access line names its user once, with the route template and
// the correlation id the client received.
func TestAccessLogLine(t *testing.T) {
	a := newApp(t, "LOG_LEVEL", "info")
	uid, customer := a.signUp("logged@example.com")
	m, line := a.accessLine(t, customer.Do("GET", "/v1/users/"+uid, nil).Expect(t, 200))
	if n := strings.Count(line, `"userId"`); n != 1 {
		t.Errorf("userId appears %d times in %s", n, line)
	}
	if m["userId"] != uid || m["route"] != "/v1/users/:id" || m["status"] != float64(200) {
		t.Errorf("access line %s: want userId %s, route /v1/users/:id, status 200", line, uid)
	}
}

// A request about an order names it on its access line (SPEC §8: orderId where known): the
// order of the path, found or not, and the order a create placed.
func TestAccessLogNamesTheOrder(t *testing.T) {
	a := newApp(t, "LOG_LEVEL", "info")
	_, customer := a.signUp("orders-logged@example.com")
	missing := uuid.NewString()
	if m, line := a.accessLine(t, customer.Do("GET", "/v1/orders/"+missing, nil).Expect(t, 404)); m["orderId"] != missing {
		t.Errorf("access line %s: want orderId %s", line, missing)
	}
	var o struct{ ID string }
	r := customer.Do("POST", "/v1/orders", map[string]any{"items": []map[string]any{{"itemId": demo.Items()[0].ID, "quantity": 1}}}, key()...).Expect(t, 201)
	r.Decode(t, &o)
	if m, line := a.accessLine(t, r); m["orderId"] != o.ID || strings.Count(line, `"orderId"`) != 1 {
		t.Errorf("access line %s: want orderId %s once", line, o.ID)
	}
}
