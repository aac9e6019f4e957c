package order

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
)

// The worker strategies. Each re-reads the order and acts only while its precondition holds,
// so running one twice (a retry, a duplicate delivery, two relays) changes nothing the second
// time. Stripe calls happen outside any transaction and carry idempotency keys derived from the
// order and the action, so a repeated call charges or refunds nothing more. The state change
// then commits as a compare-and-set; if the order moved meanwhile the strategy returns
// ErrChangedMeanwhile and the retry settles it.

// Errors of the strategies.
var (
	ErrPaymentMismatch  = apperr.New(apperr.Unprocessable, "orders.errors.paymentMismatch")
	ErrNothingCaptured  = apperr.New(apperr.Conflict, "orders.errors.nothingCaptured")
	ErrChangedMeanwhile = errors.New("order: changed while the action ran")
)

// Process runs order:process: PAID → PROCESSED once the payment recorded from Stripe covers
// exactly the order's total and currency. A mismatch is permanent (its compensation refunds).
func (s *Service) Process(ctx context.Context, id uuid.UUID) error {
	_, err := s.applyRead(ctx, id, func(o *Order) (*Event, []outbox.Message, error) {
		switch {
		case o.Status == Pending:
			return nil, nil, badTransition(o.Status, Processed)
		case o.Status != Paid:
			return nil, nil, nil // processed already, or canceled meanwhile
		case o.PendingAction != ActionNone:
			// The cancel or refund asked for ends the order instead; should it fail for good,
			// FailAction asks for the processing again.
			return nil, nil, nil
		}
		if err := o.process(time.Now()); err != nil {
			return nil, nil, err
		}
		return statusEvent(Paid, Processed, ActorWorker, ""), []outbox.Message{notify(o, notification.EventOrderProcessed, nil)}, nil
	})
	return err
}

// Cancel runs order:cancel: money captured is refunded in full, an open PaymentIntent is
// canceled at Stripe, then the order becomes CANCELED with its stock back.
func (s *Service) Cancel(ctx context.Context, id uuid.UUID, actor, reason string) error {
	o, err := s.store.Get(ctx, s.db, id)
	if err != nil {
		return err
	}
	if o.PendingAction != ActionCancel {
		s.settled(ctx, &o)
		return nil
	}
	hadIntent := o.Payment.IntentID != nil
	if !o.Payment.Captured() && o.Payment.IntentID != nil && o.Payment.Status != PaymentCanceled {
		paid, err := s.cancelIntent(ctx, &o)
		if err != nil {
			return err
		}
		if paid { // recorded just now: refunded below, in this attempt, which may be the last
			if o, err = s.store.Get(ctx, s.db, id); err != nil {
				return err
			}
			if !o.Payment.Captured() {
				return ErrChangedMeanwhile
			}
		}
	}
	var refund *payment.Refund
	if o.Payment.Captured() {
		if withdrawn, err := s.withdrawCancel(ctx, id); err != nil || withdrawn {
			return err
		}
		r, err := s.refundOrder(ctx, &o, "refund")
		if err != nil {
			return err
		}
		refund = &r
	}
	saved, err := s.apply(ctx, id, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		if o.PendingAction != ActionCancel && !(refund != nil && refundedAfterGivingUp(o, Canceled)) {
			if refund != nil {
				s.refundNotTaken(ctx, o, *refund)
			}
			return nil, nil, nil
		}
		if o.Payment.Captured() && refund == nil {
			return nil, nil, ErrChangedMeanwhile // paid while we canceled: the retry refunds
		}
		if !hadIntent && o.Payment.IntentID != nil {
			return nil, nil, ErrChangedMeanwhile // its create attached one since: the retry cancels it at Stripe
		}
		if !CanTransition(o.Status, Canceled) {
			return nil, nil, badTransition(o.Status, Canceled)
		}
		return s.finishCancel(ctx, tx, o, actor, reason, refund)
	})
	if err == nil && saved.Status == Canceled {
		s.cache.Invalidate(ctx, itemIDs(&saved)...)
	}
	return err
}

