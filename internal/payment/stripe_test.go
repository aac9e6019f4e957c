package payment_test

// The Stripe adapter against stripe-mock: the fields Dispatch reads come through its minimal
// decoding, and Stripe's errors are sorted into the gateway's classes.

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
)

func TestStripeAdapterReadsTheFieldsItNeeds(t *testing.T) {
	t.Parallel()
	proxy := testenv.NewStripeProxy(t, testenv.StripeURL(t))
	s := payment.NewStripe("sk_test_dispatch", proxy.URL)
	ctx := context.Background()

	pi, err := s.CreatePaymentIntent(ctx, payment.IntentParams{Amount: 2500, Currency: "usd", OrderID: "order-1",
		CustomerID: "cus_123", IdempotencyKey: "create-1"})
	if err != nil {
		t.Fatal(err)
	}
	if pi.ID == "" || pi.ClientSecret == "" || pi.Status == "" || pi.Amount != 2500 || pi.Currency != "usd" {
		t.Fatalf("created intent %+v", pi)
	}
	c := proxy.Calls("POST", "/v1/payment_intents")
	if len(c) != 1 || c[0].IdempotencyKey != "create-1" {
		t.Fatalf("create calls %+v, want one with the idempotency key", c)
	}
	want := url.Values{"amount": {"2500"}, "currency": {"usd"}, "customer": {"cus_123"},
		"metadata[order_id]": {"order-1"}, "automatic_payment_methods[enabled]": {"true"}}
	if !reflect.DeepEqual(c[0].Form, want) {
		t.Fatalf("create sent %v, want %v", c[0].Form, want)
	}
	got, err := s.GetPaymentIntent(ctx, pi.ID)
	if err != nil || got.ID != pi.ID || got.Status == "" {
		t.Fatalf("get %s: %+v, %v", pi.ID, got, err)
	}
	canceled, err := s.CancelPaymentIntent(ctx, pi.ID, "cancel-1")
	if err != nil || canceled.ID != pi.ID || canceled.Status == "" { // stripe-mock answers its fixture's status
		t.Fatalf("cancel: %+v, %v", canceled, err)
	}
	if c := proxy.Calls("POST", "/v1/payment_intents/"+pi.ID+"/cancel"); len(c) != 1 || c[0].IdempotencyKey != "cancel-1" {
		t.Fatalf("cancel calls %+v", c)
	}
	r, err := s.Refund(ctx, payment.RefundParams{PaymentIntentID: pi.ID, Amount: 700, IdempotencyKey: "refund-1"})
	if err != nil || r.ID == "" || r.Status == "" || r.Amount <= 0 || r.Currency == "" {
		t.Fatalf("refund: %+v, %v", r, err)
	}
	if c := proxy.Calls("POST", "/v1/refunds"); len(c) != 1 || c[0].IdempotencyKey != "refund-1" ||
		!reflect.DeepEqual(c[0].Form, url.Values{"payment_intent": {pi.ID}, "amount": {"700"}}) {
		t.Fatalf("refund calls %+v", c)
	}
}

// FindRefund reports a refund of the PaymentIntent asked about that went through or is under
// way, and nothing for another PaymentIntent's or a failed one.
func TestStripeFindRefund(t *testing.T) {
	t.Parallel()
	proxy := testenv.NewStripeProxy(t, testenv.StripeURL(t))
	s := payment.NewStripe("sk_test_dispatch", proxy.URL)
	ctx := context.Background()
	if _, found, err := s.FindRefund(ctx, "pi_never_refunded"); err != nil || found {
		t.Fatalf("stripe-mock's list (another PaymentIntent's refund): found %v, err %v", found, err)
	}
	refund := func(id, pi, status string) map[string]any {
		return map[string]any{"id": id, "object": "refund", "amount": 700, "currency": "usd", "status": status, "payment_intent": pi}
	}
	proxy.Fail("GET", "/v1/refunds", testenv.Fault{Status: 200, Body: map[string]any{"object": "list", "data": []map[string]any{
		refund("re_other", "pi_other", "succeeded"), refund("re_failed", "pi_1", "failed"), refund("re_made", "pi_1", "succeeded")}}})
	r, found, err := s.FindRefund(ctx, "pi_1")
	if err != nil || !found || r.ID != "re_made" || r.Amount != 700 || r.Currency != "usd" || r.Status != "succeeded" {
		t.Fatalf("FindRefund: %+v, %v, %v", r, found, err)
	}
	if c := proxy.Calls("GET", "/v1/refunds"); len(c) != 2 || c[1].Form.Get("payment_intent") != "pi_1" {
		t.Fatalf("list calls %+v", c)
	}
	proxy.Clear()
	proxy.Fail("GET", "/v1/refunds", testenv.Fault{Status: 503, Type: "api_error", Message: "down"})
	if _, _, err := s.FindRefund(ctx, "pi_1"); !errors.Is(err, payment.ErrTransient) {
		t.Fatalf("Stripe down: %v", err)
	}
}

