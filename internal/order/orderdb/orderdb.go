// Package orderdb holds all SQL of orders, their lines, timeline, payments and refunds, and of
// the Stripe event dedupe table.
package orderdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/dispatchhq/dispatch/internal/catalog/catalogdb"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

// Store is the orders tables. It is stateless; every method takes the connection or
// transaction to run on.
type Store struct{}

type row struct {
	ID             uuid.UUID  `db:"id"`
	Number         int64      `db:"number"`
	UserID         uuid.UUID  `db:"user_id"`
	Status         string     `db:"status"`
	PendingAction  *string    `db:"pending_action"`
	Total          int64      `db:"total"`
	Currency       string     `db:"currency"`
	TrackingNumber *string    `db:"tracking_number"`
	Carrier        *string    `db:"carrier"`
	ShippedAt      *time.Time `db:"shipped_at"`
	DeliveredAt    *time.Time `db:"delivered_at"`
	CanceledAt     *time.Time `db:"canceled_at"`
	RefundedAt     *time.Time `db:"refunded_at"`
	CreatedAt      time.Time  `db:"created_at"`
	UpdatedAt      time.Time  `db:"updated_at"`
	DeletedAt      *time.Time `db:"deleted_at"`

	PaymentStatus    string  `db:"payment_status"`
	IntentID         *string `db:"payment_intent_id"`
	ClientSecret     *string `db:"client_secret"`
	AmountReceived   *int64  `db:"amount_received"`
	ReceivedCurrency *string `db:"received_currency"`
	LastError        *string `db:"last_error"`

	RefundKind     *string `db:"refund_kind"`
	RefundID       *string `db:"refund_id"`
	RefundAmount   *int64  `db:"refund_amount"`
	RefundCurrency *string `db:"refund_currency"`
	RefundStatus   *string `db:"refund_status"`
	RefundMethod   *string `db:"refund_method"`

	Lines json.RawMessage `db:"lines"`
}

type lineJSON struct {
	ID        uuid.UUID `json:"id"`
	ItemID    uuid.UUID `json:"item_id"`
	Name      string    `json:"name"`
	UnitPrice int64     `json:"unit_price"`
	Quantity  int       `json:"quantity"`
	Subtotal  int64     `json:"subtotal"`
}

// requiresPaymentBefore13 is the open payment's status as programs from before migration 13
// write it: read as the name that replaced it, while they may still run beside these.
const requiresPaymentBefore13 = "requires_payment"

func (r row) order() (order.Order, error) {
	o := order.Order{
		ID: r.ID, Number: r.Number, UserID: r.UserID, Status: order.Status(r.Status), Total: r.Total, Currency: r.Currency,
		TrackingNumber: r.TrackingNumber, Carrier: r.Carrier, ShippedAt: r.ShippedAt, DeliveredAt: r.DeliveredAt,
		CanceledAt: r.CanceledAt, RefundedAt: r.RefundedAt, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, DeletedAt: r.DeletedAt,
		Payment: order.Payment{Status: r.PaymentStatus, IntentID: r.IntentID, ClientSecret: r.ClientSecret,
			AmountReceived: r.AmountReceived, ReceivedCurrency: r.ReceivedCurrency, LastError: r.LastError},
	}
	if o.Payment.Status == requiresPaymentBefore13 {
		o.Payment.Status = order.PaymentRequiresPayment
	}
	if r.PendingAction != nil {
		o.PendingAction = order.Action(*r.PendingAction)
	}
	if r.RefundID != nil {
		o.Refund = &order.Refund{Kind: *r.RefundKind, RefundID: *r.RefundID, Amount: *r.RefundAmount,
			Currency: *r.RefundCurrency, Status: *r.RefundStatus, Method: *r.RefundMethod}
	}
	if len(r.Lines) > 0 {
		var lines []lineJSON
		if err := json.Unmarshal(r.Lines, &lines); err != nil {
			return o, fmt.Errorf("orderdb: decode lines: %w", err)
		}
		for _, l := range lines {
			o.Lines = append(o.Lines, order.Line{ID: l.ID, ItemID: l.ItemID, Name: l.Name, UnitPrice: l.UnitPrice,
				Quantity: l.Quantity, Subtotal: l.Subtotal})
		}
	}
	return o, nil
}

