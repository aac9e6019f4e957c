package order

import (
	"fmt"
	"time"

	"github.com/google/uuid"
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
	PaymentPending         = "pending"          // no PaymentIntent yet
	PaymentRequiresPayment = "requires_payment" // PaymentIntent open, waiting for the customer
	PaymentFailed          = "failed"           // the last attempt failed; the customer may retry
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

// Refund is a refund recorded at Stripe.
type Refund struct {
	Kind     string
	RefundID string
	Amount   int64
	Currency string
	Status   string
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
)

// Actors that are not users.
const (
	ActorWebhook    = "webhook"
	ActorWorker     = "worker"
	ActorReconciler = "reconciler"
	ActorCustomer   = "customer"
)

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

// request marks action pending if its target is reachable and no other action is pending.
func (o *Order) request(a Action) error {
	if o.PendingAction != ActionNone {
		return ErrActionPending.With("action", o.PendingAction)
	}
	if !CanTransition(o.Status, a.target()) {
		return badTransition(o.Status, a.target())
	}
	o.PendingAction = a
	return nil
}

// Shipped reports whether the goods left: a refund then does not restock.
func (o *Order) hasShipped() bool { return o.ShippedAt != nil }

// Label is the order number customers see.
func (o *Order) Label() string { return fmt.Sprintf("#%d", o.Number) }
