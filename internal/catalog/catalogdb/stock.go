package catalogdb

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/dispatchhq/dispatch/internal/catalog"
)

// LockStock and TakeStock are the parts of a statement that takes the stock of a whole order
// or none of it, for a statement that writes the order in the same round trip. LockStock
// defines two named subqueries: `stock_locked`, the wanted items locked in id order (so
// concurrent orders never deadlock; NO KEY UPDATE, because the order lines inserted with them
// hold KEY SHARE locks), with their names and prices as the order takes them and the quantity
// wanted (qty), and `stock_ok`, one row whose column ok is true when every item was found, is
// not deleted and has enough stock, and the aggregate cond over stock_locked holds (the
// order's own rules). ReservationArgs are its parameters $n and $n+1.
//
// Each read of items names the ids with `i.id = ANY(...)` as well as joining them: the
// statements run prepared, and in its generic plan PostgreSQL guessed 10 rows for the unnest
// and joined it by hashing the whole items table, two scans of the catalog per order
// (docs/performance.md). With the ANY condition it looks them up by the primary key.
func LockStock(n int, cond string) string {
	return fmt.Sprintf(`stock_locked AS MATERIALIZED (
    SELECT i.id, i.name, i.price, i.currency, i.stock, i.deleted_at, w.qty
    FROM items i JOIN unnest($%[1]d::uuid[], $%[2]d::int[]) AS w(id, qty) ON w.id = i.id
    WHERE i.id = ANY($%[1]d::uuid[])
    ORDER BY i.id
    FOR NO KEY UPDATE OF i
), stock_ok AS MATERIALIZED (
    SELECT count(*) = cardinality($%[1]d::uuid[]) AND COALESCE(bool_and(deleted_at IS NULL AND stock >= qty) AND %[3]s, false) AS ok
    FROM stock_locked
)`, n, n+1, cond)
}

// TakeStock, after LockStock (with the same n), takes the quantities locked when the SQL
// condition when holds: stock_ok.ok, and whatever else the statement requires first.
// Whatever else the statement writes must be conditioned on the same.
//
// The new stock is computed from the stock as locked, not from i: the update reads items as
// the statement's snapshot shows them, and a row another transaction changed before the lock
// (a release) is found changed only after PostgreSQL has checked the new row against stock >= 0,
// computed from the old one. That check refused orders there was stock for.
func TakeStock(n int, when string) string {
	return fmt.Sprintf(`stock_taken AS (
    UPDATE items i SET stock = l.stock - l.qty, updated_at = now()
    FROM stock_locked l
    WHERE i.id = l.id AND i.id = ANY($%d::uuid[]) AND %s
)`, n, when)
}

// ReservedItems is the SQL expression that reports, after LockStock, the items as it found
// them (JSON that DecodeReserved reads): what the order is made of, or why it was refused.
const ReservedItems = `(SELECT json_agg(json_build_object('id', id, 'name', name, 'price', price,
    'currency', currency, 'stock', stock, 'deleted', deleted_at IS NOT NULL)) FROM stock_locked)`

// DecodeReserved reads what ReservedItems reported.
func DecodeReserved(raw []byte) ([]catalog.ReservedItem, error) {
	var items []catalog.ReservedItem
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, fmt.Errorf("catalogdb: decode reserved items: %w", err)
		}
	}
	return items, nil
}

// ReservationArgs are the two parameters of LockStock.
func ReservationArgs(rs []catalog.Reservation) []any {
	ids, qty := split(rs)
	return []any{pq.Array(ids), pq.Array(qty)}
}

const releaseQuery = `
WITH locked AS MATERIALIZED (
    SELECT i.id, w.qty FROM items i JOIN unnest($1::uuid[], $2::int[]) AS w(id, qty) ON w.id = i.id
    WHERE i.id = ANY($1::uuid[])
    ORDER BY i.id
    FOR NO KEY UPDATE OF i
)
UPDATE items i SET stock = i.stock + l.qty, updated_at = now()
FROM locked l WHERE i.id = l.id AND i.id = ANY($1::uuid[])`

// Release gives reserved quantities back to stock (deleted items included).
func (Store) Release(ctx context.Context, tx sqlx.ExecerContext, rs []catalog.Reservation) error {
	ids, qty := split(rs)
	_, err := tx.ExecContext(ctx, releaseQuery, pq.Array(ids), pq.Array(qty))
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
