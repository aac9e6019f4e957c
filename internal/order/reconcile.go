package order

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
)

// ReconcilePolicy holds the reconciler's thresholds (SPEC §5).
type ReconcilePolicy struct {
	IntentAge   time.Duration // ask Stripe about PaymentIntents older than this (10 min)
	NoIntentAge time.Duration // cancel orders still without a PaymentIntent after this (5 min)
	UnpaidTTL   time.Duration // cancel orders unpaid after this (ORDER_UNPAID_TTL, 30 min)
	// StuckAfter is how long a paid order may wait for processing, or a cancel or refund for
	// its run, with no task left to do it, before the reconciler asks for the task again.
	StuckAfter time.Duration
}

// DefaultReconcilePolicy is SPEC §5's, with the configured unpaid TTL.
func DefaultReconcilePolicy(unpaidTTL time.Duration) ReconcilePolicy {
	return ReconcilePolicy{IntentAge: 10 * time.Minute, NoIntentAge: 5 * time.Minute, UnpaidTTL: unpaidTTL,
		StuckAfter: 10 * time.Minute}
}

// ReconcileReport counts what a reconciler run did.
type ReconcileReport struct {
	Checked, Paid, Canceled, Skipped, Failed int
	// Requeued counts stuck orders whose task was asked for again.
	Requeued int
}

// StuckOrder is an order whose task did not run in time.
type StuckOrder struct {
	ID            uuid.UUID `db:"id"`
	Status        Status    `db:"status"`
	PendingAction Action    `db:"pending_action"`
}

// maxRequeued bounds the stuck orders one run requeues; the rest wait for the next run.
const maxRequeued = 500

// PendingOrder is what the reconciler reads of a PENDING order.
type PendingOrder struct {
	ID        uuid.UUID `db:"id"`
	CreatedAt time.Time `db:"created_at"`
	IntentID  *string   `db:"payment_intent_id"`
}

// reconcileWorkers bounds the Stripe lookups in flight.
const reconcileWorkers = 8

// Reconcile finds what lost webhooks left behind. PENDING orders whose PaymentIntent is old
// enough are looked up at Stripe: succeeded and canceled are applied exactly as the webhook
// would (same code, actor "reconciler"); still unpaid past the TTL, the order is canceled
// through order:cancel (PaymentIntent canceled at Stripe, stock back). Orders that never got a
// PaymentIntent are canceled at once. A PaymentIntent Stripe no longer knows is logged and
// skipped; the run goes on with the rest.
func (s *Service) Reconcile(ctx context.Context, now time.Time, p ReconcilePolicy) (ReconcileReport, error) {
	var rep ReconcileReport
	if err := s.requeueStuck(ctx, now.Add(-p.StuckAfter), &rep); err != nil {
		return rep, err
	}
	before := now.Add(-min(p.IntentAge, p.NoIntentAge, p.UnpaidTTL))
	var after *PendingOrder
	for {
		page, err := s.store.PendingBefore(ctx, s.db, before, after, 500)
		if err != nil {
			return rep, err
		}
		s.reconcilePage(ctx, now, p, page, &rep)
		if len(page) < 500 {
			return rep, nil
		}
		after = &page[len(page)-1]
	}
}

func (s *Service) reconcilePage(ctx context.Context, now time.Time, p ReconcilePolicy, page []PendingOrder, rep *ReconcileReport) {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next = make(chan PendingOrder)
	)
	for w := 0; w < reconcileWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range next {
				result := s.reconcileOne(ctx, now, p, o)
				mu.Lock()
				rep.Checked++
				switch result {
				case "paid":
					rep.Paid++
				case "canceled":
					rep.Canceled++
				case "skipped":
					rep.Skipped++
				case "failed":
					rep.Failed++
				}
				mu.Unlock()
			}
		}()
	}
	for _, o := range page {
		next <- o
	}
	close(next)
	wg.Wait()
}

