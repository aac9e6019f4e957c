package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// StripeProxy stands between the code under test and a real stripe-mock. It forwards every
// call, records what it saw, and can make chosen calls fail the way Stripe fails (a 5xx, a
// card decline) or answer with a given object (stripe-mock keeps no state, so a test that needs
// Stripe to report a PaymentIntent's status sets that answer here). It keeps Stripe's rules
// for idempotency keys, which stripe-mock does not: a call sent again under its key with the
// same parameters gets the first 2xx answer given under it (stripe-mock would make a new
// object), so a retry after a lost answer gets back the object the first try made; with other
// parameters, it is refused.
type StripeProxy struct {
	URL string

	conns atomic.Int64

	mu      sync.Mutex
	faults  []fault
	keys    map[string]string                     // idempotency key → the first request's method, path and parameters
	replies map[string]*httptest.ResponseRecorder // idempotency key → the first 2xx answer to it
	calls   []Call
	gather  int
	waiting int
	release chan struct{}
}

// Call is one request the proxy received.
type Call struct {
	Method, Path, IdempotencyKey string
	Form                         url.Values // the query and the form-encoded body
	Status                       int
	Object                       string // for a call under a key: the id of the object Stripe answered with
}

// Fault is how a matched call fails. Type and Code follow Stripe's error object.
type Fault struct {
	Status  int
	Type    string // api_error, card_error, invalid_request_error
	Code    string
	Message string
	Times   int  // fail this many calls, then forward again; 0 means always
	Body    any  // when set, answer Status with this body instead of an error
	Forward bool // send the call on first: Stripe makes the change, its answer is lost
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
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.gate(r.Context()) {
			return // the client gave up on a held call: it never reached Stripe
		}
		call := Call{Method: r.Method, Path: r.URL.Path, IdempotencyKey: r.Header.Get("Idempotency-Key"), Form: r.URL.Query()}
		if body, err := io.ReadAll(r.Body); err == nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
			if form, err := url.ParseQuery(string(body)); err == nil {
				for k, v := range form {
					call.Form[k] = append(call.Form[k], v...)
				}
			}
		}
		f, failed := p.match(r.Method, r.URL.Path)
		if !failed || f.Forward {
			if reused := p.keyReused(call); reused != "" {
				f, failed = Fault{Status: http.StatusBadRequest, Type: "idempotency_error", Message: reused}, true
			} else if failed {
				call.Object = objectID(p.answer(rp, r, call.IdempotencyKey))
			}
		}
		if failed {
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
		ans := p.answer(rp, r, call.IdempotencyKey)
		for k, v := range ans.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(ans.Code)
		_, _ = w.Write(ans.Body.Bytes())
		call.Status = ans.Code
		if call.IdempotencyKey != "" {
			call.Object = objectID(ans)
		}
		p.record(call)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			p.conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// keyReused is Stripe's rule on idempotency keys, which stripe-mock does not keep: a key sent
// again with another method, path or parameters is refused. It returns the refusal's message,
// "" when the call may go on (and then remembers its key).
func (p *StripeProxy) keyReused(c Call) string {
	if c.IdempotencyKey == "" {
		return ""
	}
	request := c.Method + " " + c.Path + "?" + c.Form.Encode()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.keys == nil {
		p.keys = map[string]string{}
	}
	if first, ok := p.keys[c.IdempotencyKey]; ok && first != request {
		return "Keys for idempotent requests can only be used with the same parameters they were first used with."
	}
	p.keys[c.IdempotencyKey] = request
	return ""
}

// answer is Stripe's answer to r, sent under key ("" for none): the first 2xx answer given
// under the key, else what stripe-mock answers now (kept under the key when it is a 2xx).
func (p *StripeProxy) answer(rp http.Handler, r *http.Request, key string) *httptest.ResponseRecorder {
	p.mu.Lock()
	first, ok := p.replies[key]
	p.mu.Unlock()
	if ok {
		return first
	}
	rec := httptest.NewRecorder()
	rp.ServeHTTP(rec, r)
	if key != "" && rec.Code/100 == 2 {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.replies == nil {
			p.replies = map[string]*httptest.ResponseRecorder{}
		}
		if first, ok := p.replies[key]; ok {
			return first // a concurrent call under the key was answered first
		}
		p.replies[key] = rec
	}
	return rec
}

func objectID(ans *httptest.ResponseRecorder) string {
	var obj struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(ans.Body.Bytes(), &obj)
	return obj.ID
}

// Fail makes calls of method whose path starts with prefix fail as f says.
func (p *StripeProxy) Fail(method, prefix string, f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, fault{method: method, prefix: prefix, Fault: f})
}

// Gather holds every call until n calls are held, then lets them through together, so that a
// test can have n calls in flight at once. Gather(0) holds none and lets held ones go.
func (p *StripeProxy) Gather(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gather = n
	if n == 0 && p.release != nil {
		close(p.release)
		p.release, p.waiting = nil, 0
	}
}

// Held returns how many calls Gather holds now.
func (p *StripeProxy) Held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waiting
}

// gate holds a call while Gather asks it to. A call whose client gives up meanwhile (a client
// timeout, which the client may retry) leaves the group and reports false, so that its retry
// takes its place instead of completing the group.
func (p *StripeProxy) gate(ctx context.Context) bool {
	p.mu.Lock()
	if p.gather == 0 {
		p.mu.Unlock()
		return true
	}
	if p.release == nil {
		p.release = make(chan struct{})
	}
	release := p.release
	if p.waiting++; p.waiting == p.gather {
		close(release)
		p.release, p.waiting = nil, 0
	}
	p.mu.Unlock()
	select {
	case <-release:
		return true
	case <-ctx.Done():
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.release != release { // released meanwhile
			return true
		}
		p.waiting--
		return false
	}
}

// Connections returns how many connections the proxy accepted.
func (p *StripeProxy) Connections() int { return int(p.conns.Load()) }

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
