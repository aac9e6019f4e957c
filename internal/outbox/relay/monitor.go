package relay

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// Backlog is the state of the outbox: rows waiting for their first hand-off, and rows handed
// off whose task has not finished yet.
type Backlog struct {
	Waiting        int64
	OldestWaiting  time.Duration
	InFlight       int64
	OldestInFlight time.Duration
}

const statsQuery = `SELECT
  count(*) FILTER (WHERE deliveries = 0) AS waiting,
  COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE deliveries = 0)), 0) AS oldest_waiting,
  count(*) FILTER (WHERE deliveries > 0) AS in_flight,
  COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE deliveries > 0)), 0) AS oldest_in_flight
FROM outbox`

// Stats reads the outbox backlog.
func Stats(ctx context.Context, db postgres.Querier) (Backlog, error) {
	var s struct {
		Waiting        int64   `db:"waiting"`
		OldestWaiting  float64 `db:"oldest_waiting"`
		InFlight       int64   `db:"in_flight"`
		OldestInFlight float64 `db:"oldest_in_flight"`
	}
	if err := db.GetContext(ctx, &s, statsQuery); err != nil {
		return Backlog{}, fmt.Errorf("outbox: stats: %w", err)
	}
	return Backlog{Waiting: s.Waiting, OldestWaiting: seconds(s.OldestWaiting),
		InFlight: s.InFlight, OldestInFlight: seconds(s.OldestInFlight)}, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// StaleAfter is the age of the oldest row waiting for its first hand-off past which the relay
// reports itself not ready: rows that old mean hand-off is stuck.
const StaleAfter = 5 * time.Minute

// Monitor publishes the backlog, and tells readiness whether hand-off keeps up.
type Monitor struct {
	db  *postgres.DB
	log *slog.Logger
	// Publish receives each reading (metrics).
	Publish func(Backlog)
	// Failed is told of each reading that failed (metrics), since Publish then gets none; may
	// be nil.
	Failed func(error)
}

// NewMonitor returns a monitor of db's outbox.
func NewMonitor(db *postgres.DB, log *slog.Logger, publish func(Backlog)) *Monitor {
	return &Monitor{db: db, log: log, Publish: publish}
}

// Run reads the stats every interval. A failed reading is logged and reported to Failed; the
// gauges keep the last good one until the next.
func (m *Monitor) Run(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		b, err := Stats(ctx, m.db)
		switch {
		case err != nil && ctx.Err() == nil:
			m.log.WarnContext(ctx, "outbox backlog not read; the backlog gauges keep their last reading", "err", err)
			if m.Failed != nil {
				m.Failed(err)
			}
		case err == nil && m.Publish != nil:
			m.Publish(b)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Fresh fails when the oldest row waits for its first hand-off longer than StaleAfter (a
// readiness check).
func (m *Monitor) Fresh(ctx context.Context) error {
	b, err := Stats(ctx, m.db)
	if err != nil {
		return err
	}
	if b.OldestWaiting > StaleAfter {
		return fmt.Errorf("outbox: oldest row waits %s", b.OldestWaiting.Round(time.Second))
	}
	return nil
}
