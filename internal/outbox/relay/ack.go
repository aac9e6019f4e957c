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
type Acker struct {
	db    *postgres.DB
	every time.Duration
	log   *slog.Logger

	mu      sync.Mutex
	pending []int64
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

// NewAcker returns an acker flushing every interval.
func NewAcker(db *postgres.DB, every time.Duration, log *slog.Logger) *Acker {
	return &Acker{db: db, every: every, log: log, wake: make(chan struct{}, 1),
		stop: make(chan struct{}), stopped: make(chan struct{})}
}

// Ack records that outbox row id's task finished (0, a task not from the outbox, is ignored).
func (a *Acker) Ack(id int64) {
	if id <= 0 {
		return
	}
	a.mu.Lock()
	a.pending = append(a.pending, id)
	full := len(a.pending) >= ackBatch
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
		tick := time.NewTicker(a.every)
		defer tick.Stop()
		for {
			select {
			case <-a.stop:
				a.flush()
				return
			case <-tick.C:
			case <-a.wake:
			}
			a.flush()
		}
	}()
}

// Stop flushes what is pending and stops.
func (a *Acker) Stop() {
	close(a.stop)
	<-a.stopped
}

func (a *Acker) flush() {
	a.mu.Lock()
	ids := a.pending
	a.pending = nil
	a.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.db.ExecContext(ctx, deleteQuery, pq.Array(ids)); err != nil {
		a.log.Warn("finished outbox rows not deleted yet", "rows", len(ids), "err", err)
		a.mu.Lock()
		if len(a.pending) < maxPending { // beyond that, the relay settles them when they are due
			a.pending = append(a.pending, ids...)
		}
		a.mu.Unlock()
	}
}
