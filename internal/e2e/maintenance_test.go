package e2e_test

// The periodic maintenance tasks with several workers (SPEC §5): the reconciler and the cleanup
// run once per period cluster-wide however many workers schedule them, and a reconciler run
// that overlaps another skips (the redsync lock). Also the reconciler's paging over many
// PENDING orders.

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/dispatchhq/dispatch/internal/assembly"
	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/internal/worker"
)

// TestMaintenanceOncePerPeriodWithTwoWorkers: two workers, each with its own scheduler (as
// cmd/worker runs one), on the same queues. The reconcile and cleanup tasks of a period run
// once in all, and do their work once: the order unpaid past ORDER_UNPAID_TTL (2 minutes here)
// and the orders without a PaymentIntent for 3 and 6 minutes are canceled once (one without a
// PaymentIntent for 1 minute is left alone), expired idempotency records and
// sessions are deleted, fresh ones stay. Enqueuing the period again, from either scheduler,
// is refused.
func TestMaintenanceOncePerPeriodWithTwoWorkers(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.pauseWorker() // the two workers below do the work
	item := r.item(10, 800)
	uid, c := r.customer()
	now := time.Now()
	unpaid := r.place(c, 1, item)
	r.setAge(unpaid.ID, now, 3*time.Minute)
	noIntent := r.orderWithoutIntent(c, uid, 1, item)
	r.setAge(noIntent, now, 6*time.Minute)
	fresh := r.place(c, 1, item)
	// Past the 2-minute TTL, not yet 5 minutes without a PaymentIntent: unpaid, so canceled.
	unpaidNoIntent := r.orderWithoutIntent(c, uid, 1, item)
	r.setAge(unpaidNoIntent, now, 3*time.Minute)
	youngNoIntent := r.orderWithoutIntent(c, uid, 1, item)
	r.setAge(youngNoIntent, now, time.Minute)
	if _, err := r.db.Exec(`INSERT INTO idempotency_keys (scope, method, path, key, fingerprint, state, created_at, expires_at) VALUES
		('anonymous', 'POST', '/v1/users', 'expired-key', '\x00', 'completed', now() - interval '25 hours', now() - interval '1 hour'),
		('anonymous', 'POST', '/v1/users', 'fresh-key', '\x00', 'completed', now() - interval '23 hours', now() + interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	oldSession, liveSession := uuid.New(), uuid.New()
	if _, err := r.db.Exec(`INSERT INTO sessions (id, user_id, refresh_token_hash, expires_at, revoked_at) VALUES
		($1, $3, '\x01', now() + interval '5 days', now() - interval '2 days'),
		($2, $3, '\x02', now() + interval '5 days', NULL)`, oldSession, liveSession, uid); err != nil {
		t.Fatal(err)
	}
	idemKeys := r.count(`SELECT count(*) FROM idempotency_keys`)

	// Two workers whose configuration sets ORDER_UNPAID_TTL=2m.
	cfg := testenv.Config(t, config.Worker, r.dbURL, r.cfg.RedisURL, "ORDER_UNPAID_TTL", "2m", "WORKER_CONCURRENCY", "4")
	logs := []*taskLog{newTaskLog(), newTaskLog()}
	for _, l := range logs {
		w, err := worker.New(cfg, assembly.New(cfg, assembly.Infra{DB: r.db, Redis: r.rdb, Keys: r.keys, Log: r.log, Gateway: payment.NewStripe(cfg.StripeSecretKey, r.stripe.URL)}),
			worker.Options{Namespace: r.ns, RetryBase: 50 * time.Millisecond, DelayedInterval: 100 * time.Millisecond, Observe: l.observer()})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		r.addStop(sync.OnceFunc(w.Shutdown))
	}
	runs := func(taskType, outcome string) int {
		return logs[0].count(taskType, outcome) + logs[1].count(taskType, outcome)
	}

	jobs := []worker.Periodic{{Type: tasks.ReconcilePayments, Every: time.Minute}, {Type: tasks.CleanupExpired, Every: time.Hour}}
	schedulers := []*worker.Scheduler{
		worker.NewScheduler(asynq.NewClientFromRedisClient(r.rdb), r.ns, r.log, jobs...),
		worker.NewScheduler(asynq.NewClientFromRedisClient(r.rdb), r.ns, r.log, jobs...),
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, sch := range schedulers {
		wg.Add(1)
		go func() { defer wg.Done(); sch.Run(ctx) }()
	}
	testenv.Eventually(t, 20*time.Second, "reconcile and cleanup ran", func() bool {
		return runs(tasks.ReconcilePayments, "success") >= 1 && runs(tasks.CleanupExpired, "success") >= 1
	})
	cancel()
	wg.Wait()
	r.waitStatus(unpaid.ID, "CANCELED")
	q := r.quiet()

	// Once per period: as many runs as periods with a task (two if the test straddled a
	// period's start), none failed.
	for _, job := range jobs {
		periods := map[string]bool{}
		for _, ti := range q.completed(tasks.QueueMaintenance, job.Type, "") {
			typ, unix, ok := strings.Cut(ti.ID, "@")
			if _, err := strconv.ParseInt(unix, 10, 64); !ok || typ != job.Type || err != nil {
				t.Fatalf("periodic task id %q", ti.ID)
			}
			periods[unix] = true
		}
		ran := runs(job.Type, "success")
		if ran != len(periods) || ran < 1 || ran > 2 {
			t.Fatalf("%s ran %d times (worker A %d, worker B %d) over %d periods, want once per period",
				job.Type, ran, logs[0].count(job.Type, "success"), logs[1].count(job.Type, "success"), len(periods))
		}
		if n := runs(job.Type, "failed") + runs(job.Type, "retry"); n != 0 {
			t.Fatalf("%s failed %d times", job.Type, n)
		}
		// Both schedulers trying the current period again: refused.
		var wins atomic.Int32
		parallel(10, func(i int) {
			ok, err := schedulers[i%2].Enqueue(context.Background(), job, time.Now())
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins.Add(1)
			}
		})
		if n := wins.Load(); n != 0 && !periodStartedMeanwhile(job, now) {
			t.Fatalf("%s: %d schedulers enqueued the current period's task again", job.Type, n)
		}
	}

	// The reconciler's work, done once.
	for _, id := range []uuid.UUID{unpaid.ID, noIntent, unpaidNoIntent} {
		if st, a := r.status(id); st != "CANCELED" || a != "" {
			t.Fatalf("order %s is %s/%s, want CANCELED", id, st, a)
		}
		if ev := r.events(id, "statusChanged", "PENDING", "CANCELED"); len(ev) != 1 || ev[0].Actor != order.ActorReconciler {
			t.Fatalf("order %s: PENDING→CANCELED events %s", id, mustJSON(ev))
		}
	}
	if req := r.events(unpaid.ID, "cancelRequested"); len(req) != 1 || deref(req[0].Reason) != "unpaid after 2m0s" {
		t.Fatalf("cancelRequested events %s, want one for the 2-minute TTL", mustJSON(req))
	}
	for id, want := range map[uuid.UUID]string{noIntent: "no payment intent after 5m0s", unpaidNoIntent: "unpaid after 2m0s"} {
		if ev := r.events(id, "statusChanged", "PENDING", "CANCELED"); deref(ev[0].Reason) != want {
			t.Fatalf("order %s canceled for %q, want %q", id, deref(ev[0].Reason), want)
		}
	}
	if cancels := r.intentCancels(unpaid); len(cancels) != 1 {
		t.Fatalf("PaymentIntent cancel calls %+v, want 1", cancels)
	}
	for _, id := range []uuid.UUID{fresh.ID, youngNoIntent} {
		if st, a := r.status(id); st != "PENDING" || a != "" || len(r.timeline(id)) != 1 {
			t.Fatalf("order %s is %s/%s with timeline %v, want untouched", id, st, a, r.timeline(id))
		}
	}
	r.wantStock(item, 8, "three orders released, two still reserved")

	// The cleanup's work.
	if n := r.count(`SELECT count(*) FROM idempotency_keys WHERE key = 'expired-key'`); n != 0 {
		t.Fatal("the expired idempotency record survived the cleanup")
	}
	if n := r.count(`SELECT count(*) FROM idempotency_keys`); n != idemKeys-1 {
		t.Fatalf("idempotency records = %d, want %d (only the expired one deleted)", n, idemKeys-1)
	}
	if n := r.count(`SELECT count(*) FROM sessions WHERE id = $1`, oldSession); n != 0 {
		t.Fatal("the session revoked two days ago survived the cleanup")
	}
	if n := r.count(`SELECT count(*) FROM sessions WHERE id = $1`, liveSession); n != 1 {
		t.Fatal("the cleanup deleted a live session")
	}
}

// periodStartedMeanwhile reports whether a new period of job began after start (then one
// enqueue of that period is legitimate).
func periodStartedMeanwhile(job worker.Periodic, start time.Time) bool {
	return !time.Now().Truncate(job.Every).Equal(start.Truncate(job.Every))
}

// TestOverlappingReconcilerRunSkips: while one reconciler run holds the cluster-wide lock (its
// Stripe lookup held back), a run on another worker skips at once without looking at any
// order; once the first run ends the lock is free and the next run goes ahead.
func TestOverlappingReconcilerRunSkips(t *testing.T) {
	t.Parallel()
	s := newStack(t, noRelay, noWorker)
	item := s.item(10, 1200)
	_, c := s.customer()
	o := s.order(c, 1, item)
	pi := *o.Payment.PaymentIntentID
	s.setAge(o.ID, time.Now(), 12*time.Minute) // worker.Reconcile runs at the real clock
	s.stripeIntent(pi, payment.IntentSucceeded, o.Total, o.Currency)
	slow := newSlowStripe(t, s.stripe.URL, "GET", "/v1/payment_intents/")
	slow.delay.Store(int64(time.Minute))
	t.Cleanup(func() { slow.delay.Store(0) })

	policy := order.DefaultReconcilePolicy(s.cfg.OrderUnpaidTTL)
	lockKey := s.keys.Key("lock", "reconcile")
	run := func(stripeURL string) (func(context.Context) error, *testenv.Buffer) {
		rec := s.reconciler(stripeURL)
		log := logging.New("worker", slog.LevelDebug, "json", rec.log)
		return worker.Reconcile(rec.orders, s.rdb, redsync.New(goredis.NewPool(s.rdb)), s.keys, policy, log), rec.log
	}
	runA, logA := run(slow.URL)
	runB, logB := run(s.stripe.URL)

	doneA := make(chan error, 1)
	go func() { doneA <- runA(context.Background()) }()
	// In flight at the slow proxy, and answered behind it: the Stripe proxy records a call once
	// stripe-mock answered it, after the slow proxy counted it.
	testenv.Eventually(t, 30*time.Second, "the first run is waiting on Stripe", func() bool {
		return slow.inflight.Load() == 1 && s.intentLookups(pi) == 1
	})
	// Held for a short while at a time, so a worker killed during a run does not make the next
	// minute's run skip.
	if ttl, err := s.rdb.PTTL(context.Background(), lockKey).Result(); err != nil || ttl <= 0 || ttl > 15*time.Second {
		t.Fatalf("reconcile lock %s expires in %s (%v) while a run holds it, want within 15 s", lockKey, ttl, err)
	}

	if err := runB(context.Background()); err != nil {
		t.Fatalf("overlapping run: %v", err)
	}
	if len(jsonLines(logB.String(), "reconciler already running elsewhere; skipped")) != 1 || len(jsonLines(logB.String(), "reconciler run")) != 0 {
		t.Fatalf("the overlapping run did not skip:\n%s", logB)
	}
	select {
	case err := <-doneA:
		t.Fatalf("the first run ended (%v) while its Stripe answer was held", err)
	default:
	}
	if n := s.intentLookups(pi); n != 1 {
		t.Fatalf("PaymentIntent looked up %d times, want 1 (the first run's only)", n)
	}
	if st, _ := s.status(o.ID); st != "PENDING" {
		t.Fatalf("order %s while the first run waits", st)
	}

	slow.delay.Store(0)
	if err := <-doneA; err != nil {
		t.Fatalf("first run: %v", err)
	}
	if st, _ := s.status(o.ID); st != "PAID" {
		t.Fatalf("order %s after the first run, want PAID", st)
	}
	done := jsonLines(logA.String(), "reconciler run")
	if len(done) != 1 || done[0]["paid"] != float64(1) || done[0]["checked"] != float64(1) {
		t.Fatalf("first run's report: %v", done)
	}
	if n, err := s.rdb.Exists(context.Background(), lockKey).Result(); err != nil || n != 0 {
		t.Fatalf("reconcile lock exists = %d (%v) after the run, want released", n, err)
	}

	// The lock is free: the next run goes ahead (and finds nothing left to do).
	if err := runB(context.Background()); err != nil {
		t.Fatal(err)
	}
	next := jsonLines(logB.String(), "reconciler run")
	if len(next) != 1 || next[0]["checked"] != float64(0) {
		t.Fatalf("the run after the lock was released: %v\n%s", next, logB)
	}
	if n := s.transitions(o.ID, "PAID"); n != 1 {
		t.Fatalf("PAID entered %d times, want 1", n)
	}
}

// TestReconcilerPagesThroughManyOrders: more PENDING orders than one page (500), created in
// groups of 300 sharing one created_at so that the page boundary falls inside a tie: every
// order is reconciled exactly once.
func TestReconcilerPagesThroughManyOrders(t *testing.T) {
	t.Parallel()
	db, dbURL := testenv.DB(t)
	rdb, keys, redisURL := testenv.Redis(t)
	cfg := testenv.Config(t, config.Worker, dbURL, redisURL)
	user := insertUsers(t, db, 1)[0]
	now := time.Now()
	const orders = 501
	if _, err := db.Exec(`INSERT INTO orders (id, user_id, status, total, currency, created_at)
		SELECT gen_random_uuid(), $1, 'PENDING', 100, 'usd', $2::timestamptz - (g / 300) * interval '1 second'
		FROM generate_series(1, $3::int) g`, user, now.Add(-time.Hour), orders); err != nil {
		t.Fatal(err)
	}
	// 16 items shared round robin, so that stock releases do not all queue on one row.
	if _, err := db.Exec(`INSERT INTO items (id, name, description, price, currency, stock)
		SELECT gen_random_uuid(), 'Paged item ' || g, 'x', 100, 'usd', 0 FROM generate_series(1, 16) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO payments (order_id, status) SELECT id, 'pending' FROM orders`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO order_lines (id, order_id, position, item_id, name, unit_price, quantity, subtotal)
		SELECT gen_random_uuid(), o.id, 0, i.id, i.name, 100, 1, 100
		FROM (SELECT id, row_number() OVER (ORDER BY id) % 16 AS k FROM orders) o
		JOIN (SELECT id, name, row_number() OVER (ORDER BY id) - 1 AS k FROM items) i USING (k)`); err != nil {
		t.Fatal(err)
	}
	a := assembly.New(cfg, assembly.Infra{DB: db, Redis: rdb, Keys: keys, Log: logging.Discard(),
		Gateway: payment.NewStripe(cfg.StripeSecretKey, testenv.StripeURL(t))})
	rep, err := a.Orders.Reconcile(context.Background(), now, order.DefaultReconcilePolicy(cfg.OrderUnpaidTTL), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (order.ReconcileReport{Checked: orders, Canceled: orders}); rep != want {
		t.Fatalf("report %+v, want %+v", rep, want)
	}
	var counts struct {
		Pending  int `db:"pending"`
		Canceled int `db:"canceled"`
		Events   int `db:"events"`
		Distinct int `db:"distinct_orders"`
	}
	if err := db.Get(&counts, `SELECT
		(SELECT count(*) FROM orders WHERE status = 'PENDING') AS pending,
		(SELECT count(*) FROM orders WHERE status = 'CANCELED') AS canceled,
		(SELECT count(*) FROM order_events WHERE to_status = 'CANCELED') AS events,
		(SELECT count(DISTINCT order_id) FROM order_events WHERE to_status = 'CANCELED') AS distinct_orders`); err != nil {
		t.Fatal(err)
	}
	if counts.Pending != 0 || counts.Canceled != orders || counts.Events != orders || counts.Distinct != orders {
		t.Fatalf("after one run: %+v, want every order canceled once", counts)
	}
	var stock int
	if err := db.Get(&stock, `SELECT sum(stock) FROM items`); err != nil {
		t.Fatal(err)
	}
	if stock != orders {
		t.Fatalf("stock = %d, want %d (each order's unit released once)", stock, orders)
	}
}

// TestReconcilerPositionIsKeptBetweenRuns: a bounded run leaves its position in Redis; the next
// run, on any worker, resumes there, and the run that reaches the end clears it.
func TestReconcilerPositionIsKeptBetweenRuns(t *testing.T) {
	t.Parallel()
	s := newStack(t, noRelay, noWorker)
	item := s.item(10, 1200)
	_, c := s.customer()
	var intents []string
	for range 3 {
		o := s.order(c, 1, item)
		s.setAge(o.ID, time.Now(), 12*time.Minute) // looked up, still unpaid
		intents = append(intents, *o.Payment.PaymentIntentID)
	}
	policy := order.DefaultReconcilePolicy(s.cfg.OrderUnpaidTTL)
	policy.MaxOrders = 2
	cursor := s.keys.Key("reconcile", "cursor")
	run := func() map[string]any {
		t.Helper()
		rec := s.reconciler()
		log := logging.New("worker", slog.LevelDebug, "json", rec.log)
		if err := worker.Reconcile(rec.orders, s.rdb, redsync.New(goredis.NewPool(s.rdb)), s.keys, policy, log)(context.Background()); err != nil {
			t.Fatal(err)
		}
		lines := jsonLines(rec.log.String(), "reconciler run")
		if len(lines) != 1 {
			t.Fatalf("reconciler run lines: %v", lines)
		}
		return lines[0]
	}

	first := run()
	if first["checked"] != float64(2) || first["finished"] != false || first["resumed"] != false {
		t.Fatalf("first run: %v, want 2 checked, not finished", first)
	}
	if ttl, err := s.rdb.TTL(context.Background(), cursor).Result(); err != nil || ttl <= 0 {
		t.Fatalf("position %s after a bounded run: ttl %s, %v; want kept with a TTL", cursor, ttl, err)
	}
	second := run()
	if second["checked"] != float64(1) || second["finished"] != true || second["resumed"] != true {
		t.Fatalf("second run: %v, want the last order checked, resumed, finished", second)
	}
	if n, _ := s.rdb.Exists(context.Background(), cursor).Result(); n != 0 {
		t.Fatal("position kept after a run that reached the end")
	}
	for _, pi := range intents {
		if n := s.intentLookups(pi); n != 1 {
			t.Errorf("PaymentIntent %s looked up %d times over two runs, want 1", pi, n)
		}
	}
}
