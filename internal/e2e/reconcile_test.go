package e2e_test

// The payment reconciler (SPEC §5): PENDING orders left behind by lost webhooks. Stripe's view
// of each PaymentIntent is set on the proxy (stripe-mock keeps no state); the reconciler runs
// at a chosen "now" instead of the test waiting for orders to age.

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// A payment whose webhook was lost: the reconciler finds it succeeded at Stripe and applies it
// exactly as the webhook would (PAID with actor "reconciler", order:process, the same
// notifications); the worker takes it on to PROCESSED. A second run and the webhook arriving
// after all change nothing.
func TestReconcilerAppliesALostPaymentLikeTheWebhook(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1500)
	uid, c := r.customer()

	// The reference: an order paid through the webhook.
	viaHook := r.place(c, 1, item)
	r.paid(viaHook)
	r.waitStatus(viaHook.ID, "PROCESSED")

	lost := r.place(c, 2, item)
	pi := *lost.Payment.PaymentIntentID
	r.stripeIntent(pi, payment.IntentSucceeded, lost.Total, lost.Currency)
	rec := r.reconciler()
	start := time.Now()

	// Younger than every threshold: not even looked up.
	if rep := rec.runAt(start.Add(4 * time.Minute)); rep != (order.ReconcileReport{}) {
		t.Fatalf("run at +4 min: %+v, want nothing checked", rep)
	}
	if n := r.intentLookups(pi); n != 0 {
		t.Fatalf("a 4-minute-old PaymentIntent was looked up %d times", n)
	}
	if st, a := r.status(lost.ID); st != "PENDING" || a != "" {
		t.Fatalf("order %s/%s after the early run", st, a)
	}

	// Past the PaymentIntent threshold (10 min): looked up once and applied.
	if rep := rec.runAt(start.Add(11 * time.Minute)); rep != (order.ReconcileReport{Checked: 1, Paid: 1}) {
		t.Fatalf("run at +11 min: %+v, want one order paid", rep)
	}
	if n := r.intentLookups(pi); n != 1 {
		t.Fatalf("PaymentIntent looked up %d times, want 1", n)
	}
	r.waitStatus(lost.ID, "PROCESSED")
	paid := r.events(lost.ID, "statusChanged", "PENDING", "PAID")
	if len(paid) != 1 || paid[0].Actor != order.ActorReconciler {
		t.Fatalf("PENDING→PAID events %v (actors %s), want one by the reconciler", paid, mustJSON(paid))
	}
	if processed := r.events(lost.ID, "statusChanged", "PAID", "PROCESSED"); len(processed) != 1 || processed[0].Actor != order.ActorWorker {
		t.Fatalf("PAID→PROCESSED events %s", mustJSON(processed))
	}
	got := r.get(lost.ID)
	if got.Payment.Status != "succeeded" || got.Payment.AmountReceived == nil || *got.Payment.AmountReceived != lost.Total ||
		got.Payment.ReceivedCurrency == nil || *got.Payment.ReceivedCurrency != lost.Currency {
		t.Fatalf("payment recorded from the reconciler's fetch: %s", mustJSON(got.Payment))
	}

	// The same notifications as the webhook path, each once.
	r.waitNotified(uid, lost.ID, notification.EventOrderProcessed)
	r.quiesce()
	hook, recon := r.notificationEvents(uid, viaHook.ID), r.notificationEvents(uid, lost.ID)
	if !maps.Equal(hook, recon) || recon[notification.EventOrderPaid] != 1 {
		t.Fatalf("notifications: reconciled %v, through the webhook %v; want the same, order.paid once", recon, hook)
	}

	// Running again changes nothing: the order is no longer PENDING.
	before := r.snapshot(lost)
	if rep := rec.runAt(start.Add(11 * time.Minute)); rep != (order.ReconcileReport{}) {
		t.Fatalf("second run: %+v, want nothing checked", rep)
	}
	// Nor does the lost webhook when it turns up after all.
	r.paid(lost)
	r.quiesce()
	if after := r.snapshot(lost); after != before {
		t.Fatalf("order changed after the second run and the late webhook:\n%+v\n%+v", before, after)
	}
	if n := r.notificationEvents(uid, lost.ID); !maps.Equal(n, recon) {
		t.Fatalf("notifications changed: %v, were %v", n, recon)
	}
	if n := r.intentLookups(pi); n != 1 {
		t.Fatalf("PaymentIntent looked up %d times, want 1", n)
	}
	r.wantStock(item, 7)
}