// withdrawCancel drops a cancel the system asked for because the order was not paid (unpaid
// past the TTL, its PaymentIntent canceled at Stripe) once it is paid after all: a handler acts
// only while its precondition holds (SPEC §5), so the payment goes on to its processing, which
// the pending cancel held back, instead of being refunded. Who asked is read from the timeline.
// A cancel staff or the customer asked for stands, and the payment is refunded.
func (s *Service) withdrawCancel(ctx context.Context, id uuid.UUID) (bool, error) {
	done := false
	_, err := s.apply(ctx, id, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		if o.PendingAction != ActionCancel || o.Status != Paid || !o.Payment.Captured() {
			return nil, nil, nil
		}
		req, err := s.store.LastEvent(ctx, tx, o.ID, EventCancelRequested)
		if err != nil || (req.Actor != ActorReconciler && req.Actor != ActorWebhook) {
			return nil, nil, ignoreMissing(err)
		}
		o.PendingAction, done = ActionNone, true
		reason := "paid after all"
		if req.Reason != nil {
			reason += " (" + *req.Reason + ")"
		}
		return actionEvent(EventCancelWithdrawn, ActorWorker, reason), []outbox.Message{task(tasks.OrderProcess, o, ActorWorker, "")}, nil
	})
	return done, err
}

// settled is a strategy's run on an order an earlier run already ended: that run may have died
// between its commit and its cache invalidation, so the order's items are invalidated again.
func (s *Service) settled(ctx context.Context, o *Order) {
	if o.Status == Canceled || o.Status == Refunded {
		s.cache.Invalidate(ctx, itemIDs(o)...)
	}
}

// cancelIntent cancels the order's PaymentIntent. If Stripe refuses because it was paid in the
// meantime, the order must be refunded instead: the payment is recorded and paid reported.
//
// Each cancel request asks under a key of its own (the order's update that requested it names
// it; the request's retries share it): Stripe answers a key with its first answer for 24 hours,
// refusals included, and a PaymentIntent it refused to cancel while a payment was under way may
// be canceled once that payment failed.
func (s *Service) cancelIntent(ctx context.Context, o *Order) (paid bool, err error) {
	key := "order-" + o.ID.String() + "-cancel-intent-" + strconv.FormatInt(o.UpdatedAt.UnixMicro(), 10)
	_, err = s.gateway.CancelPaymentIntent(ctx, *o.Payment.IntentID, key)
	if err == nil || !errors.Is(err, payment.ErrRejected) {
		return false, err
	}
	pi, gerr := s.gateway.GetPaymentIntent(ctx, *o.Payment.IntentID)
	switch {
	case gerr != nil:
		return false, gerr
	case pi.Status == payment.IntentCanceled:
		return false, nil
	case pi.Status == payment.IntentSucceeded:
		// Paid before the cancel reached Stripe. Its event may be on its way, or never come (lost,
		// or of another API version): record the payment as the webhook would (the order keeps
		// its pending cancel), for the cancel to refund it.
		ev := payment.Event{PaymentIntentID: pi.ID, AmountReceived: pi.AmountReceived, Currency: pi.Currency}
		outcome := ""
		if _, err := s.apply(ctx, o.ID, func(_ *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
			return s.paymentSucceeded(ctx, o, ev, ActorWorker, &outcome)
		}); err != nil {
			return false, err
		}
		return true, nil
	}
	return false, err
}

// finishCancel is the CANCELED side of every cancel: status, stock back, refund recorded,
// customer told.
func (s *Service) finishCancel(ctx context.Context, tx *postgres.Tx, o *Order, actor, reason string, refund *payment.Refund) (*Event, []outbox.Message, error) {
	from := o.Status
	if err := o.cancel(refund != nil, time.Now()); err != nil {
		return nil, nil, err
	}
	if refund != nil {
		if err := s.recordRefund(ctx, tx, o, RefundOrder, *refund); err != nil {
			return nil, nil, err
		}
	}
	if err := s.stock.Release(ctx, tx, o.Reservations()); err != nil {
		return nil, nil, err
	}
	return statusEvent(from, Canceled, actor, reason), []outbox.Message{notify(o, notification.EventOrderCanceled, nil)}, nil
}

