package e2e_test

// Redis forgets: PostgreSQL is the source of truth, so work handed to a Redis that then loses
// its data (a restart without persistence, a failover that dropped writes) is recovered from
// the outbox, and an order whose task ran without settling it is requeued by the reconciler.
// Each effect happens once.

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

func TestNothingStrandedWhenRedisForgetsTasks(t *testing.T) {
	t.Parallel()
	s := newStack(t, noWorker, func(o *stackOptions) { o.redeliverAfter = time.Second })
	item := s.item(100, 1500)
	uid, c := s.customer()
	financial := s.staff("financial")

	var paid, canceled, refunded []orderView
	for i := 0; i < 4; i++ {
		o := s.order(c, 1, item)
		s.pay(o)
		paid = append(paid, o)
	}
	for i := 0; i < 3; i++ {
		o := s.order(c, 2, item)
		financial.Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", map[string]string{"reason": "changed mind"}).Expect(t, 202)
		canceled = append(canceled, o)
	}
	for i := 0; i < 3; i++ {
		o := s.order(c, 1, item)
		s.pay(o)
		financial.Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", map[string]string{"reason": "damaged"}).Expect(t, 202)
		refunded = append(refunded, o)
	}
	// The relay hands everything to Redis; nothing runs it yet. Then Redis forgets it all.
	testenv.Eventually(t, 30*time.Second, "every row handed off", func() bool {
		return s.count(`SELECT count(*) FROM outbox WHERE deliveries = 0`) == 0
	})
	testenv.ForgetQueues(s.rdb, s.ns)
	inFlight := s.count(`SELECT count(*) FROM outbox`)

	start := time.Now()
	s.startWorker(50 * time.Millisecond)
	for _, o := range paid {
		s.waitStatus(o.ID, "PROCESSED")
	}
	for _, o := range canceled {
		s.waitStatus(o.ID, "CANCELED")
	}
	for _, o := range refunded {
		s.waitStatus(o.ID, "REFUNDED")
	}
	testenv.Eventually(t, 30*time.Second, "the outbox empties", func() bool { return s.count(`SELECT count(*) FROM outbox`) == 0 })
	t.Logf("%d outbox rows lost by Redis, all recovered in %s", inFlight, time.Since(start).Round(time.Millisecond))

	// Exactly once: one transition each, one notification per event, one refund per order,
	// stock back for what was canceled or refunded.
	for _, o := range append(append(paid, canceled...), refunded...) {
		s.assertNoRepeatedTransition(o.ID)
	}
	for _, o := range paid {
		for _, ev := range []string{notification.EventOrderCreated, notification.EventOrderPaid, notification.EventOrderProcessed} {
			if n := s.notifications(uid, o.ID, ev); n != 1 {
				t.Errorf("order %s: %d %s notifications, want 1", o.ID, n, ev)
			}
		}
	}
	for _, o := range canceled {
		if n := s.notifications(uid, o.ID, notification.EventOrderCanceled); n != 1 {
			t.Errorf("order %s: %d order.canceled notifications, want 1", o.ID, n)
		}
	}
	for _, o := range refunded {
		if n := s.notifications(uid, o.ID, notification.EventOrderRefunded); n != 1 {
			t.Errorf("order %s: %d order.refunded notifications, want 1", o.ID, n)
		}
		if n := s.count(`SELECT count(*) FROM refunds WHERE order_id = $1`, o.ID); n != 1 {
			t.Errorf("order %s: %d refunds, want 1", o.ID, n)
		}
	}
	if got, want := s.stock(item), int64(100-len(paid)); got != want {
		t.Errorf("stock %d, want %d (only the processed orders keep theirs)", got, want)
	}
}

// TestReconcilerRequeuesStuckOrders: an order whose task is gone and whose outbox row is gone
// too (the task ran and failed without settling it) is requeued once it has waited
// StuckAfter; an order whose row is still there is left to the relay.
func TestReconcilerRequeuesStuckOrders(t *testing.T) {
	t.Parallel()
	s := newStack(t, noWorker)
	item := s.item(20, 900)
	_, c := s.customer()
	stuckPaid, stuckCancel, waiting := s.order(c, 1, item), s.order(c, 1, item), s.order(c, 1, item)
	s.pay(stuckPaid)
	s.pay(waiting)
	s.staff("financial").Do("PATCH", "/v1/admin/orders/"+stuckCancel.ID.String()+"/cancel", nil).Expect(t, 202)
	testenv.Eventually(t, 30*time.Second, "every row handed off", func() bool {
		return s.count(`SELECT count(*) FROM outbox WHERE deliveries = 0`) == 0
	})
	// The rows go before the queues: a relay that notices the queues lost marks its rows due
	// again, and would hand these off before they went.
	for _, o := range []orderView{stuckPaid, stuckCancel} {
		if _, err := s.db.Exec(`DELETE FROM outbox WHERE payload->>'orderId' = $1`, o.ID.String()); err != nil {
			t.Fatal(err)
		}
	}
	testenv.ForgetQueues(s.rdb, s.ns)
	if _, err := s.db.Exec(`UPDATE orders SET updated_at = now() - interval '11 minutes' WHERE id = ANY($1)`,
		[]uuid.UUID{stuckPaid.ID, stuckCancel.ID, waiting.ID}); err != nil {
		t.Fatal(err)
	}

	s.startWorker(50 * time.Millisecond)
	orders := s.assemble(s.rdb, s.stripe.URL, s.log).Orders
	rep, err := orders.Reconcile(context.Background(), time.Now(), order.DefaultReconcilePolicy(s.cfg.OrderUnpaidTTL), nil)
	if err != nil || rep.Requeued != 2 {
		t.Fatalf("reconcile: %+v, %v; want the 2 stuck orders requeued", rep, err)
	}
	s.waitStatus(stuckPaid.ID, "PROCESSED")
	s.waitStatus(stuckCancel.ID, "CANCELED")
	for _, o := range []orderView{stuckPaid, stuckCancel} {
		if n := s.count(`SELECT count(*) FROM order_events WHERE order_id = $1 AND type = 'taskRequeued' AND actor = 'reconciler'`, o.ID); n != 1 {
			t.Errorf("order %s: %d taskRequeued events, want 1", o.ID, n)
		}
		s.assertNoRepeatedTransition(o.ID)
	}
	// The order whose row is still there is redelivered by the relay, not requeued.
	if n := s.count(`SELECT count(*) FROM order_events WHERE order_id = $1 AND type = 'taskRequeued'`, waiting.ID); n != 0 {
		t.Errorf("an order with its outbox row was requeued %d times", n)
	}
	// A second run finds nothing to do.
	if rep, err := orders.Reconcile(context.Background(), time.Now(), order.DefaultReconcilePolicy(s.cfg.OrderUnpaidTTL), nil); err != nil || rep.Requeued != 0 {
		t.Fatalf("second reconcile: %+v, %v", rep, err)
	}
}
