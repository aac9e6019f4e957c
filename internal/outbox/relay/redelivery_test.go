package relay_test

// Redelivery: a row stays until its task has run; when it is due again the relay hands it off
// again if Redis lost the task, leaves it if the task is still on its way, and deletes it if
// the task ran and only the deletion was lost.

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/lib/pq"

	"github.com/dispatchhq/dispatch/internal/outbox/relay"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// redeliveries counts the relay's redelivery verdicts.
type redeliveries struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *redeliveries) record(_, verdict string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[verdict]++
}

func (r *redeliveries) count(verdict string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[verdict]
}

// deliveries returns each row's hand-off count (a deleted row is absent).
func (e *env) deliveries(ids []int64) map[int64]int {
	e.t.Helper()
	var rows []struct {
		ID         int64 `db:"id"`
		Deliveries int   `db:"deliveries"`
	}
	if err := e.db.Select(&rows, `SELECT id, deliveries FROM outbox WHERE id = ANY($1)`, ids); err != nil {
		e.t.Fatal(err)
	}
	out := map[int64]int{}
	for _, r := range rows {
		out[r.ID] = r.Deliveries
	}
	return out
}

// redelivering returns a relay whose rows are due again after a second.
func (e *env) redelivering(rec *redeliveries) *relay.Relay {
	r := e.relay(100, time.Hour)
	r.RedeliverAfter = time.Second
	r.Redelivered = rec.record
	return r
}

// handedOff writes n rows and hands them off once with a relay whose rows are due again after
// a second.
func (e *env) handedOff(n int) (*relay.Relay, *redeliveries, []int64) {
	e.t.Helper()
	rec := &redeliveries{}
	r := e.redelivering(rec)
	ids := e.write(n)
	if got, err := r.RunOnce(context.Background()); err != nil || got != n {
		e.t.Fatalf("first hand-off: %d, %v", got, err)
	}
	return r, rec, ids
}

// serve runs handler on the notifications queue until the test ends, as a worker that never
// deletes outbox rows would.
func (e *env) serve(handler asynq.HandlerFunc) *asynq.Server {
	e.t.Helper()
	srv := asynq.NewServerFromRedisClient(e.rdb, asynq.Config{Concurrency: 2, Queues: map[string]int{e.ns.Queue(tasks.QueueNotifications): 1},
		Logger: quietAsynq{}, TaskCheckInterval: 10 * time.Millisecond})
	if err := srv.Start(handler); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(srv.Shutdown)
	return srv
}

// runUntil runs the relay until it hands off want rows in one batch, and returns the clock
// just before and after that batch: its claim's now() lies between them.
func runUntil(t *testing.T, r *relay.Relay, want int) (lo, hi time.Time) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, "rows due again", func() bool {
		lo = clock()
		n, err := r.RunOnce(context.Background())
		hi = clock()
		if err != nil {
			t.Fatal(err)
		}
		return n == want
	})
	return lo, hi
}

func TestRedeliveryHandsLostTasksOffAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r, rec, ids := e.handedOff(3)
	// Redis forgets the tasks (a restart without persistence).
	queue := e.ns.Queue(tasks.QueueNotifications)
	for _, id := range ids {
		if err := e.insp.DeleteTask(queue, relay.TaskID(id)); err != nil {
			t.Fatal(err)
		}
	}
	// Not due again before relay_at: a claim that ended before then takes none. One that ended
	// later (the steps since the hand-off stalled) proves nothing; if it took the rows, it was
	// the redelivery.
	due := e.relayAt(ids[0])
	lo := clock()
	n, err := r.RunOnce(context.Background())
	hi := clock()
	switch {
	case err != nil:
		t.Fatal(err)
	case n == 0:
		lo, hi = runUntil(t, r, 3)
	case hi.Before(due):
		t.Fatalf("%d rows handed off again %v before they were due", n, due.Sub(hi))
	case n != 3:
		t.Fatalf("%d rows handed off again once due, want 3", n)
	}
	for _, id := range ids {
		if !e.queued(tasks.QueueNotifications, id) {
			t.Fatalf("row %d was not handed off again", id)
		}
	}
	if got := e.deliveries(ids); got[ids[0]] != 2 || got[ids[1]] != 2 || got[ids[2]] != 2 {
		t.Fatalf("deliveries %v, want 2 each", got)
	}
	if rec.count("lost") != 3 {
		t.Fatalf("verdicts %v, want 3 lost", rec.n)
	}
	// The next redelivery waits twice as long: 2 s after the claim, whose now() lies between lo
	// and hi.
	if at := e.relayAt(ids[0]); at.Before(lo.Add(2*time.Second)) || at.After(hi.Add(2*time.Second)) {
		t.Fatalf("next redelivery %v after the redelivering batch began (which took %v), want 2s after its claim", at.Sub(lo), hi.Sub(lo))
	}
}