// Refund runs order:refund: a full Stripe refund, then REFUNDED, with the stock back unless the
// goods shipped. On a CANCELED order it returns a payment that arrived late, deleted or not; on
// an order whose refund failed at Stripe, it refunds the payment again.
func (s *Service) Refund(ctx context.Context, id uuid.UUID, actor, reason string) error {
	o, err := s.store.GetAny(ctx, s.db, id)
	if err != nil {
		return err
	}
	if o.PendingAction == ActionRefund && o.refundFailed() {
		return s.refundAgain(ctx, o, actor)
	}
	if o.Status == Canceled {
		return s.refundLatePayment(ctx, o)
	}
	if o.PendingAction != ActionRefund {
		s.settled(ctx, &o)
		return nil
	}
	if !o.Payment.Captured() {
		return ErrNothingCaptured
	}
	r, err := s.refundOrder(ctx, &o, "refund")
	if err != nil {
		return err
	}
	saved, err := s.apply(ctx, id, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		if o.PendingAction != ActionRefund && !refundedAfterGivingUp(o, Refunded) {
			s.refundNotTaken(ctx, o, r)
			return nil, nil, nil
		}
		return s.finishRefund(ctx, tx, o, actor, reason, r, notification.EventOrderRefunded)
	})
	if err == nil && saved.Status == Refunded {
		s.cache.Invalidate(ctx, itemIDs(&saved)...)
	}
	return err
}

// refundedAfterGivingUp reports whether o, whose refund this run just made at Stripe, had its
// action cleared meanwhile by another copy of the task that ran out of retries (its
// compensation): the money is back all the same, so the order must still say so, reaching
// status to with the refund recorded.
func refundedAfterGivingUp(o *Order, to Status) bool {
	return o.PendingAction == ActionNone && o.Refund == nil && CanTransition(o.Status, to)
}

// finishRefund is the REFUNDED side of a refund or a compensation.
func (s *Service) finishRefund(ctx context.Context, tx *postgres.Tx, o *Order, actor, reason string, r payment.Refund, event string) (*Event, []outbox.Message, error) {
	from := o.Status
	if err := o.refund(time.Now()); err != nil {
		return nil, nil, err
	}
	if err := s.recordRefund(ctx, tx, o, RefundOrder, r); err != nil {
		return nil, nil, err
	}
	if !o.hasShipped() {
		if err := s.stock.Release(ctx, tx, o.Reservations()); err != nil {
			return nil, nil, err
		}
	}
	return statusEvent(from, Refunded, actor, reason), []outbox.Message{notify(o, event, map[string]any{"refundAmount": r.Amount})}, nil
}

// refundAgain returns a payment whose refund failed at Stripe, on staff's request; the order
// keeps its status and its stock. The idempotency key names the failed refund, so every run
// for this request makes one refund, and a request after that one fails too makes another.
// Refused (its key asked again more than 24 h after a run whose answers were all lost), the
// refund that run made is looked up.
func (s *Service) refundAgain(ctx context.Context, o Order, actor string) error {
	failed := o.Refund.RefundID
	r, err := s.refundOrder(ctx, &o, "refund-after-"+failed)
	if errors.Is(err, payment.ErrRejected) {
		if made, found := s.refundMadeAtStripe(ctx, &o); found && made.ID != failed {
			r, err = made, nil
		}
	}
	if err != nil {
		return err
	}
	_, err = s.apply(ctx, o.ID, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		// Whatever the pending action says: a request cleared meanwhile by another copy of the
		// task that ran out of retries still takes the refund this run made (the money is back
		// all the same), and one made again since ends with it.
		if refundIDOf(o.Refund) != failed {
			s.refundNotTaken(ctx, o, r)
			return nil, nil, nil
		}
		return s.finishRefundAgain(ctx, tx, o, actor, r)
	})
	return err
}

// finishRefundAgain records r in place of o's failed refund and ends the request. The
// customer of a late payment whose refund Stripe refused hears of the refund now, unless Stripe
// answered it failed at once (rare; no later one tells them then). The others were told of the
// refund, or of the cancellation, before (the refund returned outside Stripe tells a canceled
// order's customer: it happens once, where a refund made again can fail and be made again).
func (s *Service) finishRefundAgain(ctx context.Context, tx *postgres.Tx, o *Order, actor string, r payment.Refund) (*Event, []outbox.Message, error) {
	failed, tell := o.Refund.RefundID, o.lateRefundRefused() && !payment.RefundNotMade(r.Status)
	if err := s.recordRefund(ctx, tx, o, o.Refund.Kind, r); err != nil {
		return nil, nil, err
	}
	o.refundSettled()
	var msgs []outbox.Message
	if tell {
		msgs = append(msgs, refundedNotice(o, r.Amount))
	}
	return actionEvent(EventRefundUpdated, actor, "refund made again after "+failed+" failed: "+r.Status), msgs, nil
}

// refundedNotice tells o's customer that amount of the payment was returned.
func refundedNotice(o *Order, amount int64) outbox.Message {
	data := map[string]any{"refundAmount": amount}
	if o.Refund != nil && o.Refund.Kind == RefundLatePayment {
		data["latePayment"] = true
	}
	return notify(o, notification.EventOrderRefunded, data)
}

