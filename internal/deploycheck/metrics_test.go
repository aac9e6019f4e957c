package deploycheck_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// TestProgramsExposeDashboardMetrics runs the system the way docker-compose.yml does —
// migrate up, then api, outbox-relay and worker with the compose environment — drives orders
// through it (delivered then refunded after a transient Stripe failure, a payment mismatch
// that is compensated, both refunds then failing at Stripe, a cancel), then checks that every metric, label and label value the
// dashboard queries is in what the three programs serve on /metrics, and that their log lines
// reach Loki with only the labels service and level, carrying the correlation id the logs
// panel filters on.
func TestProgramsExposeDashboardMetrics(t *testing.T) {
	queries := dashboardQueries(t)
	loki := newFakeLoki(t)
	sys := startSystem(t, loki.URL, 1)
	d, stripe := sys.driver, sys.stripe

	admin := d.login("admin@dispatch.local", demo.Password)
	var item struct{ ID string }
	admin.Do("POST", "/v1/admin/items", map[string]any{"name": "Deploy check " + uuid.NewString()[:6],
		"description": "an item", "price": 1500, "stock": 10}, "Idempotency-Key", uuid.NewString()).Expect(t, 201).Decode(t, &item)
	customer := d.customer()
	customer.Do("GET", "/v1/items/"+item.ID, nil).Expect(t, 200) // cache miss
	customer.Do("GET", "/v1/items/"+item.ID, nil).Expect(t, 200) // cache hit
	customer.Do("GET", "/v1/orders/"+uuid.NewString(), nil).Expect(t, 404)

	// A: paid, processed, shipped, delivered; then refunded, the first Stripe refund failing.
	a := d.order(customer, item.ID, "")
	d.pay(a, a.Total, "")
	d.waitStatus(a.ID, "PROCESSED")
	d.login("shipper@dispatch.local", demo.Password).Do("PATCH", "/v1/admin/orders/"+a.ID+"/ship",
		map[string]string{"trackingNumber": "TRK1", "carrier": "UPS"}).Expect(t, 200)
	d.login("delivery@dispatch.local", demo.Password).Do("PATCH", "/v1/admin/orders/"+a.ID+"/deliver", nil).Expect(t, 200)
	d.waitStatus(a.ID, "DELIVERED")
	stripe.Fail("POST", "/v1/refunds", testenv.Fault{Status: 500, Type: "api_error", Message: "deploy check", Times: 2})
	refundCID := "deploycheck-refund-" + uuid.NewString()
	financial := d.login("financial@dispatch.local", demo.Password)
	financial.With("X-Correlation-Id", refundCID).Do("PATCH", "/v1/admin/orders/"+a.ID+"/refund",
		map[string]string{"reason": "deploy check"}).Expect(t, 202)
	d.waitStatus(a.ID, "REFUNDED")

	// B: paid one cent short: order:process fails for good and its compensation refunds.
	b := d.order(customer, item.ID, "")
	mismatchCID := "deploycheck-mismatch-" + uuid.NewString()
	d.pay(b, b.Total-1, mismatchCID)
	d.waitStatus(b.ID, "REFUNDED")

	// A's refund fails at Stripe afterwards, B's is canceled: both payments are owed back.
	d.refundUpdated(a, "failed")
	d.refundUpdated(b, "canceled")

	// C: canceled while pending.
	c := d.order(customer, item.ID, "")
	financial.Do("PATCH", "/v1/admin/orders/"+c.ID+"/cancel", map[string]string{"reason": "deploy check"}).Expect(t, 202)
	d.waitStatus(c.ID, "CANCELED")

	targets := map[string]string{"api": sys.api, "outbox-relay": sys.relay, "worker": sys.workers[0]}
	var problems []string
	var exposed exposition
	deadline := time.Now().Add(30 * time.Second)
	for {
		exposed = scrape(t, targets)
		if problems = checkQueries(queries, exposed); len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond) // task metrics are recorded just after the status commits
	}
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("%d dashboard queries checked against %d metric names served by api, outbox-relay and worker", len(queries), len(exposed))

	checkLokiPushes(t, loki, map[string][]string{"api": {refundCID, mismatchCID}, "worker": {refundCID, mismatchCID}})
}

// driver talks to the running API like a client and reads orders from the database.
type driver struct {
	t      *testing.T
	api    *testenv.Client
	db     *postgres.DB
	secret string
}

type placed struct {
	ID       string
	Total    int64
	Currency string
	Payment  struct{ PaymentIntentID *string }
}

func newDriver(t *testing.T, base string, db *postgres.DB, secret string) *driver {
	return &driver{t: t, api: testenv.NewClient(t, base), db: db, secret: secret}
}

func (d *driver) login(email, password string) *testenv.Client {
	d.t.Helper()
	var pair struct{ AccessToken string }
	d.api.Do("POST", "/v1/auth/login", map[string]string{"email": email, "password": password}).Expect(d.t, 200).Decode(d.t, &pair)
	return d.api.As(pair.AccessToken)
}

