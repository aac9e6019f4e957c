package relay

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/lib/pq"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// Acker deletes the outbox rows whose tasks have finished, in batches: a worker acknowledges
// every task it completes, and one statement every interval deletes them all. A deletion lost
// to a crash costs only a redelivery that the relay settles (Asynq reports the task completed).
// A row is deleted only if it is the one the task was written from (same id and time of
// writing): a database restored from a backup, or created again, numbers new rows with ids an
// earlier row's task may still carry.
type Acker struct {
	db    *postgres.DB
	every time.Duration
	log   *slog.Logger

	mu      sync.Mutex
	pending []ack
	failing time.Duration // how long flushes have been failing (0: they succeed)
	wake    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
}

// ackBatch is how many acknowledgements make a batch that is flushed at once; maxPending bounds
// what is kept for another try while the database is away.
const (
	ackBatch   = 500
	maxPending = 100_000
)

// ack is a finished task's row: its id and when it was written (zero when the task does not
// say, as tasks written before the time was carried: then the id alone).
type ack struct {
	id      int64
	created time.Time
}

// NewAcker returns an acker flushing every interval.
func NewAcker(db *postgres.DB, every time.Duration, log *slog.Logger) *Acker {
	return &Acker{db: db, every: every, log: log, wake: make(chan struct{}, 1),
		stop: make(chan struct{}), stopped: make(chan struct{})}
}

// Ack records that the task of the outbox row id, written at created, finished (0, a task not
// from the outbox, is ignored).
func (a *Acker) Ack(id int64, created time.Time) {
	if id <= 0 {
		return
	}
	a.mu.Lock()
	a.pending = append(a.pending, ack{id, created})
	full := len(a.pending) >= ackBatch && a.failing == 0 // no hurrying a database that is away
	a.mu.Unlock()
	if full {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
}

// Start flushes in the background until Stop.
func (a *Acker) Start() {
	go func() {
		defer close(a.stopped)
		wait := time.NewTimer(a.every)
		defer wait.Stop()
		for {
			select {
			case <-a.stop:
				a.flush()
				return
			case <-wait.C:
			case <-a.wake:
			}
			a.flush()
			wait.Reset(a.next())
		}
	}()
}

// Stop flushes what is pending and stops.
func (a *Acker) Stop() {
	close(a.stop)
	<-a.stopped
}

// ackQuery deletes the rows $1 whose time of writing is $2's at the same index (an empty $2 entry:
// any). NULLIF keeps the cast from meeting an empty string whatever order PostgreSQL evaluates
// the OR in.
const ackQuery = `DELETE FROM outbox o USING unnest($1::bigint[], $2::text[]) AS a(id, created)
WHERE o.id = ANY($1) AND o.id = a.id AND (a.created = '' OR o.created_at = NULLIF(a.created, '')::timestamptz)`

// next is the wait before the next flush: the interval, doubling up to 5 s while flushes fail
// (PostgreSQL away), so that an outage costs a statement and a log line every few seconds, not
// twenty a second.
func (a *Acker) next() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failing == 0 {
		return a.every
	}
	return min(a.failing, 5*time.Second)
}

func (a *Acker) flush() {
	a.mu.Lock()
	acks := a.pending
	a.pending = nil
	a.mu.Unlock()
	if len(acks) == 0 {
		return
	}
	ids, created := make([]int64, len(acks)), make([]string, len(acks))
	for i, k := range acks {
		ids[i] = k.id
		if !k.created.IsZero() {
			created[i] = k.created.Format(time.RFC3339Nano)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := a.db.ExecContext(ctx, ackQuery, pq.Array(ids), pq.Array(created))
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		if a.failing != 0 {
			a.log.Info("finished outbox rows deleted again", "rows", len(acks))
		}
		a.failing = 0
		return
	}
	if a.failing == 0 {
		a.log.Warn("finished outbox rows not deleted yet; trying again", "rows", len(acks), "err", err)
	}
	a.failing = max(2*a.failing, a.every)
	if len(a.pending) < maxPending { // beyond that, the relay settles them when they are due
		a.pending = append(a.pending, acks...)
	}
}
