package orderdb

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

const seedPendingQuery = `
WITH o AS (
    INSERT INTO orders (id, user_id, status, total, currency, created_at, updated_at)
    SELECT gen_random_uuid(), $1, 'PENDING', $3, 'usd', now() - $5 * interval '1 second', now() - $5 * interval '1 second'
    FROM generate_series(1, $4)
    RETURNING id
), l AS (
    INSERT INTO order_lines (id, order_id, position, item_id, name, unit_price, quantity, subtotal)
    SELECT gen_random_uuid(), id, 1, $2, 'Bench item', $3, 1, $3 FROM o
)
INSERT INTO payments (order_id, payment_intent_id, status)
SELECT id, 'pi_bench_' || replace(id::text, '-', ''), 'requires_payment_method' FROM o`

// SeedPending inserts n PENDING orders of userID for one unit of itemID at price (usd), each
// with a made-up PaymentIntent id, created age ago, in one statement. It exists for the load
// generator (dispatchctl bench reconcile): no stock is reserved and no event or outbox row is
// written, so it is no way to place an order.
func (Store) SeedPending(ctx context.Context, db sqlx.ExecerContext, userID, itemID uuid.UUID, price int64, n int, age time.Duration) error {
	_, err := db.ExecContext(ctx, seedPendingQuery, userID, itemID, price, n, int(age.Seconds()))
	return mapErr("seed pending", err)
}

const processedAtQuery = `SELECT order_id, created_at FROM order_events WHERE to_status = 'PROCESSED' AND order_id = ANY($1::uuid[])`

// ProcessedAt returns when each of ids that has been processed reached PROCESSED. It exists
// for the load generator's pipeline latency (dispatchctl bench pipeline).
func (Store) ProcessedAt(ctx context.Context, db postgres.Querier, ids []uuid.UUID) (map[uuid.UUID]time.Time, error) {
	var rows []struct {
		OrderID uuid.UUID `db:"order_id"`
		At      time.Time `db:"created_at"`
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = id.String()
	}
	if err := db.SelectContext(ctx, &rows, processedAtQuery, pq.Array(keys)); err != nil {
		return nil, mapErr("processed at", err)
	}
	out := make(map[uuid.UUID]time.Time, len(rows))
	for _, r := range rows {
		out[r.OrderID] = r.At
	}
	return out, nil
}
