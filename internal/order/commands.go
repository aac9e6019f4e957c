package order

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/i18n"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// Limits of an order (SPEC §3 Orders), and of its total: the most one charge at Stripe can take,
// so that an order is never placed only to be refused its PaymentIntent for its size.
const (
	MaxLines    = 50
	MaxQuantity = 1000
	MaxTotal    = payment.MaxAmount
)

// CreateInput is the body of POST /v1/orders.
type CreateInput struct {
	Items []LineInput `json:"items"`
}

// LineInput is one requested line.
type LineInput struct {
	ItemID   string `json:"itemId"`
	Quantity *int   `json:"quantity"`
}

// RecoveryOrderCreated is the idempotency recovery point of an order committed with its stock
// reserved: a retry resumes at the PaymentIntent.
const RecoveryOrderCreated = "order_created"

func (in CreateInput) reservations() ([]catalog.Reservation, error) {
	var v apperr.Validation
	if n := len(in.Items); n < 1 || n > MaxLines {
		v.Add("items", "validation.count", "min", 1, "max", MaxLines)
		return nil, v.Err()
	}
	rs := make([]catalog.Reservation, 0, len(in.Items))
	seen := make(map[uuid.UUID]bool, len(in.Items))
	for i, l := range in.Items {
		field := fmt.Sprintf("items[%d]", i)
		id, err := uuid.Parse(l.ItemID)
		switch {
		case l.ItemID == "":
			v.Add(field+".itemId", "validation.required")
		case err != nil || len(l.ItemID) != 36:
			v.Add(field+".itemId", "validation.uuid")
		case seen[id]:
			v.Add(field+".itemId", "validation.duplicate")
		}
		seen[id] = true
		if v.Check(l.Quantity != nil, field+".quantity", "validation.required") {
			v.Range(field+".quantity", int64(*l.Quantity), 1, MaxQuantity)
		}
		if l.Quantity != nil {
			rs = append(rs, catalog.Reservation{ItemID: id, Quantity: *l.Quantity})
		}
	}
	return rs, v.Err()
}

// Create places an order for userID: the order is written and its stock reserved in one
// statement, then the PaymentIntent is created with no transaction open. claim is the
// request's hold on its Idempotency-Key (nil without one): the statement takes the key when
// the claim is deferred (SPEC §3: the record is written in the order's transaction) and records
// its recovery point; with a claim that already got past it, Create resumes at the
// PaymentIntent. A deferred claim whose key is in use is taken the usual way first, and the
// request ends as that says: resumed, refused, or a *idempotency.Replay.
//
// The statement locks the items, checks that the order can be placed (items found and not
// deleted, stock enough, one currency, a total one Stripe charge can take) and prices it from the
// items as locked. It reports them: Order.price names and prices the lines from them, or
// gives the error of the first line at fault when the statement refused the order.
//
// answer, when not nil, renders the response to the request from the order as it ends: it is
// stored with the PaymentIntent, the request's last write, in one statement (the claim is then
// Completed).
func (s *Service) Create(ctx context.Context, userID uuid.UUID, in CreateInput, claim *idempotency.Claim, answer Answer) (Order, error) {
	if id, ok := claim.Resumed(RecoveryOrderCreated); ok {
		o, err := s.store.GetAny(ctx, s.db, id) // canceled and deleted meanwhile: answered as it is
		if err != nil {
			return Order{}, err
		}
		s.cache.Invalidate(ctx, itemIDs(&o)...) // the crash may have come before the first attempt's
		customer, err := s.customers.StripeCustomerID(ctx, o.UserID)
		if err != nil {
			return Order{}, err // without it, the parameters might not be the first try's
		}
		return s.ensureIntent(ctx, o, customer, claim, answer)
	}
	rs, err := in.reservations()
	if err != nil {
		return Order{}, err
	}
	o := newOrder(userID, rs)
	created := Event{ID: uuid.Must(uuid.NewV7()), Type: EventCreated, Actor: userID.String(),
		CorrelationID: logging.CorrelationID(ctx)}
	// The number, total and currency in the message are the statement's.
	msgs, err := outbox.Encode(ctx, notify(&o, notification.EventOrderCreated, nil))
	if err != nil {
		return Order{}, err
	}
	placed, err := s.store.Create(ctx, s.db, &o, created, msgs, claim.At(RecoveryOrderCreated, o.ID))
	if err != nil {
		return Order{}, err
	}
	if placed.KeyInUse {
		// The key is a retry's or a duplicate's: claim it the usual way, then resume, replay
		// or refuse as that says.
		if err := s.idem.Take(ctx, claim); err != nil {
			return Order{}, err
		}
		return s.Create(ctx, userID, in, claim, answer)
	}
	err = o.price(placed.Items)
	switch {
	case !placed.Placed && err != nil:
		return Order{}, err
	case !placed.Placed:
		return Order{}, errors.New("order: not placed, yet every item was fit for it")
	case err != nil:
		return Order{}, fmt.Errorf("order: %s placed, yet its items were not fit for it: %v", o.ID, err)
	}
	s.wake.Wake()
	s.cache.Invalidate(ctx, itemIDs(&o)...)
	metrics.OrdersCreated.Inc()
	return s.ensureIntent(ctx, o, placed.Customer, claim, answer)
}

