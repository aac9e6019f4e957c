package e2e_test

// Exactly-once effects under at-least-once delivery (SPEC §5, §6): repeated webhooks, tasks
// delivered twice, relays competing for one backlog, and a relay that dies between enqueue and
// commit. Every test asserts on the database: one transition, one refund, one notification.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/outbox/relay"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/internal/worker"
)

// webhookBurst sends body with its signature n times at once and returns the outcomes the API
// reported, by outcome.
func (s *stack) webhookBurst(n int, bodies func(i int) ([]byte, string)) map[string]int {
	s.t.Helper()
	type answer struct {
		status  int
		outcome string
		err     error
		body    string
	}
	answers := make([]answer, n)
	parallel(n, func(i int) {
		body, sig := bodies(i)
		r, err := s.api.Send("POST", "/stripe/webhook", body, "Stripe-Signature", sig)
		var out struct{ Outcome string }
		_ = json.Unmarshal(r.Body, &out)
		answers[i] = answer{status: r.Status, outcome: out.Outcome, err: err, body: string(r.Body)}
	})
	outcomes := map[string]int{}
	for i, a := range answers {
		if a.err != nil || a.status != 200 {
			s.t.Fatalf("webhook %d: status %d err %v\n%s", i, a.status, a.err, a.body)
		}
		outcomes[a.outcome]++
	}
	return outcomes
}

// TestWebhookRedeliveredConcurrently: Stripe delivers the same event 20 times at once, and 20
// different events for one PaymentIntent at once; the order is paid once, processed once,
// and its customer told once.
func TestWebhookRedeliveredConcurrently(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	item := s.item(100, 900)
	uid, c := s.customer()

	{ // the same event id 20 times
		o := s.order(c, 2, item)
		eventID := "evt_same_" + uuid.NewString()[:12]
		body, sig := s.payEvent(o, eventID)
		outcomes := s.webhookBurst(20, func(int) ([]byte, string) { return body, sig })
		if outcomes[order.OutcomeApplied] != 1 || outcomes[order.OutcomeDuplicate] != 19 {
			t.Fatalf("outcomes %v, want 1 applied and 19 duplicate", outcomes)
		}
		s.waitStatus(o.ID, "PROCESSED")
		s.waitNotified(uid, o.ID, notification.EventOrderProcessed)
		q := s.quiet()

		if n := s.count(`SELECT count(*) FROM stripe_events WHERE id = $1`, eventID); n != 1 {
			t.Fatalf("stripe_events rows for the event = %d, want 1", n)
		}
		for _, st := range []string{"PAID", "PROCESSED"} {
			if n := s.transitions(o.ID, st); n != 1 {
				t.Fatalf("transitions to %s = %d, want 1", st, n)
			}
		}
		s.assertNoRepeatedTransition(o.ID)
		if n := len(q.completed(tasks.QueueOrders, tasks.OrderProcess, o.ID.String())); n != 1 {
			t.Fatalf("order:process tasks run for the order = %d, want 1", n)
		}
		for _, ev := range []string{notification.EventOrderPaid, notification.EventOrderProcessed} {
			if n := s.notifications(uid, o.ID, ev); n != 1 {
				t.Fatalf("%s notifications = %d, want 1", ev, n)
			}
		}
	}

	{ // 20 different event ids for one PaymentIntent
		o := s.order(c, 1, item)
		prefix := "evt_many_" + uuid.NewString()[:8] + "_"
		outcomes := s.webhookBurst(20, func(i int) ([]byte, string) { return s.payEvent(o, fmt.Sprintf("%s%02d", prefix, i)) })
		if outcomes[order.OutcomeApplied] != 1 || outcomes[order.OutcomeApplied]+outcomes[order.OutcomeIgnored] != 20 {
			t.Fatalf("outcomes %v, want 1 applied and 19 ignored", outcomes)
		}
		s.waitStatus(o.ID, "PROCESSED")
		s.waitNotified(uid, o.ID, notification.EventOrderProcessed)

		// Late and out-of-order events for the same PaymentIntent move nothing backwards.
		pi := *o.Payment.PaymentIntentID
		s.webhook(payment.TestEvent{ID: prefix + "failed", Type: payment.EventIntentFailed, PaymentIntentID: pi,
			OrderID: o.ID.String(), Amount: o.Total, Currency: o.Currency, FailureMessage: "declined"}).Expect(t, 200)
		s.webhook(payment.TestEvent{ID: prefix + "canceled", Type: payment.EventIntentCanceled, PaymentIntentID: pi,
			OrderID: o.ID.String(), Amount: o.Total, Currency: o.Currency}).Expect(t, 200)
		q := s.quiet()

		if n := s.count(`SELECT count(*) FROM stripe_events WHERE id LIKE $1`, prefix+"%"); n != 22 {
			t.Fatalf("stripe_events rows = %d, want 22", n)
		}
		if st, action := s.status(o.ID); st != "PROCESSED" || action != "" {
			t.Fatalf("after late events the order is %s (pending %q), want PROCESSED", st, action)
		}
		if n := s.transitions(o.ID, "PAID"); n != 1 {
			t.Fatalf("transitions to PAID = %d, want 1", n)
		}
		s.assertNoRepeatedTransition(o.ID)
		if n := len(q.completed(tasks.QueueOrders, tasks.OrderProcess, o.ID.String())); n != 1 {
			t.Fatalf("order:process tasks run for the order = %d, want 1", n)
		}
		if n := s.notifications(uid, o.ID, notification.EventOrderPaid); n != 1 {
			t.Fatalf("order.paid notifications = %d, want 1", n)
		}
		if n := s.notifications(uid, o.ID, notification.EventOrderPaymentFailed); n != 0 {
			t.Fatalf("order.paymentFailed notifications after payment = %d, want 0", n)
		}
		if n := len(s.stripe.Calls("POST", "/v1/payment_intents/"+pi+"/cancel")); n != 0 {
			t.Fatalf("the paid PaymentIntent was canceled at Stripe %d times", n)
		}
	}
}