// selectOrder reads orders with their payment, their refund (the order's own, else a late
// payment's) and their lines in one statement.
const selectOrder = `SELECT ` + columns + fromOrders

const columns = `o.id, o.number, o.user_id, o.status, o.pending_action, o.total, o.currency,
  o.tracking_number, o.carrier, o.shipped_at, o.delivered_at, o.canceled_at, o.refunded_at,
  o.created_at, o.updated_at, o.deleted_at,
  p.status AS payment_status, p.payment_intent_id, p.client_secret, p.amount_received, p.received_currency, p.last_error,
  r.kind AS refund_kind, r.refund_id, r.amount AS refund_amount, r.currency AS refund_currency, r.status AS refund_status,
  r.method AS refund_method,
  (SELECT json_agg(json_build_object('id', l.id, 'item_id', l.item_id, 'name', l.name, 'unit_price', l.unit_price,
          'quantity', l.quantity, 'subtotal', l.subtotal) ORDER BY l.position)
     FROM order_lines l WHERE l.order_id = o.id) AS lines`

const fromOrders = `
FROM orders o
JOIN payments p ON p.order_id = o.id
LEFT JOIN LATERAL (SELECT * FROM refunds r WHERE r.order_id = o.id ORDER BY r.kind = 'order' DESC LIMIT 1) r ON true`

// refundOwed is order.Order's owesRefund over selectOrder's row: the payment went through and
// either its refund failed or was canceled at Stripe (a late payment's refund Stripe refused
// included: recorded as failed), or the order was canceled with no refund recorded (a late
// payment, its refund pending). The candidates come first, few and indexed (refunds_owed_idx,
// orders_stuck_idx), as an array of ids looked up by key, so a page does not walk every order
// to find them.
const refundOwed = `o.id = ANY (ARRAY(
    SELECT order_id FROM refunds WHERE status IN ('failed', 'canceled')
    UNION ALL
    SELECT id FROM orders WHERE pending_action = 'refund' AND status = 'CANCELED'))
  AND p.status = 'succeeded' AND (r.status IN ('failed', 'canceled') OR (o.status = 'CANCELED' AND r.refund_id IS NULL))`

// The lookups by key leave deleted orders out in Go, not in SQL: a statement that says
// `deleted_at IS NULL` matches the predicate of the partial list indexes, and on tables not
// analyzed yet the generic plan of such a lookup scanned a whole list index for its one key
// (docs/decisions.md, "Lookups by key").
const (
	getQuery         = selectOrder + ` WHERE o.id = $1`
	getByIntentQuery = selectOrder + ` WHERE p.payment_intent_id = $1`
)

// Get returns an order that is not deleted.
func (Store) Get(ctx context.Context, db postgres.Querier, id uuid.UUID) (order.Order, error) {
	return live(getOne(ctx, db, getQuery, id))
}

// GetAny reads an order, deleted ones included, without a lock.
func (Store) GetAny(ctx context.Context, db postgres.Querier, id uuid.UUID) (order.Order, error) {
	return getOne(ctx, db, getQuery, id)
}

// GetByIntent reads the order paid by a PaymentIntent, without a lock; not a deleted one.
func (Store) GetByIntent(ctx context.Context, db postgres.Querier, intentID string) (order.Order, error) {
	return live(getOne(ctx, db, getByIntentQuery, intentID))
}

// Lock reads an order (deleted ones included) and locks its rows for the transaction. The
// payment's row is locked too: SetIntent writes it without touching the order's. The refund is
// not (it may be absent): every refund, and every change of its status, is written under the
// order's lock with the order's row (Save), so a lock that waited across such a write reads
// the order again (postgres.Versions).
func (Store) Lock(ctx context.Context, tx postgres.Querier, id uuid.UUID) (order.Order, error) {
	return lock(ctx, tx, lockQuery, id)
}

// LockByIntent locks the order paid by a PaymentIntent.
func (Store) LockByIntent(ctx context.Context, tx postgres.Querier, intentID string) (order.Order, error) {
	return lock(ctx, tx, lockByIntentQuery, intentID)
}