// A payment under way past ORDER_UNPAID_TTL (a bank debit stays processing for days) is left
// to end: Stripe refuses to cancel its PaymentIntent meanwhile, and asking every run failed the
// cancel every minute. Once the payment failed, the next run cancels the order.
func TestReconcilerLeavesAPaymentUnderWay(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 990)
	_, c := r.customer()
	o := r.place(c, 3, item)
	pi := *o.Payment.PaymentIntentID
	rec := r.reconciler()
	start := time.Now()

	r.stripeIntent(pi, payment.IntentProcessing, o.Total, o.Currency)
	for _, at := range []time.Duration{31 * time.Minute, 32 * time.Minute} {
		if rep := rec.runAt(start.Add(at)); rep != (order.ReconcileReport{Checked: 1}) {
			t.Fatalf("run at +%s with the payment under way: %+v, want one order checked and left", at, rep)
		}
	}
	if st, a := r.status(o.ID); st != "PENDING" || a != "" {
		t.Fatalf("order %s/%q with its payment under way, want PENDING and no action", st, a)
	}
	if n := len(r.events(o.ID, "cancelRequested")); n != 0 {
		t.Fatalf("%d cancels requested with the payment under way", n)
	}

	r.stripe.Clear() // stripe-mock: requires_payment_method
	if rep := rec.runAt(start.Add(33 * time.Minute)); rep != (order.ReconcileReport{Checked: 1, Canceled: 1}) {
		t.Fatalf("run once the payment failed: %+v, want the order canceled", rep)
	}
	r.waitStatus(o.ID, "CANCELED")
	r.wantStock(item, 10, "released")
}

// An order unpaid past ORDER_UNPAID_TTL is canceled through order:cancel: its PaymentIntent is
// canceled at Stripe (one call, with the order's idempotency key) and its stock released.
// Before the TTL the order is looked up and left alone; a second run does nothing.
func TestReconcilerCancelsOrdersUnpaidPastTheTTL(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	if r.cfg.OrderUnpaidTTL != 30*time.Minute {
		t.Fatalf("ORDER_UNPAID_TTL default = %s, want 30m", r.cfg.OrderUnpaidTTL)
	}
	item := r.item(10, 990)
	uid, c := r.customer()
	o := r.place(c, 3, item)
	pi := *o.Payment.PaymentIntentID
	rec := r.reconciler()
	start := time.Now()

	// 11 minutes: old enough to ask Stripe (stripe-mock says requires_payment_method), too young
	// to cancel.
	if rep := rec.runAt(start.Add(11 * time.Minute)); rep != (order.ReconcileReport{Checked: 1}) {
		t.Fatalf("run at +11 min: %+v, want one order checked and left", rep)
	}
	if n := r.intentLookups(pi); n != 1 {
		t.Fatalf("PaymentIntent looked up %d times, want 1", n)
	}
	if st, a := r.status(o.ID); st != "PENDING" || a != "" {
		t.Fatalf("order %s/%s before the TTL", st, a)
	}
	if n := len(r.intentCancels(o)); n != 0 {
		t.Fatalf("PaymentIntent canceled %d times before the TTL", n)
	}

	// Past the TTL: canceled.
	if rep := rec.runAt(start.Add(31 * time.Minute)); rep != (order.ReconcileReport{Checked: 1, Canceled: 1}) {
		t.Fatalf("run at +31 min: %+v, want one order canceled", rep)
	}
	req := r.events(o.ID, "cancelRequested")
	if len(req) != 1 || req[0].Actor != order.ActorReconciler || deref(req[0].Reason) != "unpaid after 30m0s" {
		t.Fatalf("cancelRequested events %s", mustJSON(req))
	}
	r.waitStatus(o.ID, "CANCELED")
	if ev := r.events(o.ID, "statusChanged", "PENDING", "CANCELED"); len(ev) != 1 || ev[0].Actor != order.ActorReconciler {
		t.Fatalf("PENDING→CANCELED events %s", mustJSON(ev))
	}
	cancels := r.intentCancels(o)
	if len(cancels) != 1 || !strings.HasPrefix(cancels[0].IdempotencyKey, "order-"+o.ID.String()+"-cancel-intent-") {
		t.Fatalf("PaymentIntent cancel calls %+v, want one with the order's key", cancels)
	}
	r.wantStock(item, 10, "released")
	if got := r.get(o.ID); got.Payment.Status != "canceled" || got.CanceledAt == nil {
		t.Fatalf("canceled order: payment %s, canceledAt %v", got.Payment.Status, got.CanceledAt)
	}
	if n := r.settledNotifications(uid, o.ID, notification.EventOrderCanceled); n != 1 {
		t.Fatalf("order.canceled notifications = %d, want 1", n)
	}

	before := r.snapshot(o)
	if rep := rec.runAt(start.Add(31 * time.Minute)); rep != (order.ReconcileReport{}) {
		t.Fatalf("second run: %+v, want nothing checked", rep)
	}
	r.quiesce()
	if after := r.snapshot(o); after != before {
		t.Fatalf("the second run changed the order:\n%+v\n%+v", before, after)
	}
	if n := len(r.intentCancels(o)); n != 1 {
		t.Fatalf("PaymentIntent canceled %d times, want 1", n)
	}
	if s := r.stock(item); s != 10 {
		t.Fatalf("stock = %d after the second run, want 10", s)
	}
}