// TestTaskDeliveredTwice: every task of the order pipeline is enqueued a second time under
// another task id with the same payload (what a relay crash past Asynq's retention, or a
// manual replay, produces), and both copies run; each effect happens once.
func TestTaskDeliveredTwice(t *testing.T) {
	t.Parallel()
	s := newStack(t, noWorker)
	item := s.item(50, 1000)
	uid, c := s.customer()

	toCancel := s.order(c, 1, item)
	toRefund := s.order(c, 2, item)
	toProcess := s.order(c, 3, item)
	for _, o := range []orderView{toCancel, toRefund, toProcess} {
		s.pay(o)
	}
	s.staff("financial").Do("PATCH", "/v1/admin/orders/"+toCancel.ID.String()+"/cancel", map[string]string{"reason": "dup test"}).Expect(t, 202)
	s.staff("financial").Do("PATCH", "/v1/admin/orders/"+toRefund.ID.String()+"/refund", map[string]string{"reason": "dup test"}).Expect(t, 202)

	// Let the relay move everything into the queues; nothing runs them yet.
	testenv.Eventually(t, 30*time.Second, "outbox handed off", func() bool { return s.count(`SELECT count(*) FROM outbox WHERE deliveries = 0`) == 0 })
	q := newQueues(t, s.rdb, s.ns)
	client := asynq.NewClientFromRedisClient(s.rdb)
	copies := map[string]int{}
	for _, queue := range tasks.Queues() {
		if q.info(queue).Pending == 0 {
			continue
		}
		pending, err := q.insp.ListPendingTasks(s.ns.Queue(queue), asynq.PageSize(1000))
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range pending {
			if _, err := client.Enqueue(asynq.NewTask(ti.Type, ti.Payload), asynq.Queue(ti.Queue),
				asynq.TaskID("dup-"+ti.ID), asynq.MaxRetry(3)); err != nil {
				t.Fatal(err)
			}
			copies[ti.Type]++
		}
	}
	for _, typ := range []string{tasks.OrderCancel, tasks.OrderRefund, tasks.OrderProcess, tasks.NotifyUser} {
		if copies[typ] == 0 {
			t.Fatalf("no %s task was copied (copies %v)", typ, copies)
		}
	}

	log := newTaskLog()
	s.startWorkerWith(s.rdb, s.ns, func(o *worker.Options) { o.Observe = log.observer() })
	s.waitStatus(toCancel.ID, "CANCELED")
	s.waitStatus(toRefund.ID, "REFUNDED")
	s.waitStatus(toProcess.ID, "PROCESSED")
	s.quiet()

	// Both copies of every task ran (notify:user tasks also come from the strategies' own
	// outbox rows, so at least both copies of those).
	for typ, n := range copies {
		got := log.count(typ, "success")
		if got != 2*n && (typ != tasks.NotifyUser || got < 2*n) {
			t.Fatalf("%s: %d successful runs, want %d (two copies of %d tasks); %s", typ, got, 2*n, n, log)
		}
	}
	// One refund at Stripe per refunded order, none for the processed one.
	calls := s.refundCalls()
	for _, o := range []orderView{toCancel, toRefund} {
		if n := calls["order-"+o.ID.String()+"-refund"]; n != 1 {
			t.Fatalf("Stripe refund calls for order %s = %d, want 1 (all calls: %v)", o.ID, n, calls)
		}
		if n := s.count(`SELECT count(*) FROM refunds WHERE order_id = $1`, o.ID); n != 1 {
			t.Fatalf("refund rows of order %s = %d, want 1", o.ID, n)
		}
	}
	if len(calls) != 2 {
		t.Fatalf("Stripe refund calls by key: %v, want the two orders' only", calls)
	}
	final := map[uuid.UUID]string{toCancel.ID: "CANCELED", toRefund.ID: "REFUNDED", toProcess.ID: "PROCESSED"}
	events := map[uuid.UUID]string{toCancel.ID: notification.EventOrderCanceled, toRefund.ID: notification.EventOrderRefunded,
		toProcess.ID: notification.EventOrderProcessed}
	for id, st := range final {
		if n := s.transitions(id, st); n != 1 {
			t.Fatalf("order %s: transitions to %s = %d, want 1", id, st, n)
		}
		s.assertNoRepeatedTransition(id)
		for _, ev := range []string{notification.EventOrderCreated, notification.EventOrderPaid, events[id]} {
			if n := s.notifications(uid, id, ev); n != 1 {
				t.Fatalf("order %s: %s notifications = %d, want 1", id, ev, n)
			}
		}
	}
	// Stock came back once for the canceled and the refunded order (never shipped).
	if got := s.stock(item); got != 50-3 {
		t.Fatalf("stock = %d, want 47", got)
	}
	if log.compensations() != 0 {
		t.Fatalf("compensations ran: %s", log)
	}
	// The copied customer syncs: every user has one Stripe Customer, every create call for a
	// user carried the user's one idempotency key.
	if n := s.count(`SELECT count(*) FROM users WHERE stripe_customer_id IS NULL`); n != 0 {
		t.Fatalf("%d users without a Stripe Customer", n)
	}
	keys := map[string]bool{}
	for _, call := range s.stripe.Calls("POST", "/v1/customers") {
		if call.Path != "/v1/customers" {
			continue // an update of the customer created
		}
		if !strings.HasPrefix(call.IdempotencyKey, "user-") || !strings.HasSuffix(call.IdempotencyKey, "-customer") {
			t.Fatalf("customer create with idempotency key %q", call.IdempotencyKey)
		}
		keys[call.IdempotencyKey] = true
	}
	if users := s.count(`SELECT count(*) FROM users`); len(keys) != users {
		t.Fatalf("customer creates under %d keys for %d users", len(keys), users)
	}
}