// LockByRefund locks the order a Stripe refund returns, before its status changes
// (SetRefundStatus).
func (Store) LockByRefund(ctx context.Context, tx postgres.Querier, refundID string) (order.Order, error) {
	return lock(ctx, tx, lockByRefundQuery, refundID)
}

var (
	lockSelect = `SELECT ` + postgres.VersionColumns("orders", "o") + `,
  ` + columns + fromOrders
	lockQuery         = lockSelect + ` WHERE o.id = $1 FOR UPDATE OF o, p`
	lockByIntentQuery = lockSelect + ` WHERE p.payment_intent_id = $1 FOR UPDATE OF o, p`
	lockByRefundQuery = lockSelect + ` WHERE o.id = (SELECT order_id FROM refunds WHERE refund_id = $1 AND method = 'stripe') FOR UPDATE OF o, p`
)

func lock(ctx context.Context, tx postgres.Querier, query string, arg any) (order.Order, error) {
	var r struct {
		row
		postgres.Versions
	}
	if err := tx.GetContext(ctx, &r, query, arg); err != nil {
		return order.Order{}, mapErr("lock", err)
	}
	if r.Stale() {
		return getOne(ctx, tx, getQuery, r.ID)
	}
	return r.order()
}

func live(o order.Order, err error) (order.Order, error) {
	if err == nil && o.DeletedAt != nil {
		return order.Order{}, order.ErrNotFound
	}
	return o, err
}

func getOne(ctx context.Context, db postgres.Querier, query string, arg any) (order.Order, error) {
	var r row
	if err := db.GetContext(ctx, &r, query, arg); err != nil {
		return order.Order{}, mapErr("get", err)
	}
	return r.order()
}

// List returns a page of orders, newest first.
func (Store) List(ctx context.Context, db postgres.Querier, f order.Filter, page cursor.Request) ([]order.Order, error) {
	query, args := listQuery(f, page)
	var rows []row
	if err := db.SelectContext(ctx, &rows, query, args...); err != nil {
		return nil, mapErr("list", err)
	}
	out := make([]order.Order, len(rows))
	for i, r := range rows {
		o, err := r.order()
		if err != nil {
			return nil, err
		}
		out[i] = o
	}
	return out, nil
}

// listQuery is the statement of a page of orders, newest first.
func listQuery(f order.Filter, page cursor.Request) (string, []any) {
	var q postgres.Query
	q.Where("o.deleted_at IS NULL")
	if f.UserID != uuid.Nil {
		q.Where("o.user_id = " + q.Arg(f.UserID))
	}
	if f.Status != "" {
		q.Where("o.status = " + q.Arg(string(f.Status)))
	}
	// The API shows times to the millisecond and the database keeps microseconds: a bound
	// takes in the whole millisecond it names, so an order's own createdAt bounds it in.
	if f.From != nil {
		q.Where("o.created_at >= " + q.Arg(f.From.Truncate(time.Millisecond)))
	}
	if f.To != nil {
		q.Where("o.created_at < " + q.Arg(f.To.Truncate(time.Millisecond).Add(time.Millisecond)))
	}
	if f.RefundOwed {
		q.Where(refundOwed)
	}
	if page.After != nil {
		q.Keyset("o.created_at", "o.id", page.After.At, page.After.ID, false)
	}
	return selectOrder + q.WhereSQL() + ` ORDER BY o.created_at DESC, o.id DESC LIMIT ` + q.Arg(page.Limit+1), q.Args
}

// createQueries[takes] place an order in one statement, so in one round trip and one implicit
// transaction: it locks the items of the lines and checks that every line's stock can be
// taken (catalogdb.LockStock, with the order's own rules: placeable);
// with takes, it then takes the request's idempotency key (idempotency.ClaimSQL). Only when
// all of it can be taken and the key is the request's does it take the stock
// (catalogdb.TakeStock) and insert the order priced from the locked items, its lines, its
// payment, its first timeline event and its outbox messages (their payloads get the number,
// total and currency the statement assigns), with the request's recovery point: in the key it
// took, or, without takes, as a checkpoint of the key the request holds. Otherwise it writes
// nothing but, with takes, the key at its first recovery point when the order was refused.
// Either way it reports the items as it found them, and whether it took the key.
var createQueries = [2]string{createQuery(false), createQuery(true)}