// Answer renders the response to a request from the order it ends with.
type Answer func(Order) (status int, body []byte, err error)

// answered is the completion that stores the response to claim's request with its last write
// (none without a claim or an answer).
func answered(o Order, claim *idempotency.Claim, answer Answer) (idempotency.Completion, error) {
	if claim == nil || answer == nil {
		return idempotency.Completion{}, nil
	}
	status, body, err := answer(o)
	if err != nil {
		return idempotency.Completion{}, err
	}
	return claim.Completion(status, body), nil
}

// ensureIntent gives a PENDING order its PaymentIntent. A transient Stripe failure leaves the
// order PENDING for a retry (or the reconciler); a definitive one cancels it and frees the stock.
func (s *Service) ensureIntent(ctx context.Context, o Order, customer string, claim *idempotency.Claim, answer Answer) (Order, error) {
	switch {
	case o.Payment.IntentID != nil:
		return o, nil
	case o.Status == Canceled && o.Payment.LastError != nil:
		return o, ErrGatewayRejected // the first attempt was rejected; a replay says so again
	case o.Status != Pending:
		return o, nil // canceled meanwhile by staff or the reconciler: the order as it is
	}
	pi, err := s.createIntent(ctx, o, customer)
	if errors.Is(err, payment.ErrKeyReused) {
		// Our inconsistency, not a refusal of the payment: the order is not canceled for it.
		s.log.ErrorContext(ctx, "payment intent key reused with other parameters; the order waits", "err", err, "orderId", o.ID)
		return o, gatewayDown(err)
	}
	if errors.Is(err, payment.ErrTransient) {
		s.log.WarnContext(ctx, "payment intent not created; the order waits for a retry", "err", err, "orderId", o.ID)
		return o, gatewayDown(err)
	}
	if err != nil {
		s.log.WarnContext(ctx, "payment intent rejected; canceling the order", "err", err, "orderId", o.ID)
		why := refusal(err, "payment provider rejected the order")
		if _, cerr := s.cancelUnpaid(ctx, o.ID, ActorWorker, "payment provider rejected the order", &why); cerr != nil {
			return o, cerr
		}
		return o, ErrGatewayRejected.Wrap(err)
	}
	if err := o.attachIntent(pi.ID, pi.ClientSecret); err != nil {
		return o, err
	}
	done, err := answered(o, claim, answer)
	if err != nil {
		return o, err
	}
	attached, err := s.store.SetIntent(ctx, s.db, o.ID, pi.ID, pi.ClientSecret, PaymentRequiresPayment, done)
	if err != nil || attached {
		return o, err
	}
	if o, err = s.intentNotAttached(ctx, o.ID, pi.ID); err == nil && answer != nil {
		_, _, err = answer(o) // the answer rendered above was of the order as this request saw it
	}
	return o, err
}