// TestRefundThatWentThroughAfterAnotherCopyGaveUp: two copies of a cancel or refund task (a
// redelivery while the first still ran): one runs out of retries and its compensation clears
// the pending action, while the other's refund goes through at Stripe. The money is back, so
// the order ends CANCELED or REFUNDED with the refund recorded, not left as if nothing moved.
func TestRefundThatWentThroughAfterAnotherCopyGaveUp(t *testing.T) {
	t.Parallel()
	s := newStack(t, noWorker)
	item := s.item(20, 700)
	_, c := s.customer()
	toCancel, toRefund := s.order(c, 1, item), s.order(c, 1, item)
	s.pay(toCancel)
	s.pay(toRefund)
	s.staff("financial").Do("PATCH", "/v1/admin/orders/"+toCancel.ID.String()+"/cancel", nil).Expect(t, 202)
	s.staff("financial").Do("PATCH", "/v1/admin/orders/"+toRefund.ID.String()+"/refund", nil).Expect(t, 202)

	orders := s.assemble(s.rdb, s.stripe.URL, s.log).Orders
	ctx := context.Background()
	s.stripe.Gather(3) // both refunds held at "Stripe" until a third call comes
	t.Cleanup(func() { s.stripe.Gather(0) })
	errs := make(chan error, 2)
	go func() { errs <- orders.Cancel(ctx, toCancel.ID, order.ActorWorker, "copy one") }()
	go func() { errs <- orders.Refund(ctx, toRefund.ID, order.ActorWorker, "copy one") }()
	testenv.Eventually(t, 30*time.Second, "both refunds sent", func() bool { return s.stripe.Held() == 2 })
	// ...and the other copies give up meanwhile (asking Stripe past the proxy, which finds no
	// refund made yet).
	others := s.assemble(s.rdb, testenv.StripeURL(t), s.log).Orders
	for id, a := range map[uuid.UUID]order.Action{toCancel.ID: order.ActionCancel, toRefund.ID: order.ActionRefund} {
		if failed, err := others.FailAction(ctx, id, a, "copy two ran out of retries", true); err != nil || !failed {
			t.Fatalf("compensation of order %s: %v, %v", id, failed, err)
		}
	}
	if _, err := payment.NewStripe("sk_test_dispatch", s.stripe.URL).GetPaymentIntent(ctx, *toCancel.Payment.PaymentIntentID); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for id, st := range map[uuid.UUID]string{toCancel.ID: "CANCELED", toRefund.ID: "REFUNDED"} {
		if got, action := s.status(id); got != st || action != "" {
			t.Fatalf("order %s is %s (pending %q), want %s: its refund went through", id, got, action, st)
		}
		if n := s.count(`SELECT count(*) FROM refunds WHERE order_id = $1`, id); n != 1 {
			t.Fatalf("refund rows of order %s = %d, want 1", id, n)
		}
		s.assertNoRepeatedTransition(id)
	}
	s.wantStock(item, 20, "both released once")
}

