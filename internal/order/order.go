package order

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/i18n"
	"github.com/dispatchhq/dispatch/internal/payment"
)

// Order is the order aggregate: the order, its lines, its payment and its refund.
type Order struct {
	ID             uuid.UUID
	Number         int64
	UserID         uuid.UUID
	Status         Status
	PendingAction  Action
	Total          int64
	Currency       string
	Lines          []Line
	Payment        Payment
	Refund         *Refund
	TrackingNumber *string
	Carrier        *string
	ShippedAt      *time.Time
	DeliveredAt    *time.Time
	CanceledAt     *time.Time
	RefundedAt     *time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
	DeletedAt      *time.Time
}

// Line is one item of an order with its name and price at the time of purchase.
type Line struct {
	ID        uuid.UUID
	ItemID    uuid.UUID
	Name      string
	UnitPrice int64
	Quantity  int
	Subtotal  int64
}

// Payment statuses.
const (
	PaymentPending         = "pending"                 // no PaymentIntent yet
	PaymentRequiresPayment = "requires_payment_method" // PaymentIntent open, waiting for the customer (Stripe's name)
	PaymentFailed          = "failed"                  // the last attempt failed; the customer may retry
	PaymentSucceeded       = "succeeded"
	PaymentCanceled        = "canceled"
)

// Payment is the order's PaymentIntent and what Stripe reported about it.
type Payment struct {
	Status           string
	IntentID         *string
	ClientSecret     *string
	AmountReceived   *int64
	ReceivedCurrency *string
	LastError        *string
}

// Captured reports whether money was received for the order.
func (p Payment) Captured() bool { return p.Status == PaymentSucceeded }

// Refund kinds.
const (
	RefundOrder       = "order"        // the order's own refund
	RefundLatePayment = "late_payment" // a payment that arrived after the order was canceled
)

// Refund methods.
const (
	RefundByStripe      = "stripe"
	RefundOutsideStripe = "outside" // returned by staff some other way; recorded as succeeded
)

// Refund is a refund of the order's payment: made at Stripe, or returned outside it.
type Refund struct {
	Kind     string
	RefundID string
	Amount   int64
	Currency string
	Status   string
	Method   string
}

// Event is a timeline entry. Transitions have both statuses; actions have neither.
type Event struct {
	ID            uuid.UUID
	OrderID       uuid.UUID
	Type          string
	From, To      *Status
	Actor         string
	Reason        *string
	CorrelationID string
	CreatedAt     time.Time
}

// Timeline event types.
const (
	EventCreated         = "created"
	EventStatusChanged   = "statusChanged"
	EventCancelRequested = "cancelRequested"
	EventRefundRequested = "refundRequested"
	EventPaymentFailed   = "paymentFailed"
	EventActionFailed    = "actionFailed"
	EventLatePayment     = "latePayment"
	EventLateRefund      = "lateRefund"
	EventRefundUpdated   = "refundUpdated"
	EventTaskRequeued    = "taskRequeued"
	EventRefundOutside   = "refundedOutsideStripe"
	EventCancelWithdrawn = "cancelWithdrawn"
)

// EventTypes lists every timeline event type (a copy: the list is the package's).
func EventTypes() []string {
	return []string{EventCreated, EventStatusChanged, EventCancelRequested, EventRefundRequested, EventPaymentFailed,
		EventActionFailed, EventLatePayment, EventLateRefund, EventRefundUpdated, EventTaskRequeued, EventRefundOutside,
		EventCancelWithdrawn}
}

// Actors that are not users.
const (
	ActorWebhook    = "webhook"
	ActorWorker     = "worker"
	ActorReconciler = "reconciler"
	ActorCustomer   = "customer"
)

// Every change to an order's fields is one of the methods below: the services decide when,
// these decide what changes and refuse what the state machine (status.go) does not allow.

