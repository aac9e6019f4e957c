package worker

// The worker's policy (SPEC §5, DESIGN convention 5): one registry covering every task type a
// producer can emit, exact task names, no retry for what a retry cannot fix, retries then one
// compensation for the rest, and one periodic task per period cluster-wide. Real PostgreSQL
// and Redis; Asynq queues under a namespace of each test's own.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/assembly"
	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// newTestWorker wires the production worker (strategies and all) on a test database.
func newTestWorker(t *testing.T) *Worker {
	t.Helper()
	db, dbURL := testenv.DB(t)
	rdb, keys, redisURL := testenv.Redis(t)
	cfg := testenv.Config(t, config.Worker, dbURL, redisURL)
	a := assembly.New(cfg, assembly.Infra{DB: db, Redis: rdb, Keys: keys, Log: logging.Discard(),
		Gateway: payment.NewStripe(cfg.StripeSecretKey, testenv.StripeURL(t))})
	w, err := New(cfg, a, Options{Namespace: testenv.Namespace(t, rdb, "wt")})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestRegistryHandlesEveryTaskType(t *testing.T) {
	t.Parallel()
	reg := newTestWorker(t).Runner.reg
	types := tasks.Types()
	if len(types) == 0 {
		t.Fatal("tasks.Types() is empty")
	}
	for _, typ := range types {
		s, ok := reg[typ]
		if !ok || s.Run == nil {
			t.Errorf("task type %q has no strategy", typ)
		}
		if _, ok := tasks.QueueOf(typ); !ok {
			t.Errorf("task type %q has no queue", typ)
		}
	}
	for typ := range reg {
		if _, ok := tasks.QueueOf(typ); !ok {
			t.Errorf("strategy for %q, a type no producer emits", typ)
		}
	}
	if len(reg) != len(types) {
		t.Errorf("%d strategies for %d task types", len(reg), len(types))
	}
	// The order strategies hold the order's lock and compensate when their retries run out;
	// the Stripe customer syncs of one user run one at a time, so that they reach Stripe in order.
	for _, typ := range []string{tasks.OrderProcess, tasks.OrderCancel, tasks.OrderRefund} {
		if reg[typ].Lock == nil || reg[typ].Compensate == nil {
			t.Errorf("%s: lock %v, compensation %v; want both", typ, reg[typ].Lock != nil, reg[typ].Compensate != nil)
		}
		id := uuid.New()
		raw, _ := json.Marshal(tasks.Order{OrderID: id})
		if got := reg[typ].Lock(Task{Type: typ, Envelope: tasks.Envelope{Data: raw}}); got != (Subject{"order", id.String()}) {
			t.Errorf("%s locks %v, want order %s", typ, got, id)
		}
	}
	for _, typ := range []string{tasks.CustomerCreate, tasks.CustomerUpdate, tasks.CustomerDelete} {
		id := uuid.New()
		raw, _ := json.Marshal(tasks.Customer{UserID: id})
		if reg[typ].Lock == nil {
			t.Errorf("%s holds no lock", typ)
		} else if got := reg[typ].Lock(Task{Type: typ, Envelope: tasks.Envelope{Data: raw}}); got != (Subject{"user", id.String()}) {
			t.Errorf("%s locks %v, want user %s", typ, got, id)
		}
	}
	if reg[tasks.NotifyUser].Lock != nil {
		t.Errorf("%s holds a lock: notifications of one user need no order", tasks.NotifyUser)
	}
}

func TestCheckRefusesAMissingOrUnknownStrategy(t *testing.T) {
	t.Parallel()
	full := newTestWorker(t).Runner.reg
	if err := Check(full); err != nil {
		t.Fatalf("the production registry fails its check: %v", err)
	}
	locks := redsync.New(goredis.NewPool(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})))
	for _, typ := range tasks.Types() {
		reg := make(map[string]Strategy, len(full))
		for k, v := range full {
			if k != typ {
				reg[k] = v
			}
		}
		err := Check(reg)
		if err == nil || !strings.Contains(err.Error(), typ) {
			t.Errorf("Check without %q: %v, want an error naming it", typ, err)
		}
		if _, err := NewRunner(reg, locks, "", logging.Discard()); err == nil {
			t.Errorf("NewRunner accepted a registry without %q", typ)
		}
	}
	reg := make(map[string]Strategy, len(full)+1)
	for k, v := range full {
		reg[k] = v
	}
	reg["order:archive"] = Strategy{Run: func(context.Context, Task) error { return nil }}
	if err := Check(reg); err == nil || !strings.Contains(err.Error(), "order:archive") {
		t.Errorf("Check with a strategy of an unknown type: %v, want an error naming it", err)
	}
}