func (d *driver) customer() *testenv.Client {
	d.t.Helper()
	email := "deploy-" + uuid.NewString()[:8] + "@example.com"
	d.api.Do("POST", "/v1/users", map[string]any{"name": "Customer", "email": email, "password": "password123"},
		"Idempotency-Key", uuid.NewString()).Expect(d.t, 201)
	return d.login(email, "password123")
}

func (d *driver) order(c *testenv.Client, itemID, correlationID string) placed {
	d.t.Helper()
	headers := []string{"Idempotency-Key", uuid.NewString()}
	if correlationID != "" {
		headers = append(headers, "X-Correlation-Id", correlationID)
	}
	var o placed
	c.Do("POST", "/v1/orders", map[string]any{"items": []map[string]any{{"itemId": itemID, "quantity": 1}}}, headers...).
		Expect(d.t, 201).Decode(d.t, &o)
	if o.Payment.PaymentIntentID == nil {
		d.t.Fatalf("order %s has no PaymentIntent", o.ID)
	}
	return o
}

// pay sends a signed payment_intent.succeeded for amount.
func (d *driver) pay(o placed, amount int64, correlationID string) {
	d.t.Helper()
	body := payment.TestEvent{Type: payment.EventIntentSucceeded, PaymentIntentID: *o.Payment.PaymentIntentID,
		OrderID: o.ID, Amount: amount, Currency: o.Currency}.Build()
	headers := []string{"Stripe-Signature", payment.Sign(body, d.secret, time.Now())}
	if correlationID != "" {
		headers = append(headers, "X-Correlation-Id", correlationID)
	}
	d.api.Do("POST", "/stripe/webhook", body, headers...).Expect(d.t, 200)
}

// refundUpdated sends refund.updated with status for the refund recorded on o.
func (d *driver) refundUpdated(o placed, status string) {
	d.t.Helper()
	var refundID string
	if err := d.db.Get(&refundID, `SELECT refund_id FROM refunds WHERE order_id = $1`, o.ID); err != nil {
		d.t.Fatal(err)
	}
	body := payment.TestEvent{Type: payment.EventRefundUpdated, PaymentIntentID: *o.Payment.PaymentIntentID,
		RefundID: refundID, RefundStatus: status, Amount: o.Total, Currency: o.Currency}.Build()
	d.api.Do("POST", "/stripe/webhook", body, "Stripe-Signature", payment.Sign(body, d.secret, time.Now())).Expect(d.t, 200)
}

func (d *driver) waitStatus(id, want string) {
	d.t.Helper()
	testenv.Eventually(d.t, 90*time.Second, "order "+id+" reaches "+want, func() bool {
		var row struct {
			Status string  `db:"status"`
			Action *string `db:"pending_action"`
		}
		if err := d.db.Get(&row, `SELECT status, pending_action FROM orders WHERE id = $1`, id); err != nil {
			d.t.Fatal(err)
		}
		return row.Status == want && row.Action == nil
	})
}

// series is one exposed sample's labels, with the job it was scraped from.
type series = map[string]string

// exposition maps a metric name as PromQL sees it (histograms: _bucket, _sum, _count) to
// its series across the programs.
type exposition map[string][]series

// scrape reads /metrics of every program (job name → address) as Prometheus would.
func scrape(t *testing.T, targets map[string]string) exposition {
	t.Helper()
	out := exposition{}
	for job, addr := range targets {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatalf("scrape %s: %v", job, err)
		}
		tp := expfmt.NewTextParser(model.UTF8Validation)
		families, err := tp.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("scrape %s: %v", job, err)
		}
		for name, f := range families {
			for _, m := range f.GetMetric() {
				s := series{"job": job, "instance": addr}
				for _, l := range m.GetLabel() {
					s[l.GetName()] = l.GetValue()
				}
				switch f.GetType() {
				case dto.MetricType_HISTOGRAM:
					for _, b := range m.GetHistogram().GetBucket() {
						bs := copySeries(s)
						bs["le"] = fmt.Sprint(b.GetUpperBound())
						out[name+"_bucket"] = append(out[name+"_bucket"], bs)
					}
					out[name+"_bucket"] = append(out[name+"_bucket"], withLabel(s, "le", "+Inf"))
					out[name+"_sum"] = append(out[name+"_sum"], s)
					out[name+"_count"] = append(out[name+"_count"], s)
				case dto.MetricType_SUMMARY:
					out[name+"_sum"] = append(out[name+"_sum"], s)
					out[name+"_count"] = append(out[name+"_count"], s)
					out[name] = append(out[name], s)
				default:
					out[name] = append(out[name], s)
				}
			}
		}
		// Prometheus adds up for every target.
		out["up"] = append(out["up"], series{"job": job, "instance": addr})
	}
	return out
}

func copySeries(s series) series {
	c := make(series, len(s)+1)
	for k, v := range s {
		c[k] = v
	}
	return c
}

func withLabel(s series, k, v string) series {
	c := copySeries(s)
	c[k] = v
	return c
}