// Orders left without a PaymentIntent are canceled even while Stripe is down: the PaymentIntent
// a create may have made is unpayable (its client secret never left the API), so its cancel is
// tried, logged when it fails, and holds neither the order nor its stock; once Stripe is found
// down, the rest of the run does not try it (a hanging Stripe would hold each order for its
// timeouts).
func TestOrdersWithoutAPaymentIntentAreCanceledWhileStripeIsDown(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	uid, c := r.customer()
	now := time.Now().Add(time.Minute)
	item := r.item(10, 700)
	var ids []uuid.UUID
	for range 3 {
		id := r.orderWithoutIntent(c, uid, 2, item)
		r.setAge(id, now, 6*time.Minute)
		ids = append(ids, id)
	}
	r.quiesce()
	rec := r.reconciler()
	rec.policy.Lookups = 1 // one order after the other: the first finds Stripe down
	before := len(r.stripe.Calls("POST", "/v1/payment_intents"))
	r.stripe.Fail("POST", "/v1/payment_intents", testenv.Fault{Status: 503, Type: "api_error", Message: "down"})
	if rep := rec.runAt(now); rep != (order.ReconcileReport{Checked: 3, Canceled: 3}) {
		t.Fatalf("run with Stripe down: %+v, want the orders canceled", rep)
	}
	for _, id := range ids {
		if st, _ := r.status(id); st != "CANCELED" {
			t.Fatalf("order %s: %s after the run, want CANCELED", id, st)
		}
	}
	if s := r.stock(item); s != 10 {
		t.Fatalf("stock %d after the run, want 10: released", s)
	}
	if lines := rec.logLines("was not canceled"); len(lines) != 3 {
		t.Fatalf("log lines %v, want one per order", lines)
	}
	if cancels := r.stripe.Calls("POST", "/v1/payment_intents/"); len(cancels) != 0 {
		t.Fatalf("PaymentIntent calls %+v, want none: no PaymentIntent was got back", cancels)
	}
	keys := map[string]int{}
	for _, call := range r.stripe.Calls("POST", "/v1/payment_intents")[before:] {
		keys[call.IdempotencyKey]++
	}
	if len(keys) != 1 {
		t.Fatalf("PaymentIntent creates during the run, by key: %v; want one order's tries alone", keys)
	}
	for _, id := range ids {
		if keys["order-"+id.String()+"-intent"] == stripeTriesPerCall {
			return
		}
	}
	t.Fatalf("PaymentIntent creates during the run, by key: %v; want %d tries under one order's key", keys, stripeTriesPerCall)
}