// recorder is a strategy that counts its runs and compensations and fails as told.
type recorder struct {
	runs, compensations atomic.Int32
	fail                func(attempt int32) error
	compensate          func() error // nil: the compensation succeeds
	outlast             bool         // runs until the task's time is up
}

func (r *recorder) strategy() Strategy {
	return Strategy{
		Lock: orderOf,
		Run: func(ctx context.Context, t Task) error {
			var p tasks.Order
			if err := t.Decode(&p); err != nil {
				return err
			}
			n := r.runs.Add(1)
			if r.outlast {
				<-ctx.Done()
				return ctx.Err()
			}
			if r.fail != nil {
				return r.fail(n)
			}
			return nil
		},
		Compensate: func(ctx context.Context, _ Task, _ error) (bool, error) {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			r.compensations.Add(1)
			if r.compensate != nil {
				if err := r.compensate(); err != nil {
					return false, err
				}
			}
			return true, nil
		},
	}
}

// policyRig is a Runner whose order:process, order:cancel, order:refund and cleanup:expired (a
// periodic task) are recorders, on a real Asynq server with fast retries, all on the orders
// queue.
type policyRig struct {
	client   *asynq.Client
	insp     *asynq.Inspector
	ns       tasks.Namespace
	rec      map[string]*recorder
	outcomes func() map[string]int
	acked    func() map[int64]int // outbox row → acknowledgements
	// orderLock is the lock the runner takes for an order, held for a minute once taken.
	orderLock func(id uuid.UUID) *redsync.Mutex
	// shutdown stops the server, waiting a second for the attempts running.
	shutdown func()
}

