package order

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
)

// ReconcilePolicy holds the reconciler's thresholds (SPEC §5) and the bounds of one run.
type ReconcilePolicy struct {
	IntentAge   time.Duration // ask Stripe about PaymentIntents older than this (10 min)
	NoIntentAge time.Duration // cancel orders still without a PaymentIntent after this (5 min)
	UnpaidTTL   time.Duration // cancel orders unpaid after this (ORDER_UNPAID_TTL, 30 min)
	// StuckAfter is how long a paid order may wait for processing, or a cancel or refund for
	// its run, with no task left to do it, before the reconciler asks for the task again.
	StuckAfter time.Duration
	// RefundAge is how long a refund may stay under way, unchanged, before Stripe is asked about
	// it (and asked again after as long while it stays so).
	RefundAge time.Duration

	// A run stops taking new orders after Budget or MaxOrders (zero: no bound), whichever comes
	// first, and says where it stopped; the next run resumes there. So a run costs the same whatever the
	// backlog, and a backlog larger than one run drains over several.
	Budget    time.Duration
	MaxOrders int
	// Lookups bounds the Stripe lookups in flight.
	Lookups int
}

// DefaultReconcilePolicy is SPEC §5's, with the configured unpaid TTL. A run fits well inside
// the one-minute period: 40 s, at most 5,000 orders, 16 lookups at a time.
func DefaultReconcilePolicy(unpaidTTL time.Duration) ReconcilePolicy {
	return ReconcilePolicy{IntentAge: 10 * time.Minute, NoIntentAge: 5 * time.Minute, UnpaidTTL: unpaidTTL,
		StuckAfter: 10 * time.Minute, RefundAge: 10 * time.Minute, Budget: 40 * time.Second, MaxOrders: 5000, Lookups: 16}
}

// ReconcileReport counts what a reconciler run did.
type ReconcileReport struct {
	Checked, Paid, Canceled, Skipped, Failed int
	// Requeued counts stuck orders whose task was asked for again.
	Requeued int
	// Refunds counts refunds under way that Stripe reported settled (a failed lookup counts in
	// Failed).
	Refunds int
	// Next is where the following run resumes; nil when this one reached the end.
	Next *PendingOrder
}

// Results of reconciling one order.
const (
	reconcileNothing  = ""
	reconcilePaid     = "paid"
	reconcileCanceled = "canceled"
	reconcileSkipped  = "skipped"
	reconcileFailed   = "failed"
	reconcileRefunded = "refunded"
)

func (r *ReconcileReport) count(result string) {
	r.Checked++
	switch result {
	case reconcilePaid:
		r.Paid++
	case reconcileCanceled:
		r.Canceled++
	case reconcileSkipped:
		r.Skipped++
	case reconcileFailed:
		r.Failed++
	}
}

// StuckOrder is an order whose task did not run in time.
type StuckOrder struct {
	ID            uuid.UUID `db:"id"`
	Status        Status    `db:"status"`
	PendingAction Action    `db:"pending_action"`
}

// maxRequeued bounds the stuck orders one run requeues; the rest wait for the next run.
const maxRequeued = 500

// PendingOrder is what the reconciler reads of a PENDING order; it is also a run's position.
type PendingOrder struct {
	ID        uuid.UUID `db:"id"`
	CreatedAt time.Time `db:"created_at"`
	IntentID  *string   `db:"payment_intent_id"`
}

// reconcilePage is how many PENDING orders a run reads at a time.
const reconcilePage = 500