// GetRefund reads a refund's status as Stripe reports it now; a refund Stripe does not know is
// ErrNotFound.
func TestStripeGetRefund(t *testing.T) {
	t.Parallel()
	proxy := testenv.NewStripeProxy(t, testenv.StripeURL(t))
	s := payment.NewStripe("sk_test_dispatch", proxy.URL)
	ctx := context.Background()
	r, err := s.GetRefund(ctx, "re_123")
	if err != nil || r.ID != "re_123" || r.Status == "" || r.Amount <= 0 || r.Currency == "" {
		t.Fatalf("stripe-mock's refund: %+v, %v", r, err)
	}
	proxy.Fail("GET", "/v1/refunds/re_slow", testenv.Fault{Status: 200, Body: map[string]any{"id": "re_slow", "object": "refund",
		"amount": 700, "currency": "usd", "status": "failed", "payment_intent": "pi_1"}})
	if r, err := s.GetRefund(ctx, "re_slow"); err != nil || r != (payment.Refund{ID: "re_slow", Status: "failed", Amount: 700, Currency: "usd"}) {
		t.Fatalf("GetRefund: %+v, %v", r, err)
	}
	proxy.Fail("GET", "/v1/refunds/re_gone", testenv.Fault{Status: 404, Type: "invalid_request_error",
		Code: "resource_missing", Message: "No such refund: 're_gone'"})
	if _, err := s.GetRefund(ctx, "re_gone"); !errors.Is(err, payment.ErrNotFound) {
		t.Fatalf("unknown refund: %v", err)
	}
	if c := proxy.Calls("GET", "/v1/refunds/"); len(c) != 3 || c[0].Path != "/v1/refunds/re_123" {
		t.Fatalf("calls %+v", c)
	}
	for status, underWay := range map[string]bool{"pending": true, "requires_action": true, "succeeded": false, "failed": false, "canceled": false} {
		if payment.RefundUnderWay(status) != underWay || payment.RefundNotMade(status) != (status == "failed" || status == "canceled") ||
			!payment.RefundStatusKnown(status) {
			t.Errorf("status %s: under way %v, not made %v, known %v", status, payment.RefundUnderWay(status), payment.RefundNotMade(status),
				payment.RefundStatusKnown(status))
		}
	}
	for _, status := range []string{"", "reversed", "Succeeded"} {
		if payment.RefundStatusKnown(status) || payment.RefundUnderWay(status) || payment.RefundNotMade(status) {
			t.Errorf("status %q taken for one Stripe gives a refund", status)
		}
	}
}

func TestStripeAdapterSortsErrors(t *testing.T) {
	t.Parallel()
	proxy := testenv.NewStripeProxy(t, testenv.StripeURL(t))
	s := payment.NewStripe("sk_test_dispatch", proxy.URL)
	ctx := context.Background()
	for _, c := range []struct {
		f       testenv.Fault
		want    error
		outcome string // of the calls' metric
	}{
		{f: testenv.Fault{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "resource_missing", Message: "No such payment_intent"}, want: payment.ErrNotFound, outcome: "not_found"},
		{f: testenv.Fault{Status: http.StatusPaymentRequired, Type: "card_error", Code: "card_declined", Message: "declined"}, want: payment.ErrRejected, outcome: "rejected"},
		{f: testenv.Fault{Status: http.StatusServiceUnavailable, Type: "api_error", Message: "down"}, want: payment.ErrTransient, outcome: "transient"},
		{f: testenv.Fault{Status: http.StatusBadRequest, Type: "idempotency_error", Message: "same parameters"}, want: payment.ErrKeyReused, outcome: "key_reused"},
		{f: testenv.Fault{Status: http.StatusBadRequest, Type: "idempotency_error", Message: "same parameters"}, want: payment.ErrRejected, outcome: "key_reused"},
	} {
		proxy.Clear()
		proxy.Fail("GET", "/v1/payment_intents/", c.f)
		before := stripeCalls(t, "payment_intent.get", c.outcome)
		_, err := s.GetPaymentIntent(ctx, "pi_123")
		if !errors.Is(err, c.want) {
			t.Errorf("Stripe %d %s: err %v, want %v", c.f.Status, c.f.Code, err, c.want)
		}
		if n := stripeCalls(t, "payment_intent.get", c.outcome) - before; n != 1 {
			t.Errorf("Stripe %d %s: %v calls counted with outcome %q, want 1", c.f.Status, c.f.Code, n, c.outcome)
		}
	}
}

