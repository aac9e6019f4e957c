package e2e_test

// Helpers of the operations tests: the reconciler of a stack (the worker's order service, its
// log captured), Stripe answers set per PaymentIntent through the proxy (stripe-mock keeps no
// state), order ages set relative to the reconciler's "now", and Prometheus scrapes of the
// real programs.

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// --- the reconciler ----------------------------------------------------------------------

// reconcilerRig is the reconciler as a worker runs it: the order service worker.New wires,
// talking to Stripe through stripeURL, with its log lines kept for assertions.
type reconcilerRig struct {
	t      *testing.T
	orders *order.Service
	policy order.ReconcilePolicy
	log    *testenv.Buffer
}

// reconciler returns the worker's reconciler on the stack (the worker is built, not started:
// only its order service is used), talking to Stripe through the stack's proxy unless
// stripeURL is given.
func (s *stack) reconciler(stripeURL ...string) *reconcilerRig {
	s.t.Helper()
	base := s.stripe.URL
	if len(stripeURL) > 0 {
		base = stripeURL[0]
	}
	buf := &testenv.Buffer{}
	a := s.assemble(s.rdb, base, logging.New("worker", slog.LevelDebug, "json", buf))
	return &reconcilerRig{t: s.t, orders: a.Orders, policy: order.DefaultReconcilePolicy(s.cfg.OrderUnpaidTTL), log: buf}
}

// runAt runs the reconciler as if the clock read now.
func (rr *reconcilerRig) runAt(now time.Time) order.ReconcileReport {
	rr.t.Helper()
	return rr.resume(now, nil)
}

// resume runs the reconciler from a position, as if the clock read now.
func (rr *reconcilerRig) resume(now time.Time, from *order.PendingOrder) order.ReconcileReport {
	rr.t.Helper()
	rep, err := rr.orders.Reconcile(context.Background(), now, rr.policy, from)
	if err != nil {
		rr.t.Fatalf("Reconcile: %v", err)
	}
	return rep
}

// logLines returns the reconciler's JSON log lines whose msg contains msg.
func (rr *reconcilerRig) logLines(msg string) []map[string]any {
	return jsonLines(rr.log.String(), msg)
}

// jsonLines decodes the JSON log lines of out whose msg contains msg.
func jsonLines(out, msg string) []map[string]any {
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		if s, _ := m["msg"].(string); strings.Contains(s, msg) {
			lines = append(lines, m)
		}
	}
	return lines
}

// stripeIntent makes Stripe report the PaymentIntent with status (amount received, when
// succeeded, the order's amount).
func (s *stack) stripeIntent(pi, status string, amount int64, currency string) {
	received := int64(0)
	if status == payment.IntentSucceeded {
		received = amount
	}
	s.stripe.Fail("GET", "/v1/payment_intents/"+pi, testenv.Fault{Status: 200, Body: map[string]any{
		"id": pi, "object": "payment_intent", "status": status, "amount": amount,
		"amount_received": received, "currency": currency, "livemode": false,
	}})
}

// cancelRefused makes Stripe refuse to cancel the order's PaymentIntent, which it reports with
// status.
func (s *stack) cancelRefused(o fullOrder, status string) {
	pi := *o.Payment.PaymentIntentID
	s.stripe.Fail("POST", "/v1/payment_intents/"+pi+"/cancel", testenv.Fault{Status: 400, Type: "invalid_request_error",
		Code: "payment_intent_unexpected_state", Message: "This PaymentIntent's status is " + status + "."})
	s.stripeIntent(pi, status, o.Total, o.Currency)
}

// stripeForgets makes Stripe answer 404 for the PaymentIntent.
func (s *stack) stripeForgets(pi string) {
	s.stripe.Fail("GET", "/v1/payment_intents/"+pi, testenv.Fault{Status: 404, Type: "invalid_request_error",
		Code: "resource_missing", Message: "No such payment_intent: '" + pi + "'"})
}

// intentLookups are the GET calls for one PaymentIntent that reached the proxy.
func (s *stack) intentLookups(pi string) int {
	n := 0
	for _, c := range s.stripe.Calls("GET", "/v1/payment_intents/"+pi) {
		if c.Path == "/v1/payment_intents/"+pi {
			n++
		}
	}
	return n
}

// setAge makes the order age old at the reconciler's clock now.
func (s *stack) setAge(id uuid.UUID, now time.Time, age time.Duration) {
	s.t.Helper()
	if _, err := s.db.Exec(`UPDATE orders SET created_at = $2 WHERE id = $1`, id, now.Add(-age)); err != nil {
		s.t.Fatal(err)
	}
}

