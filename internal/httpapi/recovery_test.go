package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// A handler's panic is answered 500 with the standard body (nothing of the panic in it), and
// logged with the stack that leads to it, under the request's correlation id.
func TestAPanicIsLoggedWithItsStack(t *testing.T) {
	a := newApp(t)
	a.srv.HandlePanic("/v1/panics", "boom at the counter")
	r := a.api.Do("GET", "/v1/panics", nil).Expect(t, 500)
	if strings.Contains(string(r.Body), "boom") || r.JSON(t)["code"] != "common.errors.internal" {
		t.Fatalf("body %s", r.Body)
	}
	cid := r.Header.Get("X-Correlation-Id")
	var failed map[string]any
	for l := range strings.Lines(a.logs.String()) {
		if strings.Contains(l, `"msg":"request failed"`) && strings.Contains(l, cid) {
			if err := json.Unmarshal([]byte(l), &failed); err != nil {
				t.Fatal(err)
			}
		}
	}
	msg, _ := failed["err"].(string)
	if !strings.Contains(msg, "panic: boom at the counter") || !strings.Contains(msg, "goroutine ") ||
		!strings.Contains(msg, "HandlePanic") {
		t.Fatalf("the panic's log line lacks the panic or its stack: %v", failed)
	}
}