// newOrder is a PENDING order of userID with a line for each reservation, to be named and
// priced from its items (price).
func newOrder(userID uuid.UUID, rs []catalog.Reservation) Order {
	o := Order{ID: uuid.Must(uuid.NewV7()), UserID: userID, Status: Pending, Payment: Payment{Status: PaymentPending},
		Lines: make([]Line, len(rs))}
	for i, r := range rs {
		o.Lines[i] = Line{ID: uuid.Must(uuid.NewV7()), ItemID: r.ItemID, Quantity: r.Quantity}
	}
	return o
}

// Reservations are the stock quantities of the order's lines.
func (o *Order) Reservations() []catalog.Reservation {
	rs := make([]catalog.Reservation, len(o.Lines))
	for i, l := range o.Lines {
		rs[i] = catalog.Reservation{ItemID: l.ItemID, Quantity: l.Quantity}
	}
	return rs
}

// indexItems maps items by id.
func indexItems(items []catalog.ReservedItem) map[uuid.UUID]catalog.ReservedItem {
	byID := make(map[uuid.UUID]catalog.ReservedItem, len(items))
	for _, it := range items {
		byID[it.ID] = it
	}
	return byID
}

// price names and prices the lines from their items as the create statement found them, or
// says why the order cannot be placed, in the order SPEC §3 checks: the first line whose item
// is missing or deleted (404), then items in more than one currency (400), then a total too
// large for one Stripe charge (400, a fault of the request like the currencies), then the
// first line short of stock (409).
func (o *Order) price(items []catalog.ReservedItem) error {
	byID := indexItems(items)
	found := make([]catalog.ReservedItem, len(o.Lines))
	for i, l := range o.Lines {
		it, ok := byID[l.ItemID]
		if !ok || it.Deleted {
			return catalog.ErrNotFound.With("item", l.ItemID)
		}
		found[i] = it
	}
	for _, it := range found {
		if it.Currency != found[0].Currency {
			return ErrMixedCurrencies
		}
	}
	o.Total, o.Currency = 0, found[0].Currency
	for i, it := range found {
		l := &o.Lines[i]
		l.Name, l.UnitPrice, l.Subtotal = it.Name, it.Price, it.Price*int64(l.Quantity)
		o.Total += l.Subtotal
	}
	if o.Total > MaxTotal {
		amount := func(minor int64) i18n.Amount { return i18n.Amount{Minor: minor, Currency: o.Currency} }
		return ErrTotalTooLarge.With("total", amount(o.Total), "max", amount(MaxTotal))
	}
	for i, it := range found {
		if it.Stock < int64(o.Lines[i].Quantity) {
			return catalog.ErrInsufficientStock.With("item", it.Name, "itemId", it.ID)
		}
	}
	return nil
}

// transition moves o to status to if the state machine allows it, setting the timestamps the
// new status carries. It changes nothing and returns ErrBadPreconditions otherwise.
func (o *Order) transition(to Status, at time.Time) error {
	if !CanTransition(o.Status, to) {
		return badTransition(o.Status, to)
	}
	o.Status = to
	switch to {
	case Shipped:
		o.ShippedAt = &at
	case Delivered:
		o.DeliveredAt = &at
	case Canceled:
		o.CanceledAt = &at
	case Refunded:
		o.RefundedAt = &at
	}
	return nil
}

// actionPending refuses a change while a is pending, naming a in the reader's language.
func actionPending(a Action) error {
	return ErrActionPending.With("action", i18n.Term("orders.actions."+string(a)))
}

// request marks action pending if its target is reachable and no other action is pending. A
// refund of an order that still owes its payment back returns it (the status stays): how staff
// return a late payment whose automatic refund Stripe refused (failAction), or a payment whose
// refund failed at Stripe.
func (o *Order) request(a Action) error {
	if o.PendingAction != ActionNone {
		return actionPending(o.PendingAction)
	}
	if !CanTransition(o.Status, a.target()) && !(a == ActionRefund && o.owesRefund()) {
		return badTransition(o.Status, a.target())
	}
	o.PendingAction = a
	return nil
}