// Reconcile finds what lost webhooks left behind, starting after from (nil: from the oldest).
// PENDING orders whose PaymentIntent is old enough are looked up at Stripe: succeeded and
// canceled are applied exactly as the webhook would (same code, actor "reconciler"); still
// unpaid past the TTL, the order is canceled through order:cancel (PaymentIntent canceled at
// Stripe, stock back). Orders that never got a PaymentIntent are canceled at once, after 5
// minutes or the TTL, whichever is shorter, and then the PaymentIntent a create that died may
// have made (cancelUnrecordedIntent). A PaymentIntent Stripe no longer knows is logged
// and skipped; the run goes on with the rest.
// Refunds left under way are looked up first, in a quarter of the budget (settleRefunds).
// The run ends at the policy's bounds and reports in Next where the next one should resume.
func (s *Service) Reconcile(ctx context.Context, now time.Time, p ReconcilePolicy, from *PendingOrder) (ReconcileReport, error) {
	var rep ReconcileReport
	if err := s.requeueStuck(ctx, now.Add(-p.StuckAfter), &rep); err != nil {
		return rep, err
	}
	budget := p.Budget
	if budget <= 0 {
		budget = 24 * time.Hour
	}
	start := time.Now()
	s.settleRefunds(ctx, now, p, start.Add(budget/4), &rep)
	deadline := start.Add(budget)
	maxOrders := p.MaxOrders
	if maxOrders <= 0 {
		maxOrders = math.MaxInt
	}
	before := now.Add(-min(p.IntentAge, p.NoIntentAge, p.UnpaidTTL))
	after := from
	var stripeDown atomic.Bool // cancelUnrecordedIntent found Stripe unreachable this run
	for {
		limit := min(reconcilePage, maxOrders-rep.Checked)
		page, err := s.store.PendingBefore(ctx, s.db, before, after, limit)
		if err != nil {
			rep.Next = after // the next run resumes here, not from the oldest order
			return rep, err
		}
		done := s.reconcilePage(ctx, now, p, page, deadline, &stripeDown, &rep)
		if done < len(page) || (len(page) == limit && rep.Checked >= maxOrders) {
			if done > 0 {
				rep.Next = &page[done-1]
			} else {
				rep.Next = after
			}
			return rep, ctx.Err()
		}
		if len(page) < limit {
			return rep, nil
		}
		after = &page[len(page)-1]
	}
}

// reconcilePage reconciles the page's orders in order, p.Lookups at a time, and returns how
// many of them it took before the deadline passed (at least one, so every run moves on):
// those all ran to their end.
func (s *Service) reconcilePage(ctx context.Context, now time.Time, p ReconcilePolicy, page []PendingOrder, deadline time.Time, stripeDown *atomic.Bool, rep *ReconcileReport) int {
	results := make([]string, len(page))
	g := new(errgroup.Group)
	g.SetLimit(max(p.Lookups, 1))
	taken := 0
	for i, o := range page {
		if ctx.Err() != nil || (taken > 0 && time.Now().After(deadline)) {
			break
		}
		g.Go(func() error {
			results[i] = s.reconcileOne(ctx, now, p, o, stripeDown)
			return nil
		})
		taken++
	}
	_ = g.Wait() // the goroutines never fail: each order's failure is its result
	for _, r := range results[:taken] {
		rep.count(r)
	}
	return taken
}

func (s *Service) reconcileOne(ctx context.Context, now time.Time, p ReconcilePolicy, po PendingOrder, stripeDown *atomic.Bool) string {
	age := now.Sub(po.CreatedAt)
	if po.IntentID == nil {
		// Unpaid too: the TTL applies when it is the shorter. A create still waiting on Stripe
		// then finds its order canceled and cancels the PaymentIntent it gets (intentNotAttached).
		if age < min(p.NoIntentAge, p.UnpaidTTL) {
			return reconcileNothing
		}
		reason := "no payment intent after " + p.NoIntentAge.String()
		if age < p.NoIntentAge {
			reason = "unpaid after " + p.UnpaidTTL.String()
		}
		o, err := s.CancelUnpaid(ctx, po.ID, ActorReconciler, reason)
		if err == nil && o.Status == Canceled && o.Payment.IntentID == nil {
			s.cancelUnrecordedIntent(ctx, o, stripeDown)
		}
		return s.reconciled(ctx, po, err, o.Status == Canceled, reconcileCanceled)
	}
	if age < p.IntentAge && age < p.UnpaidTTL {
		return reconcileNothing
	}
	pi, err := s.gateway.GetPaymentIntent(ctx, *po.IntentID)
	if errors.Is(err, payment.ErrNotFound) {
		s.log.WarnContext(ctx, "reconciler: Stripe does not know the PaymentIntent; skipped", "orderId", po.ID, "paymentIntentId", *po.IntentID)
		return reconcileSkipped
	}
	if err != nil {
		s.log.ErrorContext(ctx, "reconciler: PaymentIntent lookup failed", "orderId", po.ID, "err", err)
		return reconcileFailed
	}
	outcome := ""
	switch {
	case pi.Status == payment.IntentSucceeded:
		ev := payment.Event{PaymentIntentID: pi.ID, AmountReceived: pi.AmountReceived, Currency: pi.Currency}
		_, err = s.apply(ctx, po.ID, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
			return s.paymentSucceeded(ctx, o, ev, ActorReconciler, &outcome)
		})
		return s.reconciled(ctx, po, err, outcome == OutcomeApplied, reconcilePaid)
	case pi.Status == payment.IntentCanceled:
		_, err = s.apply(ctx, po.ID, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
			return s.intentCanceled(ctx, o, ActorReconciler, &outcome)
		})
		return s.reconciled(ctx, po, err, outcome == OutcomeApplied, reconcileCanceled)
	case age >= p.UnpaidTTL && pi.Status != payment.IntentProcessing:
		// A payment under way is left to end: Stripe refuses to cancel it meanwhile.
		reason := "unpaid after " + p.UnpaidTTL.String()
		_, err = s.apply(ctx, po.ID, func(_ *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
			if o.Status != Pending || o.PendingAction != ActionNone {
				return nil, nil, nil // paid or acted on meanwhile
			}
			if err := o.request(ActionCancel); err != nil {
				return nil, nil, err
			}
			outcome = OutcomeApplied
			return actionEvent(EventCancelRequested, ActorReconciler, reason),
				[]outbox.Message{task(tasks.OrderCancel, o, ActorReconciler, reason)}, nil
		})
		return s.reconciled(ctx, po, err, outcome == OutcomeApplied, reconcileCanceled)
	}
	return reconcileNothing
}