// holdRefund runs a copy of a task (run, on a service logging to log) until its refund call is
// held at "Stripe", and returns the copy's result (once s.stripe.Gather(0) lets the call go)
// and the service of another worker, whose Stripe is not held.
func holdRefund(s *stack, log *slog.Logger, run func(*order.Service) error) (<-chan error, *order.Service) {
	t := s.t
	t.Helper()
	s.stripe.Gather(2) // the refund held at "Stripe" until a second call comes
	t.Cleanup(func() { s.stripe.Gather(0) })
	errs := make(chan error, 1)
	held := s.assemble(s.rdb, s.stripe.URL, log).Orders
	go func() { errs <- run(held) }()
	testenv.Eventually(t, 30*time.Second, "the refund sent", func() bool { return s.stripe.Held() == 1 })
	return errs, s.assemble(s.rdb, testenv.StripeURL(t), s.log).Orders
}

// refundMadeAgainHeld pays an order of one unit of item and refunds it; the refund fails at
// Stripe and staff ask for it again. One copy of that task (logging to log) is then held inside
// its Stripe call while another gives up (its retries ran out), clearing the request. It
// returns the order, the failed refund's id, the held copy's result (once s.stripe.Gather(0)
// lets its call go) and the service of another worker, whose Stripe is not held.
func refundMadeAgainHeld(s *stack, item uuid.UUID, log *slog.Logger) (orderView, string, <-chan error, *order.Service) {
	t := s.t
	t.Helper()
	_, c := s.customer()
	o := s.order(c, 1, item)
	s.pay(o)
	path := "/v1/admin/orders/" + o.ID.String() + "/refund"
	s.staff("financial").Do("PATCH", path, nil).Expect(t, 202)
	ctx := context.Background()
	if err := s.assemble(s.rdb, s.stripe.URL, s.log).Orders.Refund(ctx, o.ID, order.ActorWorker, "the first refund"); err != nil {
		t.Fatal(err)
	}
	first := s.refunds(o.ID)
	if len(first) != 1 {
		t.Fatalf("refunds %+v, want the first one", first)
	}
	failed := first[0].RefundID
	s.webhook(payment.TestEvent{Type: payment.EventRefundUpdated, RefundID: failed, RefundStatus: "failed",
		PaymentIntentID: *o.Payment.PaymentIntentID, Amount: o.Total, Currency: "usd"}).Expect(t, 200)
	s.staff("financial").Do("PATCH", path, nil).Expect(t, 202)

	errs, others := holdRefund(s, log, func(held *order.Service) error {
		return held.Refund(ctx, o.ID, order.ActorWorker, "copy one")
	})
	if gaveUp, err := others.FailAction(ctx, o.ID, order.ActionRefund, "copy two ran out of retries", true); err != nil || !gaveUp {
		t.Fatalf("compensation: %v, %v", gaveUp, err)
	}
	return o, failed, errs, others
}