// failAction clears pending action a whose retries ran out; the status stays, and staff may
// ask again. A late payment's refund that failed for a reason that may pass (transient: Stripe
// down) keeps its action: nobody asked for it, so nobody would ask again, and the money must
// go back; the stuck-order sweep runs it again. One Stripe refused is left to staff. It
// reports whether a was pending.
func (o *Order) failAction(a Action, transient bool) bool {
	if o.PendingAction != a {
		return false
	}
	if !(transient && o.owesLatePayment()) {
		o.PendingAction = ActionNone
	}
	return true
}

// attachIntent records the PaymentIntent created for a PENDING order.
func (o *Order) attachIntent(id, clientSecret string) error {
	if o.Status != Pending {
		return badTransition(o.Status, Paid)
	}
	o.Payment.IntentID, o.Payment.ClientSecret, o.Payment.Status = &id, &clientSecret, PaymentRequiresPayment
	return nil
}

// pay records a captured payment. A PENDING order becomes PAID; a CANCELED one keeps its
// status (the late payment is refunded).
func (o *Order) pay(amount int64, currency string, at time.Time) error {
	if o.Status != Canceled && !CanTransition(o.Status, Paid) {
		return badTransition(o.Status, Paid)
	}
	currency = strings.ToLower(currency)
	o.Payment.Status, o.Payment.AmountReceived, o.Payment.ReceivedCurrency, o.Payment.LastError =
		PaymentSucceeded, &amount, &currency, nil
	if o.Status == Canceled {
		o.PendingAction = ActionRefund // a late payment: order:refund returns it, then clears this
		return nil
	}
	return o.transition(Paid, at)
}

// owesLatePayment reports whether o is CANCELED with a payment captured after its cancellation
// and not returned yet.
func (o *Order) owesLatePayment() bool {
	return o.Status == Canceled && o.Payment.Captured() && o.Refund == nil
}

// refundFailed reports whether the refund recorded for o's payment failed or was canceled at
// Stripe (a card closed since, say): the money was never returned.
func (o *Order) refundFailed() bool {
	return o.Payment.Captured() && o.Refund != nil && payment.RefundNotMade(o.Refund.Status)
}

// refusedRefundPrefix begins the id of a refund Stripe refused to make (ours: Stripe gave none).
const refusedRefundPrefix = "refused_"

// lateRefundRefused reports whether o's refund is a late payment's that Stripe refused to make:
// its customer has heard of no refund at all.
func (o *Order) lateRefundRefused() bool {
	return o.Refund != nil && o.Refund.Kind == RefundLatePayment && strings.HasPrefix(o.Refund.RefundID, refusedRefundPrefix)
}

// toldOfRefund reports whether o's customer was told that the payment recorded on o was
// returned: at REFUNDED (order.refunded, or order.failed), or by a late payment's refund that
// Stripe took. One who heard only of a cancellation, or of nothing (a late payment whose
// refund Stripe refused), was not.
func (o *Order) toldOfRefund() bool {
	return o.Status == Refunded || o.Refund != nil && o.Refund.Kind == RefundLatePayment && !o.lateRefundRefused()
}

// owesRefund reports whether o holds a payment it must still return.
func (o *Order) owesRefund() bool { return o.owesLatePayment() || o.refundFailed() }

// refundUnderWay reports whether o's refund was taken by Stripe and has not settled yet: it may
// still fail.
func (o *Order) refundUnderWay() bool {
	return o.Refund != nil && payment.RefundUnderWay(o.Refund.Status)
}

// failPayment records a failed attempt on a PENDING order; the customer may retry.
func (o *Order) failPayment(msg string) error {
	if o.Status != Pending {
		return badTransition(o.Status, Pending)
	}
	o.Payment.Status, o.Payment.LastError = PaymentFailed, &msg
	return nil
}

// intentCanceled records that a PENDING order's PaymentIntent was canceled at Stripe and
// requests the order's cancel.
func (o *Order) intentCanceled() error {
	if err := o.request(ActionCancel); err != nil {
		return err
	}
	o.Payment.Status = PaymentCanceled
	return nil
}