// One run over orders in every situation: a PaymentIntent Stripe does not know (404: skipped
// and logged), one paid and one canceled at Stripe, an order that never got a PaymentIntent
// (canceled at once, after the one a create may have made unrecorded), and orders younger than their thresholds (untouched).
// The unknown PaymentIntent does not stop the run; a second run changes nothing more.
func TestReconcilerRunOverMixedOrders(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	uid, c := r.customer()
	now := time.Now().Add(time.Minute)

	type tracked struct {
		name  string
		id    uuid.UUID
		pi    string
		item  uuid.UUID
		stock int64 // left after the order
	}
	place := func(name string, age time.Duration, stripeSays string) tracked {
		item := r.item(10, 700)
		o := r.place(c, 2, item)
		pi := *o.Payment.PaymentIntentID
		switch stripeSays {
		case "unknown":
			r.stripeForgets(pi)
		case payment.IntentSucceeded, payment.IntentCanceled:
			r.stripeIntent(pi, stripeSays, o.Total, o.Currency)
		}
		r.setAge(o.ID, now, age)
		return tracked{name: name, id: o.ID, pi: pi, item: item, stock: 8}
	}
	withoutIntent := func(name string, age time.Duration) tracked {
		item := r.item(10, 700)
		id := r.orderWithoutIntent(c, uid, 2, item)
		r.setAge(id, now, age)
		return tracked{name: name, id: id, item: item, stock: 8}
	}
	gone := place("unknown at Stripe", 20*time.Minute, "unknown")
	paidAtStripe := place("paid at Stripe", 12*time.Minute, payment.IntentSucceeded)
	canceledAtStripe := place("canceled at Stripe", 15*time.Minute, payment.IntentCanceled)
	noIntent := withoutIntent("no PaymentIntent", 6*time.Minute)
	youngIntent := place("PaymentIntent 7 min old", 7*time.Minute, payment.IntentSucceeded) // selected, not looked up
	fresh := place("PaymentIntent 3 min old", 3*time.Minute, payment.IntentCanceled)
	youngNoIntent := withoutIntent("no PaymentIntent, 4 min old", 4*time.Minute)
	r.quiesce()
	stripeCallsBefore := len(r.stripe.Calls("POST", "/"))

	rec := r.reconciler()
	rep := rec.runAt(now)
	if want := (order.ReconcileReport{Checked: 5, Paid: 1, Canceled: 2, Skipped: 1}); rep != want {
		t.Fatalf("report %+v, want %+v", rep, want)
	}
	// Canceled at once, synchronously, with no task; then the PaymentIntent a create that died
	// may have made: the create sent again under the order's key, what it got canceled.
	if st, a := r.status(noIntent.id); st != "CANCELED" || a != "" {
		t.Fatalf("order without PaymentIntent is %s/%s right after the run, want CANCELED", st, a)
	}
	if ev := r.events(noIntent.id, "statusChanged", "PENDING", "CANCELED"); len(ev) != 1 || ev[0].Actor != order.ActorReconciler ||
		deref(ev[0].Reason) != "no payment intent after 5m0s" {
		t.Fatalf("%s: PENDING→CANCELED events %s", noIntent.name, mustJSON(ev))
	}
	if s := r.stock(noIntent.item); s != 10 {
		t.Fatalf("%s: stock = %d right after the run, want 10", noIntent.name, s)
	}

	// The rest settles through the worker.
	r.waitStatus(paidAtStripe.id, "PROCESSED")
	r.waitStatus(canceledAtStripe.id, "CANCELED")
	r.waitNotified(uid, canceledAtStripe.id, notification.EventOrderCanceled)
	r.waitNotified(uid, noIntent.id, notification.EventOrderCanceled)
	r.waitNotified(uid, paidAtStripe.id, notification.EventOrderProcessed)
	r.quiesce()

	if ev := r.events(paidAtStripe.id, "statusChanged", "PENDING", "PAID"); len(ev) != 1 || ev[0].Actor != order.ActorReconciler {
		t.Fatalf("%s: PENDING→PAID events %s", paidAtStripe.name, mustJSON(ev))
	}
	req := r.events(canceledAtStripe.id, "cancelRequested")
	if len(req) != 1 || req[0].Actor != order.ActorReconciler || deref(req[0].Reason) != "payment intent canceled" {
		t.Fatalf("%s: cancelRequested events %s", canceledAtStripe.name, mustJSON(req))
	}
	if ev := r.events(canceledAtStripe.id, "statusChanged", "PENDING", "CANCELED"); len(ev) != 1 || ev[0].Actor != order.ActorReconciler {
		t.Fatalf("%s: PENDING→CANCELED events %s", canceledAtStripe.name, mustJSON(ev))
	}
	if n := len(r.stripe.Calls("POST", "/v1/payment_intents/"+canceledAtStripe.pi+"/cancel")); n != 0 {
		t.Fatalf("%s: the PaymentIntent Stripe reported canceled was canceled again %d times", canceledAtStripe.name, n)
	}
	if got := r.get(canceledAtStripe.id); got.Payment.Status != "canceled" {
		t.Fatalf("%s: payment status %q", canceledAtStripe.name, got.Payment.Status)
	}
	for _, o := range []tracked{canceledAtStripe, noIntent} {
		if s := r.stock(o.item); s != 10 {
			t.Errorf("%s: stock = %d, want 10 (released)", o.name, s)
		}
		if n := r.notifications(uid, o.id, notification.EventOrderCanceled); n != 1 {
			t.Errorf("%s: order.canceled notifications = %d, want 1", o.name, n)
		}
	}

	// Skipped, logged with the order's id, and left exactly as it was.
	skipped := rec.logLines("Stripe does not know the PaymentIntent")
	if len(skipped) != 1 || skipped[0]["orderId"] != gone.id.String() || skipped[0]["paymentIntentId"] != gone.pi {
		t.Fatalf("skip log lines %v, want one naming order %s", skipped, gone.id)
	}
	for _, o := range []tracked{gone, youngIntent, fresh, youngNoIntent} {
		if st, a := r.status(o.id); st != "PENDING" || a != "" {
			t.Errorf("%s: %s/%s, want PENDING untouched", o.name, st, a)
		}
		if tl := r.timeline(o.id); len(tl) != 1 {
			t.Errorf("%s: timeline %v, want only its creation", o.name, tl)
		}
		if s := r.stock(o.item); s != o.stock {
			t.Errorf("%s: stock = %d, want %d (still reserved)", o.name, s, o.stock)
		}
	}
	lookups := map[string]int{gone.name: 1, paidAtStripe.name: 1, canceledAtStripe.name: 1, youngIntent.name: 0, fresh.name: 0}
	for _, o := range []tracked{gone, paidAtStripe, canceledAtStripe, youngIntent, fresh} {
		if n := r.intentLookups(o.pi); n != lookups[o.name] {
			t.Errorf("%s: PaymentIntent looked up %d times, want %d", o.name, n, lookups[o.name])
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	calls := r.stripe.Calls("POST", "/")[stripeCallsBefore:]
	if len(calls) != 2 || calls[0].Path != "/v1/payment_intents" || calls[0].IdempotencyKey != "order-"+noIntent.id.String()+"-intent" ||
		!strings.HasSuffix(calls[1].Path, "/cancel") || !strings.HasPrefix(calls[1].IdempotencyKey, "order-"+noIntent.id.String()+"-cancel-intent-pi_") {
		t.Fatalf("Stripe calls that change something during the run: %+v; want %s's PaymentIntent created again under its key and canceled", calls, noIntent.name)
	}

	// A second run: the unknown PaymentIntent is skipped again, nothing else changes.
	all := []tracked{gone, paidAtStripe, canceledAtStripe, noIntent, youngIntent, fresh, youngNoIntent}
	snaps := map[uuid.UUID]string{}
	for _, o := range all {
		snaps[o.id] = snapshotOf(r, o.id)
	}
	if rep := rec.runAt(now); rep != (order.ReconcileReport{Checked: 2, Skipped: 1}) {
		t.Fatalf("second run: %+v, want the unknown PaymentIntent skipped and the young one left", rep)
	}
	r.quiesce()
	for _, o := range all {
		if s := snapshotOf(r, o.id); s != snaps[o.id] {
			t.Errorf("%s changed in the second run:\n%s\n%s", o.name, snaps[o.id], s)
		}
	}
}

// snapshotOf is an order's status, timeline length, payment, stock of its lines and
// notifications, rendered for comparison.
func snapshotOf(r *rig, id uuid.UUID) string {
	st, a := r.status(id)
	var stock []int64
	if err := r.db.Select(&stock, `SELECT i.stock FROM order_lines l JOIN items i ON i.id = l.item_id WHERE l.order_id = $1 ORDER BY i.id`, id); err != nil {
		r.t.Fatal(err)
	}
	return fmt.Sprintf("%s/%s events=%d outbox=%d payment=%s stock=%v notifications=%d", st, a, len(r.timeline(id)), r.outboxRows(id),
		mustJSON(r.get(id).Payment), stock, r.count(`SELECT count(*) FROM notifications WHERE data->>'orderId' = $1`, id.String()))
}

// A run is bounded: it stops at MaxOrders or its time budget, says where, and the next run
// resumes there, so a backlog of any size is looked at exactly once per pass.
func TestReconcilerRunsAreBoundedAndResume(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	_, c := r.customer()
	now := time.Now().Add(time.Minute)
	item := r.item(100, 300)
	var intents []string
	for range 12 {
		o := r.place(c, 1, item)
		r.setAge(o.ID, now, 12*time.Minute) // looked up, still unpaid, not yet past the TTL
		intents = append(intents, *o.Payment.PaymentIntentID)
	}
	r.quiesce()
	rec := r.reconciler()

	rec.policy.MaxOrders = 5
	var runs []int
	var from *order.PendingOrder
	for {
		rep := rec.resume(now, from)
		runs = append(runs, rep.Checked)
		if from = rep.Next; from == nil || len(runs) > 5 {
			break
		}
	}
	if fmt.Sprint(runs) != "[5 5 2]" {
		t.Fatalf("orders checked per run %v, want [5 5 2]", runs)
	}
	for _, pi := range intents {
		if n := r.intentLookups(pi); n != 1 {
			t.Errorf("PaymentIntent %s looked up %d times over one pass, want 1", pi, n)
		}
	}

	// Over its time budget a run still takes one order, so every run moves on.
	rec.policy.MaxOrders, rec.policy.Budget = 0, time.Nanosecond
	rep := rec.runAt(now)
	if rep.Checked != 1 || rep.Next == nil {
		t.Fatalf("a run over budget: %+v, want one order checked and a position to resume at", rep)
	}
	if rep = rec.resume(now, rep.Next); rep.Checked != 1 || rep.Next == nil {
		t.Fatalf("the next run over budget: %+v, want the following order", rep)
	}
	if n := r.intentLookups(intents[1]); n != 2 {
		t.Fatalf("second order looked up %d times after two passes, want 2", n)
	}
}

// Refunds Stripe took as under way whose refund.updated event never brought the outcome: one
// event came before the worker recorded the refund (and found nothing to update), the other
// was lost. Once a refund has been under way for ten minutes the reconciler asks Stripe about
// it and records a settled one as the event would have, actor "reconciler"; one still under
// way is asked about again only after ten more minutes; a settled one never.
func TestReconcilerSettlesRefundsTheirEventsLeftUnderWay(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1500)
	_, c := r.customer()
	early, lost := r.processed(c, 1, item), r.processed(c, 1, item)
	r.quiesce()
	refundEvent := func(o fullOrder, refund, status string) string {
		id := eventID()
		r.webhook(payment.TestEvent{ID: id, Type: payment.EventRefundUpdated, RefundID: refund, RefundStatus: status,
			PaymentIntentID: *o.Payment.PaymentIntentID, Amount: o.Total, Currency: o.Currency}).Expect(t, 200)
		return id
	}
	stripeRefund := func(o fullOrder, refund, status string) {
		r.stripe.Fail("GET", "/v1/refunds/"+refund, testenv.Fault{Status: 200, Body: map[string]any{"id": refund, "object": "refund",
			"amount": o.Total, "currency": o.Currency, "status": status, "payment_intent": *o.Payment.PaymentIntentID}})
	}
	refundOf := func(o fullOrder) string {
		got := r.refunds(o.ID)
		if len(got) != 1 {
			t.Fatalf("refunds of %s: %+v, want one", o.ID, got)
		}
		return got[0].Status
	}
	reconciled := func(o fullOrder) []timelineEvent {
		var out []timelineEvent
		for _, e := range r.events(o.ID, "refundUpdated") {
			if e.Actor == order.ActorReconciler {
				out = append(out, e)
			}
		}
		return out
	}

	earlyRefund := r.refundUnderWay(early)
	ignored := refundEvent(early, earlyRefund, "succeeded") // before the worker has recorded the refund
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+early.ID.String()+"/refund", nil).Expect(t, 202)
	r.waitStatus(early.ID, "REFUNDED")
	lostRefund := r.refundUnderWay(lost)
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+lost.ID.String()+"/refund", nil).Expect(t, 202)
	r.waitStatus(lost.ID, "REFUNDED")
	r.quiesce()
	if out := r.eventOutcome(ignored); out != "ignored" || refundOf(early) != "pending" || refundOf(lost) != "pending" {
		t.Fatalf("early event %q; refunds %s / %s, want both recorded pending", out, refundOf(early), refundOf(lost))
	}
	// Under way, a refund may still fail: the order cannot be deleted yet.
	decodeError(t, r.as("admin").Do("DELETE", "/v1/admin/orders/"+lost.ID.String(), nil), 409, "orders.errors.refundOwed")
	stripeRefund(early, earlyRefund, "succeeded")
	stripeRefund(lost, lostRefund, "pending")
	lookups := func() int { return len(r.stripe.Calls("GET", "/v1/refunds/")) }
	rec := r.reconciler()
	start := time.Now()

	if rep := rec.runAt(start.Add(4 * time.Minute)); rep != (order.ReconcileReport{}) || lookups() != 0 {
		t.Fatalf("run at +4 min: %+v, %d lookups; want none", rep, lookups())
	}
	if rep := rec.runAt(start.Add(11 * time.Minute)); rep != (order.ReconcileReport{Refunds: 1}) || lookups() != 2 {
		t.Fatalf("run at +11 min: %+v, %d lookups; want both looked up, one settled", rep, lookups())
	}
	if refundOf(early) != "succeeded" || refundOf(lost) != "pending" {
		t.Fatalf("refunds %s / %s, want succeeded / pending", refundOf(early), refundOf(lost))
	}
	if ev := reconciled(early); len(ev) != 1 || deref(ev[0].Reason) != "refund succeeded" {
		t.Fatalf("timeline %v: want one refundUpdated by the reconciler", r.timeline(early.ID))
	}
	if rep := rec.runAt(start.Add(15 * time.Minute)); rep != (order.ReconcileReport{}) || lookups() != 2 {
		t.Fatalf("run at +15 min: %+v, %d lookups; the refund under way was asked about 4 min before", rep, lookups())
	}

	r.stripe.Clear()
	stripeRefund(lost, lostRefund, "failed")
	if rep := rec.runAt(start.Add(22 * time.Minute)); rep != (order.ReconcileReport{Refunds: 1}) || lookups() != 3 {
		t.Fatalf("run at +22 min: %+v, %d lookups; want the refund under way asked about again, settled", rep, lookups())
	}
	if ev := reconciled(lost); refundOf(lost) != "failed" || len(ev) != 1 || deref(ev[0].Reason) != "refund failed" {
		t.Fatalf("refund %s, timeline %v: want failed, noted by the reconciler", refundOf(lost), r.timeline(lost.ID))
	}
	if rep := rec.runAt(start.Add(60 * time.Minute)); rep != (order.ReconcileReport{}) || lookups() != 3 {
		t.Fatalf("run at +60 min: %+v, %d lookups; settled refunds are not asked about", rep, lookups())
	}
	for _, o := range []fullOrder{early, lost} {
		if st, _ := r.status(o.ID); st != "REFUNDED" {
			t.Fatalf("order %s, want REFUNDED", st)
		}
	}
	if lines := rec.logLines("refund did not go through"); len(lines) != 1 || lines[0]["level"] != "WARN" {
		t.Fatalf("log: want one warning of the failed refund:\n%s", rec.log.String())
	}
}

