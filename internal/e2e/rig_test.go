package e2e_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/dispatchhq/dispatch/internal/assembly"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/internal/worker"
)

// stripeTriesPerCall is how many HTTP requests one gateway call makes when Stripe answers 5xx:
// the adapter configures stripe-go with MaxNetworkRetries = 1.
const stripeTriesPerCall = 2

// maxRetry is the retries of every task the relay enqueues (SPEC §5).
const maxRetry = 3

// rig is a stack whose relay and worker the test controls: it can pause the relay (so rows
// stay in the outbox and can be counted), stop the worker (so actions stay pending) and start
// them again. Its worker reports every task attempt and compensation.
type rig struct {
	*stack
	obs        *taskObserver
	stopRelay  func()
	stopWorker func()

	clientsMu sync.Mutex
	clients   map[string]*testenv.Client
}

func newRig(t *testing.T) *rig {
	t.Helper()
	s := newStack(t, func(o *stackOptions) { o.noRelay, o.noWorker = true, true })
	r := &rig{stack: s, obs: &taskObserver{attempts: map[string]map[string]int{}, compensations: map[string]int{}},
		clients: map[string]*testenv.Client{}}
	r.resumeRelay()
	r.resumeWorker()
	return r
}

// as returns a logged-in demo staff client, logging in once per role.
func (r *rig) as(role string) *testenv.Client {
	r.clientsMu.Lock()
	defer r.clientsMu.Unlock()
	if c, ok := r.clients[role]; ok {
		return c
	}
	c := r.staff(role)
	r.clients[role] = c
	return c
}

func (r *rig) pauseRelay() { r.stopRelay() }

func (r *rig) resumeRelay() { r.stopRelay = r.startRelay(100, time.Minute) }

// pauseWorker stops the worker; tasks relayed meanwhile wait in their queue.
func (r *rig) pauseWorker() { r.stopWorker() }

// resumeWorker starts a worker (with the observer) on the stack's queues.
func (r *rig) resumeWorker() {
	w, err := worker.New(r.cfg, assembly.New(r.cfg, assembly.Infra{DB: r.db, Redis: r.rdb, Keys: r.keys, Log: r.log, Gateway: payment.NewStripe(r.cfg.StripeSecretKey, r.stripe.URL)}),
		worker.Options{Namespace: r.ns, RetryBase: 50 * time.Millisecond, DelayedInterval: 100 * time.Millisecond, Observe: worker.Observer{Done: r.obs.done, Compensated: r.obs.compensated}})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		r.t.Fatal(err)
	}
	stop := sync.OnceFunc(w.Shutdown)
	r.addStop(stop)
	r.stopWorker = stop
}

// taskObserver counts task attempts by type and outcome, and compensations by type.
type taskObserver struct {
	mu            sync.Mutex
	attempts      map[string]map[string]int
	compensations map[string]int
}

func (o *taskObserver) done(typ, outcome string, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.attempts[typ] == nil {
		o.attempts[typ] = map[string]int{}
	}
	o.attempts[typ][outcome]++
}

func (o *taskObserver) compensated(typ string) {
	o.mu.Lock()
	o.compensations[typ]++
	o.mu.Unlock()
}

// outcomes returns the attempts of a task type by outcome (success, retry, failed).
func (o *taskObserver) outcomes(typ string) map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]int{}
	for k, v := range o.attempts[typ] {
		out[k] = v
	}
	return out
}

func (o *taskObserver) compensationsOf(typ string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.compensations[typ]
}

// archived is the number of tasks of one of the stack's queues that asynq gave up on.
func (r *rig) archived(queue string) int {
	r.t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(r.rdb).GetQueueInfo(r.ns.Queue(queue))
	if err != nil {
		r.t.Fatalf("queue info: %v", err)
	}
	return info.Archived
}

