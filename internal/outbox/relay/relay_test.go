package relay_test

// The relay against real PostgreSQL and Redis (SPEC §5 Outbox): batches in id order, rows
// marked handed off only once their tasks are in Redis, unknown task types left for a later
// release without blocking the batch, LISTEN/NOTIFY wake-ups, a graceful stop that finishes the batch in
// progress, and redelivery of rows whose tasks did not finish.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/outbox/relay"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// quietRedis keeps go-redis from printing its dial failures (the Redis-down case makes many).
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	redis.SetLogger(quietRedis{})
	os.Exit(m.Run())
}

type env struct {
	t      *testing.T
	db     *postgres.DB
	dbURL  string
	rdb    *redis.Client
	ns     tasks.Namespace
	client *asynq.Client
	insp   *asynq.Inspector
	wake   *outbox.Waker
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db, dbURL := testenv.DB(t)
	rdb, _, _ := testenv.Redis(t)
	ns := testenv.Namespace(t, rdb, "ot")
	return &env{t: t, db: db, dbURL: dbURL, rdb: rdb, ns: ns, wake: outbox.NewWaker(db, logging.Discard()),
		client: asynq.NewClientFromRedisClient(rdb), insp: asynq.NewInspectorFromRedisClient(rdb)}
}

func (e *env) relay(batch int, poll time.Duration) *relay.Relay {
	return relay.New(e.db, e.dbURL, e.rdb, e.ns, batch, poll, logging.Discard())
}