func policyServer(t *testing.T) policyRig {
	t.Helper()
	rdb, keys, _ := testenv.Redis(t)
	ns := testenv.Namespace(t, rdb, "wt")
	reg := map[string]Strategy{}
	for _, typ := range tasks.Types() {
		reg[typ] = Strategy{Run: func(context.Context, Task) error { return nil }}
	}
	rec := map[string]*recorder{}
	for _, typ := range []string{tasks.OrderProcess, tasks.OrderCancel, tasks.OrderRefund, tasks.CleanupExpired} {
		rec[typ] = &recorder{}
		reg[typ] = rec[typ].strategy()
	}
	locks := redsync.New(goredis.NewPool(rdb))
	runner, err := NewRunner(reg, locks, keys, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	runner.LockWait = 200 * time.Millisecond
	var mu sync.Mutex
	seen, acks := map[string]int{}, map[int64]int{}
	runner.Observe = Observer{Done: func(taskType, outcome string, _ time.Duration) {
		mu.Lock()
		seen[taskType+" "+outcome]++
		mu.Unlock()
	}}
	runner.Ack = func(id int64, _ time.Time) {
		mu.Lock()
		acks[id]++
		mu.Unlock()
	}
	srv := NewServer(rdb, ServerConfig{Namespace: ns, RetryBase: 10 * time.Millisecond, DelayedInterval: 50 * time.Millisecond,
		ShutdownTimeout: time.Second}, map[string]int{tasks.QueueOrders: 1}, 4, logging.Discard())
	if err := srv.Start(runner); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return policyRig{client: asynq.NewClientFromRedisClient(rdb), insp: asynq.NewInspectorFromRedisClient(rdb), ns: ns, rec: rec,
		outcomes: func() map[string]int {
			mu.Lock()
			defer mu.Unlock()
			return maps.Clone(seen)
		},
		acked: func() map[int64]int {
			mu.Lock()
			defer mu.Unlock()
			return maps.Clone(acks)
		},
		orderLock: func(id uuid.UUID) *redsync.Mutex {
			return locks.NewMutex(keys.Key("lock", "order", id.String()), redsync.WithExpiry(time.Minute), redsync.WithTries(1))
		},
		shutdown: srv.Shutdown,
	}
}

// enqueueOrderTasks enqueues one task of each type on queue (task id: its type; two retries)
// for a random order, with the outbox row ids given; a type without one has no row, like a
// periodic task.
func enqueueOrderTasks(t *testing.T, client *asynq.Client, queue string, outboxID map[string]int64, types ...string) {
	t.Helper()
	for _, typ := range types {
		payload, _ := json.Marshal(tasks.Envelope{OutboxID: outboxID[typ], Data: json.RawMessage(`{"orderId":"` + uuid.NewString() + `"}`)})
		if _, err := client.Enqueue(asynq.NewTask(typ, payload), asynq.Queue(queue), asynq.TaskID(typ), asynq.MaxRetry(2)); err != nil {
			t.Fatal(err)
		}
	}
}

// enqueue enqueues one task of typ, with its outbox row id, for a random order on the orders
// queue.
func (rig policyRig) enqueue(t *testing.T, typ string, outboxID int64, opts ...asynq.Option) {
	t.Helper()
	payload, _ := json.Marshal(tasks.Envelope{OutboxID: outboxID, Data: json.RawMessage(`{"orderId":"` + uuid.NewString() + `"}`)})
	if _, err := rig.client.Enqueue(asynq.NewTask(typ, payload), append([]asynq.Option{asynq.Queue(rig.ns.Queue(tasks.QueueOrders))}, opts...)...); err != nil {
		t.Fatal(err)
	}
}

func archivedTasks(t *testing.T, insp *asynq.Inspector, queue string, want int) map[string]*asynq.TaskInfo {
	t.Helper()
	var list []*asynq.TaskInfo
	testenv.Eventually(t, 20*time.Second, fmt.Sprintf("%d archived tasks in %s", want, queue), func() bool {
		info, err := insp.GetQueueInfo(queue)
		if err != nil || info.Archived < want {
			return false
		}
		list, err = insp.ListArchivedTasks(queue, asynq.PageSize(100))
		return err == nil
	})
	out := map[string]*asynq.TaskInfo{}
	for _, ti := range list {
		out[ti.ID] = ti
	}
	if len(out) != want {
		t.Fatalf("%d archived tasks, want %d", len(out), want)
	}
	return out
}

// TestMalformedTasksAreNotRetried: payloads no retry can fix, and task names that only share a
// prefix with a registered one, fail at once for good: no retry, and the strategy of the
// look-alike name never runs. A payload Asynq cannot even unwrap reaches no strategy code at
// all, compensation included. (A payload whose data does not decode is handed to the type's
// compensation, which decodes it the same way and does nothing: the e2e test
// TestMalformedTasksLeaveOrdersAlone checks that with the production strategies.)
func TestMalformedTasksAreNotRetried(t *testing.T) {
	t.Parallel()
	rig := policyServer(t)
	client, insp, rec, outcomes := rig.client, rig.insp, rig.rec, rig.outcomes
	queue := rig.ns.Queue(tasks.QueueOrders)
	valid, _ := json.Marshal(tasks.Envelope{Data: json.RawMessage(`{"orderId":"` + uuid.NewString() + `"}`)})
	bad := map[string]struct {
		typ     string
		payload string
	}{
		"envelope-not-json": {tasks.OrderProcess, `{not json`},
		"envelope-wrong":    {tasks.OrderProcess, `["a"]`},
		"prefix-lookalike":  {tasks.OrderProcess + ":v2", string(valid)},
		"bare-prefix":       {"order", string(valid)},
		"data-wrong-type":   {tasks.OrderRefund, `{"data":{"orderId":"` + uuid.NewString() + `","actor":42}}`},
		"data-not-uuid":     {tasks.OrderCancel, `{"data":{"orderId":"not-a-uuid"}}`},
		"data-not-object":   {tasks.OrderCancel, `{"data":"order"}`},
	}
	for id, b := range bad {
		if _, err := client.Enqueue(asynq.NewTask(b.typ, []byte(b.payload)), asynq.Queue(queue), asynq.TaskID(id), asynq.MaxRetry(3)); err != nil {
			t.Fatal(err)
		}
	}
	archived := archivedTasks(t, insp, queue, len(bad))
	for id, b := range bad {
		ti, ok := archived[id]
		if !ok {
			t.Fatalf("task %s not archived", id)
		}
		if ti.Retried != 0 || ti.LastErr == "" {
			t.Errorf("task %s: retried %d times, last error %q; want no retry and an error", id, ti.Retried, ti.LastErr)
		}
		// A type this worker does not know may be a newer release's: its row must stay for the
		// relay to run it again (for a worker that knows it), not be taken for done.
		unknownType := b.typ != tasks.OrderProcess && b.typ != tasks.OrderRefund && b.typ != tasks.OrderCancel
		if unfinished := strings.HasPrefix(ti.LastErr, tasks.Unfinished); unfinished != unknownType {
			t.Errorf("task %s (type %s): archived unfinished %t, want %t (%q)", id, b.typ, unfinished, unknownType, ti.LastErr)
		}
	}
	for typ, r := range rec {
		if n := r.runs.Load(); n != 0 {
			t.Errorf("%s strategy got past decoding %d times for malformed or look-alike tasks", typ, n)
		}
	}
	if n := rec[tasks.OrderProcess].compensations.Load(); n != 0 {
		t.Errorf("order:process compensation ran %d times for tasks that never reached a strategy", n)
	}
	for k := range outcomes() {
		if strings.HasSuffix(k, " retry") || strings.HasSuffix(k, " waited") || strings.HasSuffix(k, " success") {
			t.Errorf("outcome %q reported for a malformed task", k)
		}
	}
}

// TestRetriesThenOneCompensation contrasts the malformed case: a transient failure is retried
// up to MaxRetry and then compensated once; a permanent one is compensated at once, not retried.
func TestRetriesThenOneCompensation(t *testing.T) {
	t.Parallel()
	rig := policyServer(t)
	client, insp, rec, outcomes := rig.client, rig.insp, rig.rec, rig.outcomes
	queue := rig.ns.Queue(tasks.QueueOrders)
	rec[tasks.OrderProcess].fail = func(int32) error { return payment.ErrTransient }
	rec[tasks.OrderCancel].fail = func(int32) error { return order.ErrBadPreconditions }
	rec[tasks.OrderRefund].fail = func(n int32) error {
		if n < 3 {
			return errors.New("database briefly away")
		}
		return nil
	}
	enqueueOrderTasks(t, client, queue, map[string]int64{tasks.OrderProcess: 101, tasks.OrderCancel: 102, tasks.OrderRefund: 103},
		tasks.OrderProcess, tasks.OrderCancel, tasks.OrderRefund)
	archived := archivedTasks(t, insp, queue, 2)
	testenv.Eventually(t, 20*time.Second, "the refund succeeds on its third attempt", func() bool {
		return outcomes()[tasks.OrderRefund+" success"] == 1
	})
	checks := []struct {
		typ                 string
		runs, compensations int32
		retried             int
	}{
		{tasks.OrderProcess, 3, 1, 2}, // transient: 1 + 2 retries, then compensation
		{tasks.OrderCancel, 1, 1, 0},  // permanent: no retry, compensation at once
		{tasks.OrderRefund, 3, 0, -1}, // succeeded on the last attempt: nothing to compensate
	}
	for _, c := range checks {
		r := rec[c.typ]
		if r.runs.Load() != c.runs || r.compensations.Load() != c.compensations {
			t.Errorf("%s: %d runs and %d compensations, want %d and %d", c.typ, r.runs.Load(), r.compensations.Load(), c.runs, c.compensations)
		}
		if c.retried >= 0 && archived[c.typ].Retried != c.retried {
			t.Errorf("%s: archived after %d retries, want %d", c.typ, archived[c.typ].Retried, c.retried)
		}
	}
	// Each task's outbox row is acknowledged once, when the task is over, not at a retry.
	if got, want := rig.acked(), map[int64]int{101: 1, 102: 1, 103: 1}; !maps.Equal(got, want) {
		t.Errorf("acknowledged outbox rows %v, want %v", got, want)
	}
}

// TestALastAttemptOutOfTimeIsCompensated: a task whose last attempt runs past its timeout is
// archived by Asynq as soon as its time is up; its compensation still runs, once, with time
// of its own (it ran with the attempt's ended context, could not take the lock, and never ran).
func TestALastAttemptOutOfTimeIsCompensated(t *testing.T) {
	t.Parallel()
	rig := policyServer(t)
	rec := rig.rec[tasks.OrderProcess]
	rec.outlast = true
	rig.enqueue(t, tasks.OrderProcess, 301, asynq.MaxRetry(0), asynq.Timeout(time.Second)) // Asynq counts whole seconds
	testenv.Eventually(t, 20*time.Second, "the compensation ran", func() bool { return rec.compensations.Load() == 1 })
	testenv.Eventually(t, 20*time.Second, "the row acknowledged", func() bool { return rig.acked()[301] == 1 })
	if n := rec.runs.Load(); n != 1 {
		t.Fatalf("%d runs, want 1", n)
	}
}

// dbAway is what a strategy returns when PostgreSQL is unreachable, as the stores wrap it.
func dbAway() error {
	return fmt.Errorf("orderdb: get: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})
}

// TestOutagesAreNotTheTasksFailure: attempts that find PostgreSQL or Redis away do not count
// against the task's retries, however many there are, and no compensation runs for them; a
// task whose last attempt, or whose compensation, meets an outage is archived as Unfinished
// with its outbox row unacknowledged, for the relay to deliver again.
func TestOutagesAreNotTheTasksFailure(t *testing.T) {
	t.Parallel()
	rig := policyServer(t)
	client, insp, rec, outcomes := rig.client, rig.insp, rig.rec, rig.outcomes
	queue := rig.ns.Queue(tasks.QueueOrders)
	// Ten attempts in an outage, then it is back: one success, no compensation.
	rec[tasks.OrderProcess].fail = func(n int32) error {
		if n <= 10 {
			return dbAway()
		}
		return nil
	}
	// Two Stripe failures, then an outage on the last attempt.
	rec[tasks.OrderCancel].fail = func(n int32) error {
		if n <= 2 {
			return payment.ErrTransient
		}
		return dbAway()
	}
	// Out of retries; its compensation cannot reach PostgreSQL.
	rec[tasks.OrderRefund].fail = func(int32) error { return payment.ErrTransient }
	rec[tasks.OrderRefund].compensate = func() error { return &pq.Error{Code: "57P01"} }
	// A periodic task has no outbox row to keep: it fails as usual, its next period runs it.
	rec[tasks.CleanupExpired].fail = func(int32) error { return dbAway() }
	enqueueOrderTasks(t, client, queue, map[string]int64{tasks.OrderProcess: 201, tasks.OrderCancel: 202, tasks.OrderRefund: 203},
		tasks.OrderProcess, tasks.OrderCancel, tasks.OrderRefund, tasks.CleanupExpired)
	archived := archivedTasks(t, insp, queue, 3)
	testenv.Eventually(t, 20*time.Second, "order:process succeeds once the outage ends", func() bool {
		return outcomes()[tasks.OrderProcess+" success"] == 1
	})
	if r := rec[tasks.OrderProcess]; r.runs.Load() != 11 || r.compensations.Load() != 0 {
		t.Errorf("order:process: %d runs, %d compensations; want 11 and none", r.runs.Load(), r.compensations.Load())
	}
	// The attempts in the outage waited (and any that found the order's lock slow to come);
	// none reads as a retry (a task failing).
	if o := outcomes(); o[tasks.OrderProcess+" waited"] < 10 || o[tasks.OrderProcess+" retry"] != 0 {
		t.Errorf("order:process outcomes %v, want at least 10 waited and no retry", o)
	}
	for _, typ := range []string{tasks.OrderCancel, tasks.OrderRefund} {
		ti := archived[typ]
		if ti == nil || !strings.HasPrefix(ti.LastErr, tasks.Unfinished) {
			t.Fatalf("%s archived as %+v, want its last error to start %q", typ, ti, tasks.Unfinished)
		}
	}
	if r := rec[tasks.OrderCancel]; r.runs.Load() != 3 || r.compensations.Load() != 0 {
		t.Errorf("order:cancel: %d runs, %d compensations; want 3 and none", r.runs.Load(), r.compensations.Load())
	}
	if r := rec[tasks.OrderRefund]; r.runs.Load() != 3 || r.compensations.Load() != 1 {
		t.Errorf("order:refund: %d runs, %d compensations; want 3 and 1", r.runs.Load(), r.compensations.Load())
	}
	if r, ti := rec[tasks.CleanupExpired], archived[tasks.CleanupExpired]; r.runs.Load() != 3 || ti == nil || ti.Retried != 2 ||
		strings.HasPrefix(ti.LastErr, tasks.Unfinished) {
		t.Errorf("cleanup:expired: %d runs, archived as %+v; want 3 runs, 2 retries, an ordinary failure", r.runs.Load(), ti)
	}
	if got, want := rig.acked(), map[int64]int{201: 1, 0: 1}; !maps.Equal(got, want) {
		t.Errorf("acknowledged outbox rows %v, want %v (the unfinished ones stay for the relay)", got, want)
	}
	if n := outcomes()[tasks.OrderCancel+" failed"] + outcomes()[tasks.OrderRefund+" failed"]; n != 0 {
		t.Errorf("%d attempts reported failed, want none", n)
	}
}

// TestBusyOrdersAreNotTheTasksFailure: an attempt that finds its order's lock held by another
// handler throughout gives way without counting against its retries, and no compensation runs
// for it, however many such attempts there are; the task runs once the lock is free. A
// compensation runs holding its order's lock: it calls Stripe before its compare-and-set, and
// another copy of the task finishing the order meanwhile would see the order refunded at
// Stripe and shipped all the same.
func TestBusyOrdersAreNotTheTasksFailure(t *testing.T) {
	t.Parallel()
	rig := policyServer(t)
	rec, outcomes := rig.rec, rig.outcomes
	queue := rig.ns.Queue(tasks.QueueOrders)
	enqueue := func(typ string, orderID uuid.UUID, outboxID int64) {
		payload, _ := json.Marshal(tasks.Envelope{OutboxID: outboxID, Data: json.RawMessage(`{"orderId":"` + orderID.String() + `"}`)})
		if _, err := rig.client.Enqueue(asynq.NewTask(typ, payload), asynq.Queue(queue), asynq.MaxRetry(2)); err != nil {
			t.Fatal(err)
		}
	}

	busy := uuid.New()
	other := rig.orderLock(busy)
	if err := other.Lock(); err != nil {
		t.Fatal(err)
	}
	enqueue(tasks.OrderProcess, busy, 301)
	testenv.Eventually(t, 30*time.Second, "five attempts give way to the busy order (MaxRetry 2)", func() bool {
		if n := rec[tasks.OrderProcess].compensations.Load(); n != 0 {
			t.Fatalf("order:process compensated %d times while its order was busy", n)
		}
		return outcomes()[tasks.OrderProcess+" waited"] >= 5
	})
	if r := rec[tasks.OrderProcess]; r.runs.Load() != 0 || r.compensations.Load() != 0 {
		t.Fatalf("order:process ran %d times and was compensated %d times while its order was busy", r.runs.Load(), r.compensations.Load())
	}
	if _, err := other.Unlock(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "order:process runs once its order is free", func() bool {
		return outcomes()[tasks.OrderProcess+" success"] == 1
	})

	// The compensation's finding is read once it has one: the recorder counts a compensation
	// as it starts, before the lock is tried.
	refunded := uuid.New()
	const locked, unlocked = 1, 2
	var found atomic.Int32
	rec[tasks.OrderRefund].fail = func(int32) error { return order.ErrBadPreconditions }
	rec[tasks.OrderRefund].compensate = func() error {
		m := rig.orderLock(refunded)
		if err := m.Lock(); err != nil {
			found.Store(locked)
			return nil
		}
		_, _ = m.Unlock()
		found.Store(unlocked)
		return nil
	}
	enqueue(tasks.OrderRefund, refunded, 302)
	testenv.Eventually(t, 20*time.Second, "order:refund compensated", func() bool {
		return found.Load() != 0
	})
	if found.Load() != locked {
		t.Error("the compensation ran without its order's lock")
	}
	if n := rec[tasks.OrderRefund].compensations.Load(); n != 1 {
		t.Errorf("order:refund compensated %d times, want 1", n)
	}
	if r := rec[tasks.OrderProcess]; r.runs.Load() != 1 || r.compensations.Load() != 0 {
		t.Errorf("order:process: %d runs, %d compensations; want 1 and none", r.runs.Load(), r.compensations.Load())
	}
	testenv.Eventually(t, 10*time.Second, "both rows acknowledged once", func() bool {
		return maps.Equal(rig.acked(), map[int64]int{301: 1, 302: 1})
	})
}

// TestAnOrderChangedMeanwhileIsNotTheTasksFailure: an attempt whose order another path moved
// meanwhile (a payment recorded while a cancel ran) gives way like a busy one: it does not count
// against the retries and is not compensated, so an accepted cancel is not dropped when that
// happens on its last attempt. The next attempt reads the order anew.
func TestAnOrderChangedMeanwhileIsNotTheTasksFailure(t *testing.T) {
	t.Parallel()
	rig := policyServer(t)
	rec := rig.rec[tasks.OrderCancel]
	rec.fail = func(n int32) error {
		if n <= 4 {
			return fmt.Errorf("order: apply: %w", order.ErrChangedMeanwhile)
		}
		return nil
	}
	rig.enqueue(t, tasks.OrderCancel, 401, asynq.MaxRetry(1))
	testenv.Eventually(t, 30*time.Second, "the cancel ends", func() bool {
		o := rig.outcomes()
		return o[tasks.OrderCancel+" success"]+o[tasks.OrderCancel+" failed"] > 0
	})
	o := rig.outcomes()
	if o[tasks.OrderCancel+" waited"] != 4 || o[tasks.OrderCancel+" retry"] != 0 || o[tasks.OrderCancel+" failed"] != 0 {
		t.Errorf("order:cancel outcomes %v, want 4 waited, then a success", o)
	}
	if r := rec; r.runs.Load() != 5 || r.compensations.Load() != 0 {
		t.Errorf("order:cancel: %d runs, %d compensations; want 5 and none", r.runs.Load(), r.compensations.Load())
	}
	if got, want := rig.acked(), map[int64]int{401: 1}; !maps.Equal(got, want) {
		t.Errorf("acknowledged outbox rows %v, want %v", got, want)
	}
}

// TestAnAttemptTheServerLetsGoIsNotCompensated: a shutdown that outlasts its timeout puts the
// attempts still running back in their queue and cancels them; Asynq ignores their results.
// Such an attempt, even a last one, is not the task's failure: no compensation runs (it would
// refund an order the requeued task then processes) and its row is not acknowledged.
func TestAnAttemptTheServerLetsGoIsNotCompensated(t *testing.T) {
	t.Parallel()
	rig := policyServer(t)
	queue := rig.ns.Queue(tasks.QueueOrders)
	rec := rig.rec[tasks.OrderProcess]
	rec.outlast = true
	rig.enqueue(t, tasks.OrderProcess, 501, asynq.TaskID("last-attempt"), asynq.MaxRetry(0), asynq.Timeout(time.Hour))
	testenv.Eventually(t, 20*time.Second, "the attempt runs", func() bool { return rec.runs.Load() == 1 })
	rig.shutdown()
	testenv.Eventually(t, 20*time.Second, "the runner saw the attempt end", func() bool {
		o := rig.outcomes()
		return o[tasks.OrderProcess+" waited"]+o[tasks.OrderProcess+" failed"] > 0
	})
	if o := rig.outcomes(); o[tasks.OrderProcess+" waited"] != 1 || o[tasks.OrderProcess+" failed"] != 0 {
		t.Errorf("order:process outcomes %v, want one waited", o)
	}
	if n := rec.compensations.Load(); n != 0 {
		t.Errorf("order:process compensated %d times for an attempt the server let go", n)
	}
	if n := rig.acked()[501]; n != 0 {
		t.Errorf("outbox row acknowledged %d times, want none: its task runs again", n)
	}
	info, err := rig.insp.GetTaskInfo(queue, "last-attempt")
	if err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("task after the shutdown: %+v (%v), want pending again", info, err)
	}
}

// TestAPanicIsRetriedThenLeftUnfinished: a strategy that panics is a bug, not the order's fate:
// it is retried as usual, then archived Unfinished with its row unacknowledged, for the relay
// to run again (a fixed release, say), and no compensation refunds the order over it. A
// compensation that panics leaves the task unfinished the same way.
func TestAPanicIsRetriedThenLeftUnfinished(t *testing.T) {
	t.Parallel()
	rig := policyServer(t)
	queue := rig.ns.Queue(tasks.QueueOrders)
	rig.rec[tasks.OrderProcess].fail = func(int32) error { panic("nil map") }
	rig.rec[tasks.OrderRefund].fail = func(int32) error { return payment.ErrRejected }
	rig.rec[tasks.OrderRefund].compensate = func() error { panic("nil map") }
	enqueueOrderTasks(t, rig.client, queue, map[string]int64{tasks.OrderProcess: 601, tasks.OrderRefund: 602},
		tasks.OrderProcess, tasks.OrderRefund)
	archived := archivedTasks(t, rig.insp, queue, 2)
	for typ, runs := range map[string]int32{tasks.OrderProcess: 3, tasks.OrderRefund: 1} {
		ti := archived[typ]
		if !strings.HasPrefix(ti.LastErr, tasks.Unfinished) || !strings.Contains(ti.LastErr, "nil map") {
			t.Errorf("%s archived with %q, want it unfinished and naming the panic", typ, ti.LastErr)
		}
		if r := rig.rec[typ]; r.runs.Load() != runs {
			t.Errorf("%s: %d runs, want %d", typ, r.runs.Load(), runs)
		}
	}
	if n := rig.rec[tasks.OrderProcess].compensations.Load(); n != 0 {
		t.Errorf("order:process compensated %d times for a panic", n)
	}
	if got := rig.acked(); len(got) != 0 {
		t.Errorf("acknowledged outbox rows %v, want none: both tasks run again", got)
	}
}

func TestPermanentErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err       error
		permanent bool
	}{
		{malformed(errors.New("bad json")), true},
		{fmt.Errorf("wrapped: %w", payment.ErrRejected), true},
		{payment.ErrNotFound, true},
		{order.ErrNotFound, true},
		{order.ErrBadPreconditions.With("from", "PENDING"), true},
		{order.ErrPaymentMismatch, true},
		{payment.ErrTransient, false},
		{order.ErrChangedMeanwhile, false},
		{order.ErrConcurrentUpdate, false},
		{errors.New("connection reset"), false},
		{apperr.New(apperr.Unavailable, "x"), false},
	} {
		if got := isPermanent(c.err); got != c.permanent {
			t.Errorf("isPermanent(%v) = %v, want %v", c.err, got, c.permanent)
		}
	}
	// Stripe unreachable is the provider's outage: it counts (SPEC §5), unlike our own.
	stripeAway := &payment.GatewayError{Class: payment.ErrTransient, Message: "dial", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}
	for _, c := range []struct {
		err  error
		away bool
	}{
		{dbAway(), true},
		{fmt.Errorf("lock: %w", redis.ErrClosed), true},
		{&pq.Error{Code: "57P03"}, true},
		{&pq.Error{Code: "23505"}, false},
		{stripeAway, false},
		{fmt.Errorf("orderdb: get: %w", context.DeadlineExceeded), false}, // the task's own time ran out
		{payment.ErrTransient, false},
		{fmt.Errorf("lock order x: %w", errBusy), true}, // another handler held the order
		{nil, false},
	} {
		if got := waits(c.err); got != c.away {
			t.Errorf("waits(%v) = %v, want %v", c.err, got, c.away)
		}
	}
}

