// Package relay is the transport side of the outbox: it hands the rows outbox.Write left in
// PostgreSQL to the Asynq queues (Relay), deletes them once their tasks ran (Acker), and
// watches the backlog (Monitor). The domain writes rows through package outbox and never
// imports this one, so it stays free of Asynq.
package relay

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
)

// Relay hands outbox rows to the Asynq queues.
//
// Why it is shaped this way: a batch of due rows is claimed inside a transaction (FOR UPDATE
// SKIP LOCKED, so several relays share the work without blocking each other), every row is
// enqueued with a task id derived from its row id, and only then does the transaction commit,
// marking the rows handed off and due again RedeliverAfter later. A crash, or a Redis error
// that fails every row, before the commit rolls the batch back for a later try; a row enqueued
// before such a crash is enqueued again under the same task id, which Asynq refuses as a
// conflict (delivered). A row that fails alone is tried again shortly, without its batch.
//
// The row itself stays until the worker deletes it once its task has run (Acker). A row still
// there when it is due again is handed off again: its task was lost (a Redis without
// persistence restarted, a failover dropped writes) or is still waiting. Asynq tells which: a
// task it still holds is left alone, one it completed means the deletion was lost, one it
// archived after its worker vanished is run again. Delivery is at least once; consumers are
// idempotent.
type Relay struct {
	db        *postgres.DB
	rdb       redis.UniversalClient
	client    *asynq.Client
	inspector *asynq.Inspector
	ns        tasks.Namespace
	batchSize int
	poll      time.Duration
	dsn       string
	log       *slog.Logger
	outage    *slog.Logger // a failing batch at every wake-up while Redis is away, once in a while
	now       func() time.Time
	sightings map[string]sighting // the leases the last look saw, by queue and task id
	lastLook  time.Time           // the last look that read every queue
	lostAt    time.Time           // when this relay last found Redis's queues lost, until it looked again
	idleLimit time.Duration       // how long a batch's transaction may wait idle (twice batchTimeout)

	// MaxRetry is the number of retries of every task (SPEC §5: 3).
	MaxRetry int
	// Retention keeps finished tasks in Redis so a duplicate enqueue within it is refused.
	Retention time.Duration
	// RedeliverAfter is how long a handed-off row waits for its task to finish before it is
	// handed off again; each further redelivery waits twice as long, up to 16 times.
	RedeliverAfter time.Duration
	// RecentWindow is how far back the claim after a wake-up looks (zero: 2 s): rows of a writer
	// slower than it wait for the poll, and a wider one reads more dead index entries.
	RecentWindow time.Duration
	// Observe is told each batch's size and how long enqueuing it took (metrics); may be nil.
	Observe func(n int, enqueue time.Duration)
	// Redelivered is told of each row handed off again and what Asynq said of its task; may be nil.
	Redelivered func(taskType, verdict string)
}

// NewRelay returns a relay claiming batchSize rows at a time from db into the queues on rdb,
// woken by LISTEN/NOTIFY on dsn's database and polling every poll as a fallback.
func New(db *postgres.DB, dsn string, rdb redis.UniversalClient, ns tasks.Namespace, batchSize int, poll time.Duration, log *slog.Logger) *Relay {
	return &Relay{db: db, rdb: rdb, dsn: dsn, client: asynq.NewClientFromRedisClient(rdb), inspector: asynq.NewInspectorFromRedisClient(rdb),
		ns: ns, batchSize: batchSize, poll: poll, log: log, outage: logging.Sometimes(log, logging.OutageEvery), now: time.Now,
		MaxRetry: 3, Retention: 10 * time.Minute, RedeliverAfter: time.Minute, idleLimit: 2 * batchTimeout}
}

type row struct {
	ID            int64           `db:"id"`
	Type          string          `db:"type"`
	Payload       json.RawMessage `db:"payload"`
	CorrelationID string          `db:"correlation_id"`
	CreatedAt     time.Time       `db:"created_at"`
	Deliveries    int             `db:"deliveries"`
}