// refundLatePayment refunds a payment that succeeded after its order was canceled. The order
// stays CANCELED; the refund is recorded on it once, and the pending refund the payment set
// is cleared with it.
func (s *Service) refundLatePayment(ctx context.Context, o Order) error {
	if !o.owesLatePayment() {
		return nil
	}
	r, err := s.refundOrder(ctx, &o, "late-refund")
	if err != nil {
		return err
	}
	_, err = s.apply(ctx, o.ID, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		switch {
		case o.owesLatePayment():
			return s.finishLateRefund(ctx, tx, o, r)
		case o.lateRefundRefused() && !payment.RefundNotMade(r.Status):
			// Another copy of the task was refused and recorded it so meanwhile; this one's
			// went through: the payment is back.
			return s.finishRefundAgain(ctx, tx, o, ActorWorker, r)
		}
		s.refundNotTaken(ctx, o, r)
		return nil, nil, nil
	})
	return err
}

// refundNotTaken reports a refund this run made at Stripe that o, as another run left it, does
// not record: staff recorded the payment returned outside Stripe meanwhile (the customer has
// it twice), or the order moved on where the refund cannot follow (shipped after another copy
// of the task gave up, say). The money is back all the same; only staff can settle it. The
// same refund recorded by another copy (one key, one refund) is no news.
func (s *Service) refundNotTaken(ctx context.Context, o *Order, r payment.Refund) {
	switch {
	case payment.RefundNotMade(r.Status) || refundIDOf(o.Refund) == r.ID:
	case o.Refund == nil && o.PendingAction != ActionNone:
		// A cancel or refund asked since makes its refund under the order's key, as this one
		// was, and should record this one; said in case it never does.
		s.log.WarnContext(ctx, "refund made at Stripe while another action is pending; that action records it",
			"orderId", o.ID, "status", o.Status, "pendingAction", o.PendingAction, "refundId", r.ID, "amount", r.Amount)
	case o.Refund != nil && o.Refund.Method == RefundOutsideStripe:
		s.log.ErrorContext(ctx, "refund made at Stripe after the payment was recorded returned outside Stripe: returned twice",
			"orderId", o.ID, "refundId", r.ID, "amount", r.Amount, "outsideRefundId", o.Refund.RefundID)
	default:
		s.log.ErrorContext(ctx, "refund made at Stripe for an order that moved on meanwhile; not recorded on it",
			"orderId", o.ID, "status", o.Status, "refundId", r.ID, "amount", r.Amount, "recordedRefundId", refundIDOf(o.Refund))
	}
}

// finishLateRefund records the refund of a late payment on its CANCELED order and clears the
// pending refund the payment set.
func (s *Service) finishLateRefund(ctx context.Context, tx *postgres.Tx, o *Order, r payment.Refund) (*Event, []outbox.Message, error) {
	if err := s.recordRefund(ctx, tx, o, RefundLatePayment, r); err != nil {
		return nil, nil, err
	}
	o.refundSettled()
	return actionEvent(EventLateRefund, ActorWorker, "payment received after cancellation"), []outbox.Message{refundedNotice(o, r.Amount)}, nil
}

// refundMadeAtStripe looks up a refund Stripe made of o's payment (its answers lost, or made
// from Stripe's dashboard). Only a refund of the whole payment counts: a part taken for all
// would end the order with the rest never returned, so that is left to staff.
func (s *Service) refundMadeAtStripe(ctx context.Context, o *Order) (payment.Refund, bool) {
	r, found, err := s.gateway.FindRefund(ctx, *o.Payment.IntentID)
	if err != nil {
		s.log.WarnContext(ctx, "refund not looked up at Stripe; taken as none made", "err", err, "orderId", o.ID)
		return payment.Refund{}, false
	}
	return r, found && r.Amount >= receivedOf(o)
}

// receivedOf is what o's refund returns: the amount Stripe received, or the total.
func receivedOf(o *Order) int64 {
	if o.Payment.AmountReceived != nil && *o.Payment.AmountReceived > 0 {
		return *o.Payment.AmountReceived
	}
	return o.Total
}

// receivedCurrencyOf is the currency of what o's refund returns: the payment's, or the order's.
func receivedCurrencyOf(o *Order) string {
	if o.Payment.ReceivedCurrency != nil {
		return *o.Payment.ReceivedCurrency
	}
	return o.Currency
}