// placeable is the order's own rule over its locked items (order.Order.price explains a
// refusal): one currency, and a total one charge can take.
var placeable = fmt.Sprintf("count(DISTINCT currency) = 1 AND sum(price * qty) <= %d", order.MaxTotal)

func createQuery(takes bool) string {
	claim, placing, took, chk := "", "(SELECT ok FROM stock_ok)", "true", ""
	if takes {
		claim = ", claim AS (\n    " + idempotency.ClaimSQL(14, "(SELECT ok FROM stock_ok)") + "\n)"
		placing += " AND EXISTS (SELECT FROM claim)"
		took = "EXISTS (SELECT FROM claim)"
	} else {
		chk = ", chk AS (\n    " + idempotency.CheckpointSQL(14, "EXISTS (SELECT FROM o)") + "\n)"
	}
	return `
WITH ` + catalogdb.LockStock(9, placeable) + claim + `, ` + catalogdb.TakeStock(9, placing) + `, o AS (
    INSERT INTO orders (id, user_id, status, total, currency)
    SELECT $1, $2, $3, (SELECT sum(price * qty) FROM stock_locked), (SELECT min(currency) FROM stock_locked)
    WHERE ` + placing + `
    RETURNING number, total, currency, created_at, updated_at
), l AS (
    INSERT INTO order_lines (id, order_id, position, item_id, name, unit_price, quantity, subtotal)
    SELECT x.id, $1, x.position, s.id, s.name, s.price, s.qty, s.price * s.qty
    FROM unnest($4::uuid[], $5::uuid[]) WITH ORDINALITY AS x(id, item_id, position)
    JOIN stock_locked s ON s.id = x.item_id, o
), pay AS (
    INSERT INTO payments (order_id, status) SELECT $1, 'pending' FROM o
), ev AS (
    INSERT INTO order_events (id, order_id, type, actor, correlation_id) SELECT $6, $1, 'created', $7, $8 FROM o
), msg AS (
    ` + outbox.InsertSetting(11, "EXISTS (SELECT FROM o)", "{data}",
		"p->'data' || (SELECT jsonb_build_object('number', number, 'total', total, 'currency', currency) FROM o)") + `
)` + chk + `
SELECT s.ok, ` + took + ` AS took, o.number, o.created_at, o.updated_at,
       COALESCE((SELECT stripe_customer_id FROM users WHERE id = $2), '') AS customer,
       ` + catalogdb.ReservedItems + ` AS items
FROM stock_ok s LEFT JOIN o ON true`
}

// Create places a new order aggregate (see createQueries) on db, which must not be in a
// transaction of its own that outlives it: the statement is the order's whole transaction.
// o holds the id, buyer, status and the lines' ids, items and quantities; names and prices
// come from the items as the statement locked them, reported in the placement for the caller
// to price o with (or to tell why it was refused). It fills the order's number and timestamps
// and announces it with msgs; checkpoint is reached when it returns placed. A checkpoint that
// Takes the key and finds it in use writes nothing and reports KeyInUse.
func (Store) Create(ctx context.Context, db postgres.Querier, o *order.Order, ev order.Event,
	msgs outbox.Rows, checkpoint idempotency.Point) (order.Placement, error) {
	ids, items := make([]string, len(o.Lines)), make([]string, len(o.Lines))
	for i, l := range o.Lines {
		ids[i], items[i] = l.ID.String(), l.ItemID.String()
	}
	args := []any{o.ID, o.UserID, o.Status, pq.Array(ids), pq.Array(items), ev.ID, ev.Actor, ev.CorrelationID}
	args = append(append(append(args, catalogdb.ReservationArgs(o.Reservations())...), msgs.Args()...), checkpoint.Args()...)
	var got struct {
		OK        bool       `db:"ok"`
		Took      bool       `db:"took"`
		Number    *int64     `db:"number"`
		CreatedAt *time.Time `db:"created_at"`
		UpdatedAt *time.Time `db:"updated_at"`
		Customer  string     `db:"customer"`
		Items     []byte     `db:"items"`
	}
	if err := db.GetContext(ctx, &got, createQueries[b2i(checkpoint.Takes())], args...); err != nil {
		return order.Placement{}, mapErr("create", err)
	}
	if !got.Took {
		return order.Placement{KeyInUse: true}, nil
	}
	checkpoint.Took()
	reserved, err := catalogdb.DecodeReserved(got.Items)
	if err != nil || !got.OK {
		return order.Placement{Items: reserved}, err
	}
	o.Number, o.CreatedAt, o.UpdatedAt = *got.Number, *got.CreatedAt, *got.UpdatedAt
	checkpoint.Reached()
	return order.Placement{Placed: true, Items: reserved, Customer: got.Customer}, nil
}