func (s *Service) reconcileOne(ctx context.Context, now time.Time, p ReconcilePolicy, po PendingOrder) string {
	age := now.Sub(po.CreatedAt)
	if po.IntentID == nil {
		if age < p.NoIntentAge {
			return ""
		}
		o, err := s.CancelUnpaid(ctx, po.ID, ActorReconciler, "no payment intent after "+p.NoIntentAge.String())
		return s.reconciled(ctx, po, err, o.Status == Canceled, "canceled")
	}
	if age < p.IntentAge && age < p.UnpaidTTL {
		return ""
	}
	pi, err := s.gateway.GetPaymentIntent(ctx, *po.IntentID)
	if errors.Is(err, payment.ErrNotFound) {
		s.log.WarnContext(ctx, "reconciler: Stripe does not know the PaymentIntent; skipped", "orderId", po.ID, "paymentIntentId", *po.IntentID)
		return "skipped"
	}
	if err != nil {
		s.log.ErrorContext(ctx, "reconciler: PaymentIntent lookup failed", "orderId", po.ID, "err", err)
		return "failed"
	}
	outcome := ""
	switch {
	case pi.Status == payment.IntentSucceeded:
		ev := payment.Event{PaymentIntentID: pi.ID, AmountReceived: pi.AmountReceived, Currency: pi.Currency}
		_, err = s.apply(ctx, po.ID, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
			return s.paymentSucceeded(ctx, tx, o, ev, ActorReconciler, &outcome)
		})
		return s.reconciled(ctx, po, err, outcome == OutcomeApplied, "paid")
	case pi.Status == payment.IntentCanceled:
		_, err = s.apply(ctx, po.ID, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
			return s.intentCanceled(ctx, tx, o, ActorReconciler, &outcome)
		})
		return s.reconciled(ctx, po, err, outcome == OutcomeApplied, "canceled")
	case age >= p.UnpaidTTL:
		reason := "unpaid after " + p.UnpaidTTL.String()
		_, err = s.apply(ctx, po.ID, func(_ *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
			if o.Status != Pending || o.PendingAction != ActionNone {
				return nil, nil, nil
			}
			outcome = OutcomeApplied
			_ = o.request(ActionCancel)
			return actionEvent(EventCancelRequested, ActorReconciler, reason),
				[]outbox.Message{task(tasks.OrderCancel, o, ActorReconciler, reason)}, nil
		})
		return s.reconciled(ctx, po, err, outcome == OutcomeApplied, "canceled")
	}
	return ""
}

func (s *Service) reconciled(ctx context.Context, po PendingOrder, err error, changed bool, result string) string {
	switch {
	case err != nil:
		s.log.ErrorContext(ctx, "reconciler: order not reconciled", "orderId", po.ID, "err", err)
		return "failed"
	case changed:
		s.log.InfoContext(ctx, "reconciler: order reconciled", "orderId", po.ID, "result", result)
		return result
	}
	return ""
}

// requeueStuck asks again for the task of every order stuck since before: order:process for a
// paid order, the pending action's task otherwise. Such an order has no outbox row left (the
// relay would redeliver it): its task ran and failed without settling it, for instance a
// compensation that could not reach Stripe. The strategies are idempotent, so a task that was
// only slow does nothing the second time.
func (s *Service) requeueStuck(ctx context.Context, before time.Time, rep *ReconcileReport) error {
	stuck, err := s.store.Stuck(ctx, s.db, before, maxRequeued)
	if err != nil {
		return err
	}
	for _, st := range stuck {
		requeued := false
		_, err := s.apply(ctx, st.ID, func(_ *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
			typ := map[Action]string{ActionNone: tasks.OrderProcess, ActionCancel: tasks.OrderCancel, ActionRefund: tasks.OrderRefund}[o.PendingAction]
			if o.Status != st.Status || o.PendingAction != st.PendingAction || typ == "" {
				return nil, nil, nil // it moved meanwhile
			}
			requeued = true
			reason := typ + " did not run in time"
			return actionEvent(EventTaskRequeued, ActorReconciler, reason), []outbox.Message{task(typ, o, ActorReconciler, reason)}, nil
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