// literalAlternatives returns the values a regexp matcher spells out ("a|b|c"), or nil when
// it is a real pattern.
var literal = regexp.MustCompile(`^[A-Za-z0-9_:\-]+(\|[A-Za-z0-9_:\-]+)*$`)

// checkQueries returns what the queries select that the programs do not expose: a metric, a
// label, or a label value named in an equality (or a list of literal alternatives); and a
// `by` label that none of the selected metrics has.
func checkQueries(queries []promQuery, exposed exposition) []string {
	var problems []string
	report := func(q promQuery, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("panel %q, %s: %s", q.panel, q.expr, fmt.Sprintf(format, args...)))
	}
	for _, q := range queries {
		parser.Inspect(q.ast, func(n parser.Node, _ []parser.Node) error {
			switch n := n.(type) {
			case *parser.VectorSelector:
				all, ok := exposed[n.Name]
				if !ok {
					report(q, "metric %s is exposed by none of api, outbox-relay, worker", n.Name)
					return nil
				}
				for _, m := range n.LabelMatchers {
					if m.Name == labels.MetricName {
						continue
					}
					if !anySeries(all, func(s series) bool { _, ok := s[m.Name]; return ok }) {
						report(q, "%s has no label %s", n.Name, m.Name)
						continue
					}
					var values []string
					switch {
					case m.Type == labels.MatchEqual && m.Value != "":
						values = []string{m.Value}
					case m.Type == labels.MatchRegexp && literal.MatchString(m.Value):
						values = strings.Split(m.Value, "|")
					}
					for _, v := range values {
						if !anySeries(all, func(s series) bool { return s[m.Name] == v }) {
							report(q, "no series of %s has %s=%q", n.Name, m.Name, v)
						}
					}
				}
			case *parser.AggregateExpr:
				if n.Without {
					return nil
				}
				names := selectorNames(n.Expr)
				for _, l := range n.Grouping {
					found := false
					for _, name := range names {
						found = found || anySeries(exposed[name], func(s series) bool { _, ok := s[l]; return ok })
					}
					if !found {
						report(q, "grouping by %s, which none of %v has", l, names)
					}
				}
			}
			return nil
		})
	}
	sort.Strings(problems)
	return problems
}

func anySeries(all []series, f func(series) bool) bool {
	for _, s := range all {
		if f(s) {
			return true
		}
	}
	return false
}

// checkLokiPushes checks what the programs pushed: every program pushed, streams carry exactly
// the labels service and level, each line is the program's JSON log line (service and level
// as in the labels), and the given correlation ids appear in the lines of the given services.
func checkLokiPushes(t *testing.T, loki *fakeLoki, wantIDs map[string][]string) {
	t.Helper()
	type line struct {
		Service       string `json:"service"`
		Level         string `json:"level"`
		Msg           string `json:"msg"`
		CorrelationID string `json:"correlationId"`
	}
	var missing []string
	pushed := func() bool {
		streams, _ := loki.snapshot()
		services, ids := map[string]bool{}, map[string]bool{}
		for _, s := range streams {
			ls, err := parser.ParseMetric(s.Labels)
			if err != nil {
				continue
			}
			svc := ls.Get("service")
			services[svc] = true
			for _, e := range s.Entries {
				var l line
				if json.Unmarshal([]byte(e.Line), &l) == nil && l.CorrelationID != "" {
					ids[svc+" "+l.CorrelationID] = true
				}
			}
		}
		missing = nil
		for _, svc := range []string{"api", "outbox-relay", "worker"} {
			if !services[svc] {
				missing = append(missing, svc+" pushed nothing")
			}
		}
		for svc, list := range wantIDs {
			for _, id := range list {
				if !ids[svc+" "+id] {
					missing = append(missing, svc+" pushed no line with correlationId "+id)
				}
			}
		}
		return len(missing) == 0
	}
	for deadline := time.Now().Add(20 * time.Second); !pushed() && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
	}
	for _, m := range missing {
		t.Errorf("Loki: %s", m)
	}
	streams, errs := loki.snapshot()
	for _, e := range errs {
		t.Errorf("malformed push: %s", e)
	}
	for _, s := range streams {
		ls, err := parser.ParseMetric(s.Labels)
		if err != nil {
			t.Errorf("stream labels %q: %v", s.Labels, err)
			continue
		}
		if names := ls.Map(); len(names) != 2 || names["service"] == "" || names["level"] == "" {
			t.Errorf("stream labels %s: want exactly service and level", s.Labels)
			continue
		}
		for _, e := range s.Entries {
			var l line
			if err := json.Unmarshal([]byte(e.Line), &l); err != nil {
				t.Errorf("%s: line is not JSON: %q", s.Labels, e.Line)
				break
			}
			if l.Service != ls.Get("service") || !strings.EqualFold(l.Level, ls.Get("level")) || l.Msg == "" {
				t.Errorf("%s: line %q does not match its labels", s.Labels, e.Line)
				break
			}
		}
	}
}