// process moves a PAID order to PROCESSED once the payment covers exactly its total and
// currency; a mismatch is ErrPaymentMismatch.
func (o *Order) process(at time.Time) error {
	p := o.Payment
	if !p.Captured() || p.AmountReceived == nil || *p.AmountReceived != o.Total ||
		p.ReceivedCurrency == nil || !strings.EqualFold(*p.ReceivedCurrency, o.Currency) {
		return ErrPaymentMismatch
	}
	return o.transition(Processed, at)
}

// ship moves o to SHIPPED with its tracking number and carrier. Whether o may ship is judged
// before the fields (SPEC §11): an admin PATCH to SHIPPED of an order that cannot ship is
// refused as such, 409, whatever else it carries (the ship route checked its fields before).
func (o *Order) ship(in *ShipInput, at time.Time) error {
	if o.PendingAction != ActionNone {
		return actionPending(o.PendingAction)
	}
	if !CanTransition(o.Status, Shipped) {
		return badTransition(o.Status, Shipped)
	}
	if err := in.Validate(); err != nil {
		return err
	}
	if err := o.transition(Shipped, at); err != nil {
		return err
	}
	o.TrackingNumber, o.Carrier = &in.TrackingNumber, &in.Carrier
	return nil
}

// deliver moves o to DELIVERED.
func (o *Order) deliver(at time.Time) error {
	if o.PendingAction != ActionNone {
		return actionPending(o.PendingAction)
	}
	return o.transition(Delivered, at)
}

// cancel moves o to CANCELED and clears its pending action. Without a refund, a payment that
// did not succeed is canceled too.
func (o *Order) cancel(refunded bool, at time.Time) error {
	if err := o.transition(Canceled, at); err != nil {
		return err
	}
	o.PendingAction = ActionNone
	if !refunded && o.Payment.Status != PaymentSucceeded {
		o.Payment.Status = PaymentCanceled
	}
	return nil
}

// refund moves o to REFUNDED and clears its pending action.
func (o *Order) refund(at time.Time) error {
	if err := o.transition(Refunded, at); err != nil {
		return err
	}
	o.PendingAction = ActionNone
	return nil
}

// recordRefund notes a refund of o's payment.
func (o *Order) recordRefund(r Refund) { o.Refund = &r }

// refundSettled ends the pending refund of an order whose status does not move with it (a late
// payment's refund, a refund made again), once the refund is recorded.
func (o *Order) refundSettled() { o.PendingAction = ActionNone }

// intentRefused records Stripe's refusal to create the PaymentIntent of a PENDING order (nil:
// none): a resumed create tells such an order by it.
func (o *Order) intentRefused(msg *string) { o.Payment.LastError = msg }

// refundOutside notes that staff returned o's payment outside Stripe, where Stripe could not
// (a refund that failed, a late payment whose refund it refused): the whole payment, succeeded,
// in place of the refund that failed. The status and the stock stay. Refused while an action is
// pending (a refund through Stripe may be under way) and when o owes nothing.
func (o *Order) refundOutside(id string) (Refund, error) {
	if err := o.mayRefundOutside(); err != nil {
		return Refund{}, err
	}
	r := Refund{Kind: RefundLatePayment, RefundID: id, Amount: receivedOf(o), Currency: strings.ToLower(receivedCurrencyOf(o)),
		Status: payment.RefundSucceeded, Method: RefundOutsideStripe}
	if o.Refund != nil {
		r.Kind = o.Refund.Kind
	}
	o.recordRefund(r)
	return r, nil
}

// mayRefundOutside refuses what refundOutside refuses: an action pending, nothing owed.
func (o *Order) mayRefundOutside() error {
	if o.PendingAction != ActionNone {
		return actionPending(o.PendingAction)
	}
	if !o.owesRefund() {
		return ErrNothingOwed
	}
	return nil
}

// Shipped reports whether the goods left: a refund then does not restock.
func (o *Order) hasShipped() bool { return o.ShippedAt != nil }

// Label is the order number customers see.
func (o *Order) Label() string { return fmt.Sprintf("#%d", o.Number) }