// fullOrder is the order view with everything the tests look at.
type fullOrder struct {
	ID            uuid.UUID
	Number        int64
	UserID        uuid.UUID
	Status        string
	PendingAction *string
	Total         int64
	Currency      string
	Items         []struct {
		ItemID    uuid.UUID
		Name      string
		UnitPrice int64
		Quantity  int
		Subtotal  int64
	}
	Payment struct {
		Status           string
		PaymentIntentID  *string
		ClientSecret     *string
		AmountReceived   *int64
		ReceivedCurrency *string
		LastError        *string
	}
	Refund *struct {
		Status, RefundID, Kind, Currency, Method string
		Amount                                   int64
	}
	TrackingNumber, Carrier                        *string
	ShippedAt, DeliveredAt, CanceledAt, RefundedAt *string
	CreatedAt, UpdatedAt                           string
}

// get reads an order through the admin API.
func (r *rig) get(id uuid.UUID) fullOrder {
	r.t.Helper()
	var o fullOrder
	r.as("admin").Do("GET", "/v1/admin/orders/"+id.String(), nil).Expect(r.t, 200).Decode(r.t, &o)
	return o
}

// place orders qty units of item for the customer and returns the created order.
func (r *rig) place(c *testenv.Client, qty int, items ...uuid.UUID) fullOrder {
	r.t.Helper()
	var lines []map[string]any
	for _, id := range items {
		lines = append(lines, map[string]any{"itemId": id, "quantity": qty})
	}
	var o fullOrder
	c.Do("POST", "/v1/orders", map[string]any{"items": lines}, "Idempotency-Key", uuid.NewString()).Expect(r.t, 201).Decode(r.t, &o)
	if o.Status != "PENDING" || o.Payment.PaymentIntentID == nil {
		r.t.Fatalf("created order: %+v", o)
	}
	return o
}

// createdWithoutIntent places the customer's order of qty units of item while Stripe fails its
// PaymentIntent's create (stripe-go's own retry included): 503, the order stays PENDING without
// one. It returns the request's body and key, for the retry that resumes it.
func (r *rig) createdWithoutIntent(c *testenv.Client, item uuid.UUID, qty int) (map[string]any, string) {
	r.t.Helper()
	r.stripe.Fail("POST", "/v1/payment_intents", testenv.Fault{Status: 500, Type: "api_error", Message: "down", Times: stripeTriesPerCall})
	key := uuid.NewString()
	body := map[string]any{"items": []map[string]any{{"itemId": item, "quantity": qty}}}
	decodeError(r.t, c.Do("POST", "/v1/orders", body, "Idempotency-Key", key), 503, "payments.errors.gatewayUnavailable")
	return body, key
}

// holdOrder locks the order's row in a transaction of the test's (rolled back when the test
// ends, unless attachIntent commits it), so that the next locked read of the order waits.
func (r *rig) holdOrder(id uuid.UUID) *postgres.Tx {
	r.t.Helper()
	tx, err := r.db.BeginTxx(context.Background(), nil)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { _ = tx.Rollback() })
	if _, err := tx.ExecContext(context.Background(), `SELECT FROM orders WHERE id = $1 FOR UPDATE`, id); err != nil {
		r.t.Fatal(err)
	}
	return tx
}