// cancelUnrecordedIntent cancels at Stripe the PaymentIntent a create may have made for the
// canceled order o and died before recording (nobody retried it): the create sent again under
// the order's key gets it back from Stripe (or makes one), and it is canceled. Its client secret
// never left the API, so nobody can pay it: a failed cancel is logged, not retried, and the
// order's cancel does not wait for Stripe. Once Stripe is found unreachable (stripeDown), the
// rest of the run skips this step: a hanging Stripe would otherwise hold every such order for
// its timeouts, and the run would cancel a few of them where it cancels thousands. Should one
// be paid all the same, its event names the order and the payment is refunded as a late one.
func (s *Service) cancelUnrecordedIntent(ctx context.Context, o Order, stripeDown *atomic.Bool) {
	if stripeDown.Load() {
		s.log.WarnContext(ctx, "reconciler: Stripe unreachable this run; a PaymentIntent the canceled order may have was not canceled", "orderId", o.ID)
		return
	}
	customer, err := s.customers.StripeCustomerID(ctx, o.UserID)
	if err == nil {
		var pi payment.Intent
		if pi, err = s.createIntent(ctx, o, customer); err == nil {
			_, err = s.gateway.CancelPaymentIntent(ctx, pi.ID, "order-"+o.ID.String()+"-cancel-intent-"+pi.ID)
		}
	}
	if err == nil {
		return
	}
	if errors.Is(err, payment.ErrTransient) {
		stripeDown.Store(true)
	}
	level := slog.LevelWarn
	if errors.Is(err, payment.ErrKeyReused) { // a create was sent with other parameters: ours to look into
		level = slog.LevelError
	}
	s.log.Log(ctx, level, "reconciler: a PaymentIntent the canceled order may have was not canceled", "orderId", o.ID, "err", err)
}

func (s *Service) reconciled(ctx context.Context, po PendingOrder, err error, changed bool, result string) string {
	switch {
	case err != nil:
		s.log.ErrorContext(ctx, "reconciler: order not reconciled", "orderId", po.ID, "err", err)
		return reconcileFailed
	case changed:
		s.log.InfoContext(ctx, "reconciler: order reconciled", "orderId", po.ID, "result", result)
		return result
	}
	return reconcileNothing
}

// requeueStuck asks again for the task of every order stuck since before: order:process for a
// paid order, the pending action's task otherwise. Such an order has no outbox row left (the
// relay would redeliver it): its task ran and failed without settling it, for instance a
// compensation that could not reach Stripe. The strategies are idempotent, so a task that was
// only slow does nothing the second time.
//
// A cancel or refund is asked again in the name of whoever asked for it, with their reason, as
// the timeline's last request says: the order's end is theirs, not the reconciler's. A refund
// nobody asked for (a late payment's, the timeline's latest) is asked in the reconciler's.
func (s *Service) requeueStuck(ctx context.Context, before time.Time, rep *ReconcileReport) error {
	stuck, err := s.store.Stuck(ctx, s.db, before, maxRequeued)
	if err != nil {
		return err
	}
	for _, st := range stuck {
		requeued := false
		_, err := s.apply(ctx, st.ID, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
			if o.Status != st.Status || o.PendingAction != st.PendingAction {
				return nil, nil, nil // it moved meanwhile
			}
			requeued = true
			typ := o.PendingAction.taskType()
			why := typ + " did not run in time"
			actor, reason := ActorReconciler, why
			if o.PendingAction != ActionNone {
				req, err := s.store.LastEvent(ctx, tx, o.ID, EventCancelRequested, EventRefundRequested, EventLatePayment)
				if err = ignoreMissing(err); err != nil {
					return nil, nil, err
				}
				if req.Type == o.PendingAction.requested() {
					actor, reason = req.Actor, ""
					if req.Reason != nil {
						reason = *req.Reason
					}
				}
			}
			return actionEvent(EventTaskRequeued, ActorReconciler, why), []outbox.Message{task(typ, o, actor, reason)}, nil
		})
		if err != nil {
			s.log.ErrorContext(ctx, "reconciler: stuck order not requeued", "orderId", st.ID, "err", err)
			continue
		}
		if requeued {
			rep.Requeued++
			s.log.WarnContext(ctx, "reconciler: stuck order requeued", "orderId", st.ID, "status", st.Status, "pendingAction", st.PendingAction)
		}
	}
	return nil
}