// write inserts n notify:user rows with outbox.Write in one transaction, tagged with a
// correlation id, wakes the relays as the services do, and returns their ids.
func (e *env) write(n int) []int64 {
	e.t.Helper()
	ctx := logging.WithCorrelationID(context.Background(), "cid-"+uuid.NewString()[:8])
	msgs := make([]outbox.Message, n)
	for i := range msgs {
		msgs[i] = outbox.Message{Type: tasks.NotifyUser, Payload: tasks.Notify{UserID: uuid.New(), Event: "order.paid",
			Data: map[string]any{"seq": i}}}
	}
	var ids []int64
	tx, err := e.db.BeginTxx(ctx, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	var before int64
	if err := tx.Get(&before, `SELECT coalesce(max(id), 0) FROM outbox`); err != nil {
		e.t.Fatal(err)
	}
	if err := outbox.Write(ctx, tx, msgs...); err != nil {
		e.t.Fatal(err)
	}
	if err := tx.Select(&ids, `SELECT id FROM outbox WHERE id > $1 ORDER BY id`, before); err != nil {
		e.t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		e.t.Fatal(err)
	}
	e.wake.Wake()
	return ids
}

// relayAt returns when a row is due.
func (e *env) relayAt(id int64) time.Time {
	e.t.Helper()
	var at time.Time
	if err := e.db.Get(&at, `SELECT relay_at FROM outbox WHERE id = $1`, id); err != nil {
		e.t.Fatal(err)
	}
	return at
}

// clock reads the host's clock as PostgreSQL does, to the microsecond rounded down: taken before
// a statement it is no later than the statement's now(), taken after it no earlier. Bounds taken
// around a call hold however long the machine stalls.
func clock() time.Time { return time.Now().Truncate(time.Microsecond) }

// left returns the rows not handed off yet.
func (e *env) left() []int64 {
	e.t.Helper()
	var ids []int64
	if err := e.db.Select(&ids, `SELECT id FROM outbox WHERE deliveries = 0 ORDER BY id`); err != nil {
		e.t.Fatal(err)
	}
	return ids
}

func (e *env) queued(queue string, id int64) bool {
	e.t.Helper()
	n, err := e.rdb.Exists(context.Background(), "asynq:{"+e.ns.Queue(queue)+"}:t:"+relay.TaskID(id)).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return n == 1
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRelayBatchesInIDOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ids := e.write(250)
	r := e.relay(100, time.Hour)
	for i, want := range []int{100, 100, 50, 0} {
		n, err := r.RunOnce(context.Background())
		if err != nil || n != want {
			t.Fatalf("batch %d: %d rows, err %v; want %d", i, n, err, want)
		}
		done := min(len(ids), 100*(i+1))
		if left := e.left(); !equal(left, ids[done:]) {
			t.Fatalf("after batch %d, %d rows left (first %v), want the %d highest ids", i, len(left), left[:min(3, len(left))], len(ids)-done)
		}
		for j, id := range ids {
			if e.queued(tasks.QueueNotifications, id) != (j < done) {
				t.Fatalf("after batch %d, row %d (#%d) queued = %v", i, id, j, j < done)
			}
		}
	}

	// Each task carries its row: correlation id, outbox id, payload, queue and retry policy.
	ti, err := e.insp.GetTaskInfo(e.ns.Queue(tasks.QueueNotifications), relay.TaskID(ids[7]))
	if err != nil {
		t.Fatal(err)
	}
	var env tasks.Envelope
	if err := json.Unmarshal(ti.Payload, &env); err != nil {
		t.Fatal(err)
	}
	var p tasks.Notify
	if err := json.Unmarshal(env.Data, &p); err != nil {
		t.Fatal(err)
	}
	if ti.Type != tasks.NotifyUser || env.OutboxID != ids[7] || !strings.HasPrefix(env.CorrelationID, "cid-") ||
		p.Event != "order.paid" || p.Data["seq"] != float64(7) || ti.MaxRetry != 3 {
		t.Fatalf("task %s: type %s, envelope %+v, payload %+v, max retry %d", ti.ID, ti.Type, env, p, ti.MaxRetry)
	}
}

// TestRelayMarksRowsOnlyAfterEnqueue: while a batch is being committed its tasks are already
// in Redis and its rows still waiting for everyone else; a batch whose enqueue fails leaves
// every row waiting.
func TestRelayMarksRowsOnlyAfterEnqueue(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ids := e.write(30)
	r := e.relay(20, time.Hour)
	checked := false
	r.Observe = func(n int, _ time.Duration) {
		checked = true
		if n != 20 {
			t.Errorf("observed a batch of %d, want 20", n)
		}
		if left := e.left(); !equal(left, ids) {
			t.Errorf("before commit other sessions see %d rows, want all %d", len(left), len(ids))
		}
		for _, id := range ids[:20] {
			if !e.queued(tasks.QueueNotifications, id) {
				t.Errorf("before commit, row %d is not in Redis", id)
			}
		}
	}
	if n, err := r.RunOnce(context.Background()); err != nil || n != 20 || !checked {
		t.Fatalf("RunOnce: %d, %v (observed %v)", n, err, checked)
	}
	if left := e.left(); !equal(left, ids[20:]) {
		t.Fatalf("after commit %d rows left, want 10", len(left))
	}

	// Redis unreachable: the enqueue fails and the batch rolls back.
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)), DialTimeout: time.Second})
	t.Cleanup(func() { down.Close() })
	broken := relay.New(e.db, e.dbURL, down, e.ns, 20, time.Hour, logging.Discard())
	if n, err := broken.RunOnce(context.Background()); err == nil || n != 0 {
		t.Fatalf("RunOnce with Redis down: %d rows, err %v; want an error", n, err)
	}
	if left := e.left(); !equal(left, ids[20:]) {
		t.Fatalf("after a failed enqueue %d rows left, want the 10 still there", len(left))
	}
	// A later try delivers them.
	r.Observe = nil
	if n, err := r.RunOnce(context.Background()); err != nil || n != 10 {
		t.Fatalf("retry: %d, %v", n, err)
	}
	if left := e.left(); len(left) != 0 {
		t.Fatalf("%d rows left", len(left))
	}
}