func TestRedeliveryLeavesTasksOnTheirWay(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r, rec, ids := e.handedOff(2)
	runUntil(t, r, 2)
	if got := e.deliveries(ids); len(got) != 2 || got[ids[0]] != 2 {
		t.Fatalf("deliveries %v, want both rows kept, handed off twice", got)
	}
	info, err := e.insp.GetQueueInfo(e.ns.Queue(tasks.QueueNotifications))
	if err != nil || info.Pending != 2 {
		t.Fatalf("queue: %+v, %v; want the 2 tasks once each", info, err)
	}
	if len(rec.n) != 0 {
		t.Fatalf("verdicts %v for tasks still queued", rec.n)
	}
}

// TestRedeliveryDeletesRowsOfFinishedTasks: a task that completed, or failed for good, whose
// row is still there (the worker's deletion was lost) is not run again: the row goes.
func TestRedeliveryDeletesRowsOfFinishedTasks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r, rec, ids := e.handedOff(4)
	// A worker runs them without deleting their rows: two succeed, two fail for good.
	var mu sync.Mutex
	runs := 0
	e.serve(func(context.Context, *asynq.Task) error {
		mu.Lock()
		defer mu.Unlock()
		runs++
		if runs > 2 {
			return errors.Join(errors.New("no such user"), asynq.SkipRetry)
		}
		return nil
	})
	testenv.Eventually(t, 10*time.Second, "the tasks ran", func() bool {
		info, err := e.insp.GetQueueInfo(e.ns.Queue(tasks.QueueNotifications))
		return err == nil && info.Completed == 2 && info.Archived == 2
	})
	runUntil(t, r, 4)
	if got := e.deliveries(ids); len(got) != 0 {
		t.Fatalf("rows of finished tasks left: %v", got)
	}
	mu.Lock()
	ran := runs
	mu.Unlock()
	if rec.count("completed") != 4 || ran != 4 {
		t.Fatalf("verdicts %v, %d runs; want 4 completed, each task run once", rec.n, ran)
	}
}

type quietAsynq struct{}

func (quietAsynq) Debug(...any) {}
func (quietAsynq) Info(...any)  {}
func (quietAsynq) Warn(...any)  {}
func (quietAsynq) Error(...any) {}
func (quietAsynq) Fatal(...any) {}