// createIntent creates the order's PaymentIntent under the order's key: a retry gets back the
// one made before. A resumed create whose first try, before a crash, named no customer finds
// the user's synced in between (a Stripe customer only ever goes from none to one): Stripe
// wants the first try's parameters under the same key.
func (s *Service) createIntent(ctx context.Context, o Order, customer string) (payment.Intent, error) {
	create := func(customer string) (payment.Intent, error) {
		return s.gateway.CreatePaymentIntent(ctx, payment.IntentParams{
			OrderID: o.ID.String(), Amount: o.Total, Currency: o.Currency, CustomerID: customer,
			IdempotencyKey: "order-" + o.ID.String() + "-intent",
		})
	}
	pi, err := create(customer)
	if errors.Is(err, payment.ErrKeyReused) && customer != "" {
		pi, err = create("")
	}
	return pi, err
}

// intentNotAttached answers a create whose order changed during its Stripe call: staff canceled
// it, or another attempt of the same request attached its PaymentIntent first. The answer is
// the order as stored. A PaymentIntent the order does not name is canceled at Stripe, so that
// nobody pays it; should that fail and it be paid all the same, the payment event names the
// order and is refunded as a late payment.
func (s *Service) intentNotAttached(ctx context.Context, id uuid.UUID, intentID string) (Order, error) {
	o, err := s.store.GetAny(ctx, s.db, id) // canceled and deleted meanwhile: its intent still goes
	if err != nil {
		return o, err
	}
	if o.Payment.IntentID == nil || *o.Payment.IntentID != intentID {
		if _, err := s.gateway.CancelPaymentIntent(ctx, intentID, "order-"+id.String()+"-cancel-intent"); err != nil {
			s.log.WarnContext(ctx, "unattached payment intent not canceled", "err", err, "orderId", id, "paymentIntentId", intentID)
		}
	}
	return o, nil
}

// CancelUnpaid cancels a PENDING order that has no open PaymentIntent at once (no Stripe call):
// stock back, customer told. Other orders are left alone.
func (s *Service) CancelUnpaid(ctx context.Context, id uuid.UUID, actor, reason string) (Order, error) {
	return s.cancelUnpaid(ctx, id, actor, reason, nil)
}

// cancelUnpaid is CancelUnpaid recording Stripe's refusal of the PaymentIntent (rejected, when
// not nil) on the payment: a resumed create tells a rejected order by it (ensureIntent).
func (s *Service) cancelUnpaid(ctx context.Context, id uuid.UUID, actor, reason string, rejected *string) (Order, error) {
	o, err := s.apply(ctx, id, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		if o.Status != Pending || o.Payment.IntentID != nil {
			return nil, nil, nil
		}
		o.intentRefused(rejected)
		return s.finishCancel(ctx, tx, o, actor, reason, nil)
	})
	if err == nil && o.Status == Canceled {
		s.cache.Invalidate(ctx, itemIDs(&o)...)
	}
	return o, err
}

// ShipInput is the body of the ship route.
type ShipInput struct {
	TrackingNumber string `json:"trackingNumber"`
	Carrier        string `json:"carrier"`
}

// Validate trims the fields and checks them. The ship route runs it before judging the order:
// a body without its fields is a 400 on any order, as clients validate a request before they
// send it. The admin PATCH, whose body names a status first, is judged on the order first.
func (in *ShipInput) Validate() error {
	in.TrackingNumber, in.Carrier = strings.TrimSpace(in.TrackingNumber), strings.TrimSpace(in.Carrier)
	var v apperr.Validation
	v.Text("trackingNumber", in.TrackingNumber, 1, 100)
	v.Text("carrier", in.Carrier, 1, 100)
	return v.Err()
}

// Ship moves a PROCESSED order to SHIPPED.
func (s *Service) Ship(ctx context.Context, actor string, id uuid.UUID, in ShipInput, event string, claim *idempotency.Claim) (Order, error) {
	return s.applyOnce(ctx, claim, id, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		from := o.Status
		if err := o.ship(&in, time.Now()); err != nil {
			return nil, nil, err
		}
		return statusEvent(from, Shipped, actor, ""), []outbox.Message{
			notify(o, event, map[string]any{"trackingNumber": in.TrackingNumber, "carrier": in.Carrier}),
		}, nil
	})
}

// Deliver moves a SHIPPED order to DELIVERED.
func (s *Service) Deliver(ctx context.Context, actor string, id uuid.UUID, event string, claim *idempotency.Claim) (Order, error) {
	return s.applyOnce(ctx, claim, id, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		from := o.Status
		if err := o.deliver(time.Now()); err != nil {
			return nil, nil, err
		}
		return statusEvent(from, Delivered, actor, ""), []outbox.Message{notify(o, event, nil)}, nil
	})
}