// claimQuery takes the due rows in order and schedules their next delivery. It also relaxes
// the commit of its transaction (postgres.Relaxed, in the same round trip): the relay's own
// bookkeeping need not wait for the disk. If a crash loses its last commits, the rows come back
// due and are delivered again, which consumers tolerate; the changes the rows announce were
// committed durably by their writers.
//
// claimRecentQuery takes only the rows that came due in the last $3 ms. Every claim moves its
// rows' relay_at, leaving a dead entry at the old place in the relay_at index until a vacuum
// removes it, and a scan from the oldest relay_at walks them all: over a minute at 170 paid
// orders/s a claim read 740 buffers to find a few rows (docs/performance.md). A wake-up means
// rows just committed, whose relay_at is their writer's start, so the relay claims those by
// the recent window alone; rows older than it (a writer that ran longer, a redelivery that
// came due while no wake-up came) wait for the full claim, once per poll interval.
//
// The claimed ids come back as an array the update looks up by key: PostgreSQL planned an
// `id IN (...)` as a join that read the whole outbox, every row and dead row of a backlog,
// for each batch taken from it (docs/performance.md).
var (
	claimQuery       = claimSQL("relay_at <= now()")
	claimRecentQuery = claimSQL("relay_at <= now() AND relay_at > now() - $4 * interval '1 millisecond'")
)

// claimSQL is the claim of the rows due by due. It also sets how long its transaction may sit
// idle ($3 ms) before PostgreSQL ends it. The transaction waits on Redis while its rows are
// locked; a relay cut off from the database then (its host gone, a network split) can neither
// commit nor roll back, and its rows would stay locked, skipped by every other relay and
// blocking the workers' deletions, until the server's TCP keepalive gave up on the connection:
// two hours by default.
func claimSQL(due string) string {
	return `WITH ` + postgres.Relaxed + `,
held AS MATERIALIZED (SELECT set_config('idle_in_transaction_session_timeout', $3, true))
UPDATE outbox SET deliveries = deliveries + 1,
    relay_at = now() + $2 * interval '1 millisecond' * power(2, least(deliveries, 4))
WHERE id = ANY(ARRAY(
    SELECT id FROM outbox, relaxed, held WHERE ` + due + ` ORDER BY relay_at, id LIMIT $1 FOR UPDATE OF outbox SKIP LOCKED
)) RETURNING id, type, payload, correlation_id, created_at, deliveries`
}

// recentWindow is how far back a claim after a wake-up looks.
const recentWindow = 2 * time.Second

const deleteQuery = `DELETE FROM outbox WHERE id = ANY($1)`

// enqueueWorkers bounds the Redis round trips of one batch in flight at once.
const enqueueWorkers = 32

// RunOnce relays one batch and returns how many rows it claimed. A row whose hand-off failed
// while others went through is tried again after retryFailed, with its delivery count as it
// was, so that one row failing for good cannot hold up the rows behind it; when no row went
// through (Redis is down, most likely) the batch rolls back for a later try.
func (r *Relay) RunOnce(ctx context.Context) (int, error) { return r.runOnce(ctx, false) }