// orderWithoutIntent places an order while Stripe is down for good (503 twice: stripe-go's own
// retry included): the order stays PENDING without a PaymentIntent, its stock reserved.
func (r *rig) orderWithoutIntent(c *testenv.Client, userID uuid.UUID, qty int, item uuid.UUID) uuid.UUID {
	r.t.Helper()
	var before []uuid.UUID
	if err := r.db.Select(&before, `SELECT id FROM orders WHERE user_id = $1`, userID); err != nil {
		r.t.Fatal(err)
	}
	r.stripe.Fail("POST", "/v1/payment_intents", testenv.Fault{Status: 503, Type: "api_error", Message: "down", Times: stripeTriesPerCall})
	c.Do("POST", "/v1/orders", map[string]any{"items": []map[string]any{{"itemId": item, "quantity": qty}}},
		"Idempotency-Key", uuid.NewString()).ExpectError(r.t, 503, "payments.errors.gatewayUnavailable")
	var id uuid.UUID
	if err := r.db.Get(&id, `SELECT o.id FROM orders o JOIN payments p ON p.order_id = o.id
		WHERE o.user_id = $1 AND p.payment_intent_id IS NULL AND NOT (o.id = ANY($2))`, userID, uuidArray(before)); err != nil {
		r.t.Fatalf("the order left without a PaymentIntent: %v", err)
	}
	if st, a := r.status(id); st != "PENDING" || a != "" {
		r.t.Fatalf("order without PaymentIntent is %s/%s, want PENDING", st, a)
	}
	return id
}

// notificationEvents counts the user's notifications about the order by event.
func (s *stack) notificationEvents(userID, orderID uuid.UUID) map[string]int {
	s.t.Helper()
	var rows []struct {
		Event string `db:"event"`
		N     int    `db:"n"`
	}
	if err := s.db.Select(&rows, `SELECT event, count(*) AS n FROM notifications WHERE user_id = $1 AND data->>'orderId' = $2
		GROUP BY event`, userID, orderID.String()); err != nil {
		s.t.Fatal(err)
	}
	out := map[string]int{}
	for _, r := range rows {
		out[r.Event] = r.N
	}
	return out
}

// --- the real programs ----------------------------------------------------------------

// --- scraping the real programs ------------------------------------------------------------

// scrape is one reading of a program's /metrics.
type scrape struct {
	raw     string
	samples map[string][]sample // by metric family name
}

// sample is one series: its labels and its value (histograms: their sample count).
type sample struct {
	labels map[string]string
	value  float64
}

// scrapeMetrics reads and parses the Prometheus text exposition at url.
func scrapeMetrics(t *testing.T, url string) scrape {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: status %d", url, resp.StatusCode)
	}
	var sb strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&sb); err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(sb.String()))
	if err != nil {
		t.Fatalf("scrape %s: parse: %v", url, err)
	}
	out := scrape{raw: sb.String(), samples: map[string][]sample{}}
	for name, f := range families {
		out.samples[name] = []sample{}
		for _, m := range f.GetMetric() {
			s := sample{labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			switch {
			case m.Counter != nil:
				s.value = m.GetCounter().GetValue()
			case m.Gauge != nil:
				s.value = m.GetGauge().GetValue()
			case m.Histogram != nil:
				s.value = float64(m.GetHistogram().GetSampleCount())
			case m.Untyped != nil:
				s.value = m.GetUntyped().GetValue()
			}
			out.samples[name] = append(out.samples[name], s)
		}
	}
	return out
}

// value sums the samples of metric name whose labels include the given name, value pairs.
// A metric never touched reads 0.
func (s scrape) value(name string, labels ...string) float64 {
	var sum float64
samples:
	for _, smp := range s.samples[name] {
		for i := 0; i+1 < len(labels); i += 2 {
			if smp.labels[labels[i]] != labels[i+1] {
				continue samples
			}
		}
		sum += smp.value
	}
	return sum
}

// has reports whether the scrape exports the metric at all.
func (s scrape) has(name string) bool {
	_, ok := s.samples[name]
	return ok
}

// labelSets returns the label sets of metric name.
func (s scrape) labelSets(name string) []map[string]string {
	var out []map[string]string
	for _, smp := range s.samples[name] {
		out = append(out, smp.labels)
	}
	return out
}

// eachLabel calls f with every label of every sample.
func (s scrape) eachLabel(f func(metric, name, value string)) {
	for metric, samples := range s.samples {
		for _, smp := range samples {
			for k, v := range smp.labels {
				f(metric, k, v)
			}
		}
	}
}