// Stripe down or not knowing a refund: the run goes on, a failed lookup is counted, and both
// are asked about again ten minutes later (so that they do not hold up the other refunds).
func TestReconcilerRefundLookupsThatFail(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1500)
	_, c := r.customer()
	down, gone := r.processed(c, 1, item), r.processed(c, 1, item)
	r.quiesce()
	ids := map[uuid.UUID]string{}
	for _, o := range []fullOrder{down, gone} {
		ids[o.ID] = r.refundUnderWay(o)
		r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", nil).Expect(t, 202)
		r.waitStatus(o.ID, "REFUNDED")
	}
	r.quiesce()
	r.stripe.Fail("GET", "/v1/refunds/"+ids[down.ID], testenv.Fault{Status: 503, Type: "api_error", Message: "down"})
	r.stripe.Fail("GET", "/v1/refunds/"+ids[gone.ID], testenv.Fault{Status: 404, Type: "invalid_request_error",
		Code: "resource_missing", Message: "No such refund"})
	rec := r.reconciler()
	start := time.Now()
	if rep := rec.runAt(start.Add(11 * time.Minute)); rep != (order.ReconcileReport{Failed: 1}) {
		t.Fatalf("run at +11 min: %+v, want one failed lookup", rep)
	}
	calls := func() (int, int) {
		return len(r.stripe.Calls("GET", "/v1/refunds/"+ids[down.ID])), len(r.stripe.Calls("GET", "/v1/refunds/"+ids[gone.ID]))
	}
	downCalls, goneCalls := calls()
	if rep := rec.runAt(start.Add(12 * time.Minute)); rep != (order.ReconcileReport{}) {
		t.Fatalf("run at +12 min: %+v, want nothing asked", rep)
	}
	if d, g := calls(); d != downCalls || g != goneCalls || goneCalls != 1 {
		t.Fatalf("lookups %d / %d, then %d / %d; want one of the unknown refund, none at +12 min", downCalls, goneCalls, d, g)
	}
	if rep := rec.runAt(start.Add(22 * time.Minute)); rep != (order.ReconcileReport{Failed: 1}) {
		t.Fatalf("run at +22 min: %+v, want both asked about again, one failed", rep)
	}
	if d, g := calls(); d <= downCalls || g != 2 {
		t.Fatalf("lookups at +22 min: %d / %d", d, g)
	}
	if len(rec.logLines("Stripe does not know the refund")) != 2 {
		t.Fatalf("log: %s", rec.log.String())
	}
	for _, o := range []fullOrder{down, gone} {
		if got := r.refunds(o.ID); len(got) != 1 || got[0].Status != "pending" {
			t.Fatalf("refunds %+v, want one still pending", got)
		}
	}
}

