package order

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
)

// Webhook outcomes, recorded on the event and counted in metrics.
const (
	OutcomeApplied        = "applied"
	OutcomeDuplicate      = "duplicate"
	OutcomeIgnored        = "ignored"
	OutcomeUnknownIntent  = "unknown_intent"
	OutcomeUnknownType    = "unknown_type"
	OutcomeLatePayment    = "late_payment"
	OutcomeIgnoredVersion = "ignored_version"
)

// HandlePaymentEvent applies a verified Stripe event. The event id, the state change and the
// outbox rows commit in one transaction; an event seen before does nothing.
func (s *Service) HandlePaymentEvent(ctx context.Context, ev payment.Event) (string, error) {
	if outcome, done, err := s.applyEventRead(ctx, ev); done || err != nil {
		return outcome, err
	}
	var outcome string
	err := s.wake.InTx(ctx, func(tx *postgres.Tx) error {
		var err error
		if outcome, err = s.applyEvent(ctx, tx, ev); err != nil {
			return err
		}
		// Recorded after the effect, with its outcome, in one statement; an id seen before
		// rolls the effect back. A concurrent twin waits on the first one's row and then
		// finds it.
		fresh, err := s.store.RecordStripeEvent(ctx, tx, ev.ID, ev.Type, outcome)
		if err == nil && !fresh {
			err = errSeenBefore
		}
		return err
	})
	switch {
	case errors.Is(err, errSeenBefore):
		return OutcomeDuplicate, nil
	case err != nil:
		return "", err
	}
	if outcome == OutcomeApplied && ev.RefundStatus != "" {
		metrics.RefundUpdated(ev.RefundStatus)
	}
	return outcome, nil
}

// applyEventRead handles the common event, one that moves its order, the way applyRead does
// (changeRead): the order read without a lock, then the change and the event's record in one
// compare-and-set statement, two round trips where the locking way takes five. It reports
// false, having written nothing, when the locking way must decide: the order is not found by
// its PaymentIntent, the event moves nothing, or someone moved the order or recorded the event
// meanwhile.
func (s *Service) applyEventRead(ctx context.Context, ev payment.Event) (string, bool, error) {
	switch {
	case !ev.SupportedVersion() || ev.PaymentIntentID == "":
		return "", false, nil
	case ev.Type != payment.EventIntentSucceeded && ev.Type != payment.EventIntentFailed && ev.Type != payment.EventIntentCanceled:
		return "", false, nil
	}
	o, err := s.store.GetByIntent(ctx, s.db, ev.PaymentIntentID)
	if errors.Is(err, ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	se := &StripeEvent{ID: ev.ID, Type: ev.Type, Outcome: OutcomeIgnored}
	_, done, err := s.changeRead(ctx, o, func(o *Order) (*Event, []outbox.Message, error) {
		return s.intentChange(ctx, o, ev, &se.Outcome)
	}, se)
	return se.Outcome, done, err
}

// errSeenBefore rolls back the handling of a webhook event whose id is already recorded.
var errSeenBefore = errors.New("stripe event seen before")

func (s *Service) applyEvent(ctx context.Context, tx *postgres.Tx, ev payment.Event) (string, error) {
	if !ev.SupportedVersion() {
		return OutcomeIgnoredVersion, nil
	}
	switch ev.Type {
	case payment.EventIntentSucceeded, payment.EventIntentFailed, payment.EventIntentCanceled:
	case payment.EventChargeRefunded, payment.EventRefundUpdated:
		return s.applyRefundUpdate(ctx, tx, ev, ActorWebhook)
	default:
		return OutcomeUnknownType, nil
	}
	locked, err := s.orderOfIntent(ctx, tx, ev)
	if errors.Is(err, ErrNotFound) {
		return OutcomeUnknownIntent, nil
	}
	if err != nil {
		return "", err
	}
	outcome := OutcomeIgnored
	_, err = s.applyLocked(ctx, tx, locked, func(_ *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		return s.intentChange(ctx, o, ev, &outcome)
	})
	return outcome, err
}

// intentChange is what a PaymentIntent's event does to its order.
func (s *Service) intentChange(ctx context.Context, o *Order, ev payment.Event, outcome *string) (*Event, []outbox.Message, error) {
	switch ev.Type {
	case payment.EventIntentSucceeded:
		if ev.Currency == "" { // Stripe always sends it; an event made by hand for a test may not
			ev.Currency = o.Currency
		}
		return s.paymentSucceeded(ctx, o, ev, ActorWebhook, outcome)
	case payment.EventIntentFailed:
		return s.paymentFailed(ctx, o, ev, outcome)
	case payment.EventIntentCanceled:
		return s.intentCanceled(ctx, o, ActorWebhook, outcome)
	}
	return nil, nil, nil
}

// orderOfIntent finds and locks the order of the event's PaymentIntent, falling back to the
// order id in its metadata for an order whose PaymentIntent id was never stored (a crash right
// after Stripe created it); that id is stored now. An order no longer PENDING adopts one only
// for a payment (a late one, to refund): the other events of a PaymentIntent it never had, such
// as the cancel of one its create left unattached, change nothing of it.
func (s *Service) orderOfIntent(ctx context.Context, tx *postgres.Tx, ev payment.Event) (Order, error) {
	if ev.PaymentIntentID == "" {
		return Order{}, ErrNotFound
	}
	o, err := s.store.LockByIntent(ctx, tx, ev.PaymentIntentID)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return o, err
	}
	id, perr := uuid.Parse(ev.OrderID)
	if perr != nil {
		return Order{}, ErrNotFound
	}
	if o, err = s.store.Lock(ctx, tx, id); err != nil {
		return Order{}, err
	}
	if o.Payment.IntentID != nil && *o.Payment.IntentID == ev.PaymentIntentID {
		return o, nil // stored while this event waited for the lock (the create, or another event)
	}
	if o.Payment.IntentID != nil || (o.Status != Pending && ev.Type != payment.EventIntentSucceeded) {
		return Order{}, ErrNotFound // another PaymentIntent's order, or nothing to record
	}
	if err := s.store.AdoptIntent(ctx, tx, id, ev.PaymentIntentID); err != nil {
		return Order{}, err
	}
	return s.store.Lock(ctx, tx, id) // as stored, with its PaymentIntent
}