// UnsettledRefund is a refund recorded while it was still under way at Stripe.
type UnsettledRefund struct {
	OrderID  uuid.UUID `db:"order_id"`
	RefundID string    `db:"refund_id"`
}

// maxRefundLookups bounds the refunds one run asks Stripe about; the rest wait for the next run.
// refundLookupGrace is how long past its deadline a lookup under way may take.
const (
	maxRefundLookups  = 500
	refundLookupGrace = 5 * time.Second
)

// settleRefunds asks Stripe about the refunds still under way, unchanged for p.RefundAge, and
// records each one that settled as its refund.updated event would have (actor "reconciler").
// That event may have been lost, or have come before the worker recorded the refund (and was
// then ignored). Every refund asked about, settled or not, goes to the back of the line, so a
// refund Stripe cannot answer for does not hold up the others. No lookup starts after deadline;
// a failure here is counted and logged, and the run goes on with the PENDING orders.
func (s *Service) settleRefunds(ctx context.Context, now time.Time, p ReconcilePolicy, deadline time.Time, rep *ReconcileReport) {
	refunds, err := s.store.UnsettledRefunds(ctx, s.db, now.Add(-p.RefundAge), maxRefundLookups)
	if err != nil {
		s.log.ErrorContext(ctx, "reconciler: refunds under way not read", "err", err)
		rep.Failed++
		return
	}
	// A lookup under way at the deadline gets a little longer, not Stripe's whole timeout.
	lctx, cancel := context.WithDeadline(ctx, deadline.Add(refundLookupGrace))
	defer cancel()
	results := make([]string, len(refunds))
	g := new(errgroup.Group)
	g.SetLimit(max(p.Lookups, 1))
	for i, u := range refunds {
		if ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		g.Go(func() error {
			if time.Now().Before(deadline) { // it may have waited for its slot past it
				results[i] = s.settleRefund(lctx, now, u)
			}
			return nil
		})
	}
	_ = g.Wait() // the goroutines never fail: each refund's failure is its result
	for _, r := range results {
		switch r {
		case reconcileRefunded:
			rep.Refunds++
		case reconcileFailed:
			rep.Failed++
		}
	}
}

// settleRefund looks one refund up at Stripe and records its status if it settled.
func (s *Service) settleRefund(ctx context.Context, now time.Time, u UnsettledRefund) string {
	r, err := s.gateway.GetRefund(ctx, u.RefundID)
	if errors.Is(err, payment.ErrNotFound) {
		s.log.WarnContext(ctx, "reconciler: Stripe does not know the refund; asked again later", "orderId", u.OrderID, "refundId", u.RefundID)
	}
	if err == nil && !payment.RefundUnderWay(r.Status) {
		outcome := ""
		err = postgres.WithTx(ctx, s.db, func(tx *postgres.Tx) (err error) {
			outcome, err = s.applyRefundUpdate(ctx, tx, payment.Event{RefundID: u.RefundID, RefundStatus: r.Status}, ActorReconciler)
			return err
		})
		if err == nil && outcome == OutcomeApplied {
			metrics.RefundUpdated(r.Status)
			s.log.InfoContext(ctx, "reconciler: refund settled", "orderId", u.OrderID, "refundId", u.RefundID, "status", r.Status)
			return reconcileRefunded
		}
	}
	if lerr := s.store.RefundLookedUp(ctx, s.db, u.RefundID, now); lerr != nil && err == nil {
		err = lerr
	}
	if err != nil && !errors.Is(err, payment.ErrNotFound) {
		s.log.ErrorContext(ctx, "reconciler: refund not looked up", "orderId", u.OrderID, "refundId", u.RefundID, "err", err)
		return reconcileFailed
	}
	return reconcileNothing
}