// saveQueries[announced][recorded] is a compare-and-set update of the order and, only if it
// matched, the timeline event of the change (when $12 is not null) and the payment's new state
// (when $19 is not null): one round trip for all. Announced also writes the outbox messages,
// recorded the Stripe event behind the change, on the same condition. The event's primary key
// refuses one seen before, and with it the whole statement.
var saveQueries = func() (q [2][2]string) {
	for _, announced := range []bool{false, true} {
		for _, recorded := range []bool{false, true} {
			query, n := saveCTE, 22
			if announced {
				query += ", m AS (\n    " + outbox.Insert(n+1, "EXISTS (SELECT 1 FROM o)") + "\n)"
				n += 3
			}
			if recorded {
				query += fmt.Sprintf(", se AS (\n    INSERT INTO stripe_events (id, type, outcome) SELECT $%d, $%d, $%d FROM o\n)", n+1, n+2, n+3)
			}
			q[b2i(announced)][b2i(recorded)] = query + "\nSELECT updated_at FROM o"
		}
	}
	return q
}()

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

const saveCTE = `WITH o AS (
    UPDATE orders SET status = $4, pending_action = $5, tracking_number = $6, carrier = $7,
      shipped_at = $8, delivered_at = $9, canceled_at = $10, refunded_at = $11, updated_at = now()
    WHERE id = $1 AND status = $2 AND pending_action IS NOT DISTINCT FROM $3
    RETURNING id, updated_at
), e AS (
    INSERT INTO order_events (id, order_id, type, from_status, to_status, actor, reason, correlation_id)
    SELECT $12, o.id, $13, $14, $15, $16, $17, $18 FROM o WHERE $12::uuid IS NOT NULL
), pay AS (
    UPDATE payments SET status = $19, amount_received = $20, received_currency = $21, last_error = $22, updated_at = now()
    FROM o WHERE payments.order_id = o.id AND $19::text IS NOT NULL
)`

// Save persists o's status, pending action and fulfilment fields with what c carries, as a
// compare-and-set against the status and action it was read with. No row matching means
// someone else moved the order, and a Stripe event that was recorded before means
// someone else handled it: ErrConcurrentUpdate, never an overwrite, and nothing written.
func (Store) Save(ctx context.Context, q postgres.Querier, o *order.Order, c order.Change) error {
	var e order.Event
	var evID *uuid.UUID
	if c.Event != nil {
		e, evID = *c.Event, &c.Event.ID
	}
	var p order.Payment
	var payStatus *string
	if c.Paid {
		p, payStatus = o.Payment, &o.Payment.Status
	}
	args := []any{o.ID, c.Was, nullAction(c.WasAction), o.Status, nullAction(o.PendingAction),
		o.TrackingNumber, o.Carrier, o.ShippedAt, o.DeliveredAt, o.CanceledAt, o.RefundedAt,
		evID, e.Type, e.From, e.To, e.Actor, e.Reason, e.CorrelationID,
		payStatus, p.AmountReceived, p.ReceivedCurrency, p.LastError}
	announced := c.Msgs.Len() > 0 // without messages, no insert
	if announced {
		args = append(args, c.Msgs.Args()...)
	}
	if c.Stripe != nil {
		args = append(args, c.Stripe.ID, c.Stripe.Type, c.Stripe.Outcome)
	}
	err := q.GetContext(ctx, &o.UpdatedAt, saveQueries[b2i(announced)][b2i(c.Stripe != nil)], args...)
	if postgres.IsNoRows(err) ||
		postgres.IsCode(err, postgres.UniqueViolation) && postgres.Constraint(err) == "stripe_events_pkey" {
		return order.ErrConcurrentUpdate
	}
	return mapErr("save", err)
}