// TestRefundMadeAgainAfterAnotherCopyGaveUp: the same for a refund made again after one that
// failed at Stripe. The copy that gave up cleared the request; the other's refund went through
// and is recorded in place of the failed one, so the order no longer shows the payment owed.
func TestRefundMadeAgainAfterAnotherCopyGaveUp(t *testing.T) {
	t.Parallel()
	s := newStack(t, noWorker)
	item := s.item(20, 700)
	o, failed, errs, _ := refundMadeAgainHeld(s, item, s.log)
	s.stripe.Gather(0)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if got := s.refunds(o.ID); len(got) != 1 || got[0].RefundID == failed || got[0].Status != "succeeded" {
		t.Fatalf("refunds %+v, want the one made again in place of %s", got, failed)
	}
	if st, action := s.status(o.ID); st != "REFUNDED" || action != "" {
		t.Fatalf("order %s (pending %q), want REFUNDED", st, action)
	}
	s.wantStock(item, 20, "released once")
}

// The same, with staff recording the payment returned outside Stripe while the copy is held:
// the copy's refund goes through at Stripe, the order keeps the outside refund, and the copy
// reports the money returned twice at ERROR instead of dropping it in silence.
func TestARefundMadeAfterOneRecordedOutsideStripeIsReported(t *testing.T) {
	t.Parallel()
	s := newStack(t, noWorker)
	var logs bytes.Buffer // read once the copy returned
	o, _, errs, others := refundMadeAgainHeld(s, s.item(20, 700), slog.New(slog.NewJSONHandler(&logs, nil)))
	if _, err := others.RefundOutside(context.Background(), uuid.NewString(), o.ID, order.OutsideRefundInput{Reference: "TR-9"}, nil); err != nil {
		t.Fatalf("refund outside Stripe: %v", err)
	}
	s.stripe.Gather(0)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if got := s.refunds(o.ID); len(got) != 1 || got[0].Method != "outside" || got[0].Status != "succeeded" {
		t.Fatalf("refunds %+v, want the one recorded outside Stripe kept", got)
	}
	if !strings.Contains(logs.String(), `"level":"ERROR","msg":"refund made at Stripe after the payment was recorded returned outside Stripe: returned twice"`) {
		t.Fatalf("the copy's log does not report the refund made twice:\n%s", logs.String())
	}
}

// TestARefundMadeAfterTheOrderShippedIsReported: a copy of a cancel task is held inside its
// refund while another copy runs out of retries and clears the cancel, and staff ship the
// order. The held refund goes through: the order cannot be canceled any more and keeps its
// status, and the copy reports the refund made at ERROR instead of dropping it in silence.
func TestARefundMadeAfterTheOrderShippedIsReported(t *testing.T) {
	t.Parallel()
	s := newStack(t, noWorker)
	item := s.item(20, 700)
	_, c := s.customer()
	o := s.order(c, 1, item)
	s.pay(o)
	ctx := context.Background()
	if err := s.assemble(s.rdb, s.stripe.URL, s.log).Orders.Process(ctx, o.ID); err != nil {
		t.Fatal(err)
	}
	s.staff("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", nil).Expect(t, 202)

	var logs bytes.Buffer // read once the copy returned
	errs, others := holdRefund(s, slog.New(slog.NewJSONHandler(&logs, nil)), func(held *order.Service) error {
		return held.Cancel(ctx, o.ID, order.ActorWorker, "copy one")
	})
	if gaveUp, err := others.FailAction(ctx, o.ID, order.ActionCancel, "copy two ran out of retries", true); err != nil || !gaveUp {
		t.Fatalf("compensation: %v, %v", gaveUp, err)
	}
	s.staff("shipper").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/ship",
		map[string]string{"trackingNumber": "T1", "carrier": "UPS"}).Expect(t, 200)
	s.stripe.Gather(0)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if st, action := s.status(o.ID); st != "SHIPPED" || action != "" {
		t.Fatalf("order %s (pending %q), want SHIPPED", st, action)
	}
	if !strings.Contains(logs.String(), `"level":"ERROR","msg":"refund made at Stripe for an order that moved on meanwhile; not recorded on it"`) ||
		!strings.Contains(logs.String(), `"status":"SHIPPED"`) {
		t.Fatalf("the copy's log does not report the refund made:\n%s", logs.String())
	}
	s.wantStock(item, 19, "the goods shipped")
}

