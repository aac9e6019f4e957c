//go:build chaos

package chaos_test

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/dispatchhq/dispatch/internal/tasks"
)

// outstanding is the work the cluster still owes: outbox rows, PAID orders (not processed
// yet), orders with a pending cancel or refund, and tasks in the queues. A converged cluster
// owes nothing.
type outstanding struct {
	Outbox  int `db:"outbox"`
	Paid    int `db:"paid"`
	Pending int `db:"pending"`
	Queued  int
}

func (o outstanding) none() bool { return o == outstanding{} }

func (o outstanding) String() string {
	return fmt.Sprintf("%d outbox rows, %d PAID orders, %d pending actions, %d queued tasks", o.Outbox, o.Paid, o.Pending, o.Queued)
}

// outstanding reads what is left to do; an error means a server did not answer.
func (c *cluster) outstanding(insp *asynq.Inspector) (outstanding, error) {
	var o outstanding
	if err := c.db.Get(&o, `SELECT (SELECT count(*) FROM outbox) AS outbox,
		(SELECT count(*) FROM orders WHERE status = 'PAID') AS paid,
		(SELECT count(*) FROM orders WHERE pending_action IS NOT NULL) AS pending`); err != nil {
		return o, err
	}
	// Only the queues Redis knows: after it lost its data, a queue exists again once a task
	// is enqueued in it.
	queues, err := insp.Queues()
	if err != nil {
		return o, err
	}
	for _, q := range queues {
		// Periodic maintenance tasks come and go; they owe nothing to an order.
		if q == tasks.Namespace("").Queue(tasks.QueueMaintenance) {
			continue
		}
		info, err := insp.GetQueueInfo(q)
		if err != nil {
			return o, err
		}
		o.Queued += info.Pending + info.Active + info.Scheduled + info.Retry
	}
	return o, nil
}

// verdict collects the broken invariants, each with a few examples.
type verdict struct {
	broken []string
}

func (v *verdict) fail(invariant string, examples []string) {
	if len(examples) == 0 {
		return
	}
	shown := examples
	if len(shown) > 8 {
		shown = shown[:8]
	}
	v.broken = append(v.broken, fmt.Sprintf("%s: %d cases, e.g.\n      %s", invariant, len(examples), strings.Join(shown, "\n      ")))
}

// orderRow is an order's final state with what the invariants compare.
type orderRow struct {
	ID            uuid.UUID `db:"id"`
	UserID        uuid.UUID `db:"user_id"`
	Status        string    `db:"status"`
	PendingAction *string   `db:"pending_action"`
	PaymentStatus *string   `db:"payment_status"`
	Refunds       int       `db:"refunds"`
	Transitions   string    `db:"transitions"` // "FROM>TO,…" in time order
	Requests      string    `db:"requests"`    // cancelRequested / refundRequested / actionFailed, in order
}

// readOrders reads every order with its payment, refunds and timeline summary.
func (c *cluster) readOrders() (map[uuid.UUID]orderRow, error) {
	var rows []orderRow
	err := c.db.Select(&rows, `SELECT o.id, o.user_id, o.status, o.pending_action, p.status AS payment_status,
		(SELECT count(*) FROM refunds r WHERE r.order_id = o.id) AS refunds,
		coalesce((SELECT string_agg(coalesce(e.from_status, '') || '>' || e.to_status, ',' ORDER BY e.created_at, e.id)
			FROM order_events e WHERE e.order_id = o.id AND e.type = 'statusChanged'), '') AS transitions,
		coalesce((SELECT string_agg(e.type, ',' ORDER BY e.created_at, e.id) FROM order_events e
			WHERE e.order_id = o.id AND e.type IN ('cancelRequested', 'refundRequested', 'actionFailed')), '') AS requests
		FROM orders o LEFT JOIN payments p ON p.order_id = o.id`)
	if err != nil {
		return nil, err
	}
	out := make(map[uuid.UUID]orderRow, len(rows))
	for _, r := range rows {
		out[r.ID] = r
	}
	return out, nil
}

// entered counts the transitions into status.
func (r orderRow) entered(status string) int {
	n := 0
	for _, tr := range strings.Split(r.Transitions, ",") {
		if strings.HasSuffix(tr, ">"+status) {
			n++
		}
	}
	return n
}