func nullAction(a order.Action) *string {
	if a == order.ActionNone {
		return nil
	}
	s := string(a)
	return &s
}

const addEventQuery = `INSERT INTO order_events (id, order_id, type, from_status, to_status, actor, reason, correlation_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`

// AddEvent appends a timeline event.
func (Store) AddEvent(ctx context.Context, tx sqlx.ExecerContext, e order.Event) error {
	_, err := tx.ExecContext(ctx, addEventQuery, e.ID, e.OrderID, e.Type, e.From, e.To, e.Actor, e.Reason, e.CorrelationID)
	return mapErr("add event", err)
}

type eventRow struct {
	ID            uuid.UUID `db:"id"`
	OrderID       uuid.UUID `db:"order_id"`
	Type          string    `db:"type"`
	From          *string   `db:"from_status"`
	To            *string   `db:"to_status"`
	Actor         string    `db:"actor"`
	Reason        *string   `db:"reason"`
	CorrelationID string    `db:"correlation_id"`
	CreatedAt     time.Time `db:"created_at"`
}

const lastEventQuery = `SELECT id, order_id, type, from_status, to_status, actor, reason, correlation_id, created_at
FROM order_events WHERE order_id = $1 AND type = ANY($2) ORDER BY created_at DESC, id DESC LIMIT 1`

// LastEvent returns the order's latest event of one of types (ErrNotFound without one).
func (Store) LastEvent(ctx context.Context, db postgres.Querier, orderID uuid.UUID, types ...string) (order.Event, error) {
	var r eventRow
	if err := db.GetContext(ctx, &r, lastEventQuery, orderID, pq.Array(types)); err != nil {
		return order.Event{}, mapErr("last event", err)
	}
	return r.event(), nil
}

// Events returns a page of an order's timeline, oldest first.
func (Store) Events(ctx context.Context, db postgres.Querier, orderID uuid.UUID, page cursor.Request) ([]order.Event, error) {
	var q postgres.Query
	q.Where("order_id = " + q.Arg(orderID))
	if page.After != nil {
		q.Keyset("created_at", "id", page.After.At, page.After.ID, true)
	}
	query := `SELECT id, order_id, type, from_status, to_status, actor, reason, correlation_id, created_at
FROM order_events` + q.WhereSQL() + ` ORDER BY created_at, id LIMIT ` + q.Arg(page.Limit+1)
	var rows []eventRow
	if err := db.SelectContext(ctx, &rows, query, q.Args...); err != nil {
		return nil, mapErr("events", err)
	}
	out := make([]order.Event, len(rows))
	for i, r := range rows {
		out[i] = r.event()
	}
	return out, nil
}

func (r eventRow) event() order.Event {
	return order.Event{ID: r.ID, OrderID: r.OrderID, Type: r.Type, From: status(r.From), To: status(r.To),
		Actor: r.Actor, Reason: r.Reason, CorrelationID: r.CorrelationID, CreatedAt: r.CreatedAt}
}

func status(s *string) *order.Status {
	if s == nil {
		return nil
	}
	st := order.Status(*s)
	return &st
}

var setIntentQuery = `WITH attached AS (
    UPDATE payments SET payment_intent_id = $2, client_secret = NULLIF($3, ''), status = $4, updated_at = now()
    WHERE order_id = $1 AND payment_intent_id IS NULL AND status = 'pending'
      AND EXISTS (SELECT 1 FROM orders WHERE id = $1 AND status = 'PENDING')
    RETURNING order_id
), answered AS (
    ` + idempotency.CompleteSQL(5, "FROM attached ") + `
)
SELECT count(*) FROM attached`