// TestAckerDeletesFinishedRows: acknowledged rows are deleted in batches; Stop flushes the rest.
// A task that carries another time of writing than its row's (a task of an earlier database
// whose ids the row reuses) deletes nothing.
func TestAckerDeletesFinishedRows(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ids := e.write(6)
	created := make([]time.Time, len(ids))
	for i, id := range ids {
		if err := e.db.Get(&created[i], `SELECT created_at FROM outbox WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
	}
	a := relay.NewAcker(e.db, 20*time.Millisecond, logging.Discard())
	a.Start()
	a.Ack(ids[0], created[0])
	a.Ack(ids[1], time.Time{}) // a task that does not say when its row was written
	a.Ack(0, time.Now())       // not from the outbox
	a.Ack(ids[5], created[5].Add(-time.Hour))
	testenv.Eventually(t, 5*time.Second, "acknowledged rows deleted", func() bool { return len(e.deliveries(ids)) == 4 })
	a.Ack(ids[2], created[2])
	a.Stop()
	if got := e.deliveries(ids); len(got) != 3 || got[ids[3]] != 0 || got[ids[4]] != 0 || got[ids[5]] != 0 {
		t.Fatalf("rows left after Stop: %v, want the 2 never acknowledged and the one another row's task named", got)
	}
}

// TestTasksOfAnEarlierDatabaseAreReplaced: a database recreated or restored numbers its outbox
// rows from where it was, while Redis still keeps the finished tasks of the rows it had. A
// task under a row's id that carries another row is replaced, never taken for the row's own.
func TestTasksOfAnEarlierDatabaseAreReplaced(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var rec redeliveries
	r := e.redelivering(&rec)
	ids := e.write(2)
	queue := e.ns.Queue(tasks.QueueNotifications)
	for _, id := range ids {
		old, _ := json.Marshal(tasks.Envelope{OutboxID: id, CreatedAt: time.Now().Add(-time.Hour), Data: json.RawMessage(`{"old":true}`)})
		if _, err := e.client.Enqueue(asynq.NewTask(tasks.NotifyUser, old), asynq.TaskID(relay.TaskID(id)),
			asynq.Queue(queue), asynq.Retention(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	srv := e.serve(func(context.Context, *asynq.Task) error { return nil })
	testenv.Eventually(t, 10*time.Second, "the earlier tasks ran", func() bool {
		info, err := e.insp.GetQueueInfo(queue)
		return err == nil && info.Completed == 2
	})
	srv.Shutdown() // before the rows' own tasks are enqueued: they must stay pending

	if n, err := r.RunOnce(context.Background()); err != nil || n != 2 {
		t.Fatalf("hand-off: %d, %v", n, err)
	}
	if got := e.deliveries(ids); len(got) != 2 {
		t.Fatalf("rows left after the hand-off: %v, want both (their own tasks have not run)", got)
	}
	for _, id := range ids {
		var created time.Time
		if err := e.db.Get(&created, `SELECT created_at FROM outbox WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		info, err := e.insp.GetTaskInfo(queue, relay.TaskID(id))
		if err != nil {
			t.Fatal(err)
		}
		var env tasks.Envelope
		if err := json.Unmarshal(info.Payload, &env); err != nil {
			t.Fatal(err)
		}
		if info.State != asynq.TaskStatePending || !env.CreatedAt.Equal(created) {
			t.Fatalf("task %s is %v, written at %v; want the row's own (written at %v), pending", info.ID, info.State, env.CreatedAt, created)
		}
	}
	if rec.count("replaced") != 2 {
		t.Fatalf("verdicts %v, want 2 replaced", rec.n)
	}
}

// TestRedeliveryAfterRedisLostItsQueueIndex: Redis restarted without its data and the relay's
// Asynq client, which indexes a queue only once, went on enqueuing into it, so the inspector
// does not see the queue. A redelivery must still find the row's task, not fail its batch on
// a conflict with it again and again.
func TestRedeliveryAfterRedisLostItsQueueIndex(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r, rec, ids := e.handedOff(2)
	queue := e.ns.Queue(tasks.QueueNotifications)
	if err := e.rdb.SRem(context.Background(), tasks.QueueIndex, queue).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.insp.GetTaskInfo(queue, relay.TaskID(ids[0])); !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Fatalf("the inspector still sees the queue: %v", err)
	}
	runUntil(t, r, 2) // fails on the first batch error
	if got := e.deliveries(ids); got[ids[0]] != 2 || got[ids[1]] != 2 {
		t.Fatalf("deliveries after the redelivery: %v, want 2 each", got)
	}
	if _, err := e.insp.GetTaskInfo(queue, relay.TaskID(ids[0])); err != nil {
		t.Fatalf("the queue is not indexed again: %v", err)
	}
	if len(rec.n) != 0 {
		t.Fatalf("verdicts %v for tasks still queued", rec.n)
	}
}