// runOnce is RunOnce, claiming only the rows due within RecentWindow when recent is set.
func (r *Relay) runOnce(ctx context.Context, recent bool) (int, error) {
	query, args := claimQuery, []any{r.batchSize, r.RedeliverAfter.Milliseconds(), strconv.FormatInt(r.idleLimit.Milliseconds(), 10)}
	if recent {
		query, args = claimRecentQuery, append(args, cmp.Or(r.RecentWindow, recentWindow).Milliseconds())
	}
	n := 0
	err := postgres.WithTx(ctx, r.db, func(tx *postgres.Tx) error {
		var rows []row
		if err := tx.SelectContext(ctx, &rows, query, args...); err != nil {
			return fmt.Errorf("outbox: claim: %w", err)
		}
		if len(rows) == 0 {
			return nil
		}
		start := time.Now()
		done, failed, unknown, err := r.enqueueAll(ctx, rows)
		if len(failed) == len(rows) {
			return err
		}
		if len(unknown) > 0 {
			r.log.WarnContext(ctx, "outbox rows of a task type this relay does not know (written by a newer version?) left for a relay that does",
				"rows", len(unknown), "outboxId", unknown[0])
			if _, err := tx.ExecContext(ctx, postponeQuery, pq.Array(unknown), retryUnknown.Milliseconds()); err != nil {
				return fmt.Errorf("outbox: postpone rows of unknown types: %w", err)
			}
		}
		if r.Observe != nil {
			r.Observe(len(rows), time.Since(start))
		}
		if len(failed) > 0 {
			r.log.ErrorContext(ctx, "outbox rows not handed off; tried again shortly", "rows", len(failed), "err", err)
			if _, err := tx.ExecContext(ctx, retryQuery, pq.Array(failed), retryFailed.Milliseconds()); err != nil {
				return fmt.Errorf("outbox: reschedule failed rows: %w", err)
			}
		}
		if len(done) > 0 {
			if _, err := tx.ExecContext(ctx, deleteQuery, pq.Array(done)); err != nil {
				return fmt.Errorf("outbox: delete consumed rows: %w", err)
			}
		}
		n = len(rows)
		return nil
	})
	return n, err
}

// retryFailed is how long a row whose hand-off failed waits for its next try; retryUnknown, a
// row of a task type this relay does not know. During a rolling upgrade a newer API writes
// tasks of a new type while older relays and workers still run: the row must wait for a
// program that knows its type, never be dropped.
const (
	retryFailed  = time.Second
	retryUnknown = time.Minute
)

// postponeQuery makes rows due after $2 ms, keeping the delivery the claim counted: a row of an
// unknown type counts as handed off (in flight), not as waiting, so that it does not make every
// relay unready after StaleAfter while no program that knows its type runs (after a rollback).
const postponeQuery = `UPDATE outbox SET relay_at = now() + $2 * interval '1 millisecond' WHERE id = ANY($1)`

// retryQuery gives rows back the delivery the claim counted and makes them due after $2 ms.
const retryQuery = `UPDATE outbox SET deliveries = deliveries - 1, relay_at = now() + $2 * interval '1 millisecond'
WHERE id = ANY($1)`

// enqueueAll enqueues the batch. It returns the rows that need no further delivery, the rows
// whose hand-off failed and the first of their errors, and the rows of unknown types.
func (r *Relay) enqueueAll(ctx context.Context, rows []row) (done, failed, unknown []int64, err error) {
	finished := make([]bool, len(rows))
	errs := make([]error, len(rows))
	var g errgroup.Group
	g.SetLimit(enqueueWorkers)
	for i, rw := range rows {
		g.Go(func() error {
			finished[i], errs[i] = r.deliver(ctx, rw)
			return nil
		})
	}
	_ = g.Wait()
	for i, rw := range rows {
		switch {
		case errors.Is(errs[i], errUnknownType):
			unknown = append(unknown, rw.ID)
		case errs[i] != nil:
			failed = append(failed, rw.ID)
			err = cmp.Or(err, errs[i])
		case finished[i]:
			done = append(done, rw.ID)
		}
	}
	return done, failed, unknown, err
}

// errUnknownType is a row whose task type this relay does not know.
var errUnknownType = errors.New("unknown task type")

// deliver hands one row's task to its queue. It reports true when the row needs no further
// delivery: its task already ran.
func (r *Relay) deliver(ctx context.Context, rw row) (bool, error) {
	queue, ok := tasks.QueueOf(rw.Type)
	if !ok {
		return false, errUnknownType
	}
	err := r.enqueue(ctx, rw, queue)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return r.settle(ctx, rw, queue)
	case err != nil:
		return false, fmt.Errorf("outbox: enqueue row %d: %w", rw.ID, err)
	}
	if rw.Deliveries > 1 {
		r.redelivered(ctx, rw, "lost") // Redis no longer knew the task
	}
	return false, nil
}