// refundOrder refunds everything the order's payment captured. The idempotency key names the
// order and the purpose, so a cancel, a refund and a compensation of one order share one refund.
func (s *Service) refundOrder(ctx context.Context, o *Order, purpose string) (payment.Refund, error) {
	if o.Payment.IntentID == nil {
		return payment.Refund{}, ErrNothingCaptured
	}
	amount := receivedOf(o)
	r, err := s.gateway.Refund(ctx, payment.RefundParams{
		PaymentIntentID: *o.Payment.IntentID, Amount: amount, IdempotencyKey: "order-" + o.ID.String() + "-" + purpose,
	})
	if r.Currency == "" {
		r.Currency = receivedCurrencyOf(o)
	}
	return r, err
}

func (s *Service) recordRefund(ctx context.Context, tx *postgres.Tx, o *Order, kind string, r payment.Refund) error {
	rec := Refund{Kind: kind, RefundID: r.ID, Amount: r.Amount, Currency: strings.ToLower(r.Currency), Status: r.Status,
		Method: RefundByStripe}
	if err := s.store.PutRefund(ctx, tx, o.ID, rec); err != nil {
		return err
	}
	o.recordRefund(rec)
	return nil
}

// CompensateProcess undoes an order whose processing failed for good: the payment is refunded
// (REFUNDED) or, with nothing captured, the order is CANCELED; stock back; order.failed sent.
// A refund Stripe refuses, none made before it, ends the order REFUNDED all the same with the
// refund recorded as failed: it then owes its payment back, for staff to refund again or to
// return outside Stripe, as when a refund fails after Stripe took it. It reports whether it
// changed the order (false when another path already settled it).
func (s *Service) CompensateProcess(ctx context.Context, id uuid.UUID, cause string) (bool, error) {
	o, err := s.store.Get(ctx, s.db, id)
	if err != nil {
		return false, ignoreMissing(err)
	}
	if o.Status != Paid {
		s.settled(ctx, &o)
		return false, nil
	}
	var refund *payment.Refund
	refused := ""
	if o.Payment.Captured() {
		r, err := s.refundOrder(ctx, &o, "refund")
		if errors.Is(err, payment.ErrRejected) {
			// Refused: it may be refunded already (from Stripe's dashboard, or under the order's
			// key more than 24 h ago), which would be refused at every run of the task again.
			made, found, lookErr := s.gateway.FindRefund(ctx, *o.Payment.IntentID)
			switch {
			case lookErr != nil:
				s.log.WarnContext(ctx, "refund not looked up at Stripe; the compensation is tried again", "err", lookErr, "orderId", o.ID)
			case found && made.Amount >= receivedOf(&o):
				r, err = made, nil
			case !found && !errors.Is(err, payment.ErrKeyReused):
				refused, r, err = refusal(err, err.Error()), refusedRefund(&o), nil
			}
			// A part made is left to staff: taken for all, the rest would never be returned. A
			// key reused with other parameters is our inconsistency, not Stripe's answer about the
			// payment: the sweep tries again, and the key expires after Stripe's 24 hours.
		}
		if err != nil {
			return false, err
		}
		refund = &r
	}
	done := false
	saved, err := s.apply(ctx, id, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		if o.Status != Paid {
			if refund != nil {
				s.refundNotTaken(ctx, o, *refund)
			}
			return nil, nil, nil
		}
		if o.Payment.Captured() && refund == nil {
			return nil, nil, ErrChangedMeanwhile
		}
		done = true
		reason := "processing failed: " + cause
		if refused != "" {
			reason += "; refund refused by Stripe: " + refused
		}
		if refund != nil {
			return s.finishRefund(ctx, tx, o, ActorWorker, reason, *refund, notification.EventOrderFailed)
		}
		ev, _, err := s.finishCancel(ctx, tx, o, ActorWorker, reason, nil)
		return ev, []outbox.Message{notify(o, notification.EventOrderFailed, nil)}, err
	})
	if err == nil && done {
		s.cache.Invalidate(ctx, itemIDs(&saved)...)
		if refused != "" {
			metrics.RefundUpdated(payment.RefundFailed)
			s.log.ErrorContext(ctx, "processing failed and Stripe refused its refund: the order is REFUNDED and owes its payment back",
				"orderId", id, "refundId", refund.ID, "err", refused)
		}
	}
	return done && err == nil, err
}

// refusal is what Stripe said when it refused a call, or otherwise when it said nothing.
func refusal(err error, otherwise string) string {
	var ge *payment.GatewayError
	if errors.As(err, &ge) && ge.Message != "" {
		return ge.Message
	}
	return otherwise
}