// paymentSucceeded records the payment: PENDING → PAID with order:process queued; on a
// CANCELED order the late payment is refunded automatically. The webhook and the reconciler
// both come here.
func (s *Service) paymentSucceeded(ctx context.Context, o *Order, ev payment.Event, actor string, outcome *string) (*Event, []outbox.Message, error) {
	if o.Payment.Captured() {
		return nil, nil, nil
	}
	if o.Status != Pending && o.Status != Canceled {
		return nil, nil, nil
	}
	if ev.AmountReceived <= 0 {
		// Stripe never reports a success with nothing received. Taken for a capture, its
		// processing would fail and refund the order's total, which was never paid.
		s.log.WarnContext(ctx, "payment success with nothing received; ignored", "orderId", o.ID,
			"paymentIntentId", ev.PaymentIntentID, "amountReceived", ev.AmountReceived, "actor", actor)
		return nil, nil, nil
	}
	if err := o.pay(ev.AmountReceived, ev.Currency, time.Now()); err != nil {
		return nil, nil, err
	}
	if o.Status == Canceled {
		*outcome = OutcomeLatePayment
		return actionEvent(EventLatePayment, actor, "payment received after cancellation"),
			[]outbox.Message{task(tasks.OrderRefund, o, actor, "late payment")}, nil
	}
	*outcome = OutcomeApplied
	return statusEvent(Pending, Paid, actor, ""), []outbox.Message{
		task(tasks.OrderProcess, o, actor, ""),
		notify(o, notification.EventOrderPaid, nil),
	}, nil
}

// paymentFailed keeps the order PENDING, stores the error and tells the customer, who may retry.
func (s *Service) paymentFailed(ctx context.Context, o *Order, ev payment.Event, outcome *string) (*Event, []outbox.Message, error) {
	if o.Status != Pending || o.Payment.Captured() {
		return nil, nil, nil
	}
	msg := ev.FailureMessage
	if msg == "" {
		msg = "payment failed"
	}
	if err := o.failPayment(msg); err != nil {
		return nil, nil, err
	}
	*outcome = OutcomeApplied
	return actionEvent(EventPaymentFailed, ActorWebhook, msg),
		[]outbox.Message{notify(o, notification.EventOrderPaymentFailed, map[string]any{"error": msg})}, nil
}

// intentCanceled cancels a PENDING order whose PaymentIntent was canceled at Stripe, through
// the worker's order:cancel like any cancel.
func (s *Service) intentCanceled(ctx context.Context, o *Order, actor string, outcome *string) (*Event, []outbox.Message, error) {
	if o.Status != Pending || o.PendingAction != ActionNone || o.Payment.Captured() {
		return nil, nil, nil
	}
	if err := o.intentCanceled(); err != nil {
		return nil, nil, err
	}
	*outcome = OutcomeApplied
	return actionEvent(EventCancelRequested, actor, "payment intent canceled"),
		[]outbox.Message{task(tasks.OrderCancel, o, actor, "payment intent canceled")}, nil
}

// applyRefundUpdate stores a refund's new status and notes it on the order's timeline, under
// the order's lock like any change of it: staff deciding on the order (a refund asked again, a
// delete) meanwhile wait and then see the status. A status Stripe does not give a refund is not
// stored: the order's refund would read as neither owed nor returned.
func (s *Service) applyRefundUpdate(ctx context.Context, tx *postgres.Tx, ev payment.Event, actor string) (string, error) {
	if ev.RefundStatus == "" || ev.RefundID == "" {
		return OutcomeIgnored, nil
	}
	if !payment.RefundStatusKnown(ev.RefundStatus) {
		s.log.WarnContext(ctx, "refund event with a status Stripe does not give a refund; ignored",
			"refundId", ev.RefundID, "status", ev.RefundStatus, "actor", actor)
		return OutcomeIgnored, nil
	}
	locked, err := s.store.LockByRefund(ctx, tx, ev.RefundID)
	if errors.Is(err, ErrNotFound) {
		return OutcomeIgnored, nil
	}
	if err != nil {
		return "", err
	}
	outcome := OutcomeIgnored
	_, err = s.applyLocked(ctx, tx, locked, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		changed, err := s.store.SetRefundStatus(ctx, tx, ev.RefundID, ev.RefundStatus)
		if err != nil || !changed {
			return nil, nil, err
		}
		outcome = OutcomeApplied
		if payment.RefundNotMade(ev.RefundStatus) {
			s.log.WarnContext(ctx, "refund did not go through at Stripe; the payment is owed back until staff refund it again",
				"orderId", o.ID, "refundId", ev.RefundID, "status", ev.RefundStatus, "actor", actor)
		}
		return actionEvent(EventRefundUpdated, actor, "refund "+ev.RefundStatus), nil, nil
	})
	return outcome, err
}