// SetIntent records the PaymentIntent of a PENDING order that has none and, in the same
// statement, the response of the request it ends (done; a completion without a claim stores
// none). Both commit durably. It reports false, writing nothing, when the order already has a
// PaymentIntent (a payment it recorded is never set back) or is no longer PENDING. The
// payment's own status carries the cancel: a cancel committed while this statement waited for
// the payment's row is seen there, where the order's status was read before the wait.
func (Store) SetIntent(ctx context.Context, db postgres.Querier, orderID uuid.UUID, intentID, clientSecret, status string,
	done idempotency.Completion) (bool, error) {
	var n int
	if err := db.GetContext(ctx, &n, setIntentQuery, append([]any{orderID, intentID, clientSecret, status}, done.Args()...)...); err != nil {
		return false, mapErr("set intent", err)
	}
	if n == 0 {
		return false, nil
	}
	done.Stored()
	return true, nil
}

const adoptIntentQuery = `UPDATE payments SET payment_intent_id = $2, status = $3, updated_at = now()
WHERE order_id = $1 AND payment_intent_id IS NULL`

// AdoptIntent records a PaymentIntent that a payment event names for an order without one,
// whatever the order's status (a payment of a CANCELED order is a late payment to refund).
func (Store) AdoptIntent(ctx context.Context, tx sqlx.ExecerContext, orderID uuid.UUID, intentID string) error {
	_, err := tx.ExecContext(ctx, adoptIntentQuery, orderID, intentID, order.PaymentRequiresPayment)
	return mapErr("adopt intent", err)
}

const putRefundQuery = `INSERT INTO refunds (id, order_id, kind, refund_id, amount, currency, status, method)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (order_id, kind) DO UPDATE SET refund_id = EXCLUDED.refund_id, amount = EXCLUDED.amount,
  currency = EXCLUDED.currency, status = EXCLUDED.status, method = EXCLUDED.method, updated_at = now()`

// PutRefund records a refund: one per order and kind, so a refund made again in place of one
// that failed, or returned outside Stripe, takes its place (the timeline keeps the failed one's
// id).
func (Store) PutRefund(ctx context.Context, tx sqlx.ExecerContext, orderID uuid.UUID, r order.Refund) error {
	_, err := tx.ExecContext(ctx, putRefundQuery, uuid.Must(uuid.NewV7()), orderID, r.Kind, r.RefundID, r.Amount, r.Currency, r.Status, r.Method)
	return mapErr("put refund", err)
}

const refundStatusQuery = `UPDATE refunds SET status = $2, updated_at = now()
WHERE refund_id = $1
  AND method = 'stripe'
  AND status IS DISTINCT FROM $2
  AND status NOT IN ('failed', 'canceled')
  AND NOT ($2 IN ('pending', 'requires_action') AND status = 'succeeded')`

