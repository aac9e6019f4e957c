package catalogdb

import (
	"context"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/dispatchhq/dispatch/internal/catalog"
)

// reserveQuery locks the wanted items in id order (so concurrent orders never deadlock; NO KEY
// UPDATE, because the order lines inserted before it hold KEY SHARE locks on them), takes
// the quantities from those with enough stock, and reports for every item found whether it was
// reserved. The caller rolls back unless every line was.
const reserveQuery = `
WITH locked AS MATERIALIZED (
    SELECT i.id, i.name, i.price, i.currency, i.stock, i.deleted_at, w.qty
    FROM items i JOIN unnest($1::uuid[], $2::int[]) AS w(id, qty) ON w.id = i.id
    ORDER BY i.id
    FOR NO KEY UPDATE OF i
), taken AS (
    UPDATE items i SET stock = i.stock - l.qty, updated_at = now()
    FROM locked l
    WHERE i.id = l.id AND l.deleted_at IS NULL AND i.stock >= l.qty
    RETURNING i.id
)
SELECT l.id, l.name, l.price, l.currency, l.stock, l.deleted_at IS NOT NULL AS deleted, t.id IS NOT NULL AS reserved
FROM locked l LEFT JOIN taken t ON t.id = l.id`

const snapshotQuery = `SELECT id, name, price, currency, stock, deleted_at IS NOT NULL AS deleted, false AS reserved
FROM items WHERE id = ANY($1::uuid[])`

// Snapshot reads the items an order asks for, without locking them.
func (Store) Snapshot(ctx context.Context, db sqlx.QueryerContext, rs []catalog.Reservation) ([]catalog.ReservedItem, error) {
	ids, _ := split(rs)
	var rows []catalog.ReservedItem
	err := sqlx.SelectContext(ctx, db, &rows, snapshotQuery, pq.Array(ids))
	return rows, mapErr("snapshot", err)
}

// Reserve takes stock for every reservation with conditional decrements in tx.
func (Store) Reserve(ctx context.Context, tx sqlx.QueryerContext, rs []catalog.Reservation) ([]catalog.ReservedItem, error) {
	ids, qty := split(rs)
	var rows []catalog.ReservedItem
	err := sqlx.SelectContext(ctx, tx, &rows, reserveQuery, pq.Array(ids), pq.Array(qty))
	return rows, mapErr("reserve", err)
}

const releaseQuery = `
WITH locked AS MATERIALIZED (
    SELECT i.id, w.qty FROM items i JOIN unnest($1::uuid[], $2::int[]) AS w(id, qty) ON w.id = i.id
    ORDER BY i.id
    FOR NO KEY UPDATE OF i
)
UPDATE items i SET stock = i.stock + l.qty, updated_at = $3
FROM locked l WHERE i.id = l.id`

// Release gives reserved quantities back to stock (deleted items included).
func (Store) Release(ctx context.Context, tx sqlx.ExecerContext, rs []catalog.Reservation) error {
	ids, qty := split(rs)
	_, err := tx.ExecContext(ctx, releaseQuery, pq.Array(ids), pq.Array(qty), time.Now())
	return mapErr("release", err)
}

func split(rs []catalog.Reservation) ([]string, []int64) {
	ids := make([]string, len(rs))
	qty := make([]int64, len(rs))
	for i, r := range rs {
		ids[i], qty[i] = r.ItemID.String(), int64(r.Quantity)
	}
	return ids, qty
}
