package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
)

// Relay moves outbox rows into the Asynq queues.
//
// Why it is shaped this way: a batch is claimed by deleting its rows inside a transaction
// (FOR UPDATE SKIP LOCKED, so several relays share the work without blocking each other), every
// row is enqueued with a task id derived from its row id, and only then does the transaction
// commit. A crash or a Redis error before the commit rolls the rows back for a later try; a
// row enqueued before such a crash is enqueued again under the same task id, which Asynq
// refuses as a conflict (counted as delivered) while the first copy is still known to it, and
// which consumers tolerate anyway because they are idempotent. Delivery is at least once.
type Relay struct {
	db        *postgres.DB
	client    *asynq.Client
	ns        tasks.Namespace
	batchSize int
	poll      time.Duration
	dsn       string
	log       *slog.Logger

	// MaxRetry is the number of retries of every task (SPEC §5: 3).
	MaxRetry int
	// Retention keeps finished tasks in Redis so a duplicate enqueue within it is refused.
	Retention time.Duration
	// Observe is told each batch's size and how long enqueuing it took (metrics); may be nil.
	Observe func(n int, enqueue time.Duration)
}

// NewRelay returns a relay claiming batchSize rows at a time, woken by LISTEN/NOTIFY on dsn's
// database and polling every poll as a fallback.
func NewRelay(db *postgres.DB, dsn string, client *asynq.Client, ns tasks.Namespace, batchSize int, poll time.Duration, log *slog.Logger) *Relay {
	return &Relay{db: db, dsn: dsn, client: client, ns: ns, batchSize: batchSize, poll: poll, log: log,
		MaxRetry: 3, Retention: 10 * time.Minute}
}

type row struct {
	ID            int64           `db:"id"`
	Type          string          `db:"type"`
	Payload       json.RawMessage `db:"payload"`
	CorrelationID string          `db:"correlation_id"`
	CreatedAt     time.Time       `db:"created_at"`
}

const claimQuery = `DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
) RETURNING id, type, payload, correlation_id, created_at`

// enqueueWorkers bounds the Redis round trips of one batch in flight at once.
const enqueueWorkers = 32

// RunOnce relays one batch and returns how many rows it delivered.
func (r *Relay) RunOnce(ctx context.Context) (int, error) {
	n := 0
	err := postgres.WithTx(ctx, r.db, func(tx *postgres.Tx) error {
		var rows []row
		if err := tx.SelectContext(ctx, &rows, claimQuery, r.batchSize); err != nil {
			return fmt.Errorf("outbox: claim: %w", err)
		}
		if len(rows) == 0 {
			return nil
		}
		start := time.Now()
		if err := r.enqueueAll(ctx, rows); err != nil {
			return err
		}
		if r.Observe != nil {
			r.Observe(len(rows), time.Since(start))
		}
		n = len(rows)
		return nil
	})
	return n, err
}

func (r *Relay) enqueueAll(ctx context.Context, rows []row) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan row)
	)
	for w := 0; w < min(enqueueWorkers, len(rows)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rw := range next {
				if err := r.enqueue(ctx, rw); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, rw := range rows {
		next <- rw
	}
	close(next)
	wg.Wait()
	return firstErr
}

func (r *Relay) enqueue(ctx context.Context, rw row) error {
	queue, ok := tasks.QueueOf(rw.Type)
	if !ok {
		// Nothing will ever handle it; keep it out of the queues but say so loudly.
		r.log.ErrorContext(ctx, "outbox row of unknown task type dropped", "outboxId", rw.ID, "taskType", rw.Type)
		return nil
	}
	payload, err := json.Marshal(tasks.Envelope{CorrelationID: rw.CorrelationID, OutboxID: rw.ID, CreatedAt: rw.CreatedAt, Data: rw.Payload})
	if err != nil {
		return err
	}
	_, err = r.client.EnqueueContext(ctx, asynq.NewTask(rw.Type, payload),
		asynq.TaskID(TaskID(rw.ID)), asynq.Queue(r.ns.Queue(queue)),
		asynq.MaxRetry(r.MaxRetry), asynq.Retention(r.Retention), asynq.Timeout(2*time.Minute))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil // enqueued by an earlier attempt: delivered
	}
	if err != nil {
		return fmt.Errorf("outbox: enqueue row %d: %w", rw.ID, err)
	}
	return nil
}

// TaskID is the Asynq task id of an outbox row.
func TaskID(outboxID int64) string { return "outbox-" + strconv.FormatInt(outboxID, 10) }

// Run relays until ctx ends: it drains full batches back to back, then sleeps until a
// NOTIFY on Channel or the poll interval. The batch in progress when ctx ends is finished.
func (r *Relay) Run(ctx context.Context) error {
	listener := pq.NewListener(r.dsn, 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		if err != nil {
			r.log.Warn("outbox listener", "event", ev, "err", err)
		}
	})
	defer listener.Close()
	if err := listener.Listen(Channel); err != nil {
		r.log.Warn("LISTEN failed; polling only", "err", err)
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-listener.Notify:
		case <-timer.C:
		}
		r.drain(ctx)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(r.poll)
	}
}

// drain relays batches until one comes back short. Each batch runs to completion even if ctx
// ends meanwhile (shutdown waits for it), bounded by a timeout.
func (r *Relay) drain(ctx context.Context) {
	for ctx.Err() == nil {
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		n, err := r.RunOnce(bctx)
		cancel()
		if err != nil {
			r.log.Error("outbox batch failed; rows stay for a later try", "err", err)
			return
		}
		if n < r.batchSize {
			return
		}
	}
}

const statsQuery = `SELECT count(*) AS backlog,
  COALESCE(EXTRACT(EPOCH FROM now() - (SELECT created_at FROM outbox ORDER BY id LIMIT 1)), 0) AS oldest
FROM outbox`

// Stats reports the outbox backlog and the age of its oldest row.
func Stats(ctx context.Context, db sqlx.QueryerContext) (backlog int64, oldest time.Duration, err error) {
	var s struct {
		Backlog int64   `db:"backlog"`
		Oldest  float64 `db:"oldest"`
	}
	if err := sqlx.GetContext(ctx, db, &s, statsQuery); err != nil {
		return 0, 0, fmt.Errorf("outbox: stats: %w", err)
	}
	return s.Backlog, time.Duration(s.Oldest * float64(time.Second)), nil
}

// StaleAfter is the age of the oldest outbox row past which the relay reports itself not ready:
// rows that old mean delivery is stuck.
const StaleAfter = 5 * time.Minute

// Monitor publishes the backlog and the oldest row's age, and tells readiness whether
// delivery keeps up.
type Monitor struct {
	db *postgres.DB
	// Publish receives each reading (metrics).
	Publish func(backlog int64, oldest time.Duration)
}

// NewMonitor returns a monitor of db's outbox.
func NewMonitor(db *postgres.DB, publish func(backlog int64, oldest time.Duration)) *Monitor {
	return &Monitor{db: db, Publish: publish}
}

// Run reads the stats every interval.
func (m *Monitor) Run(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if backlog, oldest, err := Stats(ctx, m.db); err == nil && m.Publish != nil {
			m.Publish(backlog, oldest)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Fresh fails when the oldest row waits longer than StaleAfter (a readiness check).
func (m *Monitor) Fresh(ctx context.Context) error {
	_, oldest, err := Stats(ctx, m.db)
	if err != nil {
		return err
	}
	if oldest > StaleAfter {
		return fmt.Errorf("outbox: oldest row waits %s", oldest.Round(time.Second))
	}
	return nil
}