// refusedRefund stands for the refund of o's payment that Stripe refused to make, none made
// before it: recorded as failed (its id is ours, "refused_…", as Stripe gave none), it leaves
// the order owing the payment back.
func refusedRefund(o *Order) payment.Refund {
	return payment.Refund{ID: refusedRefundPrefix + uuid.Must(uuid.NewV7()).String(), Status: payment.RefundFailed,
		Amount: receivedOf(o), Currency: receivedCurrencyOf(o)}
}

// FailAction ends a cancel or refund whose retries ran out: the pending action is cleared and
// the failure recorded on the timeline; the order keeps its status so staff can try again. A
// late payment's refund refused records the refund as failed (refusedRefund): the order owes
// the payment back.
// Unless Stripe made the refund all the same (finishIfRefunded). transient tells a failure a
// later try may not meet (Stripe down) from a refusal (failAction). It reports whether it
// changed the order.
func (s *Service) FailAction(ctx context.Context, id uuid.UUID, a Action, cause string, transient bool) (bool, error) {
	if done, err := s.finishIfRefunded(ctx, id, a); done || err != nil {
		return done, err
	}
	done, refused := false, false
	_, err := s.apply(ctx, id, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		late := a == ActionRefund && o.owesLatePayment()
		if done = o.failAction(a, transient); !done {
			return nil, nil, nil
		}
		if late && o.PendingAction == ActionNone {
			// Refused for good: recorded as failed, the late payment is owed back like any
			// refund Stripe did not make, and staff find and settle it as one.
			if err := s.recordRefund(ctx, tx, o, RefundLatePayment, refusedRefund(o)); err != nil {
				return nil, nil, err
			}
			refused = true
		}
		var msgs []outbox.Message
		if o.Status == Paid && o.PendingAction == ActionNone {
			msgs = []outbox.Message{task(tasks.OrderProcess, o, ActorWorker, "")} // left while the action was pending
		}
		return actionEvent(EventActionFailed, ActorWorker, string(a)+" failed: "+cause), msgs, nil
	})
	if err == nil && refused {
		metrics.RefundUpdated(payment.RefundFailed) // owed back, on the dashboard with the others
	}
	return done && err == nil, ignoreMissing(err)
}

// finishIfRefunded ends a cancel or refund of a paid order whose retries ran out but whose
// refund Stripe made all the same, every answer to it lost: the money is back, so the order
// reaches CANCELED or REFUNDED (a late payment's order stays CANCELED) with the refund recorded
// instead of a failure. When Stripe cannot be asked (it is down, the usual reason retries run
// out), the action fails as SPEC §5 says and staff's retry gets the refund back under the same
// key.
func (s *Service) finishIfRefunded(ctx context.Context, id uuid.UUID, a Action) (bool, error) {
	o, err := s.store.GetAny(ctx, s.db, id)
	if err != nil || o.PendingAction != a || !o.Payment.Captured() || o.Payment.IntentID == nil || (o.Refund != nil && !o.refundFailed()) {
		return false, nil // FailAction decides
	}
	r, found := s.refundMadeAtStripe(ctx, &o) // never a failed one
	if !found {
		return false, nil
	}
	owed := o.Refund // nil, or the failed refund that one was made in place of
	done := false
	saved, err := s.apply(ctx, id, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		if o.PendingAction != a || refundIDOf(o.Refund) != refundIDOf(owed) {
			return nil, nil, nil
		}
		done = true
		const reason = "refund found at Stripe after the retries ran out"
		if owed != nil {
			return s.finishRefundAgain(ctx, tx, o, ActorWorker, r)
		}
		if o.owesLatePayment() {
			return s.finishLateRefund(ctx, tx, o, r)
		}
		if a == ActionCancel {
			return s.finishCancel(ctx, tx, o, ActorWorker, reason, &r)
		}
		return s.finishRefund(ctx, tx, o, ActorWorker, reason, r, notification.EventOrderRefunded)
	})
	if err != nil {
		return false, ignoreMissing(err)
	}
	if done {
		s.cache.Invalidate(ctx, itemIDs(&saved)...)
	}
	return done, nil
}

// refundIDOf is the Stripe id of a recorded refund, "" for none.
func refundIDOf(r *Refund) string {
	if r == nil {
		return ""
	}
	return r.RefundID
}

func ignoreMissing(err error) error {
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}
