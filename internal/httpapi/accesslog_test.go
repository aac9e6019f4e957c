package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// An authenticated request's access line names its user once, with the route template and
// the correlation id the client received.
func TestAccessLogLine(t *testing.T) {
	a := newApp(t, "LOG_LEVEL", "info")
	uid, customer := a.signUp("logged@example.com")
	r := customer.Do("GET", "/v1/users/"+uid, nil).Expect(t, 200)
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
	if n := strings.Count(line, `"userId"`); n != 1 {
		t.Errorf("userId appears %d times in %s", n, line)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatal(err)
	}
	if m["userId"] != uid || m["route"] != "/v1/users/:id" || m["status"] != float64(200) {
		t.Errorf("access line %s: want userId %s, route /v1/users/:id, status 200", line, uid)
	}
}