// TestALateRefundThatWentThroughAfterAnotherCopyWasRefused: two copies of a late payment's
// refund task; one is held inside its Stripe call while the other is refused for good and
// records the refund as failed. The held one's refund goes through: it takes the refused
// one's place, so the order owes nothing, and the customer is told.
func TestALateRefundThatWentThroughAfterAnotherCopyWasRefused(t *testing.T) {
	t.Parallel()
	s := newStack(t, noWorker)
	item := s.item(20, 700)
	_, c := s.customer()
	o := s.order(c, 1, item)
	ctx := context.Background()
	orders := s.assemble(s.rdb, s.stripe.URL, s.log).Orders
	s.staff("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", nil).Expect(t, 202)
	if err := orders.Cancel(ctx, o.ID, order.ActorWorker, "unpaid"); err != nil {
		t.Fatal(err)
	}
	s.pay(o) // late
	if st, action := s.status(o.ID); st != "CANCELED" || action != "refund" {
		t.Fatalf("order %s/%q, want CANCELED with its late payment's refund pending", st, action)
	}

	errs, others := holdRefund(s, s.log, func(held *order.Service) error {
		return held.Refund(ctx, o.ID, order.ActorWorker, "copy one")
	})
	if failed, err := others.FailAction(ctx, o.ID, order.ActionRefund, "copy two refused: charge disputed", false); err != nil || !failed {
		t.Fatalf("compensation: %v, %v", failed, err)
	}
	if got := s.refunds(o.ID); len(got) != 1 || !strings.HasPrefix(got[0].RefundID, "refused_") || got[0].Status != "failed" {
		t.Fatalf("refunds %+v, want the refused one recorded", got)
	}
	notices := s.count(`SELECT count(*) FROM outbox WHERE payload->>'event' = 'order.refunded' AND payload->'data'->>'orderId' = $1`, o.ID.String())
	s.stripe.Gather(0)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if got := s.refunds(o.ID); len(got) != 1 || strings.HasPrefix(got[0].RefundID, "refused_") || got[0].Status == "failed" || got[0].Kind != "late_payment" {
		t.Fatalf("refunds %+v, want the one made in place of the refused one", got)
	}
	if st, action := s.status(o.ID); st != "CANCELED" || action != "" {
		t.Fatalf("order %s/%q, want CANCELED with nothing pending", st, action)
	}
	if n := s.count(`SELECT count(*) FROM outbox WHERE payload->>'event' = 'order.refunded' AND payload->'data'->>'orderId' = $1`, o.ID.String()); n != notices+1 {
		t.Fatalf("order.refunded notices %d, want one more than the %d before", n, notices)
	}
	s.staff("admin").Do("DELETE", "/v1/admin/orders/"+o.ID.String(), nil).Expect(t, 204) // owes nothing
}