func (r *Relay) enqueue(ctx context.Context, rw row, queue string) error {
	payload, err := json.Marshal(tasks.Envelope{CorrelationID: rw.CorrelationID, OutboxID: rw.ID, CreatedAt: rw.CreatedAt, Data: rw.Payload})
	if err != nil {
		return err
	}
	_, err = r.client.EnqueueContext(ctx, asynq.NewTask(rw.Type, payload),
		asynq.TaskID(TaskID(rw.ID)), asynq.Queue(r.ns.Queue(queue)),
		asynq.MaxRetry(r.MaxRetry), asynq.Retention(r.Retention), asynq.Timeout(taskTimeout))
	return err
}

// taskTimeout bounds one attempt of a task.
const taskTimeout = 2 * time.Minute

// settle decides what to do with a row whose task id Asynq already knows.
func (r *Relay) settle(ctx context.Context, rw row, queue string) (bool, error) {
	q, id := r.ns.Queue(queue), TaskID(rw.ID)
	info, err := r.inspector.GetTaskInfo(q, id)
	if errors.Is(err, asynq.ErrQueueNotFound) {
		// The queue's tasks are there but missing from Asynq's index after a Redis restart
		// that kept no data (tasks.QueueIndex): the inspector sees them once it is indexed.
		if err := r.rdb.SAdd(ctx, tasks.QueueIndex, q).Err(); err != nil {
			return false, fmt.Errorf("outbox: index queue %s: %w", q, err)
		}
		info, err = r.inspector.GetTaskInfo(q, id)
	}
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		// Gone meanwhile: hand it off again. A conflict now means it came back meanwhile;
		// the next redelivery looks again.
		if err := r.enqueue(ctx, rw, queue); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
			return false, err
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("outbox: look up task %s: %w", id, err)
	}
	if !carries(info.Payload, rw) {
		// The task of another row with the same id: the database was recreated or restored
		// and its ids start over, while Redis keeps the tasks of the rows it had. Taking that
		// task for this row's would drop this row's work.
		if err := r.inspector.DeleteTask(q, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			// It is running; the row's next redelivery tries again, without holding up the batch.
			r.log.WarnContext(ctx, "task of an earlier row not replaced yet", "taskId", id, "err", err)
			return false, nil
		}
		r.redelivered(ctx, rw, "replaced")
		return false, r.enqueue(ctx, rw, queue)
	}
	if rw.Deliveries <= 1 {
		return false, nil // enqueued by an earlier attempt of this hand-off
	}
	switch fateOf(info.State, info.LastErr) {
	case finished:
		r.redelivered(ctx, rw, "completed") // it ran; the worker's deletion was lost
		return true, nil
	case abandoned:
		if err := r.inspector.DeleteTask(q, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return false, fmt.Errorf("outbox: delete abandoned task %s: %w", id, err)
		}
		r.redelivered(ctx, rw, "abandoned")
		return false, r.enqueue(ctx, rw, queue)
	}
	return false, nil
}

// carries reports whether a task's payload is the envelope of rw: the same row id written at
// the same time. A payload that is no envelope is not rw's.
func carries(payload []byte, rw row) bool {
	var env tasks.Envelope
	if err := json.Unmarshal(payload, &env); err != nil {
		return false
	}
	return env.OutboxID == rw.ID && env.CreatedAt.Equal(rw.CreatedAt)
}

// fate is what a row due again needs, given its task's state in Asynq.
type fate int

const (
	waiting   fate = iota // queued, retrying or running: leave it be
	finished              // completed, or failed for good after its failure policy ran
	abandoned             // Asynq gave up without its failure policy: run it again
)

func fateOf(state asynq.TaskState, lastErr string) fate {
	switch {
	case state == asynq.TaskStateCompleted:
		return finished
	case state == asynq.TaskStateArchived && (lastErr == asynq.ErrLeaseExpired.Error() || strings.HasPrefix(lastErr, tasks.Unfinished) ||
		lastErr == context.DeadlineExceeded.Error()):
		// Its worker vanished on the last attempt, or PostgreSQL or Redis was away then:
		// archived without the strategy's failure policy, so it runs again. So does a last
		// attempt out of time: Asynq archives it at once while the policy runs on, and a
		// policy that ended acknowledged the row; a row still due never saw it end.
		return abandoned
	case state == asynq.TaskStateArchived:
		return finished
	}
	return waiting
}