// expectedEnd is the status a placed order must end in, given what the load did with it.
func expectedEnd(o placed) string {
	switch {
	case o.Accepted && o.Action == "cancel":
		return "CANCELED"
	case o.Accepted && o.Action == "refund":
		return "REFUNDED"
	case o.Paid:
		return "PROCESSED"
	case o.Action == "":
		return "PENDING" // unpaid: nothing else touches it within ORDER_UNPAID_TTL
	}
	return "" // an action the API refused: the load reported it already
}

// checkOrders: every order the load placed exists once, ends where its scenario leads,
// entered each status at most once (the expected one exactly once), ran each accepted action
// once, and holds one refund exactly when money it took came back.
func (c *cluster) checkOrders(v *verdict, placedOrders []placed) error {
	rows, err := c.readOrders()
	if err != nil {
		return err
	}
	known := map[uuid.UUID]bool{}
	var missing, wrongEnd, twice, actions, refunds, unknown []string
	for _, o := range placedOrders {
		known[o.ID] = true
		r, ok := rows[o.ID]
		if !ok {
			missing = append(missing, o.ID.String())
			continue
		}
		desc := fmt.Sprintf("%s [%s] %s pending=%v transitions=%s requests=%s refunds=%d", o.ID, o.Scenario, r.Status,
			deref(r.PendingAction), r.Transitions, r.Requests, r.Refunds)
		if want := expectedEnd(o); want != "" && (r.Status != want || r.entered(want) != 1 && want != "PENDING") {
			wrongEnd = append(wrongEnd, "want "+want+": "+desc)
		}
		for _, st := range []string{"PAID", "PROCESSED", "CANCELED", "REFUNDED"} {
			if r.entered(st) > 1 {
				twice = append(twice, st+" twice: "+desc)
			}
		}
		if o.Accepted {
			want := o.Action + "Requested"
			if r.Requests != want {
				actions = append(actions, "want "+want+" once and no actionFailed: "+desc)
			}
		}
		// Money in, money out: a paid order that ends CANCELED or REFUNDED was refunded once.
		wantRefunds := 0
		if o.Paid && (r.Status == "CANCELED" || r.Status == "REFUNDED") {
			wantRefunds = 1
		}
		if r.Refunds != wantRefunds {
			refunds = append(refunds, fmt.Sprintf("want %d refunds: %s", wantRefunds, desc))
		}
	}
	for id, r := range rows {
		if !known[id] {
			unknown = append(unknown, fmt.Sprintf("%s of user %s: %s", id, r.UserID, r.Status))
		}
	}
	sort.Strings(unknown)
	v.fail("an order the load placed is missing", missing)
	v.fail("an order the load did not record exists (a retried Idempotency-Key placed two?)", unknown)
	v.fail("a paid order did not end PROCESSED exactly once / an accepted action did not end its order", wrongEnd)
	v.fail("an order entered a status twice", twice)
	v.fail("an accepted action was not run exactly once", actions)
	v.fail("refunds do not match the money taken", refunds)
	return nil
}

// checkStock: for every item, the stock at the start equals the stock on hand plus the units
// held by live orders (every status but CANCELED and REFUNDED; nothing is shipped).
func (c *cluster) checkStock(v *verdict, initial map[uuid.UUID]int64) error {
	var rows []struct {
		ID    uuid.UUID `db:"id"`
		Stock int64     `db:"stock"`
		Held  int64     `db:"held"`
	}
	if err := c.db.Select(&rows, `SELECT i.id, i.stock, coalesce((SELECT sum(l.quantity) FROM order_lines l
		JOIN orders o ON o.id = l.order_id WHERE l.item_id = i.id AND o.status NOT IN ('CANCELED', 'REFUNDED')), 0) AS held
		FROM items i WHERE i.id = ANY($1)`, uuidArray(initial)); err != nil {
		return err
	}
	var bad []string
	for _, r := range rows {
		if r.Stock+r.Held != initial[r.ID] {
			bad = append(bad, fmt.Sprintf("item %s: initial %d ≠ on hand %d + held %d", r.ID, initial[r.ID], r.Stock, r.Held))
		}
	}
	v.fail("stock is not conserved", bad)
	return nil
}