// waitForOrderLock waits until one locked read of an order (who: what reads it) waits for a
// row lock.
func (r *rig) waitForOrderLock(who string) {
	r.t.Helper()
	testenv.Eventually(r.t, 30*time.Second, who+" waiting for the order's lock", func() bool {
		return r.count(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE 'SELECT o.xmin::text AS locked_xmin,%'`) == 1
	})
}

// attachIntent stores PaymentIntent pi on the held order as the create's statement does, and
// commits, releasing the order.
func (r *rig) attachIntent(held *postgres.Tx, id uuid.UUID, pi string) {
	r.t.Helper()
	var none *idempotency.Claim
	ok, err := (orderdb.Store{}).SetIntent(context.Background(), held, id, pi, "secret", order.PaymentRequiresPayment, none.Completion(201, nil))
	if err != nil || !ok {
		r.t.Fatalf("SetIntent: %v, %v", ok, err)
	}
	if err := held.Commit(); err != nil {
		r.t.Fatal(err)
	}
}

// paid sends payment_intent.succeeded for amount (the order's total unless given).
func (r *rig) paid(o fullOrder, amount ...int64) {
	r.t.Helper()
	a := o.Total
	if len(amount) > 0 {
		a = amount[0]
	}
	r.webhook(payment.TestEvent{Type: payment.EventIntentSucceeded, PaymentIntentID: *o.Payment.PaymentIntentID,
		OrderID: o.ID.String(), Amount: a, Currency: o.Currency}).Expect(r.t, 200)
}

// canceled places an order, has staff cancel it and waits until it is CANCELED with nothing
// left to run.
func (r *rig) canceled(c *testenv.Client, qty int, items ...uuid.UUID) fullOrder {
	r.t.Helper()
	o := r.place(c, qty, items...)
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", nil).Expect(r.t, 202)
	r.waitStatus(o.ID, "CANCELED")
	r.quiesce()
	return o
}

// processed places an order and pays it, and waits until the worker processed it.
func (r *rig) processed(c *testenv.Client, qty int, items ...uuid.UUID) fullOrder {
	r.t.Helper()
	o := r.place(c, qty, items...)
	r.paid(o)
	r.waitStatus(o.ID, "PROCESSED")
	return r.get(o.ID)
}

// ship and deliver move a PROCESSED order on through the API.
func (r *rig) ship(id uuid.UUID) {
	r.t.Helper()
	r.as("shipper").Do("PATCH", "/v1/admin/orders/"+id.String()+"/ship",
		map[string]string{"trackingNumber": "TRK-" + id.String()[:8], "carrier": "UPS"}).Expect(r.t, 200)
}

func (r *rig) deliver(id uuid.UUID) {
	r.t.Helper()
	r.as("delivery").Do("PATCH", "/v1/admin/orders/"+id.String()+"/deliver", nil).Expect(r.t, 200)
}

// sweepStuck runs the reconciler as it would run past StuckAfter from now: what waits for a
// task that did not run is asked for again.
func (r *rig) sweepStuck() (order.ReconcileReport, error) {
	p := order.DefaultReconcilePolicy(r.cfg.OrderUnpaidTTL)
	return r.assemble(r.rdb, r.stripe.URL, r.log).Orders.Reconcile(context.Background(), time.Now().Add(p.StuckAfter+time.Minute), p, nil)
}

// timelineEvent is one row of an order's timeline.
type timelineEvent struct {
	Type          string  `db:"type"`
	From          *string `db:"from_status"`
	To            *string `db:"to_status"`
	Actor         string  `db:"actor"`
	Reason        *string `db:"reason"`
	CorrelationID string  `db:"correlation_id"`
}

func (e timelineEvent) String() string {
	s := e.Type
	if e.From != nil || e.To != nil {
		s += "(" + deref(e.From) + "→" + deref(e.To) + ")"
	}
	if e.Reason != nil {
		s += "[" + *e.Reason + "]"
	}
	return s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// timeline reads an order's timeline from the database, oldest first.
func (r *rig) timeline(id uuid.UUID) []timelineEvent {
	r.t.Helper()
	var evs []timelineEvent
	if err := r.db.Select(&evs, `SELECT type, from_status, to_status, actor, reason, correlation_id
FROM order_events WHERE order_id = $1 ORDER BY created_at, id`, id); err != nil {
		r.t.Fatal(err)
	}
	return evs
}

// events returns the timeline events of type typ (and, for statusChanged, of from → to when given).
func (r *rig) events(id uuid.UUID, typ string, fromTo ...string) []timelineEvent {
	var out []timelineEvent
	for _, e := range r.timeline(id) {
		if e.Type != typ {
			continue
		}
		if len(fromTo) == 2 && (deref(e.From) != fromTo[0] || deref(e.To) != fromTo[1]) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// outboxRows counts the outbox rows about an order (its tasks and its notifications).
func (r *rig) outboxRows(id uuid.UUID) int {
	return r.count(`SELECT count(*) FROM outbox WHERE payload->>'orderId' = $1 OR payload->'data'->>'orderId' = $1`, id.String())
}

// quiesce waits until the outbox is empty and the order has no task left in the queues, so
// that the relay can be paused and any later outbox row is the test's doing.
func (r *rig) quiesce() {
	r.t.Helper()
	insp := asynq.NewInspectorFromRedisClient(r.rdb)
	testenv.Eventually(r.t, 30*time.Second, "outbox drained and queues idle", func() bool {
		if r.count(`SELECT count(*) FROM outbox`) > 0 {
			return false
		}
		for _, q := range tasks.Queues() {
			info, err := insp.GetQueueInfo(r.ns.Queue(q))
			if err != nil {
				continue // a queue never used has no info
			}
			if info.Pending+info.Active+info.Scheduled+info.Retry > 0 {
				return false
			}
		}
		return true
	})
}

// stripeFindsRefund has Stripe's refund list of o's PaymentIntent answer one succeeded refund
// of the whole total, id, as if it had been made with every answer to it lost.
func (r *rig) stripeFindsRefund(o fullOrder, id string) {
	r.stripe.Fail("GET", "/v1/refunds", testenv.Fault{Status: 200, Body: map[string]any{"object": "list", "has_more": false,
		"data": []map[string]any{{"id": id, "object": "refund", "amount": o.Total,
			"currency": o.Currency, "status": "succeeded", "payment_intent": *o.Payment.PaymentIntentID}}}})
}

// refundUnderWay has Stripe take o's next refund as pending, and returns that refund's id.
func (r *rig) refundUnderWay(o fullOrder) string {
	id := "re_" + o.ID.String()[24:] // UUIDv7's random part: ids of orders made together differ
	r.stripe.Fail("POST", "/v1/refunds", testenv.Fault{Status: 200, Times: 1, Body: map[string]any{"id": id, "object": "refund",
		"amount": o.Total, "currency": o.Currency, "status": "pending", "payment_intent": *o.Payment.PaymentIntentID}})
	return id
}

// refundedAndCanceled pays two orders of item, two units and one, and has staff refund the
// first and cancel the second; it returns them once both refunds are made and the queues idle.
func (r *rig) refundedAndCanceled(c *testenv.Client, item uuid.UUID) (refunded, canceled fullOrder) {
	r.t.Helper()
	refunded = r.processed(c, 2, item)
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+refunded.ID.String()+"/refund", nil).Expect(r.t, 202)
	r.waitStatus(refunded.ID, "REFUNDED")
	canceled = r.processed(c, 1, item)
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+canceled.ID.String()+"/cancel", nil).Expect(r.t, 202)
	r.waitStatus(canceled.ID, "CANCELED")
	r.quiesce()
	return refunded, canceled
}

// lateRefundFailed cancels an order of one unit of item, has Stripe answer its refunds as
// fault says, pays it late, and waits until the late refund's compensation ran and the queues
// are idle.
func (r *rig) lateRefundFailed(c *testenv.Client, item uuid.UUID, fault testenv.Fault) fullOrder {
	r.t.Helper()
	return r.lateRefundFailedOf(r.canceled(c, 1, item), fault)
}

// lateRefundFailedOf is lateRefundFailed for a CANCELED order of the test's.
func (r *rig) lateRefundFailedOf(o fullOrder, fault testenv.Fault) fullOrder {
	r.t.Helper()
	r.stripe.Fail("POST", "/v1/refunds", fault)
	r.paid(o) // late
	testenv.Eventually(r.t, 30*time.Second, "late refund compensated", func() bool {
		return len(r.events(o.ID, "actionFailed")) > 0
	})
	r.quiesce()
	return o
}

// lateRefunded waits until o's late payment is refunded and the queues are idle, checks that
// one refund of kind late_payment returned the order's total and that the order is CANCELED
// with nothing pending, and returns the refund's Stripe id.
func (r *rig) lateRefunded(o fullOrder) string {
	r.t.Helper()
	testenv.Eventually(r.t, 30*time.Second, "late refund recorded", func() bool {
		got := r.refunds(o.ID)
		return len(got) > 0 && got[0].Status != "failed" // not the one Stripe refused before
	})
	r.quiesce()
	if got := r.refunds(o.ID); len(got) != 1 || got[0].Kind != "late_payment" || got[0].Amount != o.Total {
		r.t.Fatalf("refunds: %+v", got)
	}
	if st, action := r.status(o.ID); st != "CANCELED" || action != "" {
		r.t.Fatalf("order %s/%q after the late refund, want CANCELED with nothing pending", st, action)
	}
	return r.refunds(o.ID)[0].RefundID
}

// intentCancels are the calls that canceled the order's PaymentIntent at Stripe.
func (r *rig) intentCancels(o fullOrder) []testenv.Call {
	return r.stripe.Calls("POST", "/v1/payment_intents/"+*o.Payment.PaymentIntentID+"/cancel")
}

// refundCalls are the refund calls made at Stripe for the order (by idempotency key).
func (r *rig) refundCalls(id uuid.UUID) []testenv.Call {
	var out []testenv.Call
	for _, c := range r.stripe.Calls("POST", "/v1/refunds") {
		if strings.HasPrefix(c.IdempotencyKey, "order-"+id.String()+"-") {
			out = append(out, c)
		}
	}
	return out
}

// errorBody decodes the standard error body.
type errorBody struct {
	Success    bool
	StatusCode int
	Code       string
	Message    string
	Details    []struct{ Field, Code, Message string }
	Path       string
}

func decodeError(t *testing.T, resp testenv.Response, status int, code string) errorBody {
	t.Helper()
	resp.ExpectError(t, status, code)
	var e errorBody
	resp.Decode(t, &e)
	return e
}

// hasDetail reports whether the error names field.
func (e errorBody) hasDetail(field string) bool {
	for _, d := range e.Details {
		if d.Field == field {
			return true
		}
	}
	return false
}

// itemIn creates an item in a currency.
func (r *rig) itemIn(stock, price int64, currency string) uuid.UUID {
	r.t.Helper()
	var it struct{ ID uuid.UUID }
	r.as("admin").Do("POST", "/v1/admin/items", map[string]any{"name": "Item " + uuid.NewString()[:6],
		"description": "test item", "price": price, "stock": stock, "currency": currency},
		"Idempotency-Key", uuid.NewString()).Expect(r.t, 201).Decode(r.t, &it)
	return it.ID
}

// ordersOf counts a user's order rows (deleted ones included).
func (r *rig) ordersOf(userID uuid.UUID) int {
	return r.count(`SELECT count(*) FROM orders WHERE user_id = $1`, userID)
}

// settledNotifications counts the user's notifications of event about the order once the
// outbox and queues are idle, so a duplicate would have arrived by then.
func (r *rig) settledNotifications(userID, orderID uuid.UUID, event string) int {
	r.t.Helper()
	r.waitNotified(userID, orderID, event)
	r.quiesce()
	return r.notifications(userID, orderID, event)
}

// mustJSON renders v for failure messages.
func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// paymentSucceeded is a payment_intent.succeeded event for the order's PaymentIntent.
func paymentSucceeded(o fullOrder, amount int64, currency string) payment.TestEvent {
	return payment.TestEvent{Type: payment.EventIntentSucceeded, PaymentIntentID: *o.Payment.PaymentIntentID,
		OrderID: o.ID.String(), Amount: amount, Currency: currency}
}

// outboxBacklog counts outbox rows other than the login notifications staff sign-ins write.
func (r *rig) outboxBacklog() int {
	return r.count(`SELECT count(*) FROM outbox WHERE payload->>'event' IS DISTINCT FROM 'auth.login'`)
}

// paymentFailedEvent is a payment_intent.payment_failed event for the order's PaymentIntent.
func paymentFailedEvent(o fullOrder, msg string) payment.TestEvent {
	return payment.TestEvent{Type: payment.EventIntentFailed, PaymentIntentID: *o.Payment.PaymentIntentID,
		OrderID: o.ID.String(), Amount: o.Total, Currency: o.Currency, FailureMessage: msg}
}