// TestAHangingStripeIsDownForACustomerSync: Stripe that stops answering ends each call with the
// HTTP client's own timeout, an error that passes for context.DeadlineExceeded. It is Stripe's
// outage all the same, which a customer sync waits out; only the attempt's own context running
// out counts against the task.
func TestAHangingStripeIsDownForACustomerSync(t *testing.T) {
	t.Parallel()
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hang.Close()
	_, err := (&http.Client{Timeout: 20 * time.Millisecond}).Get(hang.URL)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a client timeout is %v, which no longer passes for a deadline: the case this test is for is gone", err)
	}
	hung := &payment.GatewayError{Class: payment.ErrTransient, Message: err.Error(), Err: err} // as payment.classify makes it
	if !stripeDown(context.Background(), hung) {
		t.Error("a hanging Stripe is not taken for Stripe down")
	}
	over, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if stripeDown(over, hung) {
		t.Error("an attempt out of its own time is taken for Stripe down: a task that always runs out would never end")
	}
	if stripeDown(context.Background(), payment.ErrRejected) {
		t.Error("a refusal is taken for Stripe down")
	}
}

func TestRetryDelayBacksOffWithJitter(t *testing.T) {
	t.Parallel()
	base := 2 * time.Second
	f := RetryDelay(base)
	for n := 0; n < 4; n++ {
		// An outage's attempts wait 4×base at least.
		for err, want := range map[error]time.Duration{errors.New("x"): base << n, outageError{dbAway()}: base << max(n, 2)} {
			lo, hi := time.Duration(float64(want)*0.8), time.Duration(float64(want)*1.2)
			distinct := map[time.Duration]bool{}
			for i := 0; i < 50; i++ {
				d := f(n, err, nil)
				if d < lo || d > hi {
					t.Fatalf("retry %d after %v: delay %s outside [%s, %s]", n, err, d, lo, hi)
				}
				distinct[d] = true
			}
			if len(distinct) < 2 {
				t.Fatalf("retry %d: no jitter", n)
			}
		}
	}
}