func (r *Relay) redelivered(ctx context.Context, rw row, verdict string) {
	r.log.InfoContext(ctx, "outbox row redelivered", "outboxId", rw.ID, "taskType", rw.Type, "deliveries", rw.Deliveries, "verdict", verdict)
	if r.Redelivered != nil {
		r.Redelivered(rw.Type, verdict)
	}
}

// TaskID is the Asynq task id of an outbox row.
func TaskID(outboxID int64) string { return "outbox-" + strconv.FormatInt(outboxID, 10) }

// listenWait is how long a starting relay waits for its LISTEN before it polls without it.
const listenWait = 3 * time.Second

// orphanCheck is how often the relay looks for tasks left running by a worker that vanished.
const orphanCheck = 5 * time.Second

// A worker's heartbeat renews the Asynq lease of each task it runs every 5 s, to 30 s from
// then (asynq v0.26; the lease's end, in Unix seconds, is the task's score in tasks.LeaseKey),
// so a live task's score changes every 5 s. The relay runs a task again once its own looks have
// seen the same score for silentFor: four renewals missed.
const (
	silentFor = 20 * time.Second
	// RunAgainWithin bounds how long after its last renewal a silent task is run again while the
	// relay's looks come on time: the score is first seen at the next look, and run again
	// silentFor after that sighting.
	RunAgainWithin = orphanCheck + silentFor
)

// sighting is a task's lease as the looks saw it: its score, and when it was first seen.
type sighting struct {
	lease float64
	since time.Time
	done  bool // its copy is enqueued (or was already)
}

// recoverOrphans runs again, under a derived task id, every outbox task left running by a
// worker that vanished (a SIGKILL, a lost host): one whose lease the relay has seen unrenewed
// for silentFor, 20–25 s after the last renewal, 15–25 s after the crash. Asynq's own recovery
// waits for the lease to expire (30 s), then 30 s more (a margin for clock skew between hosts)
// until its recoverer's next pass, once a minute: up to two minutes after the crash.
//
// Silence is what the relay saw, on its own clock, over consecutive looks: the workers' clocks
// do not enter into it. A look missed (Redis away for the relay as for the workers, a long
// batch, a start) forgets every sighting, so an outage does not make the tasks of live workers
// look silent once Redis is back. A copy while the original still runs (a worker frozen, or cut
// off from Redis) is safe anyway: every handler is idempotent, the order and customer tasks
// hold their lock (which a worker cut off from Redis loses 10 s after its last renewal) and
// write compare-and-set, and Stripe calls carry idempotency keys; once the lease has expired,
// Asynq also cancels the original's handler and refuses its result.
func (r *Relay) recoverOrphans(ctx context.Context) {
	now := r.now()
	if now.Sub(r.lastLook) > orphanCheck*3/2 {
		clear(r.sightings)
	}
	seen := make(map[string]sighting, len(r.sightings))
	for _, queue := range tasks.Queues() {
		name := r.ns.Queue(queue)
		leases, err := r.rdb.ZRangeWithScores(ctx, tasks.LeaseKey(name), 0, -1).Result()
		if err != nil {
			if ctx.Err() == nil {
				r.outage.WarnContext(ctx, "orphaned tasks not looked for", "queue", queue, "err", err)
			}
			r.lastLook = time.Time{}
			return
		}
		for _, l := range leases {
			id, _ := l.Member.(string)
			if !strings.HasPrefix(id, "outbox-") {
				continue
			}
			key := name + " " + id
			s, ok := r.sightings[key]
			if !ok || s.lease != l.Score {
				s = sighting{lease: l.Score, since: now}
			}
			if !s.done && now.Sub(s.since) >= silentFor {
				s.done = r.recoverOrphan(ctx, name, id, l.Score)
			}
			seen[key] = s
		}
	}
	r.sightings, r.lastLook = seen, now
}

// lookForOrphans runs recoverOrphans every orphanCheck until ctx ends, on a goroutine of its
// own: a long drain (a backlog, Redis slow) does not hold the looks back, which would make
// them forget what they saw.
func (r *Relay) lookForOrphans(ctx context.Context) {
	tick := time.NewTicker(orphanCheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			r.recoverOrphans(ctx)
		}
	}
}