// stripeCalls reads the count of Stripe calls of op that ended in outcome.
func stripeCalls(t *testing.T, op, outcome string) float64 {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "dispatch_stripe_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["operation"] == op && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestStripeConnectionsAreReused(t *testing.T) {
	t.Parallel()
	proxy := testenv.NewStripeProxy(t, testenv.StripeURL(t))
	s := payment.NewStripe("sk_test_dispatch", proxy.URL)
	const inFlight, rounds = 16, 5
	proxy.Gather(inFlight) // every round has all its calls in flight at once
	for range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, inFlight)
		for range inFlight {
			wg.Go(func() {
				if _, err := s.GetPaymentIntent(context.Background(), "pi_123"); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	if n := proxy.Connections(); n > inFlight {
		t.Fatalf("%d rounds of %d calls at once opened %d connections, want at most %d", rounds, inFlight, n, inFlight)
	}
}

// BenchmarkCreatePaymentIntent is one PaymentIntent created through the adapter against
// stripe-mock. Its time is mostly stripe-mock's; cpu-ns/op is this process's CPU alone, the
// API's share of the call (docs/performance.md).
func BenchmarkCreatePaymentIntent(b *testing.B) {
	s := payment.NewStripe("sk_test_dispatch", testenv.StripeURL(b))
	ctx := context.Background()
	b.ReportAllocs()
	start := testenv.ProcessCPU()
	for b.Loop() {
		if _, err := s.CreatePaymentIntent(ctx, payment.IntentParams{Amount: 2500, Currency: "usd", OrderID: "order-1",
			IdempotencyKey: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
	testenv.ReportCPU(b, start)
}

// What may be shown of a Stripe error beyond the logs (an order's timeline, which its customer
// reads): Stripe's own words for a refusal; only the kind of failure for the rest, whose text
// may name addresses or the end of the API key (the error itself keeps it, for the log).
func TestWhatIsShownOfAStripeError(t *testing.T) {
	t.Parallel()
	proxy := testenv.NewStripeProxy(t, testenv.StripeURL(t))
	proxy.Fail("POST", "/v1/refunds", testenv.Fault{Status: http.StatusPaymentRequired, Type: "card_error", Code: "card_declined", Message: "declined"})
	ctx := context.Background()
	_, err := payment.NewStripe("sk_test_dispatch", proxy.URL).Refund(ctx, payment.RefundParams{PaymentIntentID: "pi_1", Amount: 100, IdempotencyKey: "k1"})
	if got := payment.Shown(err); got != "payment: rejected by the provider: declined" {
		t.Fatalf("shown of a refusal (%v): %q", err, got)
	}
	proxy.Clear()
	proxy.Fail("POST", "/v1/refunds", testenv.Fault{Status: http.StatusUnauthorized, Type: "invalid_request_error", Message: "Invalid API Key provided: sk_test_****atch"})
	_, err = payment.NewStripe("sk_test_dispatch", proxy.URL).Refund(ctx, payment.RefundParams{PaymentIntentID: "pi_1", Amount: 100, IdempotencyKey: "k3"})
	if got := payment.Shown(err); got != "payment: provider unavailable" {
		t.Fatalf("shown of a refused API key (%v): %q", err, got)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	_, err = payment.NewStripe("sk_test_dispatch", closed).Refund(ctx, payment.RefundParams{PaymentIntentID: "pi_1", Amount: 100, IdempotencyKey: "k2"})
	if !errors.Is(err, payment.ErrTransient) || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Fatalf("Stripe unreachable: %v, want a transient error naming the address", err)
	}
	if got := payment.Shown(err); got != "payment: provider unavailable" {
		t.Fatalf("shown of an unreachable Stripe: %q", got)
	}
	if got := payment.Shown(errors.New("postgres: dial tcp 10.0.0.5:5432")); got != "" {
		t.Fatalf("shown of another error: %q", got)
	}
}