// An order the reconciler is canceling for being unpaid, paid before the cancel runs: the
// cancel's reason no longer holds (SPEC §5: a handler acts only while its precondition holds),
// so it is withdrawn and the order processed, not canceled and refunded.
func TestAnUnpaidCancelIsWithdrawnWhenThePaymentArrives(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 990)
	uid, c := r.customer()
	o := r.place(c, 1, item)
	rec := r.reconciler()
	r.quiesce()
	r.pauseWorker()
	if rep := rec.runAt(time.Now().Add(31 * time.Minute)); rep != (order.ReconcileReport{Checked: 1, Canceled: 1}) {
		t.Fatalf("run at +31 min: %+v, want the order's cancel asked for", rep)
	}
	r.paid(o)
	r.resumeWorker()
	r.waitStatus(o.ID, "PROCESSED")
	r.quiesce()
	if st, a := r.status(o.ID); st != "PROCESSED" || a != "" {
		t.Fatalf("order %s/%q, want PROCESSED with no pending action", st, a)
	}
	ev := r.events(o.ID, "cancelWithdrawn")
	if len(ev) != 1 || ev[0].Actor != order.ActorWorker || deref(ev[0].Reason) != "paid after all (unpaid after 30m0s)" {
		t.Fatalf("cancelWithdrawn events %s", mustJSON(ev))
	}
	if n := r.transitions(o.ID, "CANCELED"); n != 0 || len(r.refundCalls(o.ID)) != 0 || len(r.intentCancels(o)) != 0 {
		t.Fatalf("canceled %d times, %d refund calls, %d PaymentIntent cancels; want none: %v",
			n, len(r.refundCalls(o.ID)), len(r.intentCancels(o)), r.timeline(o.ID))
	}
	if n := r.settledNotifications(uid, o.ID, notification.EventOrderProcessed); n != 1 {
		t.Fatalf("order.processed notifications = %d, want 1", n)
	}
	if n := r.notifications(uid, o.ID, notification.EventOrderCanceled); n != 0 {
		t.Fatalf("order.canceled notifications = %d, want none", n)
	}
	r.wantStock(item, 9)
}