// recoverOrphan enqueues a copy of the task id of queue name if it still runs under the lease
// seen, and reports whether the copy is enqueued (now or before).
func (r *Relay) recoverOrphan(ctx context.Context, name, id string, lease float64) bool {
	t, err := r.inspector.GetTaskInfo(name, id)
	if errors.Is(err, asynq.ErrQueueNotFound) {
		// Missing from Asynq's index (tasks.QueueIndex) after Redis lost its data, while tasks
		// enqueued since may be running: indexed, they can be looked at.
		if err = r.rdb.SAdd(ctx, tasks.QueueIndex, name).Err(); err == nil {
			t, err = r.inspector.GetTaskInfo(name, id)
		}
	}
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound):
		return false // finished meanwhile, and not retained
	case err != nil:
		r.log.WarnContext(ctx, "orphaned task not looked at", "taskId", id, "err", err)
		return false
	case t.State != asynq.TaskStateActive:
		return false // finished meanwhile
	}
	if now, err := r.rdb.ZScore(ctx, tasks.LeaseKey(name), id).Result(); err != nil || now != lease {
		return false // renewed (or finished) since the look
	}
	_, err = r.client.EnqueueContext(ctx, asynq.NewTask(t.Type, t.Payload), asynq.TaskID(t.ID+"~"),
		asynq.Queue(t.Queue), asynq.MaxRetry(r.MaxRetry), asynq.Retention(r.Retention), asynq.Timeout(taskTimeout))
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict): // recovered already
	case err != nil:
		r.log.WarnContext(ctx, "orphaned task not run again", "taskId", t.ID, "err", err)
		return false
	default:
		r.log.WarnContext(ctx, "task of a silent worker run again", "taskId", t.ID, "taskType", t.Type,
			"leaseEnds", time.Unix(int64(lease), 0).UTC().Format(time.RFC3339))
		if r.Redelivered != nil {
			r.Redelivered(t.Type, "orphaned")
		}
	}
	return true
}

// Run relays until ctx ends: it drains full batches back to back, then sleeps until a
// NOTIFY on outbox.Channel (the rows of the recent window) or the poll interval (every due
// row; also at start and when the listener reconnected), looking first whether Redis lost the
// queues (noticeLostQueues). The batch in progress when ctx ends is finished. Meanwhile it
// looks for the tasks of vanished workers (lookForOrphans).
func (r *Relay) Run(ctx context.Context) error {
	listener := pq.NewListener(r.dsn, 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		if err != nil {
			r.log.Warn("outbox listener", "event", ev, "err", err)
		}
	})
	defer listener.Close()
	// Listen waits for the listener's first connection, which PostgreSQL gone right after the
	// start could hold up for good: after listenWait the relay polls meanwhile (Close ends the
	// wait). Until then it waits, so that no wake-up is missed at start.
	listening := make(chan error, 1)
	go func() { listening <- listener.Listen(outbox.Channel) }()
	select {
	case err := <-listening:
		if err != nil {
			r.log.Warn("LISTEN failed; polling only", "err", err)
		}
	case <-time.After(listenWait):
		r.log.Warn("LISTEN not set up yet (PostgreSQL away?); polling until it is")
	case <-ctx.Done():
		return nil
	}
	looking := make(chan struct{})
	go func() {
		defer close(looking)
		r.lookForOrphans(ctx)
	}()
	defer func() { <-looking }()
	poll := time.NewTicker(r.poll)
	defer poll.Stop()
	r.noticeLostQueues(ctx)
	r.drain(ctx, false)
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-listener.Notify:
			// nil: the listener reconnected, and wake-ups may have been missed meanwhile.
			r.drain(ctx, gather(listener.Notify) && n != nil)
		case <-poll.C:
			r.noticeLostQueues(ctx)
			r.drain(ctx, false)
		}
	}
}

