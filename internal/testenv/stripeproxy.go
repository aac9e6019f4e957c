package testenv

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// StripeProxy stands between the code under test and a real stripe-mock. It forwards every
// call, records what it saw, and can make chosen calls fail the way Stripe fails (a 5xx, a
// card decline) or answer with a given object (stripe-mock keeps no state, so a test that needs
// Stripe to report a PaymentIntent's status sets that answer here).
type StripeProxy struct {
	URL string

	mu     sync.Mutex
	faults []fault
	calls  []Call
}

// Call is one request the proxy received.
type Call struct {
	Method, Path, IdempotencyKey string
	Status                       int
}

// Fault is how a matched call fails. Type and Code follow Stripe's error object.
type Fault struct {
	Status  int
	Type    string // api_error, card_error, invalid_request_error
	Code    string
	Message string
	Times   int // fail this many calls, then forward again; 0 means always
	Body    any // when set, answer Status with this body instead of an error
}

type fault struct {
	method, prefix string
	Fault
}

// NewStripeProxy starts a proxy to target, closed when the test ends.
func NewStripeProxy(t testing.TB, target string) *StripeProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &StripeProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		call := Call{Method: r.Method, Path: r.URL.Path, IdempotencyKey: r.Header.Get("Idempotency-Key")}
		if f, ok := p.match(r.Method, r.URL.Path); ok {
			call.Status = f.Status
			p.record(call)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(f.Status)
			if f.Body != nil {
				_ = json.NewEncoder(w).Encode(f.Body)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
				"type": f.Type, "code": f.Code, "message": f.Message}})
			return
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		rp.ServeHTTP(rec, r)
		call.Status = rec.status
		p.record(call)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// Fail makes calls of method whose path starts with prefix fail as f says.
func (p *StripeProxy) Fail(method, prefix string, f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, fault{method: method, prefix: prefix, Fault: f})
}

// Clear removes every fault.
func (p *StripeProxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = nil
}

// Calls returns the calls seen of method under prefix.
func (p *StripeProxy) Calls(method, prefix string) []Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Call
	for _, c := range p.calls {
		if c.Method == method && strings.HasPrefix(c.Path, prefix) {
			out = append(out, c)
		}
	}
	return out
}

func (p *StripeProxy) match(method, path string) (Fault, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.faults {
		f := &p.faults[i]
		if f.method != method || !strings.HasPrefix(path, f.prefix) {
			continue
		}
		out := f.Fault
		if f.Times > 0 {
			f.Times--
			if f.Times == 0 {
				p.faults = append(p.faults[:i], p.faults[i+1:]...)
			}
		}
		return out, true
	}
	return Fault{}, false
}

func (p *StripeProxy) record(c Call) {
	p.mu.Lock()
	p.calls = append(p.calls, c)
	p.mu.Unlock()
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}
