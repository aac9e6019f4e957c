package e2e_test

// Backing services going away: while PostgreSQL is unreachable every route answers 503 with
// Retry-After (SPEC §1: a 500 is a bug, an outage is not), /ready names it, and the API
// recovers by itself when it is back.

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/assembly"
	"github.com/dispatchhq/dispatch/internal/httpapi"
	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/internal/worker"
)

func TestPostgresOutageAnswers503(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	item := s.item(50, 700)
	_, customer := s.customer()

	base, proxy := s.apiOnProxiedDB(httpapi.Options{})
	c := testenv.NewClient(t, base).As(customer.Token)
	body := map[string]any{"items": []map[string]any{{"itemId": item, "quantity": 1}}}
	var before orderView
	c.Do("POST", "/v1/orders", body, "Idempotency-Key", uuid.NewString()).Expect(t, 201).Decode(t, &before)

	proxy.Cut()
	key := uuid.NewString()
	for i := 0; i < 5; i++ {
		for _, r := range []struct {
			method, path string
			body         any
		}{
			{"POST", "/v1/orders", body}, {"GET", "/v1/orders/" + before.ID.String(), nil}, {"GET", "/v1/orders/me", nil},
			{"GET", "/v1/items/" + item.String(), nil}, {"PATCH", "/v1/users/me", map[string]string{"name": "Renamed"}},
			{"POST", "/v1/auth/login", map[string]string{"email": "admin@dispatch.local", "password": "admin12345"}},
		} {
			resp := c.Do(r.method, r.path, r.body, "Idempotency-Key", key)
			if r.method == "GET" && r.path == "/v1/items/"+item.String() && resp.Status == 200 {
				continue // served from the cache: fine
			}
			resp.ExpectError(t, http.StatusServiceUnavailable, "common.errors.unavailable")
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
				t.Fatalf("%s %s: Retry-After %q", r.method, r.path, resp.Header.Get("Retry-After"))
			}
		}
	}
	ready := testenv.NewClient(t, base).Do("GET", "/ready", nil).Expect(t, http.StatusServiceUnavailable)
	var report struct{ Details []struct{ Field string } }
	if err := json.Unmarshal(ready.Body, &report); err != nil || len(report.Details) != 1 || report.Details[0].Field != "postgres" {
		t.Fatalf("/ready during the outage: %s", ready.Body)
	}

	// Back: the pool reconnects by itself, and the key refused meanwhile places one order.
	proxy.Restore(t)
	var after orderView
	testenv.Eventually(t, 20*time.Second, "the API serves again", func() bool {
		resp := c.Do("POST", "/v1/orders", body, "Idempotency-Key", key)
		if resp.Status == http.StatusServiceUnavailable {
			return false
		}
		resp.Expect(t, 201).Decode(t, &after)
		return true
	})
	c.Do("POST", "/v1/orders", body, "Idempotency-Key", key).Expect(t, 201)
	if n := s.count(`SELECT count(*) FROM orders WHERE user_id = (SELECT user_id FROM orders WHERE id = $1)`, after.ID); n != 2 {
		t.Fatalf("%d orders, want 2 (one before, one for the key refused during the outage)", n)
	}
}