// TestSchedulerOneTaskPerPeriod: two schedulers (two workers) enqueue the same periodic job for
// the same period at once; exactly one task is enqueued. The next period gets its own.
func TestSchedulerOneTaskPerPeriod(t *testing.T) {
	t.Parallel()
	rdb, _, _ := testenv.Redis(t)
	ns := testenv.Namespace(t, rdb, "wt")
	job := Periodic{Type: tasks.CleanupExpired, Every: time.Hour}
	schedulers := []*Scheduler{
		NewScheduler(asynq.NewClientFromRedisClient(rdb), ns, logging.Discard(), job),
		NewScheduler(asynq.NewClientFromRedisClient(rdb), ns, logging.Discard(), job),
	}
	period := time.Now().Truncate(time.Hour)
	enqueueAll := func(at func(i int) time.Time) int {
		var wins atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := schedulers[i%2].Enqueue(context.Background(), job, at(i))
				if err != nil {
					errs <- err
				}
				if ok {
					wins.Add(1)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		return int(wins.Load())
	}
	// Any instant of one period is the same period.
	if n := enqueueAll(func(i int) time.Time { return period.Add(time.Duration(i) * time.Minute) }); n != 1 {
		t.Fatalf("%d enqueues won for one period, want 1", n)
	}
	if n := enqueueAll(func(int) time.Time { return period.Add(59 * time.Minute) }); n != 0 {
		t.Fatalf("%d enqueues won for a period already enqueued, want 0", n)
	}
	if n := enqueueAll(func(int) time.Time { return period.Add(time.Hour) }); n != 1 {
		t.Fatalf("%d enqueues won for the next period, want 1", n)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	info, err := insp.GetQueueInfo(ns.Queue(tasks.QueueMaintenance))
	if err != nil {
		t.Fatal(err)
	}
	if info.Pending != 2 {
		t.Fatalf("%d periodic tasks pending, want 2 (one per period)", info.Pending)
	}
}

// TestSchedulerTriesAFailedEnqueueAgain: Redis down at a period's boundary no longer skips the
// period (an hourly cleanup, an hour): the enqueue is tried again until Redis is back.
func TestSchedulerTriesAFailedEnqueueAgain(t *testing.T) {
	t.Parallel()
	rdb, _, _ := testenv.Redis(t)
	ns := testenv.Namespace(t, rdb, "wt")
	proxy := testenv.NewTCPProxy(t, rdb.Options().Addr)
	via := redis.NewClient(&redis.Options{Addr: proxy.Addr, DB: rdb.Options().DB, MaxRetries: -1})
	t.Cleanup(func() { via.Close() })
	proxy.Cut()

	logs := &testenv.Buffer{}
	job := Periodic{Type: tasks.CleanupExpired, Every: time.Hour}
	s := NewScheduler(asynq.NewClientFromRedisClient(via), ns, slog.New(slog.NewJSONHandler(logs, nil)), job)
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); s.Run(ctx) }()
	t.Cleanup(func() { stop(); <-ran })

	testenv.Eventually(t, 30*time.Second, "the enqueue fails while Redis is away", func() bool {
		return strings.Contains(logs.String(), "periodic task not enqueued")
	})
	proxy.Restore(t)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	testenv.Eventually(t, time.Minute, "the period's task is enqueued once Redis is back", func() bool {
		info, err := insp.GetQueueInfo(ns.Queue(tasks.QueueMaintenance))
		return err == nil && info.Pending == 1
	})
}
