package e2e_test

// Operations on the real programs (SPEC §3 Operations, §5, §8): cmd/api, cmd/outbox-relay and
// cmd/worker are built and run as processes on the test's database and a Redis logical
// database of its own. Their /metrics move after the actions they count and never show
// secrets, emails, tokens or ids; the relay's readiness follows the age of the outbox.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/outbox/relay"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// programEnv is the environment every program of a test gets.
func programEnv(dbURL, redisURL, stripeURL string, extra ...string) []string {
	return append([]string{
		"APP_ENV=test", "DATABASE_URL=" + dbURL, "REDIS_URL=" + redisURL, "STRIPE_API_BASE=" + stripeURL,
		"RATE_LIMIT_ENABLED=false", "ARGON2_MEMORY_KIB=64", "ARGON2_TIME=1", "ARGON2_THREADS=1", "LOG_LEVEL=warn",
	}, extra...)
}

var (
	uuidPattern  = regexp.MustCompile(`(?i)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	emailPattern = regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`)
	jwtPattern   = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+`)
)

// assertNothingSecret fails when a label value of the scrape looks like an id, an email or a
// token, or when the exposition contains any of the given secrets.
func assertNothingSecret(t *testing.T, program string, s scrape, secrets ...string) {
	t.Helper()
	s.eachLabel(func(metric, name, value string) {
		for what, p := range map[string]*regexp.Regexp{"a UUID": uuidPattern, "an email address": emailPattern, "a JWT": jwtPattern} {
			if p.MatchString(value) {
				t.Errorf("%s: %s{%s=%q} holds %s", program, metric, name, value, what)
			}
		}
	})
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s.raw, sec) {
			t.Errorf("%s: /metrics shows %q", program, sec)
		}
	}
	if jwtPattern.MatchString(s.raw) || emailPattern.MatchString(s.raw) {
		t.Errorf("%s: /metrics shows a token or an email address", program)
	}
}

// TestOperationsOfTheRealPrograms builds cmd/api, cmd/outbox-relay and cmd/worker once and
// runs the tests of the programs as processes.
func TestOperationsOfTheRealPrograms(t *testing.T) {
	t.Parallel()
	bins := testenv.BuildCommands(t, "api", "outbox-relay", "worker")
	t.Run("MetricsMoveAfterWhatTheyCount", func(t *testing.T) {
		t.Parallel()
		programsExportMetricsOfWhatTheyDid(t, bins["api"], bins["outbox-relay"], bins["worker"])
	})
	t.Run("RelayReadinessFollowsTheOutbox", func(t *testing.T) {
		t.Parallel()
		relayReadinessFollowsTheOutbox(t, bins["outbox-relay"])
	})
	t.Run("APIRefusesProductionWithoutQueueUIPassword", func(t *testing.T) {
		t.Parallel()
		apiRefusesProductionWithoutQueueUIPassword(t, bins["api"])
	})
	t.Run("APIStartsWithoutRedis", func(t *testing.T) {
		t.Parallel()
		apiStartsWithoutRedis(t, bins["api"])
	})
	t.Run("APIDrainsOnSIGTERM", func(t *testing.T) {
		t.Parallel()
		apiDrainsOnSIGTERM(t, bins["api"])
	})
}

// apiDrainsOnSIGTERM: with SHUTDOWN_DRAIN set, the API goes on answering after SIGTERM while
// /ready answers 503 (a load balancer's cue to send its requests elsewhere), closes each
// connection after its answer (so that clients reconnect elsewhere), and exits cleanly once the
// drain is over. The drain is long so that the requests made during it are made in time on a
// loaded machine too.
func apiDrainsOnSIGTERM(t *testing.T, apiBin string) {
	_, dbURL := testenv.DB(t)
	redisURL, _ := isolatedRedis(t)
	apiAddr := opsAddr(t)
	const drain = 20 * time.Second
	api := startProc(t, "api", apiBin, programEnv(dbURL, redisURL, testenv.StripeURL(t),
		"HTTP_ADDR="+apiAddr, "SHUTDOWN_DRAIN="+drain.String(), "LOG_LEVEL=info")...)
	api.WaitReady(apiAddr)
	client := &http.Client{Timeout: time.Minute} // keeps its connections alive while the API lets it
	do := func(method, path string, body any) (*http.Response, string) {
		t.Helper()
		var in io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			in = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, "http://"+apiAddr+path, in)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp, string(out)
	}
	login := map[string]string{"email": "admin@dispatch.local", "password": demo.Password}
	if resp, _ := do("POST", "/v1/auth/login", login); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("before SIGTERM: login %d, connection closed %v; want 200 on a kept connection", resp.StatusCode, resp.Close)
	}

	signalled := time.Now()
	if err := syscall.Kill(api.Pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "/ready answers 503 once the API stops", func() bool {
		resp, body := do("GET", "/ready", nil)
		return resp.StatusCode == 503 && strings.Contains(body, "common.errors.stopping")
	})
	if resp, _ := do("POST", "/v1/auth/login", login); resp.StatusCode != 200 || !resp.Close {
		t.Errorf("draining: login %d, connection closed %v; want 200, then the connection closed", resp.StatusCode, resp.Close)
	}

	select {
	case <-api.Done():
	case <-time.After(drain + time.Minute):
		t.Fatalf("the API still runs %v after SIGTERM", time.Since(signalled))
	}
	if err := api.Err(); err != nil {
		t.Fatalf("the API exited with %v:\n%s", err, api.Output(4000))
	}
	if took := time.Since(signalled); took < drain {
		t.Errorf("the API exited %v after SIGTERM, before its %v drain ended", took, drain)
	}
	if !strings.Contains(api.Output(100000), "draining before the shutdown") {
		t.Errorf("no log line says the API drains:\n%s", api.Output(4000))
	}
}

// apiStartsWithoutRedis: the API serves without Redis, so it starts without it (started again
// during a Redis outage it must answer, not refuse connections): alive, not ready (naming
// Redis), a login answered, the catalog served from the database.
func apiStartsWithoutRedis(t *testing.T, apiBin string) {
	_, dbURL := testenv.DB(t)
	apiAddr := opsAddr(t)
	noRedis := fmt.Sprintf("redis://127.0.0.1:%d/0", testenv.FreePort(t))
	api := startProc(t, "api", apiBin, programEnv(dbURL, noRedis, testenv.StripeURL(t), "HTTP_ADDR="+apiAddr)...)
	client := testenv.NewClient(t, "http://"+apiAddr)
	testenv.Eventually(t, 30*time.Second, "the API answers /health", func() bool {
		if !api.Running() {
			t.Fatalf("the API exited without Redis:\n%s", api.Output(4000))
		}
		resp, err := http.Get("http://" + apiAddr + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	ready := client.Do("GET", "/ready", nil).Expect(t, 503)
	if !strings.Contains(string(ready.Body), `"redis"`) {
		t.Fatalf("/ready without Redis: %s", ready.Body)
	}
	var pair struct{ AccessToken string }
	client.Do("POST", "/v1/auth/login", map[string]string{"email": "admin@dispatch.local", "password": demo.Password}).
		Expect(t, 200).Decode(t, &pair)
	var page struct{ Items []any }
	client.As(pair.AccessToken).Do("GET", "/v1/items", nil).Expect(t, 200).Decode(t, &page)
	if len(page.Items) == 0 {
		t.Fatal("no items served without Redis")
	}
}

// programsExportMetricsOfWhatTheyDid drives one order through the real API, relay and worker
// over HTTP and reads each program's /metrics before and after.
func programsExportMetricsOfWhatTheyDid(t *testing.T, apiBin, relayBin, workerBin string) {
	db, dbURL := testenv.DB(t)
	redisURL, _ := isolatedRedis(t)
	stripe := testenv.NewStripeProxy(t, testenv.StripeURL(t))
	apiAddr, relayOps, workerOps := opsAddr(t), opsAddr(t), opsAddr(t)

	api := startProc(t, "api", apiBin, programEnv(dbURL, redisURL, stripe.URL, "HTTP_ADDR="+apiAddr, "OPS_ADDR="+opsAddr(t))...)
	api.WaitReady(apiAddr) // the demo data is seeded before the API serves
	relay := startProc(t, "outbox-relay", relayBin, programEnv(dbURL, redisURL, stripe.URL, "OPS_ADDR="+relayOps, "OUTBOX_POLL_INTERVAL=100ms")...)
	relay.WaitReady(relayOps)
	wrk := startProc(t, "worker", workerBin, programEnv(dbURL, redisURL, stripe.URL, "OPS_ADDR="+workerOps, "WORKER_CONCURRENCY=4")...)
	wrk.WaitReady(workerOps)

	apiMetrics := func() scrape { return scrapeMetrics(t, "http://"+apiAddr+"/metrics") }
	relayMetrics := func() scrape { return scrapeMetrics(t, "http://"+relayOps+"/metrics") }
	workerMetrics := func() scrape { return scrapeMetrics(t, "http://"+workerOps+"/metrics") }

	// Set up a customer and an item.
	client := testenv.NewClient(t, "http://"+apiAddr)
	login := func(email, password string) (*testenv.Client, string) {
		var pair struct{ AccessToken, RefreshToken string }
		client.Do("POST", "/v1/auth/login", map[string]string{"email": email, "password": password}).Expect(t, 200).Decode(t, &pair)
		return client.As(pair.AccessToken), pair.RefreshToken
	}
	admin, adminRefresh := login("admin@dispatch.local", demo.Password)
	email, password := "metrics-"+uuid.NewString()[:8]+"@example.com", "password-"+uuid.NewString()[:8]
	var me struct{ ID uuid.UUID }
	client.Do("POST", "/v1/users", map[string]any{"name": "Metrics Customer", "email": email, "password": password},
		"Idempotency-Key", uuid.NewString()).Expect(t, 201).Decode(t, &me)
	customer, customerRefresh := login(email, password)
	var item struct{ ID uuid.UUID }
	admin.Do("POST", "/v1/admin/items", map[string]any{"name": "Metered item", "description": "x", "price": 4200, "stock": 5},
		"Idempotency-Key", uuid.NewString()).Expect(t, 201).Decode(t, &item)

	a0, r0, w0 := apiMetrics(), relayMetrics(), workerMetrics()
	if !w0.has("dispatch_queue_depth") {
		t.Fatal("the worker does not export dispatch_queue_depth")
	}

	// Cache: the first read misses, the second hits.
	customer.Do("GET", "/v1/items/"+item.ID.String(), nil).Expect(t, 200)
	a1 := apiMetrics()
	if d := a1.value("dispatch_cache_requests_total", "kind", "item", "result", "miss") - a0.value("dispatch_cache_requests_total", "kind", "item", "result", "miss"); d != 1 {
		t.Errorf("item cache misses moved by %v after the first read, want 1", d)
	}
	customer.Do("GET", "/v1/items/"+item.ID.String(), nil).Expect(t, 200)
	a2 := apiMetrics()
	if d := a2.value("dispatch_cache_requests_total", "kind", "item", "result", "hit") - a1.value("dispatch_cache_requests_total", "kind", "item", "result", "hit"); d != 1 {
		t.Errorf("item cache hits moved by %v after the second read, want 1", d)
	}

	// The order: created, read, paid through the webhook, processed by the worker.
	var o struct {
		ID      uuid.UUID
		Total   int64
		Payment struct {
			PaymentIntentID string
			ClientSecret    string
		}
	}
	customer.Do("POST", "/v1/orders", map[string]any{"items": []map[string]any{{"itemId": item.ID, "quantity": 2}}},
		"Idempotency-Key", uuid.NewString()).Expect(t, 201).Decode(t, &o)
	customer.Do("GET", "/v1/orders/"+o.ID.String(), nil).Expect(t, 200)
	client.Do("GET", "/v1/no-such-thing/"+uuid.NewString(), nil).Expect(t, 404)
	made := "BREW" + strings.ToUpper(strings.ReplaceAll(uuid.NewString(), "-", ""))
	client.Do(made, "/v1/items", nil).Expect(t, 405) // any token is a method to net/http
	body := payment.TestEvent{Type: payment.EventIntentSucceeded, PaymentIntentID: o.Payment.PaymentIntentID,
		OrderID: o.ID.String(), Amount: o.Total, Currency: "usd"}.Build()
	client.Do("POST", "/stripe/webhook", body, "Stripe-Signature", payment.Sign(body, config.DefaultStripeWebhookSecret, time.Now())).Expect(t, 200)
	testenv.Eventually(t, 30*time.Second, "order processed by the worker", func() bool {
		var st string
		if err := db.Get(&st, `SELECT status FROM orders WHERE id = $1`, o.ID); err != nil {
			t.Fatal(err)
		}
		return st == "PROCESSED"
	})

	// Each program's connections carry its name, and the API's stay within its pool.
	var conns []struct {
		Name string `db:"application_name"`
		N    int    `db:"n"`
	}
	if err := db.Select(&conns, `SELECT application_name, count(*) AS n FROM pg_stat_activity
		WHERE datname = current_database() AND application_name LIKE 'dispatch-%' GROUP BY 1 ORDER BY 1`); err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	for _, c := range conns {
		names[c.Name] = c.N
	}
	if len(names) != 3 || names["dispatch-api"] == 0 || names["dispatch-worker"] == 0 || names["dispatch-outbox-relay"] == 0 || names["dispatch-api"] > 8 {
		t.Errorf("connections by program: %v, want dispatch-api (at most 8), dispatch-worker and dispatch-outbox-relay", names)
	}

	// The API.
	a := apiMetrics()
	delta := func(after, before scrape, name string, labels ...string) float64 {
		return after.value(name, labels...) - before.value(name, labels...)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"dispatch_http_requests_total", []string{"method", "POST", "route", "/v1/orders", "status", "201"}, 1},
		{"dispatch_http_request_duration_seconds", []string{"method", "POST", "route", "/v1/orders", "status", "201"}, 1},
		{"dispatch_http_requests_total", []string{"method", "GET", "route", "/v1/orders/:id", "status", "200"}, 1},
		{"dispatch_http_requests_total", []string{"method", "GET", "route", "/v1/items/:id", "status", "200"}, 2},
		{"dispatch_http_requests_total", []string{"method", "GET", "route", "unmatched", "status", "404"}, 1},
		{"dispatch_http_requests_total", []string{"method", "POST", "route", "/stripe/webhook", "status", "200"}, 1},
		{"dispatch_orders_created_total", nil, 1},
		{"dispatch_order_transitions_total", []string{"from", "PENDING", "to", "PAID"}, 1},
		{"dispatch_webhook_events_total", []string{"type", "payment_intent.succeeded", "outcome", "applied"}, 1},
		{"dispatch_stripe_requests_total", []string{"operation", "payment_intent.create", "outcome", "ok"}, 1},
		{"dispatch_stripe_request_duration_seconds", []string{"operation", "payment_intent.create"}, 1},
	} {
		if d := delta(a, a0, c.name, c.labels...); d != c.want {
			t.Errorf("api: %s%v moved by %v, want %v", c.name, c.labels, d, c.want)
		}
	}
	if d := delta(a, a0, "dispatch_http_requests_total", "method", "other", "route", "unmatched", "status", "405"); d != 1 {
		t.Errorf("api: a made-up method counted as other %v times, want 1", d)
	}
	for _, ls := range a.labelSets("dispatch_http_requests_total") {
		if r := ls["route"]; r != "unmatched" && !strings.HasPrefix(r, "/") {
			t.Errorf("api: route label %q is neither a route template nor unmatched", r)
		}
		if m := ls["method"]; m != metrics.Method(m) {
			t.Errorf("api: method label %q: a made-up method became a series of its own", m)
		}
	}

	// The worker: order:process ran once and succeeded; PAID → PROCESSED counted there.
	notified := func() int {
		var n int
		if err := db.Get(&n, `SELECT count(*) FROM notifications WHERE data->>'orderId' = $1`, o.ID.String()); err != nil {
			t.Fatal(err)
		}
		return n
	}
	testenv.Eventually(t, 30*time.Second, "the order's three notifications (created, paid, processed)", func() bool { return notified() >= 3 })
	testenv.Eventually(t, 30*time.Second, "the worker counted order:process and the notifications", func() bool {
		m := workerMetrics()
		return delta(m, w0, "dispatch_tasks_total", "type", "order:process", "outcome", "success") >= 1 &&
			delta(m, w0, "dispatch_tasks_total", "type", "notify:user", "outcome", "success") >= 3
	})
	w := workerMetrics()
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"dispatch_tasks_total", []string{"type", "order:process", "outcome", "success"}, 1},
		{"dispatch_task_duration_seconds", []string{"type", "order:process", "outcome", "success"}, 1},
		{"dispatch_tasks_total", []string{"type", "order:process", "outcome", "retry"}, 0},
		{"dispatch_order_transitions_total", []string{"from", "PAID", "to", "PROCESSED"}, 1},
	} {
		if d := delta(w, w0, c.name, c.labels...); d != c.want {
			t.Errorf("worker: %s%v moved by %v, want %v", c.name, c.labels, d, c.want)
		}
	}
	if n := notified(); n != 3 {
		t.Errorf("the order has %d notifications, want 3 (created, paid, processed)", n)
	}
	if d := delta(w, w0, "dispatch_queue_depth", "queue", "orders", "state", "completed"); d < 1 {
		t.Errorf("worker: completed tasks in the orders queue moved by %v, want at least 1", d)
	}
	queues := map[string]bool{}
	for _, ls := range w.labelSets("dispatch_queue_depth") {
		queues[ls["queue"]] = true
	}
	for _, q := range []string{"orders", "payments", "notifications", "maintenance"} {
		if !queues[q] {
			t.Errorf("worker: dispatch_queue_depth has no series for queue %s", q)
		}
	}

	// The relay: the order's outbox rows went through it, and the backlog is back to 0.
	var r scrape
	testenv.Eventually(t, 30*time.Second, "the relay's backlog gauge reads 0", func() bool {
		r = relayMetrics()
		return r.has("dispatch_outbox_backlog") && r.value("dispatch_outbox_backlog") == 0
	})
	if d := delta(r, r0, "dispatch_relay_rows_total"); d < 4 {
		t.Errorf("relay: rows relayed moved by %v, want at least 4 (order.created, order:process, order.paid, order.processed)", d)
	}
	if d := delta(r, r0, "dispatch_relay_batch_size"); d < 1 {
		t.Errorf("relay: batches observed moved by %v", d)
	}
	if d := delta(r, r0, "dispatch_relay_enqueue_duration_seconds"); d < 1 {
		t.Errorf("relay: enqueue durations observed moved by %v", d)
	}
	if !r.has("dispatch_outbox_oldest_age_seconds") {
		t.Error("relay: no dispatch_outbox_oldest_age_seconds")
	}

	// Nothing secret, personal or unbounded in any scrape.
	secrets := []string{email, password, demo.Password, customer.Token, admin.Token, customerRefresh, adminRefresh,
		o.ID.String(), me.ID.String(), item.ID.String(), o.Payment.PaymentIntentID, o.Payment.ClientSecret,
		config.DefaultStripeSecretKey, config.DefaultStripeWebhookSecret, config.DefaultJWTAccessSecret, config.DefaultJWTRefreshSecret,
		dbURL, redisURL}
	for program, s := range map[string]scrape{"api": a, "worker": w, "outbox-relay": r} {
		assertNothingSecret(t, program, s, secrets...)
	}
}

// relayReadinessFollowsTheOutbox: the real relay's /ready fails while the oldest outbox
// row waits longer than relay.StaleAfter and passes once it is gone, even with a younger row
// still waiting; its gauges report the backlog and the oldest row's age. Rows are kept from
// the relay by holding their row locks (it claims with SKIP LOCKED).
func relayReadinessFollowsTheOutbox(t *testing.T, bin string) {
	db, dbURL := testenv.DB(t)
	redisURL, _ := isolatedRedis(t)
	insert := func(age time.Duration) int64 {
		var id int64
		if err := db.Get(&id, `INSERT INTO outbox (type, payload, created_at) VALUES ('notify:user', $1, now() - $2::interval) RETURNING id`,
			fmt.Sprintf(`{"userId":%q,"event":"order.statusChanged","data":{}}`, uuid.NewString()), fmt.Sprintf("%d seconds", int(age.Seconds()))); err != nil {
			t.Fatal(err)
		}
		return id
	}
	hold := func(id int64) *sqlx.Tx {
		tx, err := db.Pool().Beginx()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback() })
		var got int64
		if err := tx.Get(&got, `SELECT id FROM outbox WHERE id = $1 FOR UPDATE`, id); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	stale := insert(relay.StaleAfter + 5*time.Minute)
	young := insert(time.Minute)
	holdStale, holdYoung := hold(stale), hold(young)

	ops := opsAddr(t)
	p := startProc(t, "outbox-relay", bin, programEnv(dbURL, redisURL, testenv.StripeURL(t), "OPS_ADDR="+ops, "OUTBOX_POLL_INTERVAL=100ms")...)
	// readyIs waits for /ready to answer status, failing exactly the checks named: each check has
	// a second, which a loaded machine's ping may miss once.
	readyIs := func(what string, status int, failed ...string) {
		t.Helper()
		var last string
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			resp, err := http.Get("http://" + ops + "/ready")
			if err != nil {
				last = err.Error()
				continue
			}
			var body struct{ Failed []string }
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode == status && slices.Equal(body.Failed, failed) {
				return
			}
			last = fmt.Sprint(resp.StatusCode, " ", body.Failed)
		}
		t.Fatalf("%s; last answer: %s", what, last)
	}
	testenv.Eventually(t, 30*time.Second, "the relay serves /health", func() bool {
		if !p.Running() {
			t.Fatalf("relay exited: %v\n%s", p.Err(), p.Output(4000))
		}
		resp, err := http.Get("http://" + ops + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	// A row older than StaleAfter: not ready, and only the outbox check fails.
	readyIs("/ready with a stale row: 503 failing outbox only", http.StatusServiceUnavailable, "outbox")
	testenv.Eventually(t, 20*time.Second, "the gauges report two rows, the oldest stale", func() bool {
		m := scrapeMetrics(t, "http://"+ops+"/metrics")
		return m.value("dispatch_outbox_backlog") == 2 && m.value("dispatch_outbox_oldest_age_seconds") >= (relay.StaleAfter+5*time.Minute).Seconds()
	})

	// The stale row goes; a younger one still waits: ready.
	if _, err := holdStale.Exec(`DELETE FROM outbox WHERE id = $1`, stale); err != nil {
		t.Fatal(err)
	}
	if err := holdStale.Commit(); err != nil {
		t.Fatal(err)
	}
	readyIs("/ready with only a minute-old row: 200", http.StatusOK)
	testenv.Eventually(t, 20*time.Second, "the gauges report one young row", func() bool {
		m := scrapeMetrics(t, "http://"+ops+"/metrics")
		age := m.value("dispatch_outbox_oldest_age_seconds")
		return m.value("dispatch_outbox_backlog") == 1 && age >= 60 && age < relay.StaleAfter.Seconds()
	})

	// Released, the young row is handed off (no worker runs it: it stays, in flight) and the
	// relay is ready.
	if err := holdYoung.Rollback(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the relay hands off the released row", func() bool {
		var n int
		if err := db.Get(&n, `SELECT count(*) FROM outbox WHERE deliveries = 0`); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	readyIs("/ready with an empty outbox: 200", http.StatusOK)
	testenv.Eventually(t, 20*time.Second, "the gauges report no row waiting and one in flight", func() bool {
		m := scrapeMetrics(t, "http://"+ops+"/metrics")
		return m.value("dispatch_outbox_backlog") == 0 && m.value("dispatch_outbox_oldest_age_seconds") == 0 &&
			m.value("dispatch_outbox_in_flight") == 1 && m.value("dispatch_outbox_oldest_in_flight_age_seconds") >= 60
	})
	if d := scrapeMetrics(t, "http://"+ops+"/metrics").value("dispatch_relay_rows_total"); d != 1 {
		t.Fatalf("relay rows counted %v, want 1 (the released row)", d)
	}
}

// apiRefusesProductionWithoutQueueUIPassword: the real API does not start in production
// when ADMIN_UI_PASSWORD is unset, and says why.
func apiRefusesProductionWithoutQueueUIPassword(t *testing.T, bin string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a failure guard
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = []string{"APP_ENV=production", "JWT_ACCESS_SECRET=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		"JWT_REFRESH_SECRET=Vq3xT8kLm2Rz7Yp4Wn6Bd1Hs9Gf5Jc0Ea8Ku3Ot7Ni2", "STRIPE_SECRET_KEY=sk_live_51Hx8sQ2eZvKYlo2C0aB3dE4fG5hI6jK7lM8nO9pQ",
		"STRIPE_WEBHOOK_SECRET=whsec_Xk29vLp0QmZr8TbN4cYw7HdJ1sFg6EaU", "HTTP_ADDR=" + opsAddr(t),
		"DATABASE_URL=postgres://127.0.0.1:1/none?sslmode=disable", "REDIS_URL=redis://127.0.0.1:1/0"}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err == nil || !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("api in production without ADMIN_UI_PASSWORD: err %v, output:\n%s", err, out)
	}
	if !strings.Contains(string(out), "ADMIN_UI_PASSWORD") || strings.Contains(string(out), "SECRET") {
		t.Fatalf("the refusal does not name ADMIN_UI_PASSWORD alone:\n%s", out)
	}
}