// RequestCancel accepts a cancel: the order gets pendingAction "cancel" and the worker's
// order:cancel strategy does the rest.
func (s *Service) RequestCancel(ctx context.Context, actor string, id uuid.UUID, reason string, claim *idempotency.Claim) (Order, error) {
	return s.request(ctx, actor, id, ActionCancel, reason, claim)
}

// RequestRefund accepts a refund: the order gets pendingAction "refund" and the worker's
// order:refund strategy does the rest.
func (s *Service) RequestRefund(ctx context.Context, actor string, id uuid.UUID, reason string, claim *idempotency.Claim) (Order, error) {
	return s.request(ctx, actor, id, ActionRefund, reason, claim)
}

// OutsideRefundInput is the body of the route that records a refund returned outside Stripe.
type OutsideRefundInput struct {
	Reference string  `json:"reference"` // how the money went back: a bank transfer's reference, say
	Reason    *string `json:"reason"`
}

func (in *OutsideRefundInput) validate() error {
	in.Reference = strings.TrimSpace(in.Reference)
	var v apperr.Validation
	v.Text("reference", in.Reference, 1, 200)
	if in.Reason != nil {
		v.Text("reason", *in.Reason, 0, 500)
	}
	return v.Err()
}

// RefundOutside records that staff returned outside Stripe a payment the order owes back and
// Stripe could not return (its refund failed, or a late payment's refund was refused): the
// refund is recorded as succeeded, by method "outside", in place of the failed one; a customer
// never told of a refund is told now. The status and the stock stay; the order no longer owes
// anything, so it may be deleted. Stripe is only asked whether it holds a refund of the payment
// (noRefundAtStripe).
func (s *Service) RefundOutside(ctx context.Context, actor string, id uuid.UUID, in OutsideRefundInput, claim *idempotency.Claim) (Order, error) {
	if err := in.validate(); err != nil {
		return Order{}, err
	}
	if done, resumed := claim.Resumed(RecoveryOrderChanged); !resumed || done != id {
		if err := s.noRefundAtStripe(ctx, id); err != nil {
			return Order{}, err
		}
	}
	var recorded *Refund
	o, err := s.applyOnce(ctx, claim, id, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		told := o.toldOfRefund()
		reason := "returned outside Stripe, reference " + in.Reference
		if o.Refund != nil {
			reason = "refund " + o.Refund.RefundID + " " + o.Refund.Status + "; " + reason
		}
		if in.Reason != nil && *in.Reason != "" {
			reason += ": " + *in.Reason
		}
		r, err := o.refundOutside("outside_" + uuid.Must(uuid.NewV7()).String())
		if err != nil {
			return nil, nil, err
		}
		if err := s.store.PutRefund(ctx, tx, o.ID, r); err != nil {
			return nil, nil, err
		}
		recorded = &r
		var msgs []outbox.Message
		if !told {
			msgs = append(msgs, refundedNotice(o, r.Amount))
		}
		return actionEvent(EventRefundOutside, actor, reason), msgs, nil
	})
	if err == nil && recorded != nil {
		s.log.InfoContext(ctx, "refund recorded as returned outside Stripe", "orderId", id, "actor", actor,
			"amount", recorded.Amount, "currency", recorded.Currency)
	}
	return o, err
}

// gatewayDown answers a request that Stripe could not serve now: 503, to be retried shortly.
func gatewayDown(err error) error {
	return ErrGatewayUnavailable.WithRetryAfter(2 * time.Second).Wrap(err)
}

