package loadtest

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// RelayDrain writes rows notify:user outbox rows for userID in one statement and measures how
// long the running relay(s) take to empty the outbox. Run it with the relay up and the worker
// down to measure the relay alone.
func RelayDrain(ctx context.Context, db *postgres.DB, rows int, userID uuid.UUID) (time.Duration, error) {
	var backlog int
	if err := db.GetContext(ctx, &backlog, `SELECT count(*) FROM outbox`); err != nil {
		return 0, err
	}
	if backlog > 0 {
		return 0, fmt.Errorf("the outbox already holds %d rows; drain it first", backlog)
	}
	_, err := db.ExecContext(ctx, `INSERT INTO outbox (type, payload, correlation_id)
SELECT 'notify:user', jsonb_build_object('userId', $1::text, 'event', 'auth.login', 'data', jsonb_build_object('n', g)), 'bench-relay'
FROM generate_series(1, $2) AS g`, userID, rows)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	for {
		var n int
		if err := db.GetContext(ctx, &n, `SELECT count(*) FROM outbox`); err != nil {
			return 0, err
		}
		if n == 0 {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// SeedPending creates n PENDING orders of one unit of itemID, each with a PaymentIntent id,
// created age ago, so that a reconciler run has them all to look at.
func SeedPending(ctx context.Context, db *postgres.DB, userID, itemID uuid.UUID, price int64, n int, age time.Duration) error {
	return orderdb.Store{}.SeedPending(ctx, db, userID, itemID, price, n, age)
}

// Reconcile times one reconciler run resuming at from.
func Reconcile(ctx context.Context, orders *order.Service, p order.ReconcilePolicy, from *order.PendingOrder) (order.ReconcileReport, time.Duration, error) {
	start := time.Now()
	rep, err := orders.Reconcile(ctx, start, p, from)
	return rep, time.Since(start), err
}