// TestOneFailingRowDoesNotHoldUpItsBatch: a row whose hand-off fails while the others' succeed
// (here Redis holds a value of the wrong type under its task id, so looking the task up fails)
// is tried again a second later with its delivery count as it was; the rest of its batch, and
// the rows behind it, are handed off meanwhile.
func TestOneFailingRowDoesNotHoldUpItsBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ids := e.write(6)
	bad := ids[1]
	key := "asynq:{" + e.ns.Queue(tasks.QueueNotifications) + "}:t:" + relay.TaskID(bad)
	if err := e.rdb.Set(ctx, key, "not a task", 0).Err(); err != nil {
		t.Fatal(err)
	}
	r := e.relay(3, time.Hour)
	batch := func() {
		t.Helper()
		if n, err := r.RunOnce(ctx); err != nil || n != 3 {
			t.Fatalf("RunOnce: %d, %v; want 3 rows and no error", n, err)
		}
	}
	lo := clock()
	batch() // the one with the failing row
	hi := clock()
	batch() // the rows behind it
	if left := e.left(); !equal(left, []int64{bad}) {
		t.Fatalf("rows not handed off: %v, want only %d", left, bad)
	}
	for _, id := range ids {
		if id != bad && !e.queued(tasks.QueueNotifications, id) {
			t.Fatalf("row %d is not in Redis", id)
		}
	}
	// Due again a second after the claim that failed it, whose now() lies between lo and hi.
	if at := e.relayAt(bad); at.Before(lo.Add(time.Second)) || at.After(hi.Add(time.Second)) {
		t.Fatalf("failed row due %v after its batch began (which took %v), want a second after its claim", at.Sub(lo), hi.Sub(lo))
	}

	// Once Redis is sound again, the row goes through like any first hand-off.
	if err := e.rdb.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the failed row handed off", func() bool {
		if _, err := r.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		return len(e.left()) == 0
	})
	if !e.queued(tasks.QueueNotifications, bad) {
		t.Fatalf("row %d is not in Redis", bad)
	}
}

// TestRelayLeavesUnknownTaskTypes: a row of a type this relay does not know (written by a newer
// release during a rolling upgrade) is neither enqueued nor dropped: it is left for a minute,
// for a relay that knows its type, with a warning naming it; the rest of its batch is
// delivered.
func TestRelayLeavesUnknownTaskTypes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := outbox.Write(context.Background(), e.db, outbox.Message{Type: "order:teleport", Payload: map[string]string{}}); err == nil {
		t.Fatal("outbox.Write accepted an unknown task type")
	}
	first := e.write(2)
	var unknown int64
	if err := e.db.Get(&unknown, `INSERT INTO outbox (type, payload) VALUES ('order:teleport', '{"orderId":"x"}') RETURNING id`); err != nil {
		t.Fatal(err)
	}
	last := e.write(2)

	var buf testenv.Buffer
	r := relay.New(e.db, e.dbURL, e.rdb, e.ns, 10, time.Hour, logging.New("relay", -4, "json", &buf))
	if n, err := r.RunOnce(context.Background()); err != nil || n != 5 {
		t.Fatalf("RunOnce: %d, %v; want 5 rows", n, err)
	}
	if left := e.left(); len(left) != 0 {
		t.Fatalf("rows waiting: %v, want none (the unknown one counts as handed off, not as waiting for readiness)", left)
	}
	var later bool
	if err := e.db.Get(&later, `SELECT relay_at > now() + interval '30 seconds' FROM outbox WHERE id = $1`, unknown); err != nil || !later {
		t.Fatalf("the unknown row is gone or due again within 30 s (%v): it must stay, and not be claimed again and again", err)
	}
	if n, err := r.RunOnce(context.Background()); err != nil || n != 0 {
		t.Fatalf("second RunOnce: %d, %v; want nothing due", n, err)
	}
	for _, id := range append(first, last...) {
		if !e.queued(tasks.QueueNotifications, id) {
			t.Fatalf("row %d of the batch was not delivered", id)
		}
	}
	for _, q := range tasks.Queues() {
		if e.queued(q, unknown) {
			t.Fatalf("the unknown row was enqueued in %s", q)
		}
	}
	found := false
	for _, line := range strings.Split(buf.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if rec["level"] == "WARN" && rec["outboxId"] == float64(unknown) {
			found = true
		}
	}
	if !found {
		t.Fatalf("no warning names the row %d:\n%s", unknown, buf.String())
	}
}

