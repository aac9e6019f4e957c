package orderdb

import (
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/pkg/cursor"
	"github.com/google/uuid"
)

// The lookups by key keep to their key's index in the plan PostgreSQL keeps once it stops
// planning each call, even when it makes that plan before any table was analyzed: then a
// `deleted_at IS NULL` in the statement made it scan a whole partial list index for one order
// (2,700 orders in, 985 buffers per call), for as long as the connection lived.
func TestLookupsByKeyUseTheKeyBeforeAnyAnalyze(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	id, intent := []string{`'00000000-0000-0000-0000-000000000000'`}, []string{`'pi_none'`}
	lines := []string{"order_lines_order_id_item_id_key"}
	byID := map[string][]string{"orders": {"orders_pkey"}, "payments": {"payments_pkey"}, "order_lines": lines}
	byIntent := map[string][]string{"orders": {"orders_pkey"}, "payments": {"payments_intent_idx"}, "order_lines": lines}
	testenv.PlanReads(t, db, "get", getQuery, id, byID)
	testenv.PlanReads(t, db, "get by intent", getByIntentQuery, intent, byIntent)
	// A lock reads the order's row a second time, as its snapshot holds it (postgres.Versions).
	byID["orders"], byIntent["orders"] = []string{"orders_pkey", "orders_pkey"}, []string{"orders_pkey", "orders_pkey"}
	testenv.PlanReads(t, db, "lock", lockQuery, id, byID)
	testenv.PlanReads(t, db, "lock by intent", lockByIntentQuery, intent, byIntent)
	testenv.PlanReads(t, db, "refund status", refundStatusQuery, []string{`'re_none'`, `'succeeded'`},
		map[string][]string{"refunds": {"refunds_refund_id_key"}})

	save := append(id, `'PENDING'`, `NULL`, `'PAID'`)
	for range 18 {
		save = append(save, `NULL`)
	}
	testenv.PlanReads(t, db, "save", saveQueries[0][0], save, map[string][]string{"orders": {"orders_pkey"}})
}

// The reconciler's scan of unpaid orders reads the PENDING part of the status index, from the
// first page on, and never the whole list of orders.
func TestPendingOrdersAreReadThroughTheStatusIndex(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	want := map[string][]string{"orders": {"orders_status_keyset_idx"}, "payments": {"payments_pkey"}}
	first, _ := pendingQuery(time.Now(), nil, 100)
	testenv.PlanReads(t, db, "first page", first, []string{`now()`, `100`}, want)
	next, _ := pendingQuery(time.Now(), &order.PendingOrder{ID: uuid.New(), CreatedAt: time.Now()}, 100)
	testenv.PlanReads(t, db, "next page", next,
		[]string{`now()`, `now() - interval '1 hour'`, `'00000000-0000-0000-0000-000000000000'`, `100`}, want)
}

// The reconciler's look for refunds under way reads only their part of the refunds, through the
// partial index, never the settled ones.
func TestUnsettledRefundsAreReadThroughTheirIndex(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	testenv.PlanReads(t, db, "unsettled refunds", unsettledRefundsQuery, []string{`now()`, `500`},
		map[string][]string{"refunds": {"refunds_unsettled_idx"}})
}

// Staff's list of the orders owing a payment back starts from those few (the failed and
// canceled refunds' partial index, the orders with an action pending) and never walks every
// order: on a million orders, a page took 5.2 s that way (docs/decisions.md).
func TestOrdersOwingAPaymentAreReadFromTheirFewRefunds(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	// Orders enough, analyzed, that walking them all costs more than looking up the few (in a
	// small table walking is cheapest, and PostgreSQL rightly does that), a tenth refunded.
	if _, err := db.Exec(`
INSERT INTO users (id, name, email, password_hash, role) VALUES ('00000000-0000-0000-0000-000000000001', 'Buyer', 'b@example.com', 'x', 'user');
INSERT INTO orders (id, user_id, status, total, currency, created_at)
  SELECT gen_random_uuid(), '00000000-0000-0000-0000-000000000001', 'PROCESSED', 100, 'usd', now() - g * interval '1 minute'
  FROM generate_series(1, 100000) g;
INSERT INTO payments (order_id, status) SELECT id, 'succeeded' FROM orders;
INSERT INTO refunds (id, order_id, kind, refund_id, amount, currency, status)
  SELECT gen_random_uuid(), id, 'order', 're_' || id, 100, 'usd', CASE WHEN number % 5000 = 0 THEN 'failed' ELSE 'succeeded' END
  FROM orders WHERE number % 10 = 0;
ANALYZE orders, payments, refunds`); err != nil {
		t.Fatal(err)
	}
	query, _ := listQuery(order.Filter{RefundOwed: true}, cursor.Request{Limit: 20})
	testenv.PlanReads(t, db, "refunds owed", query, []string{`21`}, map[string][]string{
		"refunds":  {"refunds_owed_idx", "refunds_order_id_kind_key"},
		"orders":   {"orders_stuck_idx", "orders_pkey"},
		"payments": {"payments_pkey"},
	})
}