// A cancel staff asked for stands when the payment arrives first, even run by a task that
// carries the reconciler's name (as requeued tasks did): who asked is the timeline's.
func TestAStaffCancelRequeuedByTheReconcilerStillRefunds(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 990)
	_, c := r.customer()
	o := r.place(c, 1, item)
	r.quiesce()
	r.pauseRelay()
	r.pauseWorker()
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", nil).Expect(t, 202)
	if res, err := r.db.Exec(`UPDATE outbox SET payload = jsonb_set(payload, '{actor}', to_jsonb($2::text))
		WHERE type = $3 AND payload->>'orderId' = $1`, o.ID.String(), order.ActorReconciler, tasks.OrderCancel); err != nil {
		t.Fatal(err)
	} else if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%d cancel rows", n)
	}
	r.paid(o)
	r.resumeRelay()
	r.resumeWorker()
	r.waitStatus(o.ID, "CANCELED")
	r.quiesce()
	if got := r.get(o.ID); got.Refund == nil || got.Refund.Amount != o.Total {
		t.Fatalf("canceled order %s, want its payment refunded", mustJSON(got))
	}
	if ev := r.events(o.ID, "cancelWithdrawn"); len(ev) != 0 {
		t.Fatalf("staff's cancel withdrawn: %s", mustJSON(ev))
	}
}