// A Redis that lost its data took the tasks of every row in flight with it: the relay notices
// at its next poll and hands those rows off again then, not a redelivery delay (here an hour)
// later. Here only the queues' keys are deleted (no flush, Redis keeps everything else): the
// markers are among them. While the markers are in place it hands nothing off again.
func TestRowsInFlightAreHandedOffAgainOnceRedisLostTheQueues(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rec := &redeliveries{}
	r := e.relay(100, 20*time.Millisecond)
	r.RedeliverAfter = time.Hour
	r.Redelivered = rec.record
	ids := e.write(3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	queued := func() bool {
		for _, id := range ids {
			if !e.queued(tasks.QueueNotifications, id) {
				return false
			}
		}
		return true
	}
	testenv.Eventually(t, 10*time.Second, "first hand-off", queued)

	testenv.ForgetQueues(e.rdb, e.ns)
	testenv.Eventually(t, 10*time.Second, "hand-off after Redis lost the queues", queued)
	// The tasks are queued before the batch that counts the hand-off commits.
	testenv.Eventually(t, 10*time.Second, "the second hand-off counted", func() bool {
		for _, n := range e.deliveries(ids) {
			if n != 2 {
				return false
			}
		}
		return true
	})
	if n := rec.count("lost"); n != len(ids) {
		t.Fatalf("%d rows handed off again as lost, want %d", n, len(ids))
	}
	for id, n := range e.deliveries(ids) {
		if n != 2 {
			t.Fatalf("row %d handed off %d times, want 2", id, n)
		}
	}
}

// TestAckerWaitsOutAnOutage: while its deletions fail (PostgreSQL away) the acker keeps the
// acknowledgements and tries again less and less often, saying so once, not at every try.
func TestAckerWaitsOutAnOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ids := e.write(1)
	away, err := postgres.Open(context.Background(), e.dbURL, 1)
	if err != nil {
		t.Fatal(err)
	}
	away.Close() // every statement fails
	var out testenv.Buffer
	a := relay.NewAcker(away, 10*time.Millisecond, logging.New("worker", slog.LevelInfo, "json", &out))
	a.Start()
	a.Ack(ids[0], time.Time{})
	testenv.Eventually(t, 5*time.Second, "the failed deletion logged", func() bool {
		return strings.Contains(out.String(), "not deleted yet")
	})
	time.Sleep(500 * time.Millisecond) // fifty intervals: at most six more tries with the back-off
	a.Stop()
	if n := strings.Count(out.String(), "not deleted yet"); n != 1 {
		t.Fatalf("%d warnings for one outage, want 1:\n%s", n, out.String())
	}
	if got := e.deliveries(ids); len(got) != 1 {
		t.Fatalf("rows %v, want the acknowledged one kept while the database is away", got)
	}
}

// TestRowsOfABatchOpenAtTheLossAreMadeDueAgain: a batch another relay had open when Redis lost
// its data commits its rows as handed off after this relay made the others due, and that
// update did not wait for it. Those rows are made due once more when every batch open at the
// loss has ended, and only then.
func TestRowsOfABatchOpenAtTheLossAreMadeDueAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.relay(100, time.Hour)
	now := time.Now()
	r.SetClock(func() time.Time { return now })
	ctx := testenv.Context(t)
	ids := e.write(2)
	handedOff := func() { // as the other relay's batch commits them: due in an hour
		t.Helper()
		if _, err := e.db.Exec(`UPDATE outbox SET deliveries = deliveries + 1, relay_at = now() + interval '1 hour'
			WHERE id = ANY($1)`, pq.Array(ids)); err != nil {
			t.Fatal(err)
		}
	}
	due := func() bool {
		t.Helper()
		for _, id := range ids {
			if e.relayAt(id).After(clock()) {
				return false
			}
		}
		return true
	}

	testenv.ForgetQueues(e.rdb, e.ns)
	r.NoticeLostQueues(ctx) // the loss noticed, the marker set again
	handedOff()
	r.NoticeLostQueues(ctx)
	if due() {
		t.Fatal("rows made due again while a batch open at the loss might not have ended")
	}
	now = now.Add(relay.BatchTimeout + time.Second)
	r.NoticeLostQueues(ctx)
	if !due() {
		t.Fatal("rows a batch open at the loss handed off are not due once every such batch ended")
	}
	handedOff()
	now = now.Add(2 * relay.BatchTimeout)
	r.NoticeLostQueues(ctx)
	if due() {
		t.Fatal("rows made due again with no loss since the last time")
	}
}