// TestStrategiesRunConcurrentlyWithoutTheLock: the strategies are called directly from many
// goroutines at once, with no per-order lock, as a lock lost to a Redis failover would allow;
// the compare-and-set writes alone keep the effects single (SPEC §5: correctness never rests
// on the lock alone).
func TestStrategiesRunConcurrentlyWithoutTheLock(t *testing.T) {
	t.Parallel()
	s := newStack(t, noWorker)
	item := s.item(20, 700)
	uid, c := s.customer()
	toCancel, toRefund, toProcess := s.order(c, 1, item), s.order(c, 1, item), s.order(c, 1, item)
	for _, o := range []orderView{toCancel, toRefund, toProcess} {
		s.pay(o)
	}
	s.staff("financial").Do("PATCH", "/v1/admin/orders/"+toCancel.ID.String()+"/cancel", nil).Expect(t, 202)
	s.staff("financial").Do("PATCH", "/v1/admin/orders/"+toRefund.ID.String()+"/refund", nil).Expect(t, 202)

	// The services alone, as a worker runs them.
	orders := s.assemble(s.rdb, s.stripe.URL, s.log).Orders
	ctx := context.Background()
	const n = 10
	errs := make([]error, 3*n)
	parallel(3*n, func(i int) {
		switch i % 3 {
		case 0:
			errs[i] = orders.Cancel(ctx, toCancel.ID, order.ActorWorker, "race")
		case 1:
			errs[i] = orders.Refund(ctx, toRefund.ID, order.ActorWorker, "race")
		case 2:
			errs[i] = orders.Process(ctx, toProcess.ID)
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	for id, st := range map[uuid.UUID]string{toCancel.ID: "CANCELED", toRefund.ID: "REFUNDED", toProcess.ID: "PROCESSED"} {
		if got, action := s.status(id); got != st || action != "" {
			t.Fatalf("order %s is %s (pending %q), want %s", id, got, action, st)
		}
		if n := s.transitions(id, st); n != 1 {
			t.Fatalf("order %s: transitions to %s = %d, want 1", id, st, n)
		}
		s.assertNoRepeatedTransition(id)
	}
	for _, o := range []orderView{toCancel, toRefund} {
		if n := s.count(`SELECT count(*) FROM refunds WHERE order_id = $1`, o.ID); n != 1 {
			t.Fatalf("refund rows of order %s = %d, want 1", o.ID, n)
		}
	}
	// Concurrent refund calls may reach Stripe, but all under the order's one idempotency key:
	// Stripe makes one refund of them.
	for key := range s.refundCalls() {
		if key != "order-"+toCancel.ID.String()+"-refund" && key != "order-"+toRefund.ID.String()+"-refund" {
			t.Fatalf("refund call with unexpected idempotency key %q", key)
		}
	}
	if got := s.stock(item); got != 20-1 {
		t.Fatalf("stock = %d, want 19 (released once for each of two orders)", got)
	}
	// The relay turns the outbox rows into tasks; one notification of each kind per order.
	s.startWorkerWith(s.rdb, s.ns, nil)
	s.quiet()
	for id, ev := range map[uuid.UUID]string{toCancel.ID: notification.EventOrderCanceled,
		toRefund.ID: notification.EventOrderRefunded, toProcess.ID: notification.EventOrderProcessed} {
		if n := s.notifications(uid, id, ev); n != 1 {
			t.Fatalf("order %s: %s notifications = %d, want 1", id, ev, n)
		}
	}
}

// TestTwoRelaysDrainOneBacklog: two relays claim batches of the same 2,000-row backlog at the
// same time (the first holds its first batch uncommitted until the second has enqueued one);
// every row becomes exactly one task and one notification.
func TestTwoRelaysDrainOneBacklog(t *testing.T) {
	t.Parallel()
	s := newStack(t, noRelay, noWorker)
	const rows, batch = 2000, 50
	s.drainOutbox()
	ids := writeNotifyBacklog(t, s.db, s.userIDs(), rows)

	log := newTaskLog()
	s.startWorkerWith(s.rdb, s.ns, func(o *worker.Options) { o.Observe = log.observer() })

	var (
		mu        sync.Mutex
		delivered [2]int
		holding   atomic.Bool
		overlap   atomic.Bool
		bDuring   = make(chan struct{})
		closeOnce sync.Once
	)
	s.startRelayWith(s.rdb, s.ns, batch, 50*time.Millisecond, func(r *relay.Relay) {
		first := true
		r.Observe = func(n int, _ time.Duration) {
			mu.Lock()
			delivered[0] += n
			mu.Unlock()
			if first {
				first = false
				// Hold this batch (claimed, enqueued, not committed) until the other relay
				// has claimed and enqueued rows of its own past it.
				holding.Store(true)
				select {
				case <-bDuring:
				case <-time.After(20 * time.Second):
				}
				holding.Store(false)
			}
		}
	})
	testenv.Eventually(t, 30*time.Second, "the first relay holds its first batch", holding.Load)
	s.startRelayWith(s.rdb, s.ns, batch, 50*time.Millisecond, func(r *relay.Relay) {
		r.Observe = func(n int, _ time.Duration) {
			mu.Lock()
			delivered[1] += n
			mu.Unlock()
			if holding.Load() {
				overlap.Store(true)
				closeOnce.Do(func() { close(bDuring) })
			}
		}
	})

	q := newQueues(t, s.rdb, s.ns)
	waitQuiet(t, s.db, q, 90*time.Second)
	mu.Lock()
	a, b := delivered[0], delivered[1]
	mu.Unlock()
	if !overlap.Load() {
		t.Fatalf("the relays never held batches at the same time (delivered %d and %d)", a, b)
	}
	if a == 0 || b == 0 || a+b != rows {
		t.Fatalf("relays enqueued %d and %d rows, want both > 0 and %d in all", a, b, rows)
	}
	if got := log.count(tasks.NotifyUser, "success"); got != rows {
		t.Fatalf("notify:user tasks run = %d, want %d; %s", got, rows, log)
	}
	assertDeliveredOnce(t, s.db, ids)
}

// TestRelayCrashBetweenEnqueueAndCommit: a relay's batch is enqueued but its transaction never
// commits (the batch context ends between enqueue and commit, as in a crash); the rows stay,
// a later run delivers them again under the same task ids, Asynq refuses the copies, and every
// row has exactly one effect.
func TestRelayCrashBetweenEnqueueAndCommit(t *testing.T) {
	t.Parallel()
	s := newStack(t, noRelay, noWorker)
	const rows, batch = 300, 100
	s.drainOutbox()
	ids := writeNotifyBacklog(t, s.db, s.userIDs(), rows)
	log := newTaskLog()
	s.startWorkerWith(s.rdb, s.ns, func(o *worker.Options) { o.Observe = log.observer() })
	q := newQueues(t, s.rdb, s.ns)

	// Two crashed batches in a row: the same first batch is claimed and enqueued twice.
	for attempt := 0; attempt < 2; attempt++ {
		ctx, cancel := context.WithCancel(context.Background())
		crashing := relay.New(s.db, s.dbURL, s.rdb, s.ns, batch, time.Hour, s.log)
		observed := 0
		crashing.Observe = func(n int, _ time.Duration) { observed = n; cancel() }
		n, err := crashing.RunOnce(ctx)
		cancel()
		if err == nil || observed != batch {
			t.Fatalf("crashing batch: delivered %d, err %v, observed %d; want an error after %d enqueued", n, err, observed, batch)
		}
		// Nothing is marked handed off (the worker may already have run and deleted some).
		if marked := s.count(`SELECT count(*) FROM outbox WHERE deliveries > 0 AND id = ANY($1::bigint[])`, int64Array(ids)); marked != 0 {
			t.Fatalf("after the crash %d outbox rows are marked handed off, want none", marked)
		}
		for _, id := range ids[:batch] {
			if !q.taskExists(tasks.QueueNotifications, relay.TaskID(id)) {
				t.Fatalf("task %s of the crashed batch is not in Redis", relay.TaskID(id))
			}
		}
	}

	// The rows whose task never reached Redis: at least the 200 past the first batch, unless
	// the second crashed claim took some of them because the worker had already deleted rows
	// of the first (then those were enqueued, ran, and their rows are gone too).
	never := 0
	for _, id := range ids {
		if !q.taskExists(tasks.QueueNotifications, relay.TaskID(id)) {
			never++
		}
	}

	// The restarted relay hands off every row left (the worker meanwhile deletes the rows of
	// the crashed batch whose tasks it ran). A claim skips the rows a deletion in flight holds,
	// so an empty claim is final only once no row waits.
	r := relay.New(s.db, s.dbURL, s.rdb, s.ns, batch, time.Hour, s.log)
	total, waiting := 0, 0
	testenv.Eventually(t, 30*time.Second, "every row handed off or deleted", func() bool {
		n, err := r.RunOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		total += n
		waiting = s.count(`SELECT count(*) FROM outbox WHERE deliveries = 0 AND id = ANY($1::bigint[])`, int64Array(ids))
		return n == 0 && waiting == 0
	})
	if total < never || never < rows-2*batch {
		t.Fatalf("re-run delivered %d rows and left %d waiting; want at least the %d never enqueued, none left", total, waiting, never)
	}
	waitQuiet(t, s.db, q, 60*time.Second)
	if got := log.count(tasks.NotifyUser, "success"); got != rows {
		t.Fatalf("notify:user tasks run = %d, want %d (a duplicate enqueue ran twice); %s", got, rows, log)
	}
	assertDeliveredOnce(t, s.db, ids)
}