// SetRefundStatus updates a refund known by its Stripe id and reports whether it changed it;
// its order is locked first (LockByRefund). A refund returned outside Stripe is not Stripe's
// to change. Stripe does not deliver events in order, so a status only moves forward: a failed
// or canceled refund never changes again (at Stripe it cannot, and a late earlier event would
// hide the money still owed), and a succeeded one may still fail but is never set back to
// under way.
func (Store) SetRefundStatus(ctx context.Context, tx sqlx.ExecerContext, refundID, status string) (bool, error) {
	res, err := tx.ExecContext(ctx, refundStatusQuery, refundID, status)
	if err != nil {
		return false, mapErr("refund status", err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

const unsettledRefundsQuery = `SELECT order_id, refund_id FROM refunds
WHERE status IN ('pending', 'requires_action') AND updated_at < $1
ORDER BY updated_at LIMIT $2`

// UnsettledRefunds returns up to limit refunds still under way that were neither changed nor
// looked up since a time, oldest first.
func (Store) UnsettledRefunds(ctx context.Context, db postgres.Querier, before time.Time, limit int) ([]order.UnsettledRefund, error) {
	var rows []order.UnsettledRefund
	err := db.SelectContext(ctx, &rows, unsettledRefundsQuery, before, limit)
	return rows, mapErr("unsettled refunds", err)
}

const refundLookedUpQuery = `UPDATE refunds SET updated_at = GREATEST(updated_at, $2)
WHERE refund_id = $1 AND status IN ('pending', 'requires_action')`

// RefundLookedUp notes that Stripe was asked about a refund still under way at a time, which
// sends it to the back of UnsettledRefunds' line.
func (Store) RefundLookedUp(ctx context.Context, db postgres.Querier, refundID string, at time.Time) error {
	_, err := db.ExecContext(ctx, refundLookedUpQuery, refundID, at)
	return mapErr("refund looked up", err)
}

const softDeleteQuery = `UPDATE orders SET deleted_at = now(), updated_at = now() WHERE id = $1 AND deleted_at IS NULL`

// SoftDelete hides an order from every read.
func (Store) SoftDelete(ctx context.Context, tx sqlx.ExecerContext, id uuid.UUID) error {
	res, err := tx.ExecContext(ctx, softDeleteQuery, id)
	if err != nil {
		return mapErr("soft delete", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return order.ErrNotFound
	}
	return nil
}

// PendingBefore returns PENDING orders without a pending action created before a time, oldest
// first, after a position (nil for the start).
func (Store) PendingBefore(ctx context.Context, db postgres.Querier, before time.Time, after *order.PendingOrder, limit int) ([]order.PendingOrder, error) {
	query, args := pendingQuery(before, after, limit)
	var rows []order.PendingOrder
	err := db.SelectContext(ctx, &rows, query, args...)
	return rows, mapErr("pending", err)
}

// pendingQuery is PendingBefore's statement. A pending order is never deleted, so deleted_at
// IS NULL changes no answer; it lets the plan read the PENDING part of orders_status_keyset_idx
// (there is no index of pending orders of their own: every order would be written to it).
func pendingQuery(before time.Time, after *order.PendingOrder, limit int) (string, []any) {
	var q postgres.Query
	q.Where("o.status = 'PENDING'")
	q.Where("o.deleted_at IS NULL")
	q.Where("o.pending_action IS NULL")
	q.Where("o.created_at < " + q.Arg(before))
	if after != nil {
		q.Keyset("o.created_at", "o.id", after.CreatedAt, after.ID, true)
	}
	return `SELECT o.id, o.created_at, p.payment_intent_id FROM orders o JOIN payments p ON p.order_id = o.id` +
		q.WhereSQL() + ` ORDER BY o.created_at, o.id LIMIT ` + q.Arg(limit), q.Args
}

// stuckQuery finds orders whose task has not run in time and has no outbox row left to run it:
// paid and not processed, or with a cancel or refund still pending (a deleted order too: the
// refund of a late payment that came after its deletion).
const stuckQuery = `SELECT o.id, o.status, COALESCE(o.pending_action, '') AS pending_action FROM orders o
WHERE (o.status = 'PAID' OR o.pending_action IS NOT NULL) AND o.updated_at < $1
  AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.type IN ('order:process', 'order:cancel', 'order:refund')
                  AND x.payload->>'orderId' = o.id::text)
ORDER BY o.updated_at LIMIT $2`

// Stuck returns up to limit orders last changed before a time whose task did not run, oldest
// first.
func (Store) Stuck(ctx context.Context, db postgres.Querier, before time.Time, limit int) ([]order.StuckOrder, error) {
	var rows []order.StuckOrder
	err := db.SelectContext(ctx, &rows, stuckQuery, before, limit)
	return rows, mapErr("stuck", err)
}

const recordEventQuery = `INSERT INTO stripe_events (id, type, outcome) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING`

// RecordStripeEvent stores a webhook event id with what handling it did; false means the id
// was seen before.
func (Store) RecordStripeEvent(ctx context.Context, tx sqlx.ExecerContext, id, typ, outcome string) (bool, error) {
	res, err := tx.ExecContext(ctx, recordEventQuery, id, typ, outcome)
	if err != nil {
		return false, mapErr("record stripe event", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

func mapErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case postgres.IsNoRows(err), err == sql.ErrNoRows:
		return order.ErrNotFound
	default:
		return fmt.Errorf("orderdb: %s: %w", op, err)
	}
}