// checkDuplicates: no timeline event, notification or Stripe refund happened twice.
func (c *cluster) checkDuplicates(v *verdict, refundKeys map[string]int) error {
	var events []string
	// A requeue may repeat by design (the reconciler asks again); nothing else may.
	if err := c.db.Select(&events, `SELECT order_id || ' ' || type || ' ' || coalesce(from_status, '') || '>' ||
		coalesce(to_status, '') || ' ×' || count(*) FROM order_events WHERE type <> 'taskRequeued'
		GROUP BY order_id, type, from_status, to_status HAVING count(*) > 1`); err != nil {
		return err
	}
	v.fail("a timeline event is duplicated", events)

	var notes []string
	if err := c.db.Select(&notes, `SELECT user_id || ' ' || event || ' order ' || (data->>'orderId') || ' ×' || count(*)
		FROM notifications WHERE data ? 'orderId' GROUP BY user_id, event, data->>'orderId' HAVING count(*) > 1`); err != nil {
		return err
	}
	v.fail("a notification is duplicated", notes)

	// Each refund row is one Stripe refund: as many idempotency keys as rows, per order.
	var rows []struct {
		OrderID uuid.UUID `db:"order_id"`
		N       int       `db:"n"`
	}
	if err := c.db.Select(&rows, `SELECT order_id, count(*) AS n FROM refunds GROUP BY order_id`); err != nil {
		return err
	}
	perOrder := map[string]int{}
	for key := range refundKeys {
		if id, ok := orderOfKey(key); ok {
			perOrder[id]++
		}
	}
	var bad []string
	for _, r := range rows {
		if perOrder[r.OrderID.String()] != r.N {
			bad = append(bad, fmt.Sprintf("order %s: %d refund rows, %d refund idempotency keys at Stripe", r.OrderID, r.N, perOrder[r.OrderID.String()]))
		}
		delete(perOrder, r.OrderID.String())
	}
	for id, n := range perOrder {
		bad = append(bad, fmt.Sprintf("order %s: no refund row, %d refund idempotency keys at Stripe", id, n))
	}
	v.fail("a refund at Stripe does not match the refunds recorded", bad)
	return nil
}

// checkNotified: every order got the notifications of the statuses it went through.
func (c *cluster) checkNotified(v *verdict) error {
	var missing []string
	if err := c.db.Select(&missing, `SELECT o.id || ' ' || o.status || ' lacks ' || ev.event FROM orders o
		CROSS JOIN LATERAL (VALUES ('order.created', true), ('order.processed', o.status = 'PROCESSED'),
			('order.canceled', o.status = 'CANCELED'), ('order.refunded', o.status = 'REFUNDED')) AS ev (event, wanted)
		WHERE ev.wanted AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.user_id = o.user_id
			AND n.event = ev.event AND n.data->>'orderId' = o.id::text)`); err != nil {
		return err
	}
	v.fail("a notification is missing", missing)
	return nil
}

// window is a declared outage: Redis or PostgreSQL down, from start to end.
type window struct {
	what       string
	start, end time.Time
}

// outageGrace is how long after a server is back a 503 is still an honest answer: the pools
// find out their connections died on first use.
const outageGrace = 5 * time.Second

// checkStatuses: no 500 at all; any other 5xx is a 503 inside a declared outage window.
func checkStatuses(v *verdict, errs []serverError, windows []window) {
	var bad []string
	for _, e := range errs {
		if e.status == 503 && inWindow(e.at, windows) {
			continue
		}
		bad = append(bad, fmt.Sprintf("%s %s %d %s", e.at.Format("15:04:05.000"), e.route, e.status, e.code))
	}
	v.fail("a 5xx outside a declared outage, or not a 503", bad)
}

func inWindow(at time.Time, windows []window) bool {
	for _, w := range windows {
		if !at.Before(w.start) && !at.After(w.end.Add(outageGrace)) {
			return true
		}
	}
	return false
}

// orderOfKey extracts the order id of a Stripe idempotency key "order-<uuid>-<purpose>".
func orderOfKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, "order-")
	if !ok || len(rest) < 36 {
		return "", false
	}
	if _, err := uuid.Parse(rest[:36]); err != nil {
		return "", false
	}
	return rest[:36], true
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// uuidArray renders the map's keys as a PostgreSQL uuid[] literal.
func uuidArray(m map[uuid.UUID]int64) string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id.String())
	}
	return "{" + strings.Join(ids, ",") + "}"
}
