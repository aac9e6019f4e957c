package e2e_test

// The worker's policy with the production strategies (SPEC §5): malformed tasks that name real
// orders are not retried and compensate nothing, and the periodic scheduler runs one task per
// period even with two schedulers and after the first run finished.

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/internal/worker"
)

// TestMalformedTasksLeaveOrdersAlone: with a PAID order (whose processing failure would be
// compensated by a refund) and a PROCESSED order with a refund pending (whose failure would be
// compensated by clearing it), malformed order tasks naming them fail for good at once and
// change nothing. The genuine tasks then run as usual.
func TestMalformedTasksLeaveOrdersAlone(t *testing.T) {
	t.Parallel()
	s := newStack(t, noWorker)
	log := newTaskLog()
	s.startWorkerWith(s.rdb, s.ns, func(o *worker.Options) { o.Observe = log.observer() })
	item := s.item(20, 1500)
	uid, c := s.customer()
	processed := s.processed(c, 1, item)

	q := newQueues(t, s.rdb, s.ns)
	ordersQueue := s.ns.Queue(tasks.QueueOrders)
	// Hold the genuine order tasks back while the malformed ones run.
	if err := q.insp.PauseQueue(ordersQueue); err != nil {
		t.Fatal(err)
	}
	paid := s.order(c, 1, item)
	s.pay(paid)
	s.staff("financial").Do("PATCH", "/v1/admin/orders/"+processed.ID.String()+"/refund", nil).Expect(t, 202)
	testenv.Eventually(t, 30*time.Second, "genuine tasks queued", func() bool { return q.info(tasks.QueueOrders).Pending == 2 })

	envelope := func(data string) []byte {
		raw, _ := json.Marshal(map[string]any{"correlationId": "malformed-test", "data": json.RawMessage(data)})
		return raw
	}
	bad := map[string]struct {
		typ     string
		payload []byte
	}{
		"process-actor-number":   {tasks.OrderProcess, envelope(`{"orderId":"` + paid.ID.String() + `","actor":42}`)},
		"process-no-order":       {tasks.OrderProcess, envelope(`{"reason":"x"}`)},
		"process-envelope":       {tasks.OrderProcess, []byte(`{"data":` + paid.ID.String())},
		"refund-reason-list":     {tasks.OrderRefund, envelope(`{"orderId":"` + processed.ID.String() + `","reason":["x"]}`)},
		"refund-order-not-uuid":  {tasks.OrderRefund, envelope(`{"orderId":"` + processed.ID.String()[:20] + `"}`)},
		"cancel-data-string":     {tasks.OrderCancel, envelope(`"` + paid.ID.String() + `"`)},
		"process-lookalike-name": {tasks.OrderProcess + ":now", envelope(`{"orderId":"` + paid.ID.String() + `"}`)},
		"notify-no-user":         {tasks.NotifyUser, envelope(`{"event":"order.paid","data":{"orderId":"` + paid.ID.String() + `"}}`)},
		"notify-user-number":     {tasks.NotifyUser, envelope(`{"userId":7,"event":"order.paid"}`)},
		"customer-no-user":       {tasks.CustomerCreate, envelope(`{}`)},
	}
	client := asynq.NewClientFromRedisClient(s.rdb)
	otherQueue := s.ns.Queue(tasks.QueuePayments) // the worker routes by type, whatever the queue
	for id, b := range bad {
		if _, err := client.Enqueue(asynq.NewTask(b.typ, b.payload), asynq.Queue(otherQueue), asynq.TaskID(id), asynq.MaxRetry(3)); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 20*time.Second, "malformed tasks archived", func() bool {
		return len(q.archived(tasks.QueuePayments)) == len(bad)
	})
	for _, ti := range q.archived(tasks.QueuePayments) {
		if ti.Retried != 0 {
			t.Errorf("malformed task %s was retried %d times", ti.ID, ti.Retried)
		}
	}
	for _, typ := range []string{tasks.OrderProcess, tasks.OrderCancel, tasks.OrderRefund, tasks.NotifyUser, tasks.CustomerCreate} {
		if n := log.count(typ, "retry"); n != 0 {
			t.Errorf("%s: %d retries of malformed tasks", typ, n)
		}
	}
	if log.compensations() != 0 {
		t.Fatalf("compensations ran for malformed tasks: %s", log)
	}
	// Nothing moved: the paid order is still PAID and unrefunded, the refund still pending.
	if st, action := s.status(paid.ID); st != "PAID" || action != "" {
		t.Fatalf("paid order is %s (pending %q), want PAID", st, action)
	}
	if st, action := s.status(processed.ID); st != "PROCESSED" || action != "refund" {
		t.Fatalf("processed order is %s (pending %q), want PROCESSED with the refund pending", st, action)
	}
	if n := s.count(`SELECT count(*) FROM order_events WHERE order_id = ANY($1) AND type = 'actionFailed'`, uuidArray([]uuid.UUID{paid.ID, processed.ID})); n != 0 {
		t.Fatalf("%d actionFailed events recorded", n)
	}
	if n := s.count(`SELECT count(*) FROM refunds WHERE order_id = ANY($1)`, uuidArray([]uuid.UUID{paid.ID, processed.ID})); n != 0 || len(s.stripe.Calls("POST", "/v1/refunds")) != 0 {
		t.Fatalf("refunds made for malformed tasks: %d rows, %d Stripe calls", n, len(s.stripe.Calls("POST", "/v1/refunds")))
	}

	// The genuine tasks run once the queue resumes.
	if err := q.insp.UnpauseQueue(ordersQueue); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(paid.ID, "PROCESSED")
	s.waitStatus(processed.ID, "REFUNDED")
	s.waitNotified(uid, processed.ID, "order.refunded")
}