// TestRelayWakesOnTheWritersNotify: with a one-hour poll interval only the writers' NOTIFY
// (outbox.Waker) can wake the relay; rows written one transaction at a time are each delivered.
func TestRelayWakesOnTheWritersNotify(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.write(1)
	r := e.relay(100, time.Hour)
	// A loaded machine may take seconds from a write to the claim its NOTIFY wakes; past the
	// window its rows would wait for the hourly poll.
	r.RecentWindow = time.Minute
	var batches atomic.Int32
	r.Observe = func(int, time.Duration) { batches.Add(1) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// The first row goes in the start-up drain, which runs after LISTEN.
	testenv.Eventually(t, 20*time.Second, "start-up drain", func() bool { return e.queued(tasks.QueueNotifications, first[0]) })
	for i := 0; i < 3; i++ {
		ids := e.write(1 + i)
		testenv.Eventually(t, 20*time.Second, "rows written after start-up delivered", func() bool {
			for _, id := range ids {
				if !e.queued(tasks.QueueNotifications, id) {
					return false
				}
			}
			return len(e.left()) == 0
		})
	}
	if n := batches.Load(); n != 4 {
		t.Fatalf("%d batches, want 4 (the start-up drain and one per write)", n)
	}
}

// TestRelayPollsWhileItCannotListen: a relay whose listener cannot connect (PostgreSQL away
// just after the relay started) still polls and hands rows off, and stops when told.
func TestRelayPollsWhileItCannotListen(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	unreachable := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=1", testenv.FreePort(t))
	r := relay.New(e.db, unreachable, e.rdb, e.ns, 10, 20*time.Millisecond, logging.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	ids := e.write(3)
	testenv.Eventually(t, 10*time.Second, "rows handed off by polling", func() bool { return len(e.left()) == 0 })
	for _, id := range ids {
		if !e.queued(tasks.QueueNotifications, id) {
			t.Fatalf("row %d is not queued", id)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// TestRelayStopFinishesBatchInProgress: a stop that arrives while a batch is between enqueue
// and commit lets it commit, and starts no new batch.
func TestRelayStopFinishesBatchInProgress(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ids := e.write(25)
	r := e.relay(10, 10*time.Millisecond)
	inBatch, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r.Observe = func(int, time.Duration) {
		once.Do(func() { close(inBatch); <-release })
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	<-inBatch
	cancel()
	close(release)
	<-done
	if left := e.left(); !equal(left, ids[10:]) {
		t.Fatalf("after the stop %d rows left, want 15 (the batch in progress committed, no other started)", len(left))
	}
	for _, id := range ids[:10] {
		if !e.queued(tasks.QueueNotifications, id) {
			t.Fatalf("row %d of the finished batch is not queued", id)
		}
	}
}

func TestStatsReportBacklogAndOldestRow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if b, err := relay.Stats(ctx, e.db); err != nil || b != (relay.Backlog{}) {
		t.Fatalf("empty outbox: %+v, err %v", b, err)
	}
	ids := e.write(5)
	if _, err := e.db.Exec(`UPDATE outbox SET created_at = now() - interval '5 minutes' WHERE id = $1`, ids[0]); err != nil {
		t.Fatal(err)
	}
	b, err := relay.Stats(ctx, e.db)
	if err != nil || b.Waiting != 5 || b.OldestWaiting < 5*time.Minute || b.OldestWaiting > 6*time.Minute || b.InFlight != 0 {
		t.Fatalf("stats: %+v, err %v; want 5 waiting, the oldest about 5m", b, err)
	}
	// Handed off, the first two are in flight until their tasks finish.
	if n, err := e.relay(2, time.Hour).RunOnce(ctx); err != nil || n != 2 {
		t.Fatalf("RunOnce: %d, %v", n, err)
	}
	b, err = relay.Stats(ctx, e.db)
	if err != nil || b.Waiting != 3 || b.OldestWaiting > time.Minute || b.InFlight != 2 || b.OldestInFlight < 5*time.Minute {
		t.Fatalf("stats after a hand-off: %+v, err %v", b, err)
	}
}

// TestAWakeUpClaimsTheRecentRowsAndThePollAllOfThem: a wake-up claims the rows that came due
// in the last seconds; a row due for longer (its writer ran long, say) is left to the full claim
// of the poll interval, which comes however many wake-ups keep the relay busy.
func TestAWakeUpClaimsTheRecentRowsAndThePollAllOfThem(t *testing.T) {
	t.Parallel()
	for _, poll := range []time.Duration{time.Hour, 300 * time.Millisecond} {
		e := newEnv(t)
		insert := func(age string) int64 {
			var id int64
			if err := e.db.Get(&id, `INSERT INTO outbox (type, payload, relay_at)
				VALUES ('notify:user', '{"userId": "00000000-0000-0000-0000-000000000001", "event": "auth.login"}', now() - $1::interval)
				RETURNING id`, age); err != nil {
				t.Fatal(err)
			}
			return id
		}
		// No wake-up for this one: only the start-up drain, a full claim, can take it.
		first := insert("0")
		r := e.relay(100, poll)
		// A loaded machine may take seconds from a write to the claim its NOTIFY wakes; the row
		// due for an hour stays far outside a minute.
		r.RecentWindow = time.Minute
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = r.Run(ctx) }()
		testenv.Eventually(t, 20*time.Second, "start-up drain", func() bool { return e.queued(tasks.QueueNotifications, first) })

		old := insert("1 hour")
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) { // wake-ups every 50 ms, each for a fresh row
			ids := e.write(1)
			testenv.Eventually(t, 20*time.Second, "a fresh row delivered on its wake-up", func() bool {
				return e.queued(tasks.QueueNotifications, ids[0])
			})
			time.Sleep(50 * time.Millisecond)
		}
		if poll == time.Hour {
			if e.queued(tasks.QueueNotifications, old) {
				t.Fatal("a wake-up claimed a row due for an hour; only the full claim should")
			}
		} else {
			testenv.Eventually(t, 20*time.Second, "the row due for an hour delivered by the full claim", func() bool {
				return e.queued(tasks.QueueNotifications, old)
			})
		}
		cancel()
		<-done
	}
}

// TestABatchCutOffFromTheDatabaseLetsItsRowsGo: a relay whose connection to PostgreSQL stops
// carrying anything after it claimed a batch and handed it to Redis (its host gone, a network
// split) can neither commit nor roll back. PostgreSQL ends its idle transaction after the
// relay's limit, so the rows are not locked away from the other relays for as long as the
// server keeps the dead connection; the tasks already in Redis count as delivered.
func TestABatchCutOffFromTheDatabaseLetsItsRowsGo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ids := e.write(3)

	proxied, proxy := testenv.BehindProxy(t, e.dbURL)
	db, err := postgres.Open(ctx, proxied, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cut := relay.New(db, proxied, e.rdb, e.ns, 100, time.Hour, logging.Discard())
	cut.SetIdleLimit(time.Second)
	frozen := make(chan struct{})
	cut.Observe = func(int, time.Duration) { // the tasks are in Redis; the commit never arrives
		proxy.Freeze()
		close(frozen)
	}
	ended := make(chan error, 1)
	go func() {
		n, err := cut.RunOnce(ctx)
		if err == nil && n != len(ids) {
			err = fmt.Errorf("claimed %d rows, want %d", n, len(ids))
		}
		ended <- err
	}()
	select {
	case <-frozen:
	case err := <-ended:
		t.Fatalf("the relay to be cut off ended its batch early: %v", err)
	}

	other := e.relay(100, time.Hour)
	testenv.Eventually(t, 30*time.Second, "another relay takes the rows", func() bool {
		n, err := other.RunOnce(ctx)
		return err == nil && n == len(ids)
	})
	for _, id := range ids {
		if !e.queued(tasks.QueueNotifications, id) {
			t.Fatalf("row %d's task is not queued", id)
		}
	}
	proxy.Cut()
	if err := <-ended; err == nil || strings.Contains(err.Error(), "claimed") {
		t.Fatalf("the cut-off relay's batch ended with %v, want a connection error", err)
	}
}
