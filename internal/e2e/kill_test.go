package e2e_test

// Fault tests with the real programs (DESIGN, Testing): cmd/outbox-relay and cmd/worker are
// built, run against the test's database and a Redis logical database of the test's own (they
// use the production queue names and key prefix), and killed with SIGKILL mid-work. The
// database afterwards shows nothing lost and nothing done twice.

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/dispatchhq/dispatch/internal/assembly"
	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/outbox/relay"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/internal/worker"
)

// TestRelayProcessKilledMidDrain: a real relay drains a 5,000-row backlog and is killed with
// SIGKILL mid-drain, restarted, killed again, until one kill lands between a batch's enqueue
// and its commit (tasks in Redis whose rows are still in the outbox); the last restart drains
// the rest. An in-process worker consumes the same queues meanwhile. Every row produces exactly
// one task run and one notification.
func TestRelayProcessKilledMidDrain(t *testing.T) {
	t.Parallel()
	bin := buildCmd(t, "outbox-relay")
	db, dbURL := testenv.DB(t)
	redisURL, rdb := isolatedRedis(t)
	users := insertUsers(t, db, 5)
	const rows, batch = 5000, 100
	ids := writeNotifyBacklog(t, db, users, rows)

	// The consumer: a worker in this process on the relay's Redis database and queue names.
	log := newTaskLog()
	cfg := testenv.Config(t, config.Worker, dbURL, redisURL, "WORKER_CONCURRENCY", "20")
	w, err := worker.New(cfg, assembly.New(cfg, assembly.Infra{DB: db, Redis: rdb, Keys: redisx.Prefix("test:" + uuid.NewString()[:8] + ":"), Log: testLogger(), Gateway: payment.NewStripe(cfg.StripeSecretKey, testenv.StripeURL(t))}),
		worker.Options{Observe: log.observer(), RetryBase: 50 * time.Millisecond, DelayedInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	q := newQueues(t, rdb, "")

	startRelay := func() *testenv.Program {
		return startProc(t, "outbox-relay", bin, "APP_ENV=test", "DATABASE_URL="+dbURL, "REDIS_URL="+redisURL,
			"OPS_ADDR="+opsAddr(t), "OUTBOX_BATCH_SIZE="+strconv.Itoa(batch), "OUTBOX_POLL_INTERVAL=100ms", "LOG_LEVEL=warn")
	}
	backlog := func() int { // rows not handed off yet
		var n int
		if err := db.Get(&n, `SELECT count(*) FROM outbox WHERE deliveries = 0`); err != nil {
			t.Fatal(err)
		}
		return n
	}

	caught := false
	for kill := 1; kill <= 8 && !caught; kill++ {
		before := backlog()
		if before < 3*batch {
			break
		}
		p := startRelay()
		// Kill once it has committed at least one batch of this run: it is mid-drain.
		testenv.Eventually(t, 60*time.Second, "relay makes progress", func() bool {
			if !p.Running() {
				t.Fatalf("relay exited: %v\n%s", p.Err(), p.Output(4000))
			}
			return backlog() <= before-batch
		})
		p.Kill()
		left := backlog()
		if left == 0 {
			t.Fatalf("the relay drained the whole backlog before it was killed; make the backlog larger")
		}
		// The killed batch, if any, holds the lowest ids left: their tasks are in Redis while
		// their rows were rolled back.
		var lowest []int64
		if err := db.Select(&lowest, `SELECT id FROM outbox WHERE deliveries = 0 ORDER BY id LIMIT $1`, batch); err != nil {
			t.Fatal(err)
		}
		enqueued := 0
		for _, id := range lowest {
			if q.taskExists(tasks.QueueNotifications, relay.TaskID(id)) {
				enqueued++
			}
		}
		t.Logf("kill %d: %d rows left, %d of the lowest %d already enqueued", kill, left, enqueued, len(lowest))
		caught = enqueued > 0
	}
	if !caught {
		t.Fatal("no kill landed between a batch's enqueue and its commit")
	}

	startRelay() // the last restart drains the rest
	waitQuiet(t, db, q, 3*time.Minute)
	if got := log.count(tasks.NotifyUser, "success"); got != rows {
		t.Fatalf("notify:user tasks run = %d, want %d (one per row); %s", got, rows, log)
	}
	if archived := q.archived(tasks.QueueNotifications); len(archived) != 0 {
		t.Fatalf("%d notify tasks failed for good, e.g. %s", len(archived), archived[0].LastErr)
	}
	assertDeliveredOnce(t, db, ids)
}

// TestLongTaskOfALiveWorkerIsNotRunAgain: the relay runs again the tasks of a worker that fell
// silent (TestWorkerProcessKilledMidTask), and only those. A paid order's processing waits
// 35 s on the order's row, locked by the test, longer than the relay lets a silent task run
// (relay.RunAgainWithin), in a worker that keeps renewing its lease meanwhile: it runs once,
// in one attempt, and no copy is made.
func TestLongTaskOfALiveWorkerIsNotRunAgain(t *testing.T) {
	t.Parallel()
	s := newStack(t, noWorker)
	q := newQueues(t, s.rdb, s.ns)
	_, c := s.customer()
	o := s.order(c, 1, s.item(10, 500))
	s.pay(o)
	var row int64
	if err := s.db.Get(&row, `SELECT id FROM outbox WHERE type = $1`, tasks.OrderProcess); err != nil {
		t.Fatalf("no processing asked for: %v", err)
	}
	hold, err := s.db.Pool().BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback()
	if _, err := hold.Exec(`SELECT 1 FROM orders WHERE id = $1 FOR UPDATE`, o.ID); err != nil {
		t.Fatal(err)
	}

	s.startWorker(50 * time.Millisecond)
	task := relay.TaskID(row)
	firstAttempt := func() bool {
		ti, err := q.insp.GetTaskInfo(s.ns.Queue(tasks.QueueOrders), task)
		return err == nil && ti.State == asynq.TaskStateActive && ti.Retried == 0
	}
	testenv.Eventually(t, 30*time.Second, "the processing runs, held by the row lock", firstAttempt)
	time.Sleep(relay.RunAgainWithin + 10*time.Second) // the relay looks every 5 s meanwhile
	if !firstAttempt() {
		t.Fatalf("task %s is no longer in its first attempt while the row is held", task)
	}
	if err := hold.Rollback(); err != nil {
		t.Fatal(err)
	}

	s.waitStatus(o.ID, "PROCESSED")
	if n := s.transitions(o.ID, "PROCESSED"); n != 1 {
		t.Fatalf("transitions to PROCESSED = %d, want 1", n)
	}
	if q.taskExists(tasks.QueueOrders, task+"~") {
		t.Errorf("task %s, of a live worker, was run again", task)
	}
}

// insertUsers writes n customers directly (the relay test needs users to notify, no API).
func insertUsers(t *testing.T, db *postgres.DB, n int) []uuid.UUID {
	t.Helper()
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7())
		if _, err := db.Exec(`INSERT INTO users (id, name, email, password_hash, role) VALUES ($1, $2, $3, 'x', 'user')`,
			ids[i], "Customer "+strconv.Itoa(i), ids[i].String()+"@example.com"); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// TestWorkerProcessKilledMidTask: a real worker runs refunds and cancels of six paid orders;
// Stripe has received every refund call but holds the answers back when the worker is killed
// with SIGKILL. Once the tasks' Asynq leases go unrenewed the relay runs them again and a new worker
// process finishes them: every order ends REFUNDED or CANCELED with one transition, one refund
// row (all Stripe calls for it under one idempotency key), its stock back once and one
// notification.
func TestWorkerProcessKilledMidTask(t *testing.T) {
	t.Parallel()
	bin := buildCmd(t, "worker")
	s := newStack(t, noRelay, noWorker)
	redisURL, rdb := isolatedRedis(t)
	slow := newSlowStripe(t, s.stripe.URL, "POST", "/v1/refunds")
	s.startRelayWith(rdb, "", 100, 50*time.Millisecond, nil)
	q := newQueues(t, rdb, "")

	workerProc := func() *testenv.Program {
		addr := opsAddr(t)
		p := startProc(t, "worker", bin, "APP_ENV=test", "DATABASE_URL="+s.dbURL, "REDIS_URL="+redisURL,
			"OPS_ADDR="+addr, "STRIPE_API_BASE="+slow.URL, "WORKER_CONCURRENCY=10", "LOG_LEVEL=warn",
			"SHUTDOWN_TIMEOUT=2s")
		p.WaitReady(addr)
		return p
	}
	first := workerProc()

	const orders = 6
	item := s.item(100, 800)
	uid, c := s.customer()
	list := make([]orderView, orders)
	for i := range list {
		list[i] = s.order(c, 2, item)
		s.pay(list[i])
	}
	for _, o := range list {
		s.waitStatus(o.ID, "PROCESSED")
	}
	if got := s.stock(item); got != 100-2*orders {
		t.Fatalf("stock before the refunds = %d", got)
	}

	slow.delay.Store(int64(time.Minute))
	financial := s.staff("financial")
	final := map[uuid.UUID]string{}
	for i, o := range list {
		action, status := "refund", "REFUNDED"
		if i%2 == 1 {
			action, status = "cancel", "CANCELED"
		}
		financial.Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/"+action, map[string]string{"reason": "kill test"}).Expect(t, 202)
		final[o.ID] = status
	}
	// Every refund has reached Stripe and waits for its answer: the worker is mid-task.
	testenv.Eventually(t, 30*time.Second, "all refund calls in flight", func() bool {
		return int(slow.inflight.Load()) >= orders && len(s.refundCalls()) == orders
	})
	// Asynq's index of queues is gone too, as a Redis that restarted without its data leaves it
	// while the relay enqueues again (its client indexes a queue once): the relay still finds
	// the orphans.
	if err := rdb.Del(context.Background(), tasks.QueueIndex).Err(); err != nil {
		t.Fatal(err)
	}
	first.Kill()
	killed := time.Now()
	slow.delay.Store(0)
	for _, o := range list {
		if st, action := s.status(o.ID); st != "PROCESSED" || action == "" {
			t.Fatalf("order %s is %s (pending %q) right after the kill; the kill came too late", o.ID, st, action)
		}
	}

	workerProc()
	for _, o := range list {
		testenv.Eventually(t, 3*time.Minute, fmt.Sprintf("order %s reaches %s", o.ID, final[o.ID]), func() bool {
			st, action := s.status(o.ID)
			return st == final[o.ID] && action == ""
		})
	}
	t.Logf("the killed worker's tasks finished %s after the kill", time.Since(killed).Round(100*time.Millisecond))
	// They finished as the relay's copies of the orphaned tasks, not by Asynq's own recovery,
	// which waits longer; the originals stay orphaned until it runs them, to no effect (that
	// may come before the checks below on a slow run: only the copies are counted).
	// (Asynq marks a copy completed just after its handler returned.)
	for _, o := range list {
		typ := tasks.OrderRefund
		if final[o.ID] == "CANCELED" {
			typ = tasks.OrderCancel
		}
		var done []*asynq.TaskInfo
		copies := func() int {
			done = q.completed(tasks.QueueOrders, typ, o.ID.String())
			return len(slices.DeleteFunc(slices.Clone(done), func(ti *asynq.TaskInfo) bool { return !strings.HasSuffix(ti.ID, "~") }))
		}
		testenv.Eventually(t, 30*time.Second, "the relay's copy completes", func() bool { return copies() >= 1 })
		if n := copies(); n != 1 {
			t.Fatalf("order %s: completed %s tasks %v, want the relay's copy of the orphan, once", o.ID, typ, taskIDs(done))
		}
	}
	testenv.Eventually(t, time.Minute, "the outbox empties", func() bool { return s.count(`SELECT count(*) FROM outbox`) == 0 })

	calls := s.refundCalls()
	for _, o := range list {
		st := final[o.ID]
		if n := s.transitions(o.ID, st); n != 1 {
			t.Fatalf("order %s: transitions to %s = %d, want 1", o.ID, st, n)
		}
		s.assertNoRepeatedTransition(o.ID)
		if n := s.count(`SELECT count(*) FROM refunds WHERE order_id = $1`, o.ID); n != 1 {
			t.Fatalf("order %s: refund rows = %d, want 1", o.ID, n)
		}
		// The killed attempt's call and the recovered attempt's call: one refund at Stripe.
		if n := calls["order-"+o.ID.String()+"-refund"]; n < 2 {
			t.Fatalf("order %s: %d refund calls under its key, want the killed one and the retry (calls %v)", o.ID, n, calls)
		}
		ev := notification.EventOrderRefunded
		if st == "CANCELED" {
			ev = notification.EventOrderCanceled
		}
		s.waitNotified(uid, o.ID, ev)
		if n := s.notifications(uid, o.ID, ev); n != 1 {
			t.Fatalf("order %s: %s notifications = %d, want 1", o.ID, ev, n)
		}
	}
	if len(calls) != orders {
		t.Fatalf("refund calls under %d idempotency keys, want %d: %v", len(calls), orders, calls)
	}
	s.wantStock(item, 100, "each order's units back once")
	if archived := q.archived(tasks.QueueOrders); len(archived) != 0 {
		t.Fatalf("%d order tasks failed for good, e.g. %s", len(archived), archived[0].LastErr)
	}
}

func taskIDs(list []*asynq.TaskInfo) []string {
	ids := make([]string, len(list))
	for i, ti := range list {
		ids[i] = ti.ID
	}
	return ids
}