// TestPeriodicTaskOncePerPeriod: two schedulers run side by side (as every worker runs one);
// the period's cleanup task is enqueued and run once, is refused again for the rest of the
// period after it finished, and the next period gets exactly one of its own.
func TestPeriodicTaskOncePerPeriod(t *testing.T) {
	t.Parallel()
	s := newStack(t, noWorker)
	log := newTaskLog()
	s.startWorkerWith(s.rdb, s.ns, func(o *worker.Options) { o.Observe = log.observer() })
	// Something for the cleanup to do: an idempotency record past its retention.
	if _, err := s.db.Exec(`INSERT INTO idempotency_keys (scope, method, path, key, fingerprint, state, expires_at)
		VALUES ('anonymous', 'POST', '/v1/users', 'old-key', '\x00', 'completed', now() - interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	job := worker.Periodic{Type: tasks.CleanupExpired, Every: time.Hour}
	a := worker.NewScheduler(asynq.NewClientFromRedisClient(s.rdb), s.ns, s.log, job)
	b := worker.NewScheduler(asynq.NewClientFromRedisClient(s.rdb), s.ns, s.log, job)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, sch := range []*worker.Scheduler{a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); sch.Run(ctx) }()
	}
	testenv.Eventually(t, 30*time.Second, "cleanup ran", func() bool { return log.count(tasks.CleanupExpired, "success") >= 1 })
	cancel()
	wg.Wait()
	q := s.quiet()
	// One task per period ran (one period, or two if the test straddled a period's start).
	periods := map[int64]bool{}
	var last int64
	for _, ti := range q.completed(tasks.QueueMaintenance, tasks.CleanupExpired, "") {
		_, unix, _ := strings.Cut(ti.ID, "@")
		p, err := strconv.ParseInt(unix, 10, 64)
		if err != nil {
			t.Fatalf("periodic task id %q", ti.ID)
		}
		periods[p] = true
		last = max(last, p)
	}
	if n := log.count(tasks.CleanupExpired, "success"); n != len(periods) || n < 1 || n > 2 {
		t.Fatalf("cleanup ran %d times for %d periods, want once per period", n, len(periods))
	}
	if n := s.count(`SELECT count(*) FROM idempotency_keys WHERE key = 'old-key'`); n != 0 {
		t.Fatal("the expired idempotency record survived the cleanup")
	}
	ran := time.Unix(last, 0)

	race := func(at time.Time) int {
		var wins atomic.Int32
		parallel(10, func(i int) {
			sch := a
			if i%2 == 1 {
				sch = b
			}
			ok, err := sch.Enqueue(context.Background(), job, at)
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins.Add(1)
			}
		})
		return int(wins.Load())
	}
	// The finished task is retained for the period: the period cannot run again.
	if n := race(ran.Add(time.Hour - time.Second)); n != 0 {
		t.Fatalf("%d schedulers enqueued the period's task again after it ran", n)
	}
	// The next period runs once.
	if n := race(ran.Add(time.Hour)); n != 1 {
		t.Fatalf("%d schedulers enqueued the next period's task, want 1", n)
	}
	waitQuiet(t, s.db, q, 15*time.Second)
	if n := log.count(tasks.CleanupExpired, "success"); n != len(periods)+1 {
		t.Fatalf("cleanup ran %d times over %d periods, want once each", n, len(periods)+1)
	}
	if n := len(q.completed(tasks.QueueMaintenance, tasks.CleanupExpired, "")); n != len(periods)+1 {
		t.Fatalf("%d completed cleanup tasks, want %d", n, len(periods)+1)
	}
}