// A cancel or refund whose task was lost, and that the stuck-order sweep asks for again, ends
// the order in the name of the staff member who asked, with their reason: the timeline and the
// customer's notification tell their decision, not "order:cancel did not run in time".
func TestARequeuedActionKeepsWhoAskedAndWhy(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 700)
	_, c := r.customer()
	for _, tc := range []struct {
		action, reason, from, end string
		order                     func() fullOrder
	}{
		{"cancel", "customer phoned", "PENDING", "CANCELED", func() fullOrder { return r.place(c, 1, item) }},
		{"refund", "damaged in transit", "PROCESSED", "REFUNDED", func() fullOrder { return r.processed(c, 1, item) }},
	} {
		o := tc.order()
		r.quiesce()
		r.pauseRelay()
		r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/"+tc.action, map[string]string{"reason": tc.reason}).Expect(t, 202)
		if _, err := r.db.Exec(`DELETE FROM outbox WHERE payload->>'orderId' = $1`, o.ID.String()); err != nil { // the task is lost
			t.Fatal(err)
		}
		if rep, err := r.sweepStuck(); err != nil || rep.Requeued != 1 {
			t.Fatalf("%s: reconcile %+v, %v; want the action requeued", tc.action, rep, err)
		}
		r.resumeRelay()
		r.waitStatus(o.ID, tc.end)
		r.quiesce()
		asked := r.events(o.ID, tc.action+"Requested")
		ended := r.events(o.ID, "statusChanged", tc.from, tc.end)
		if len(asked) != 1 || len(ended) != 1 || len(r.events(o.ID, "taskRequeued")) != 1 {
			t.Fatalf("%s: timeline %v", tc.action, r.timeline(o.ID))
		}
		if ended[0].Actor != asked[0].Actor || deref(ended[0].Reason) != tc.reason {
			t.Fatalf("%s: ended by %q for %q, want %q for %q (timeline %v)", tc.action, ended[0].Actor, deref(ended[0].Reason),
				asked[0].Actor, tc.reason, r.timeline(o.ID))
		}
	}
}