// TestAFrozenPostgresIsAnsweredForByTheDeadline: while PostgreSQL holds the API's statements
// without answering (its connections open, nothing coming back, as when it is stopped), the
// API still answers every request by its deadline, 503 with Retry-After, rather than leaving it
// waiting past the server's write timeout. Once PostgreSQL answers again the order whose
// create was held is placed once, and the retry with its key gets it.
func TestAFrozenPostgresIsAnsweredForByTheDeadline(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	item := s.item(50, 700)
	uid, customer := s.customer()
	base, proxy := s.apiOnProxiedDB(httpapi.Options{Deadline: 3 * time.Second}) // the first order calls Stripe too
	c := testenv.NewClient(t, base).As(customer.Token)
	body := map[string]any{"items": []map[string]any{{"itemId": item, "quantity": 1}}}
	c.Do("POST", "/v1/orders", body, "Idempotency-Key", uuid.NewString()).Expect(t, 201)

	proxy.Freeze()
	key := uuid.NewString()
	for _, r := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/orders", body}, {"GET", "/v1/orders/me", nil}, {"PATCH", "/v1/users/me", map[string]string{"name": "Renamed"}},
	} {
		resp := c.Do(r.method, r.path, r.body, "Idempotency-Key", key)
		resp.ExpectError(t, http.StatusServiceUnavailable, "common.errors.unavailable")
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
			t.Fatalf("%s %s: Retry-After %q", r.method, r.path, resp.Header.Get("Retry-After"))
		}
	}

	proxy.Thaw()
	// The held create may have taken its key and placed the order without hearing so (its
	// connection ended with its context): the key is then in use until its lease (30 s) runs
	// out, and the retry takes it over and finishes that order.
	testenv.Eventually(t, 45*time.Second, "the retry answered with the order", func() bool {
		resp := c.Do("POST", "/v1/orders", body, "Idempotency-Key", key)
		if resp.Status == http.StatusServiceUnavailable || resp.Status == http.StatusConflict { // still held, or finishing
			return false
		}
		resp.Expect(t, 201)
		return true
	})
	if n := s.count(`SELECT count(*) FROM orders WHERE user_id = $1`, uid); n != 2 {
		t.Fatalf("%d orders, want 2 (one before, one for the key held meanwhile)", n)
	}
}

// apiOnProxiedDB starts a second API whose database connections go through a proxy the test can
// cut or freeze, and returns its URL and the proxy.
func (s *stack) apiOnProxiedDB(opts httpapi.Options) (string, *testenv.TCPProxy) {
	s.t.Helper()
	db, proxy := testenv.PoolBehindProxy(s.t, s.dbURL, 8)
	api := httpapi.New(s.cfg, assembly.New(s.cfg, assembly.Infra{DB: db, Redis: s.rdb, Keys: s.keys, Log: s.log,
		Gateway: payment.NewStripe(s.cfg.StripeSecretKey, s.stripe.URL)}), opts)
	s.t.Cleanup(api.Close)
	hs := httptest.NewServer(api.Handler())
	s.t.Cleanup(hs.Close)
	s.t.Cleanup(proxy.Thaw) // first: closing the server waits for the requests the proxy holds
	return hs.URL, proxy
}

// TestWorkerOutlivesAPostgresOutage: while the worker cannot reach PostgreSQL, its tasks are not
// failed over it: the attempts go far past the retry budget without counting, no compensation
// runs (the paid order is not refunded for an outage), and once PostgreSQL is back the order is
// PROCESSED and each of its notifications written once.
func TestWorkerOutlivesAPostgresOutage(t *testing.T) {
	t.Parallel()
	s := newStack(t, noWorker)
	item := s.item(10, 700)
	uid, c := s.customer()
	o := s.order(c, 1, item)

	db, proxy := testenv.PoolBehindProxy(t, s.dbURL, 8)
	proxy.Cut()
	log := newTaskLog()
	w, err := worker.New(s.cfg, assembly.New(s.cfg, assembly.Infra{DB: db, Redis: s.rdb, Keys: s.keys, Log: s.log,
		Gateway: payment.NewStripe(s.cfg.StripeSecretKey, s.stripe.URL)}),
		worker.Options{Namespace: s.ns, RetryBase: 50 * time.Millisecond, DelayedInterval: 100 * time.Millisecond, Observe: log.observer()})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	s.pay(o)
	const budget = 3 // the relay's MaxRetry
	testenv.Eventually(t, 20*time.Second, "attempts past the retry budget", func() bool {
		return log.count(tasks.OrderProcess, "waited") > 3*budget && log.count(tasks.NotifyUser, "waited") > 3*budget
	})

	proxy.Restore(t)
	s.waitStatus(o.ID, "PROCESSED")
	for _, ev := range []string{notification.EventOrderCreated, notification.EventOrderPaid, notification.EventOrderProcessed} {
		testenv.Eventually(t, 30*time.Second, ev+" notification", func() bool { return s.notifications(uid, o.ID, ev) >= 1 })
	}
	testenv.Eventually(t, 30*time.Second, "the outbox empties", func() bool { return s.count(`SELECT count(*) FROM outbox`) == 0 })
	for _, ev := range []string{notification.EventOrderCreated, notification.EventOrderPaid, notification.EventOrderProcessed} {
		if n := s.notifications(uid, o.ID, ev); n != 1 {
			t.Errorf("%s notifications = %d, want 1", ev, n)
		}
	}
	if n := log.compensations(); n != 0 {
		t.Errorf("%d compensations ran for an outage, want none; %s", n, log)
	}
	if n := log.count(tasks.OrderProcess, "failed") + log.count(tasks.NotifyUser, "failed"); n != 0 {
		t.Errorf("%d attempts failed for good, want none; %s", n, log)
	}
	s.assertNoRepeatedTransition(o.ID)
}

