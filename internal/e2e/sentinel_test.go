package e2e_test

// Redis high availability: the real API, relay and worker run on a Redis master found through
// three sentinels (REDIS_URL=redis-sentinel://…). The master is killed with SIGKILL in the
// middle of a pipeline load (orders created and paid); the sentinels promote the replica and
// every program follows. Afterwards every paid order is PROCESSED exactly once, no order is
// lost or created twice, and no request got a 5xx other than 503. The times to recover are
// logged (docs/redis-ha.md quotes them).

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// sentinelMaster is the name the sentinels of the test monitor the master under.
const sentinelMaster = "dispatch"

// sentinelRedis is a master, its replica and three sentinels, processes of the test's own.
type sentinelRedis struct {
	t         *testing.T
	master    *testenv.RedisServer
	replica   *testenv.RedisServer
	sentinels []*testenv.RedisServer
}

// startSentinelRedis starts the servers and waits until the replica is in sync and every
// sentinel knows the replica and the two other sentinels (a failover needs a majority of them).
func startSentinelRedis(t *testing.T) *sentinelRedis {
	t.Helper()
	r := &sentinelRedis{t: t, master: testenv.StartRedisServer(t, "redis-master")}
	r.replica = testenv.StartRedisServer(t, "redis-replica", fmt.Sprintf("replicaof 127.0.0.1 %d", r.master.Port))
	// Down after 2 s (a loaded machine can keep a live master from answering for one); an
	// election that fails (a split vote) is tried again after twice the failover timeout.
	for i := 1; i <= 3; i++ {
		r.sentinels = append(r.sentinels, testenv.StartRedisSentinel(t, fmt.Sprintf("sentinel-%d", i),
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2", sentinelMaster, r.master.Port),
			"sentinel down-after-milliseconds "+sentinelMaster+" 2000",
			"sentinel failover-timeout "+sentinelMaster+" 4000",
			"sentinel parallel-syncs "+sentinelMaster+" 1"))
	}
	ctx := context.Background()
	replica := r.replica.Client()
	testenv.Eventually(t, 20*time.Second, "the replica is in sync", func() bool {
		info, err := replica.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	for _, s := range r.sentinels {
		c := s.Client()
		testenv.Eventually(t, 20*time.Second, s.Addr()+" knows the replica and the other sentinels", func() bool {
			peers, err := c.Do(ctx, "SENTINEL", "sentinels", sentinelMaster).Slice()
			if err != nil || len(peers) != 2 {
				return false
			}
			replicas, err := c.Do(ctx, "SENTINEL", "replicas", sentinelMaster).Slice()
			return err == nil && len(replicas) == 1
		})
	}
	return r
}

// URL is the REDIS_URL of the programs: the three sentinels and the master's name.
func (r *sentinelRedis) URL() string {
	addrs := make([]string, len(r.sentinels))
	for i, s := range r.sentinels {
		addrs[i] = s.Addr()
	}
	return "redis-sentinel://" + strings.Join(addrs, ",") + "/0?master=" + sentinelMaster
}

// masterPort is the master's port as the first sentinel that answers names it (0 if none).
func (r *sentinelRedis) masterPort() string {
	for _, s := range r.sentinels {
		addr, err := s.Client().Do(context.Background(), "SENTINEL", "get-master-addr-by-name", sentinelMaster).StringSlice()
		if err == nil && len(addr) == 2 {
			return addr[1]
		}
	}
	return ""
}

// pipelineLoad places and pays orders from several customers until stopped. A request that
// gets 503 is sent again with the same Idempotency-Key (or webhook event) until it passes,
// as a client following Retry-After would; any other 5xx is recorded.
type pipelineLoad struct {
	mu       sync.Mutex
	paidAt   map[uuid.UUID]time.Time
	statuses map[string]int // "route status" → count
	failures []string
}

func (l *pipelineLoad) record(route string, status int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.statuses[fmt.Sprintf("%s %d", route, status)]++
	if status >= 500 && status != http.StatusServiceUnavailable {
		l.failures = append(l.failures, fmt.Sprintf("%s answered %d", route, status))
	}
}

func (l *pipelineLoad) fail(format string, args ...any) {
	l.mu.Lock()
	l.failures = append(l.failures, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

// untilNot503 sends a request until it gets an answer other than 503 or the deadline passes.
func (l *pipelineLoad) untilNot503(route string, deadline time.Time, do func() (testenv.Response, error)) (testenv.Response, bool) {
	for time.Now().Before(deadline) {
		resp, err := do()
		if err != nil {
			l.fail("%s: %v", route, err)
			return resp, false
		}
		l.record(route, resp.Status)
		if resp.Status != http.StatusServiceUnavailable {
			return resp, true
		}
		time.Sleep(100 * time.Millisecond)
	}
	l.fail("%s: still 503 at the deadline", route)
	return testenv.Response{}, false
}

// run places and pays orders of one unit of item as customer c until stop is closed.
func (l *pipelineLoad) run(c *testenv.Client, item uuid.UUID, webhookSecret string, stop <-chan struct{}) {
	body := map[string]any{"items": []map[string]any{{"itemId": item, "quantity": 1}}}
	for {
		select {
		case <-stop:
			return
		default:
		}
		deadline := time.Now().Add(30 * time.Second)
		key := uuid.NewString()
		resp, ok := l.untilNot503("POST /v1/orders", deadline, func() (testenv.Response, error) {
			return c.Send("POST", "/v1/orders", body, "Idempotency-Key", key)
		})
		if !ok || resp.Status != http.StatusCreated {
			l.fail("order not created: %d %s", resp.Status, resp.Body)
			return
		}
		var o orderView
		if err := jsonErr(nil, resp.Body, &o); err != nil || o.Payment.PaymentIntentID == nil {
			l.fail("created order: %v %s", err, resp.Body)
			return
		}
		event := payment.TestEvent{ID: eventID(), Type: payment.EventIntentSucceeded, PaymentIntentID: *o.Payment.PaymentIntentID,
			OrderID: o.ID.String(), Amount: o.Total, Currency: o.Currency}.Build()
		resp, ok = l.untilNot503("POST /stripe/webhook", deadline, func() (testenv.Response, error) {
			return c.Send("POST", "/stripe/webhook", event, "Stripe-Signature", payment.Sign(event, webhookSecret, time.Now()))
		})
		if !ok || resp.Status != http.StatusOK {
			l.fail("payment of %s not accepted: %d %s", o.ID, resp.Status, resp.Body)
			return
		}
		l.mu.Lock()
		l.paidAt[o.ID] = time.Now()
		l.mu.Unlock()
	}
}

func TestRedisSentinelFailoverUnderLoad(t *testing.T) {
	t.Parallel()
	start := time.Now()
	bins := testenv.BuildCommands(t, "api", "outbox-relay", "worker")
	t.Logf("programs built in %s", time.Since(start).Round(100*time.Millisecond))
	redis := startSentinelRedis(t)
	db, dbURL := testenv.DB(t)
	stripe := testenv.NewStripeProxy(t, testenv.StripeURL(t))
	apiAddr, apiOps, relayOps, workerOps := opsAddr(t), opsAddr(t), opsAddr(t), opsAddr(t)
	env := func(extra ...string) []string {
		return programEnv(dbURL, redis.URL(), stripe.URL, append([]string{
			// The rate limiter is on, with room for the load, so that it too runs through the failover.
			"RATE_LIMIT_ENABLED=true", "RATE_LIMITS=login=1000,session=1000,create=100000,default=100000",
			// Tasks the old master acknowledged but never passed to the replica come back soon.
			"OUTBOX_REDELIVER_AFTER=3s", "OUTBOX_POLL_INTERVAL=100ms", "WORKER_CONCURRENCY=8", "SHUTDOWN_TIMEOUT=2s",
		}, extra...)...)
	}
	api := startProc(t, "api", bins["api"], env("HTTP_ADDR="+apiAddr, "OPS_ADDR="+apiOps)...)
	api.WaitReady(apiAddr)
	relay := startProc(t, "outbox-relay", bins["outbox-relay"], env("OPS_ADDR="+relayOps)...)
	relay.WaitReady(relayOps)
	wrk := startProc(t, "worker", bins["worker"], env("OPS_ADDR="+workerOps)...)
	wrk.WaitReady(workerOps)

	base := testenv.NewClient(t, "http://"+apiAddr)
	login := func(email, password string) *testenv.Client {
		var pair struct{ AccessToken string }
		base.Do("POST", "/v1/auth/login", map[string]string{"email": email, "password": password}).Expect(t, 200).Decode(t, &pair)
		return base.As(pair.AccessToken)
	}
	admin := login("admin@dispatch.local", demo.Password)
	var item struct{ ID uuid.UUID }
	admin.Do("POST", "/v1/admin/items", map[string]any{"name": "HA item", "description": "x", "price": 1000, "stock": 100000},
		"Idempotency-Key", uuid.NewString()).Expect(t, 201).Decode(t, &item)
	const customers = 4
	clients := make([]*testenv.Client, customers)
	userIDs := make([]uuid.UUID, customers)
	for i := range clients {
		email := "ha-" + uuid.NewString()[:8] + "@example.com"
		var u struct{ ID uuid.UUID }
		base.Do("POST", "/v1/users", map[string]any{"name": "HA Customer", "email": email, "password": "password123"},
			"Idempotency-Key", uuid.NewString()).Expect(t, 201).Decode(t, &u)
		userIDs[i], clients[i] = u.ID, login(email, "password123")
	}

	// The load, with the master killed once it has run a while.
	load := &pipelineLoad{paidAt: map[uuid.UUID]time.Time{}, statuses: map[string]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); load.run(c, item.ID, config.DefaultStripeWebhookSecret, stop) }()
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad)
	testenv.Eventually(t, 30*time.Second, "orders processed before the kill", func() bool {
		return countProcessed(t, db, userIDs) >= 20
	})
	oldPort := redis.masterPort()
	redis.master.Kill()
	killed := time.Now()

	// The sentinels promote the replica; the programs' readiness checks pass again on it.
	testenv.Eventually(t, 45*time.Second, "the sentinels name a new master", func() bool {
		p := redis.masterPort()
		return p != "" && p != oldPort
	})
	promoted := time.Since(killed)
	if got := redis.masterPort(); got != fmt.Sprint(redis.replica.Port) {
		t.Fatalf("the sentinels name port %s as master, want the replica's %d", got, redis.replica.Port)
	}
	testenv.Eventually(t, 30*time.Second, "api, relay and worker ready on the new master", func() bool {
		return ready(apiAddr) && ready(relayOps) && ready(workerOps)
	})
	allReady := time.Since(killed)
	// An order paid after the kill goes through the new master to PROCESSED.
	var firstAfter time.Duration
	testenv.Eventually(t, 30*time.Second, "an order paid after the kill is processed", func() bool {
		at, ok := firstProcessedPaidAfter(t, db, load, killed)
		firstAfter = at
		return ok
	})
	time.Sleep(2 * time.Second) // a little more load on the new master
	stopLoad()
	load.mu.Lock()
	paid := len(load.paidAt)
	failures := append([]string(nil), load.failures...)
	statuses := mapsClone(load.statuses)
	load.mu.Unlock()
	if len(failures) > 0 {
		t.Fatalf("%d requests failed during the failover, e.g. %s; statuses %v", len(failures), failures[0], statuses)
	}

	// Everything converges: the outbox drains, every paid order is PROCESSED.
	testenv.Eventually(t, 45*time.Second, "every paid order processed and the outbox empty", func() bool {
		return countProcessed(t, db, userIDs) == paid && countRows(t, db, `SELECT count(*) FROM outbox`) == 0
	})
	converged := time.Since(killed)

	// Exactly once: one order per accepted create, one transition to each status, one
	// notification of each kind.
	ids := make([]uuid.UUID, 0, paid)
	for id := range load.paidAt {
		ids = append(ids, id)
	}
	if n := countRows(t, db, `SELECT count(*) FROM orders WHERE user_id = ANY($1)`, uuidArray(userIDs)); n != paid {
		t.Errorf("%d orders for %d paid ones: an order was created twice or lost", n, paid)
	}
	if n := countRows(t, db, `SELECT count(*) FROM orders WHERE id = ANY($1) AND status = 'PROCESSED' AND pending_action IS NULL`, uuidArray(ids)); n != paid {
		t.Errorf("%d of %d paid orders PROCESSED", n, paid)
	}
	if n := countRows(t, db, `SELECT count(*) FROM (SELECT order_id, to_status FROM order_events WHERE order_id = ANY($1)
		AND type = 'statusChanged' GROUP BY order_id, to_status HAVING count(*) > 1) d`, uuidArray(ids)); n != 0 {
		t.Errorf("%d order statuses were entered twice", n)
	}
	for _, ev := range []string{"order.created", "order.paid", "order.processed"} {
		if n := countRows(t, db, `SELECT count(DISTINCT data->>'orderId') FROM notifications WHERE event = $1 AND data->>'orderId' = ANY($2)`,
			ev, uuidStrings(ids)); n != paid {
			t.Errorf("%d of %d orders have an %s notification", n, paid, ev)
		}
		if n := countRows(t, db, `SELECT count(*) FROM (SELECT data->>'orderId' FROM notifications WHERE event = $1
			AND data->>'orderId' = ANY($2) GROUP BY 1 HAVING count(*) > 1) d`, ev, uuidStrings(ids)); n != 0 {
			t.Errorf("%d orders have a duplicate %s notification", n, ev)
		}
	}

	// The API's own Redis users are on the new master: the rate limiter counts there, the
	// item cache fills there, and a logout's denylist entry lands there and is honoured.
	newMaster := redis.replica.Client()
	ctx := context.Background()
	clients[0].Do("GET", "/v1/items/"+item.ID.String(), nil).Expect(t, 200)
	clients[0].Do("GET", "/v1/items/"+item.ID.String(), nil).Expect(t, 200)
	for _, pattern := range []string{"dispatch:ratelimit:*", "dispatch:items:public:*"} {
		if keys, err := newMaster.Keys(ctx, pattern).Result(); err != nil || len(keys) == 0 {
			t.Errorf("no %s keys on the new master (%v)", pattern, err)
		}
	}
	denied := func() int64 {
		n, err := newMaster.ZCard(ctx, "dispatch:denylist").Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := denied()
	clients[1].Do("POST", "/v1/auth/logout", nil).Expect(t, 204)
	if denied() != before+1 {
		t.Errorf("the logout's denylist entry is not on the new master")
	}
	clients[1].Do("GET", "/v1/orders/me", nil).Expect(t, 401)

	t.Logf("failover under load: %d orders paid (%v); master killed → sentinels promote the replica %s, "+
		"api/relay/worker ready %s, first order paid after the kill PROCESSED %s, all %d converged %s",
		paid, statuses, promoted.Round(10*time.Millisecond), allReady.Round(10*time.Millisecond),
		firstAfter.Round(10*time.Millisecond), paid, converged.Round(10*time.Millisecond))
}

// ready reports whether GET http://addr/ready answers 200.
func ready(addr string) bool {
	resp, err := http.Get("http://" + addr + "/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func countRows(t *testing.T, db *postgres.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Get(&n, query, args...); err != nil {
		t.Fatal(err)
	}
	return n
}

// countProcessed counts the users' PROCESSED orders.
func countProcessed(t *testing.T, db *postgres.DB, users []uuid.UUID) int {
	return countRows(t, db, `SELECT count(*) FROM orders WHERE status = 'PROCESSED' AND user_id = ANY($1)`, uuidArray(users))
}

// firstProcessedPaidAfter is how long after killed the first order paid after killed reached
// PROCESSED (its task went through the new master), and whether one has.
func firstProcessedPaidAfter(t *testing.T, db *postgres.DB, l *pipelineLoad, killed time.Time) (time.Duration, bool) {
	l.mu.Lock()
	var after []uuid.UUID
	for id, at := range l.paidAt {
		if at.After(killed) {
			after = append(after, id)
		}
	}
	l.mu.Unlock()
	if len(after) == 0 {
		return 0, false
	}
	var at *time.Time
	if err := db.Get(&at, `SELECT min(created_at) FROM order_events WHERE type = 'statusChanged' AND to_status = 'PROCESSED'
		AND order_id = ANY($1)`, uuidArray(after)); err != nil {
		t.Fatal(err)
	}
	if at == nil {
		return 0, false
	}
	return at.Sub(killed), true
}

func uuidStrings(ids []uuid.UUID) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	return "{" + strings.Join(s, ",") + "}"
}

func mapsClone(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