// dueAgainQuery makes every row handed off and not due yet due now. Unlike the relay's other
// bookkeeping it waits for the disk: the marker set after it says the loss was handled, so a
// commit PostgreSQL lost in a crash would leave the lost tasks to come due in their own time.
const dueAgainQuery = `UPDATE outbox SET relay_at = now() WHERE deliveries > 0 AND relay_at > now()`

// noticeLostQueues hands off again at once the rows whose tasks a Redis that lost its data
// (a restart without persistence, a flush, a queue's keys deleted) took with it, instead of
// when they come due, up to RedeliverAfter (doubling) later. The relays keep a marker key
// among each queue's own keys; finding one gone, a relay makes every handed-off row due now,
// then sets them again. The rows' tasks that Redis still holds are left alone when handed off
// again (settle), so a marker lost alone (evicted, or Redis's first start) costs a look at
// each. Rows are made due before the markers are set, so a relay that fails in between leaves
// them missing for the next look.
//
// A batch another relay had open at the loss commits its rows as handed off after they were
// made due, and the update does not wait for it: once every batch open then has ended
// (batchTimeout), the rows are made due once more.
func (r *Relay) noticeLostQueues(ctx context.Context) {
	if !r.lostAt.IsZero() && r.now().Sub(r.lostAt) > batchTimeout {
		if r.makeDue(ctx, "rows handed off while Redis lost the queues made due again") {
			r.lostAt = time.Time{}
		}
	}
	markers := r.ns.Markers()
	pipe := r.rdb.Pipeline()
	for _, m := range markers {
		pipe.Exists(ctx, m) // one key each: a cluster keeps each queue's keys in a slot of its own
	}
	cmds, err := pipe.Exec(ctx)
	if err != nil {
		return // Redis down: the batch that follows says so
	}
	kept := 0
	for _, c := range cmds {
		kept += int(c.(*redis.IntCmd).Val())
	}
	if kept == len(markers) {
		return
	}
	if !r.makeDue(ctx, "Redis lost queues (restart without persistence, a flush, keys deleted): handing off again every row in flight") {
		return
	}
	r.lostAt = r.now()
	pipe = r.rdb.Pipeline()
	for _, m := range markers {
		pipe.Set(ctx, m, time.Now().UTC().Format(time.RFC3339), 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		r.log.WarnContext(ctx, "queue markers not set", "err", err)
	}
}

// makeDue makes every handed-off row due now, saying so with msg when there were any.
func (r *Relay) makeDue(ctx context.Context, msg string) bool {
	res, err := r.db.ExecContext(ctx, dueAgainQuery)
	if err != nil {
		r.log.ErrorContext(ctx, "rows of tasks Redis may have lost not made due; they come due in time", "err", err)
		return false
	}
	if rows, _ := res.RowsAffected(); rows > 0 {
		r.log.WarnContext(ctx, msg, "rows", rows)
	}
	return true
}

// gatherFor is how long the relay lets rows gather after a notification before it claims them:
// a few milliseconds of latency buy batches instead of one transaction per row under load.
const gatherFor = 2 * time.Millisecond

// gather waits gatherFor, then takes the notifications that arrived meanwhile: the drain that
// follows claims their rows too. One arriving after this still wakes the next drain. It
// reports false when one of them told of a reconnection (nil).
func gather(notify <-chan *pq.Notification) bool {
	time.Sleep(gatherFor)
	ok := true
	for {
		select {
		case n := <-notify:
			ok = ok && n != nil
		default:
			return ok
		}
	}
}

// batchTimeout bounds a batch, its transaction included.
const batchTimeout = 30 * time.Second

// drain relays batches until one comes back short, claiming only the recent window's rows when
// recent is set. Each batch runs to completion even if ctx ends meanwhile (shutdown waits for
// it), bounded by a timeout.
func (r *Relay) drain(ctx context.Context, recent bool) {
	for ctx.Err() == nil {
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), batchTimeout)
		n, err := r.runOnce(bctx, recent)
		cancel()
		if err != nil {
			r.outage.Error("outbox batch failed; rows stay for a later try", "err", err)
			return
		}
		if n < r.batchSize {
			return
		}
	}
}