// TestAStalledRedisLeavesTheAPIServing: a second API whose Redis stops answering without
// closing its connections (behind a proxy that holds every byte). Its breaker opens after the
// first calls time out; then every use of Redis is skipped and falls back: requests pass
// without rate-limit headers, items and identities come from the database, an order is placed
// and the item's stock read back current. When Redis answers again a trial closes the breaker
// and rate limits count again.
func TestAStalledRedisLeavesTheAPIServing(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	item := s.item(50, 700)
	_, customer := s.customer()

	proxied, proxy := testenv.BehindProxy(t, s.cfg.RedisURL)
	rdb, err := redisx.New(proxied)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Thaw(); rdb.Close() })
	breaker := redisx.FailFast(rdb, s.log)
	cfg := s.cfg
	cfg.RateLimitEnabled = true
	api := httpapi.New(cfg, assembly.New(cfg, assembly.Infra{DB: s.db, Redis: rdb, Keys: s.keys, Log: s.log,
		Gateway: payment.NewStripe(cfg.StripeSecretKey, s.stripe.URL)}), httpapi.Options{})
	t.Cleanup(api.Close)
	hs := httptest.NewServer(api.Handler())
	t.Cleanup(hs.Close)
	c := testenv.NewClient(t, hs.URL).As(customer.Token)
	stock := func() int64 {
		var it struct{ Stock int64 }
		c.Do("GET", "/v1/items/"+item.String(), nil).Expect(t, 200).Decode(t, &it)
		return it.Stock
	}
	if stock() != 50 { // cached through the proxy
		t.Fatal("stock before the stall")
	}

	proxy.Freeze()
	body := map[string]any{"items": []map[string]any{{"itemId": item, "quantity": 2}}}
	for i := 0; i < 3 && !breaker.Open(); i++ {
		c.Do("GET", "/v1/users/me", nil).Expect(t, 200)
	}
	if !breaker.Open() {
		t.Fatal("the breaker did not open on a stalled Redis")
	}
	for i := 0; i < 5; i++ {
		resp := c.Do("POST", "/v1/orders", body, "Idempotency-Key", uuid.NewString()).Expect(t, 201)
		if h := resp.Header.Get("X-RateLimit-Limit"); h != "" {
			t.Fatalf("rate-limit headers without a count: %q", h)
		}
		if got, want := stock(), int64(50-2*(i+1)); got != want {
			t.Fatalf("stock %d after %d orders, want %d", got, i+1, want)
		}
		c.Do("GET", "/v1/users/me", nil).Expect(t, 200)
	}

	proxy.Thaw()
	testenv.Eventually(t, 20*time.Second, "rate limits count again", func() bool {
		return c.Do("GET", "/v1/users/me", nil).Expect(t, 200).Header.Get("X-RateLimit-Limit") != ""
	})
	if breaker.Open() {
		t.Fatal("the breaker is still open with Redis answering")
	}
	if got := stock(); got != 40 {
		t.Fatalf("stock %d after the stall, want 40", got)
	}
}