// noRefundAtStripe refuses to record a payment returned outside Stripe while Stripe holds a
// refund of it that went through or is under way: one whose answers were lost (Stripe down when
// the task ran out of retries), or made from Stripe's dashboard. Returning the money another
// way too would pay it twice; the staff refund finds and records such a refund. Nothing is
// recorded when Stripe cannot be asked either. The order's own refusals (nothing owed, an
// action pending, deleted) come first, as the change would answer them, so Stripe is asked only
// for an order the change would take; the change checks them again under the lock.
func (s *Service) noRefundAtStripe(ctx context.Context, id uuid.UUID) error {
	o, err := s.store.GetAny(ctx, s.db, id)
	if err != nil {
		return err
	}
	if o.DeletedAt != nil && !o.owesRefund() {
		return ErrNotFound
	}
	if err := o.mayRefundOutside(); err != nil || o.Payment.IntentID == nil {
		return err
	}
	r, found, err := s.gateway.FindRefund(ctx, *o.Payment.IntentID)
	if errors.Is(err, payment.ErrTransient) {
		return gatewayDown(err)
	}
	if err != nil {
		return fmt.Errorf("order: refunds of %s at Stripe: %w", id, err)
	}
	if found {
		return ErrRefundAtStripe.With("refundId", r.ID)
	}
	return nil
}

func (s *Service) request(ctx context.Context, actor string, id uuid.UUID, a Action, reason string, claim *idempotency.Claim) (Order, error) {
	var v apperr.Validation
	if !v.Text("reason", reason, 0, 500) {
		return Order{}, v.Err()
	}
	return s.applyOnce(ctx, claim, id, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		if err := o.request(a); err != nil {
			return nil, nil, err
		}
		return actionEvent(a.requested(), actor, reason), []outbox.Message{task(a.taskType(), o, actor, reason)}, nil
	})
}

// StatusInput is the body of the admin status PATCH.
type StatusInput struct {
	Status         string  `json:"status"`
	TrackingNumber *string `json:"trackingNumber"`
	Carrier        *string `json:"carrier"`
	Reason         *string `json:"reason"`
}

// SetStatus moves an order along the state machine through the command of the target status,
// exactly as the dedicated route would. Statuses only the payment flow and the worker reach
// (PAID, PROCESSED) are refused like any unreachable target. accepted reports an asynchronous
// action (cancel, refund).
func (s *Service) SetStatus(ctx context.Context, actor string, id uuid.UUID, in StatusInput, claim *idempotency.Claim) (o Order, accepted bool, err error) {
	to := Status(in.Status)
	if !to.Valid() {
		var v apperr.Validation
		statuses := make([]string, len(Statuses()))
		for i, st := range Statuses() {
			statuses[i] = string(st)
		}
		v.OneOf("status", in.Status, statuses...)
		return Order{}, false, v.Err()
	}
	reason := ""
	if in.Reason != nil {
		reason = *in.Reason
	}
	switch to {
	case Shipped:
		ship := ShipInput{}
		if in.TrackingNumber != nil {
			ship.TrackingNumber = *in.TrackingNumber
		}
		if in.Carrier != nil {
			ship.Carrier = *in.Carrier
		}
		o, err = s.Ship(ctx, actor, id, ship, notification.EventOrderStatusChanged, claim)
	case Delivered:
		o, err = s.Deliver(ctx, actor, id, notification.EventOrderStatusChanged, claim)
	case Canceled:
		o, err = s.RequestCancel(ctx, actor, id, reason, claim)
		accepted = true
	case Refunded:
		o, err = s.RequestRefund(ctx, actor, id, reason, claim)
		accepted = true
	default:
		o, err = s.Get(ctx, id)
		if err == nil {
			err = badTransition(o.Status, to)
		}
	}
	return o, accepted, err
}

// Delete soft-deletes an order in a final status.
func (s *Service) Delete(ctx context.Context, id uuid.UUID) error {
	return postgres.WithTx(ctx, s.db, func(tx *postgres.Tx) error {
		o, err := s.store.Lock(ctx, tx, id)
		if err != nil {
			return err
		}
		if o.DeletedAt != nil {
			return ErrNotFound
		}
		if !o.Status.Final() {
			return ErrNotFinal.With("status", i18n.Term("orders.status."+string(o.Status)))
		}
		if o.PendingAction != ActionNone {
			return actionPending(o.PendingAction) // a late payment's refund to run
		}
		if o.owesRefund() || o.refundUnderWay() {
			// A late payment whose refund was refused (a dispute), or a refund that failed at
			// Stripe, is left to staff: deleted, the order would hide the money owed. A refund
			// under way may still fail.
			return ErrRefundOwed
		}
		return s.store.SoftDelete(ctx, tx, id)
	})
}
