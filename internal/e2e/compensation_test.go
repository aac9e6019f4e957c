package e2e_test

import (
	"net/url"
	"slices"
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

// Compensation (SPEC §5): what happens when a task fails for good.

// A payment whose amount differs from the order's total cannot be processed; that is permanent
// (no retry), and the compensation refunds what was captured.
func TestPaymentMismatchIsRefunded(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	o := r.place(c, 2, item)
	const captured = 2400 // the order is 2500

	r.paid(o, captured)
	r.waitStatus(o.ID, "REFUNDED")

	got := r.get(o.ID)
	if got.Refund == nil || got.Refund.Amount != captured || got.Refund.RefundID == "" || got.Refund.Kind != "order" {
		t.Fatalf("refund recorded: %s, want the %d captured", mustJSON(got.Refund), captured)
	}
	calls := r.refundCalls(o.ID)
	if len(calls) != 1 || calls[0].Status != 200 {
		t.Fatalf("refund calls: %+v, want one", calls)
	}
	r.wantStock(item, 10)
	if n := r.settledNotifications(uid, o.ID, notification.EventOrderFailed); n != 1 {
		t.Fatalf("order.failed notifications = %d, want 1", n)
	}
	if n := r.notifications(uid, o.ID, notification.EventOrderProcessed); n != 0 {
		t.Fatalf("order.processed notified for an order that failed processing")
	}
	ev := r.events(o.ID, "statusChanged", "PAID", "REFUNDED")
	if len(ev) != 1 || ev[0].Actor != "worker" || !strings.Contains(deref(ev[0].Reason), "paymentMismatch") {
		t.Fatalf("timeline %v: want one PAID→REFUNDED by the worker naming the mismatch", r.timeline(o.ID))
	}
	if n := len(r.events(o.ID, "statusChanged", "PAID", "PROCESSED")); n != 0 {
		t.Fatalf("the order was processed: %v", r.timeline(o.ID))
	}
	// Permanent: one attempt, no retry, one compensation.
	out := r.obs.outcomes(tasks.OrderProcess)
	if out["retry"] != 0 || out["failed"] != 1 || out["success"] != 0 {
		t.Fatalf("order:process attempts %v, want exactly one failed attempt", out)
	}
	if n := r.obs.compensationsOf(tasks.OrderProcess); n != 1 {
		t.Fatalf("compensations = %d, want 1", n)
	}
}

// A processing that fails for good whose refund Stripe refuses because the payment was refunded
// already (from Stripe's dashboard, or under the order's key more than 24 h before): the
// compensation finds that refund at Stripe and ends the order REFUNDED with it, rather than
// fail and leave the order PAID, run again and refused every ten minutes.
func TestProcessCompensationFindsARefundMadeAlready(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	_, c := r.customer()
	o := r.place(c, 2, item)
	r.stripe.Fail("POST", "/v1/refunds", testenv.Fault{Status: 400, Type: "invalid_request_error",
		Code: "charge_already_refunded", Message: "Charge has already been refunded."})
	r.stripeFindsRefund(o, "re_dashboard_"+o.ID.String()[:8])

	r.paid(o, 2400) // a mismatch: processing fails for good
	r.waitStatus(o.ID, "REFUNDED")
	got := r.refunds(o.ID)
	if len(got) != 1 || got[0].RefundID != "re_dashboard_"+o.ID.String()[:8] || got[0].Kind != "order" {
		t.Fatalf("refunds: %+v, want the one found at Stripe", got)
	}
	r.wantStock(item, 10)
}

// The refund refused, and what Stripe holds cannot end the order: a refund of only part of the
// payment (taken for all, the rest would never be returned), or a refusal of our own key reused
// with other parameters (our inconsistency, not an answer about the payment; Stripe's 24 hours
// clear it). The order stays PAID, nothing recorded, for staff or the stuck-order sweep.
func TestProcessCompensationLeavesPaidWhatItCannotEnd(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		refusal testenv.Fault
		found   func(o fullOrder) []map[string]any
	}{
		"a part refunded": {
			testenv.Fault{Status: 400, Type: "invalid_request_error", Code: "amount_too_large",
				Message: "Refund amount is greater than unrefunded amount on charge."},
			func(o fullOrder) []map[string]any {
				return []map[string]any{{"id": "re_part", "object": "refund", "amount": 1000, "currency": o.Currency,
					"status": "succeeded", "payment_intent": *o.Payment.PaymentIntentID}}
			},
		},
		"our key reused": {
			testenv.Fault{Status: 400, Type: "idempotency_error",
				Message: "Keys for idempotent requests can only be used with the same parameters they were first used with."},
			func(fullOrder) []map[string]any { return []map[string]any{} },
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			item := r.item(10, 1250)
			_, c := r.customer()
			o := r.place(c, 2, item)
			r.stripe.Fail("POST", "/v1/refunds", tc.refusal)
			r.stripe.Fail("GET", "/v1/refunds", testenv.Fault{Status: 200, Body: map[string]any{"object": "list", "has_more": false,
				"data": tc.found(o)}})

			r.paid(o, 2400) // a mismatch: processing fails for good
			testenv.Eventually(t, 30*time.Second, "the compensation tried", func() bool {
				return r.obs.outcomes(tasks.OrderProcess)["failed"] == 1
			})
			r.quiesce()
			if st, _ := r.status(o.ID); st != "PAID" || len(r.refunds(o.ID)) != 0 {
				t.Fatalf("order %s with refunds %+v, want PAID with none recorded", st, r.refunds(o.ID))
			}
		})
	}
}

// A failed processing whose refund Stripe refuses, none made before it: the order ends REFUNDED
// with the refund recorded as failed, owing its payment back, where it used to stay PAID and
// its refused compensation ran again every ten minutes. Staff then refund it again (or record
// it returned outside Stripe); until then it cannot be deleted.
func TestProcessCompensationRefusedLeavesThePaymentOwed(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	o := r.place(c, 2, item)
	r.stripe.Fail("POST", "/v1/refunds", testenv.Fault{Status: 400, Type: "invalid_request_error",
		Code: "charge_expired_for_refund", Message: "The charge is too old to be refunded."})
	r.stripe.Fail("GET", "/v1/refunds", testenv.Fault{Status: 200, Body: map[string]any{"object": "list", "has_more": false,
		"data": []map[string]any{}}}) // none made

	r.paid(o, 2400) // a mismatch: processing fails for good
	r.waitStatus(o.ID, "REFUNDED")
	r.quiesce()
	got := r.get(o.ID)
	if got.PendingAction != nil || got.Refund == nil || got.Refund.Status != "failed" || got.Refund.Kind != "order" ||
		got.Refund.Amount != 2400 || !strings.HasPrefix(got.Refund.RefundID, "refused_") {
		t.Fatalf("order %s/%q refund %s, want REFUNDED with a refused refund of 2400 recorded as failed",
			got.Status, deref(got.PendingAction), mustJSON(got.Refund))
	}
	if ev := r.events(o.ID, "statusChanged", "PAID", "REFUNDED"); len(ev) != 1 ||
		!strings.Contains(deref(ev[0].Reason), "refund refused by Stripe: The charge is too old to be refunded.") {
		t.Fatalf("timeline %v: want PAID → REFUNDED naming the refusal", r.timeline(o.ID))
	}
	if n := r.settledNotifications(uid, o.ID, notification.EventOrderFailed); n != 1 {
		t.Fatalf("order.failed notifications = %d, want 1", n)
	}
	r.wantStock(item, 10)
	if calls := r.refundCalls(o.ID); len(calls) != 1 || calls[0].Status != 400 || len(r.stripe.Calls("GET", "/v1/refunds")) == 0 {
		t.Fatalf("refund calls %+v, want one refused, then the refunds looked up", calls)
	}
	path := "/v1/admin/orders/" + o.ID.String()
	decodeError(t, r.as("admin").Do("DELETE", path, nil), 409, "orders.errors.refundOwed")

	r.stripe.Clear()
	r.as("financial").Do("PATCH", path+"/refund", nil).Expect(t, 202)
	testenv.Eventually(t, 30*time.Second, "the refund made again", func() bool {
		_, action := r.status(o.ID)
		return action == ""
	})
	r.quiesce()
	again := r.get(o.ID).Refund
	calls := r.refundCalls(o.ID)
	if again == nil || again.Status != "succeeded" || again.Method != "stripe" || len(calls) != 2 || calls[1].Status != 200 ||
		calls[1].IdempotencyKey != "order-"+o.ID.String()+"-refund-after-"+got.Refund.RefundID {
		t.Fatalf("refund %s after calls %+v, want one made again under the refused refund's key", mustJSON(again), calls)
	}
	r.as("admin").Do("DELETE", path, nil).Expect(t, 204)
	r.wantStock(item, 10)
}

// A payment in another currency is a mismatch too.
func TestPaymentInOtherCurrencyIsRefunded(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	_, c := r.customer()
	o := r.place(c, 1, item)
	r.webhook(paymentSucceeded(o, o.Total, "eur")).Expect(t, 200)
	r.waitStatus(o.ID, "REFUNDED")
	r.wantStock(item, 10)
	if n := len(r.refundCalls(o.ID)); n != 1 {
		t.Fatalf("refund calls = %d, want 1", n)
	}
}

// A refund whose Stripe call keeps failing: every retry is spent, then the compensation runs
// once: the pending action is cleared and the failure recorded; the status stays.
func TestRefundRetriesExhaustedIsCompensatedOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1000)
	_, c := r.customer()
	o := r.processed(c, 2, item)
	r.quiesce()
	r.stripe.Fail("POST", "/v1/refunds", testenv.Fault{Status: 500, Type: "api_error", Message: "boom"})

	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", nil).Expect(t, 202)
	testenv.Eventually(t, 30*time.Second, "refund compensated", func() bool {
		return len(r.events(o.ID, "actionFailed")) > 0
	})
	r.quiesce()
	testenv.Eventually(t, 30*time.Second, "task archived", func() bool { return r.archived(tasks.QueueOrders) == 1 })

	st, action := r.status(o.ID)
	if st != "PROCESSED" || action != "" {
		t.Fatalf("order %s/%q, want PROCESSED with no pending action", st, action)
	}
	failed := r.events(o.ID, "actionFailed")
	if len(failed) != 1 || failed[0].Actor != "worker" || !strings.HasPrefix(deref(failed[0].Reason), "refund failed") {
		t.Fatalf("actionFailed events: %v", failed)
	}
	out := r.obs.outcomes(tasks.OrderRefund)
	if out["retry"] != maxRetry || out["failed"] != 1 || out["success"] != 0 {
		t.Fatalf("order:refund attempts %v, want %d retries and one final failure", out, maxRetry)
	}
	if n := r.obs.compensationsOf(tasks.OrderRefund); n != 1 {
		t.Fatalf("compensations = %d, want 1", n)
	}
	calls := r.refundCalls(o.ID)
	if want := (1 + maxRetry) * stripeTriesPerCall; len(calls) != want {
		t.Fatalf("refund HTTP calls = %d, want %d (%d attempts × %d tries)", len(calls), want, 1+maxRetry, stripeTriesPerCall)
	}
	for _, call := range calls {
		if call.IdempotencyKey != calls[0].IdempotencyKey || call.IdempotencyKey == "" {
			t.Fatalf("refund attempts with different idempotency keys: %+v", calls)
		}
	}
	got := r.get(o.ID)
	if got.Refund != nil || got.RefundedAt != nil {
		t.Fatalf("a refund is recorded although none succeeded: %s", mustJSON(got))
	}
	r.wantStock(item, 8)

	// Staff can try again once Stripe answers.
	r.stripe.Clear()
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", nil).Expect(t, 202)
	r.waitStatus(o.ID, "REFUNDED")
	if s := r.stock(item); s != 10 {
		t.Fatalf("stock after the refund = %d, want 10", s)
	}
	if n := len(r.events(o.ID, "actionFailed")); n != 1 {
		t.Fatalf("actionFailed events = %d after the successful retry", n)
	}
}

// The same for order:cancel, whose Stripe call (canceling the PaymentIntent) keeps failing.
func TestCancelRetriesExhaustedIsCompensatedOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1000)
	_, c := r.customer()
	o := r.place(c, 3, item)
	r.quiesce()
	cancelPath := "/v1/payment_intents/" + *o.Payment.PaymentIntentID + "/cancel"
	r.stripe.Fail("POST", cancelPath, testenv.Fault{Status: 500, Type: "api_error", Message: "boom"})

	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", nil).Expect(t, 202)
	testenv.Eventually(t, 30*time.Second, "cancel compensated", func() bool {
		return len(r.events(o.ID, "actionFailed")) > 0
	})
	r.quiesce()
	testenv.Eventually(t, 30*time.Second, "task archived", func() bool { return r.archived(tasks.QueueOrders) == 1 })

	st, action := r.status(o.ID)
	if st != "PENDING" || action != "" {
		t.Fatalf("order %s/%q, want PENDING with no pending action", st, action)
	}
	failed := r.events(o.ID, "actionFailed")
	if len(failed) != 1 || !strings.HasPrefix(deref(failed[0].Reason), "cancel failed") {
		t.Fatalf("actionFailed events: %v", failed)
	}
	out := r.obs.outcomes(tasks.OrderCancel)
	if out["retry"] != maxRetry || out["failed"] != 1 || out["success"] != 0 {
		t.Fatalf("order:cancel attempts %v, want %d retries and one final failure", out, maxRetry)
	}
	if n := r.obs.compensationsOf(tasks.OrderCancel); n != 1 {
		t.Fatalf("compensations = %d, want 1", n)
	}
	if n, want := len(r.stripe.Calls("POST", cancelPath)), (1+maxRetry)*stripeTriesPerCall; n != want {
		t.Fatalf("PaymentIntent cancel calls = %d, want %d", n, want)
	}
	r.wantStock(item, 7, "still reserved")
	if got := r.get(o.ID); got.Payment.Status != "requires_payment_method" || got.CanceledAt != nil {
		t.Fatalf("order after the failed cancel: %s", mustJSON(got))
	}

	r.stripe.Clear()
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", nil).Expect(t, 202)
	r.waitStatus(o.ID, "CANCELED")
	if s := r.stock(item); s != 10 {
		t.Fatalf("stock after the cancel = %d, want 10", s)
	}
}

// A late payment whose refund runs out of retries is not left captured: the failure is on the
// timeline, the refund stays pending, and the stuck-order sweep runs it again once it has
// waited, until Stripe answers. The order stays CANCELED throughout.
func TestLateRefundRetriesExhaustedAreRunAgain(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1000)
	_, c := r.customer()
	o := r.lateRefundFailed(c, item, testenv.Fault{Status: 500, Type: "api_error", Message: "boom"})
	if st, action := r.status(o.ID); st != "CANCELED" || action != "refund" {
		t.Fatalf("order %s/%q, want CANCELED with the refund still pending", st, action)
	}
	// The failure counts as a change: the sweep's wait starts again from it, not from the payment.
	if r.count(`SELECT count(*) FROM orders o WHERE o.id = $1 AND o.updated_at >
		(SELECT max(created_at) FROM order_events WHERE order_id = o.id AND type = 'latePayment')`, o.ID) != 1 {
		t.Fatalf("updated_at not moved since the late payment: the sweep would run it at every pass; timeline %v", r.timeline(o.ID))
	}
	if got := r.refunds(o.ID); len(got) != 0 {
		t.Fatalf("refunds recorded although none succeeded: %+v", got)
	}
	// Staff cannot start a second one meanwhile.
	decodeError(t, r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", nil), 409, "orders.errors.actionPending")

	// Stripe answers again; the sweep finds the refund pending past StuckAfter and runs it again.
	r.stripe.Clear()
	if rep, err := r.sweepStuck(); err != nil || rep.Requeued != 1 {
		t.Fatalf("reconcile: %+v, %v; want the late refund requeued", rep, err)
	}
	r.lateRefunded(o)
	if len(r.events(o.ID, "lateRefund")) != 1 || len(r.events(o.ID, "taskRequeued")) != 1 || len(r.events(o.ID, "statusChanged", "CANCELED", "REFUNDED")) != 0 {
		t.Fatalf("timeline: %v", r.timeline(o.ID))
	}
	// Nothing is owed any more: a refund is refused like any on a CANCELED order.
	decodeError(t, r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", nil), 409, "orders.errors.badPreconditions")
	r.wantStock(item, 10, "released once")
}

// A late payment's refund that Stripe refuses (not a failure that may pass) is not tried again
// and again: the action is cleared with the failure on the timeline and the refund recorded as
// failed (the payment is owed back), and staff's refund of the CANCELED order returns the
// payment once Stripe takes it, telling the customer then.
func TestLateRefundRefusedByStripeIsLeftToStaff(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1000)
	uid, c := r.customer()
	o := r.lateRefundFailed(c, item, testenv.Fault{Status: 400, Type: "invalid_request_error", Code: "charge_disputed", Message: "disputed"})
	if st, action := r.status(o.ID); st != "CANCELED" || action != "" {
		t.Fatalf("order %s/%q, want CANCELED with no pending action", st, action)
	}
	if out := r.obs.outcomes(tasks.OrderRefund); out["retry"] != 0 || out["failed"] != 1 {
		t.Fatalf("order:refund attempts %v, want one, refused", out)
	}
	refused := r.refunds(o.ID)
	if len(refused) != 1 || refused[0].Kind != "late_payment" || refused[0].Status != "failed" || refused[0].Amount != o.Total ||
		!strings.HasPrefix(refused[0].RefundID, "refused_") {
		t.Fatalf("refunds %+v, want the refused one recorded as failed", refused)
	}
	if n := r.notifications(uid, o.ID, notification.EventOrderRefunded); n != 0 {
		t.Fatalf("order.refunded notifications = %d before any refund", n)
	}

	// While it owes the payment back, it cannot be deleted (deleted, no refund could reach it).
	decodeError(t, r.as("admin").Do("DELETE", "/v1/admin/orders/"+o.ID.String(), nil), 409, "orders.errors.refundOwed")

	r.stripe.Clear()
	var accepted fullOrder
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", nil).Expect(t, 202).Decode(t, &accepted)
	if accepted.Status != "CANCELED" || deref(accepted.PendingAction) != "refund" {
		t.Fatalf("202 body: %s/%q, want CANCELED with refund pending", accepted.Status, deref(accepted.PendingAction))
	}
	id := r.lateRefunded(o)
	calls := r.refundCalls(o.ID)
	if id == refused[0].RefundID || len(calls) == 0 || !strings.Contains(calls[len(calls)-1].IdempotencyKey, refused[0].RefundID) {
		t.Fatalf("refund %s, calls %+v: want one made again under a key naming %s", id, calls, refused[0].RefundID)
	}
	if n := r.settledNotifications(uid, o.ID, notification.EventOrderRefunded); n != 1 {
		t.Fatalf("order.refunded notifications = %d, want 1", n)
	}
	r.as("admin").Do("DELETE", "/v1/admin/orders/"+o.ID.String(), nil).Expect(t, 204) // owes nothing now
}

// An order deleted while it owed nothing, then paid late, whose automatic refund Stripe refuses:
// staff can still refund it (the order is hidden from reads, not from the money it owes).
func TestLateRefundOfADeletedOrderIsLeftToStaffToo(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1000)
	_, c := r.customer()
	o := r.canceled(c, 1, item)
	r.as("admin").Do("DELETE", "/v1/admin/orders/"+o.ID.String(), nil).Expect(t, 204)
	r.lateRefundFailedOf(o, testenv.Fault{Status: 400, Type: "invalid_request_error", Code: "charge_disputed", Message: "disputed"})

	r.stripe.Clear()
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", nil).Expect(t, 202)
	r.lateRefunded(o)
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", nil).Expect(t, 404) // owes nothing now
}

// A refund Stripe made while every answer to it was lost until the retries ran out: before it
// gives up, the compensation asks Stripe, finds the refund and ends the order REFUNDED with it,
// instead of recording a failure over money that is back with the customer.
func TestRefundMadeAtStripeWithItsAnswersLostIsFound(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1000)
	_, c := r.customer()
	o := r.processed(c, 2, item)
	r.quiesce()
	r.stripe.Fail("POST", "/v1/refunds", testenv.Fault{Status: 500, Type: "api_error", Message: "answer lost"})
	r.stripeFindsRefund(o, "re_made_"+o.ID.String()[:8])

	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", nil).Expect(t, 202)
	r.waitStatus(o.ID, "REFUNDED")
	r.quiesce()
	if st, action := r.status(o.ID); st != "REFUNDED" || action != "" {
		t.Fatalf("order %s/%q, want REFUNDED", st, action)
	}
	got := r.refunds(o.ID)
	if len(got) != 1 || got[0].RefundID != "re_made_"+o.ID.String()[:8] || got[0].Kind != "order" || got[0].Amount != o.Total {
		t.Fatalf("refunds: %+v", got)
	}
	if n := len(r.events(o.ID, "actionFailed")); n != 0 {
		t.Fatalf("actionFailed events = %d, want none: the refund was made", n)
	}
	if len(r.events(o.ID, "statusChanged", "PROCESSED", "REFUNDED")) != 1 {
		t.Fatalf("timeline: %v", r.timeline(o.ID))
	}
	if out := r.obs.outcomes(tasks.OrderRefund); out["failed"] != 1 {
		t.Fatalf("order:refund attempts %v, want its retries to run out", out)
	}
	r.wantStock(item, 10)
}

// The same for a late payment's refund: found at Stripe, it is recorded and the order stays
// CANCELED with nothing owed, rather than a failure over money already returned.
func TestLateRefundMadeAtStripeWithItsAnswersLostIsFound(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1000)
	_, c := r.customer()
	o := r.canceled(c, 1, item)
	r.stripe.Fail("POST", "/v1/refunds", testenv.Fault{Status: 500, Type: "api_error", Message: "answer lost"})
	r.stripeFindsRefund(o, "re_late_"+o.ID.String()[:8])

	r.paid(o) // late
	if id := r.lateRefunded(o); id != "re_late_"+o.ID.String()[:8] {
		t.Fatalf("late refund %s, want the one found at Stripe", id)
	}
	if len(r.events(o.ID, "actionFailed")) != 0 || len(r.events(o.ID, "lateRefund")) != 1 {
		t.Fatalf("timeline: %v", r.timeline(o.ID))
	}
	if out := r.obs.outcomes(tasks.OrderRefund); out["failed"] != 1 {
		t.Fatalf("order:refund attempts %v, want its retries to run out", out)
	}
	decodeError(t, r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", nil), 409, "orders.errors.badPreconditions")
	r.wantStock(item, 10, "released once")
}

// A refund that failed at Stripe after it was made (refund.updated failed: the card closed
// since, say) leaves the money with the shop. Staff's refund makes it again, once, under a key
// naming the failed refund; the order keeps its status and its stock. Until then the order
// cannot be deleted, and a second request after the new refund succeeded is refused as before.
// The same holds for a CANCELED order whose cancel refunded its payment.
func TestAFailedRefundIsMadeAgainOnStaffRequest(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1000)
	_, c := r.customer()
	refunded, canceled := r.refundedAndCanceled(c, item)
	stock := r.stock(item)

	for _, o := range []fullOrder{refunded, canceled} {
		path := "/v1/admin/orders/" + o.ID.String()
		first := r.get(o.ID).Refund
		if first == nil || first.Status != "succeeded" {
			t.Fatalf("refund: %s", mustJSON(first))
		}
		// Not failed: nothing is owed, a refund of a final order is refused as ever.
		decodeError(t, r.as("financial").Do("PATCH", path+"/refund", nil), 409, "orders.errors.badPreconditions")

		r.webhook(payment.TestEvent{ID: eventID(), Type: payment.EventRefundUpdated, RefundID: first.RefundID, RefundStatus: "failed",
			PaymentIntentID: *o.Payment.PaymentIntentID, Amount: first.Amount, Currency: "usd"}).Expect(t, 200)
		decodeError(t, r.as("admin").Do("DELETE", path, nil), 409, "orders.errors.refundOwed")

		status, _ := r.status(o.ID)
		var accepted fullOrder
		r.as("financial").Do("PATCH", path+"/refund", map[string]string{"reason": "card replaced"}).Expect(t, 202).Decode(t, &accepted)
		if accepted.Status != status || deref(accepted.PendingAction) != "refund" {
			t.Fatalf("202 body: %s/%q, want the status kept with refund pending", accepted.Status, deref(accepted.PendingAction))
		}
		testenv.Eventually(t, 30*time.Second, "the refund made again", func() bool {
			_, action := r.status(o.ID)
			return action == ""
		})
		r.quiesce()
		got := r.get(o.ID)
		if got.Refund == nil || got.Refund.Status != "succeeded" || got.Refund.RefundID == first.RefundID || got.Refund.Amount != first.Amount {
			t.Fatalf("refund after: %s, want a new one of %d succeeded (the failed was %s)", mustJSON(got.Refund), first.Amount, first.RefundID)
		}
		calls := r.refundCalls(o.ID)
		if len(calls) != 2 || calls[1].IdempotencyKey != "order-"+o.ID.String()+"-refund-after-"+first.RefundID {
			t.Fatalf("refund calls %+v, want the first and one under the failed refund's key", calls)
		}
		if ev := r.events(o.ID, "refundUpdated"); len(ev) != 2 || ev[1].Actor == "webhook" ||
			!strings.Contains(deref(ev[1].Reason), "made again after "+first.RefundID) {
			t.Fatalf("timeline %v: want the failure, then the refund made again by staff", r.timeline(o.ID))
		}
		decodeError(t, r.as("financial").Do("PATCH", path+"/refund", nil), 409, "orders.errors.badPreconditions")
		r.as("admin").Do("DELETE", path, nil).Expect(t, 204) // owes nothing now
	}
	if st, _ := r.status(refunded.ID); st != "REFUNDED" {
		t.Fatalf("refunded order %s", st)
	}
	if st, _ := r.status(canceled.ID); st != "CANCELED" {
		t.Fatalf("canceled order %s", st)
	}
	if s := r.stock(item); s != stock {
		t.Fatalf("stock %d, want %d: a refund made again releases nothing", s, stock)
	}
}

// A payment Stripe cannot return (a refund that failed at Stripe, of a refunded or a canceled
// order; a late payment whose automatic refund Stripe refused as too old) is returned by staff
// some other way and recorded: the refund becomes succeeded, by method outside, in place of the
// failed one; Stripe is only asked whether it holds a refund of the payment; a customer never
// told of a refund is told; status and stock stay; the order may then be deleted. Refused
// while nothing is owed, while Stripe holds a refund of the payment or cannot be asked (the
// key then released), to roles outside FINANCIAL, and without a reference; a retry under its
// key replays.
func TestARefundReturnedOutsideStripeIsRecorded(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1000)
	uid, c := r.customer()
	refunded, canceled := r.refundedAndCanceled(c, item)
	late := r.lateRefundFailed(c, item, testenv.Fault{Status: 400, Type: "invalid_request_error", Code: "charge_expired_for_refund",
		Message: "The charge is too old to be refunded."})
	stock := r.stock(item)

	outside := func(o fullOrder) string { return "/v1/admin/orders/" + o.ID.String() + "/refund/outside" }
	body := map[string]string{"reference": "  transfer TR-77  ", "reason": "card closed"}
	failed := map[uuid.UUID]string{}
	for _, o := range []fullOrder{refunded, canceled} {
		decodeError(t, r.as("financial").Do("PATCH", outside(o), body), 409, "orders.errors.nothingOwed")
		first := r.get(o.ID).Refund
		failed[o.ID] = first.RefundID
		r.webhook(payment.TestEvent{ID: eventID(), Type: payment.EventRefundUpdated, RefundID: first.RefundID, RefundStatus: "failed",
			PaymentIntentID: *o.Payment.PaymentIntentID, Amount: first.Amount, Currency: "usd"}).Expect(t, 200)
	}

	orders := []fullOrder{refunded, canceled, late}
	for _, o := range orders {
		for _, who := range []*testenv.Client{r.as("shipper"), r.as("delivery"), c} {
			decodeError(t, who.Do("PATCH", outside(o), body), 403, "auth.errors.forbidden")
		}
		decodeError(t, r.as("financial").Do("PATCH", outside(o), nil), 400, "common.errors.malformedJson")
		for _, bad := range []any{map[string]string{"reason": "no reference"}, map[string]string{"reference": "   "},
			map[string]string{"reference": strings.Repeat("r", 201)}, map[string]any{"reference": "TR-1", "amount": 1}} {
			decodeError(t, r.as("financial").Do("PATCH", outside(o), bad), 400, "common.errors.validation")
		}
	}
	// Stripe holds a refund of the payment (made with its answers lost): returning the money
	// another way too would pay it twice. Stripe unreachable: nothing is recorded either, and
	// the key is released for the retry.
	for _, o := range orders {
		found := "re_found_" + o.ID.String()[24:]
		r.stripeFindsRefund(o, found)
		if e := decodeError(t, r.as("financial").Do("PATCH", outside(o), body), 409, "orders.errors.refundAtStripe"); !strings.Contains(e.Message, found) {
			t.Fatalf("message %q does not name the refund %s", e.Message, found)
		}
		r.stripe.Clear()
		r.stripe.Fail("GET", "/v1/refunds", testenv.Fault{Status: 500, Type: "api_error", Message: "down"})
		resp := r.as("financial").Do("PATCH", outside(o), body, "Idempotency-Key", "outside-"+o.ID.String())
		decodeError(t, resp, 503, "payments.errors.gatewayUnavailable")
		if resp.Header.Get("Retry-After") == "" {
			t.Fatalf("Stripe down: no Retry-After")
		}
		r.stripe.Clear()
		if refunds := r.refunds(o.ID); len(refunds) > 1 || len(refunds) == 1 && refunds[0].Status != "failed" {
			t.Fatalf("refunds %+v, want the failed one alone", refunds)
		}
	}

	asked := len(r.stripe.Calls("POST", "/v1/refunds"))
	for _, o := range orders {
		key := "outside-" + o.ID.String() // the key Stripe's outage released
		was, _ := r.status(o.ID)
		told := r.notifications(uid, o.ID, notification.EventOrderRefunded)
		var got fullOrder
		r.as("financial").Do("PATCH", outside(o), body, "Idempotency-Key", key).Expect(t, 200).Decode(t, &got)
		wantKind := "order"
		if o.ID == late.ID {
			wantKind = "late_payment"
		}
		if got.Status != was || got.PendingAction != nil || got.Refund == nil || got.Refund.Method != "outside" || got.Refund.Kind != wantKind ||
			got.Refund.Status != "succeeded" || got.Refund.Amount != o.Total || !strings.HasPrefix(got.Refund.RefundID, "outside_") {
			t.Fatalf("order after: %s/%q refund %s, want %s with a refund (%s) of %d succeeded outside Stripe", got.Status,
				deref(got.PendingAction), mustJSON(got.Refund), was, wantKind, o.Total)
		}
		if replay := r.as("financial").Do("PATCH", outside(o), body, "Idempotency-Key", key).Expect(t, 200); replay.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("retry under its key: %s, want the stored answer replayed", replay.Body)
		}
		decodeError(t, r.as("financial").Do("PATCH", outside(o), body), 409, "orders.errors.nothingOwed")
		// Not Stripe's refund: an event naming it changes nothing.
		id := eventID()
		r.webhook(payment.TestEvent{ID: id, Type: payment.EventRefundUpdated, RefundID: got.Refund.RefundID, RefundStatus: "failed",
			PaymentIntentID: deref(o.Payment.PaymentIntentID), Amount: o.Total, Currency: "usd"}).Expect(t, 200)
		if out, refund := r.eventOutcome(id), r.get(o.ID).Refund; out != "ignored" || refund.Status != "succeeded" {
			t.Fatalf("refund.updated of the outside refund: outcome %q, refund %s; want it ignored", out, mustJSON(refund))
		}

		ev := r.events(o.ID, "refundedOutsideStripe")
		if len(ev) != 1 || ev[0].Actor == "worker" || !strings.Contains(deref(ev[0].Reason), "reference transfer TR-77: card closed") {
			t.Fatalf("timeline %v: want one refundedOutsideStripe by staff with the reference", r.timeline(o.ID))
		}
		if id, ok := failed[o.ID]; ok && !strings.Contains(deref(ev[0].Reason), "refund "+id+" failed") {
			t.Fatalf("reason %q does not name the failed refund %s", deref(ev[0].Reason), id)
		}
		// The refunded order's customer was told when it was refunded and is not told again (as
		// for a refund made again); the canceled order's heard only of the cancellation, the
		// late payment's of nothing: both are told now.
		if o.ID == refunded.ID && told != 1 || o.ID != refunded.ID && told != 0 {
			t.Fatalf("order.refunded notifications before = %d", told)
		}
		if n := r.settledNotifications(uid, o.ID, notification.EventOrderRefunded); n != 1 {
			t.Fatalf("order.refunded notifications = %d, want 1", n)
		}
		r.as("admin").Do("DELETE", "/v1/admin/orders/"+o.ID.String(), nil).Expect(t, 204) // owes nothing now
	}
	if calls := r.stripe.Calls("POST", "/v1/refunds"); len(calls) != asked {
		t.Fatalf("refund calls %+v: nothing more is asked of Stripe", calls[asked:])
	}
	r.wantStock(item, stock)
}

// TestStaffListTheOrdersOwingAPaymentBack: GET /v1/admin/orders?refundOwed=true lists exactly
// the orders that hold a payment they must return (a refund failed or canceled at Stripe, a
// late payment whose refund Stripe refused), across pages and with the other filters; the same
// orders the domain refuses to delete for the money they owe.
func TestStaffListTheOrdersOwingAPaymentBack(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(20, 1000)
	_, c := r.customer()
	failed, canceledAtStripe := r.refundedAndCanceled(c, item)
	refunded, canceled := r.refundedAndCanceled(c, item)
	for status, o := range map[string]fullOrder{"failed": failed, "canceled": canceledAtStripe} {
		refund := r.get(o.ID).Refund
		r.webhook(payment.TestEvent{ID: eventID(), Type: payment.EventRefundUpdated, RefundID: refund.RefundID, RefundStatus: status,
			PaymentIntentID: *o.Payment.PaymentIntentID, Amount: refund.Amount, Currency: "usd"}).Expect(t, 200)
	}
	processed, pending, unpaid := r.processed(c, 1, item), r.place(c, 1, item), r.canceled(c, 1, item)
	late := r.lateRefundFailed(c, item, testenv.Fault{Status: 400, Type: "invalid_request_error", Code: "charge_disputed", Message: "disputed"})
	r.stripe.Clear()

	list := func(query string) []uuid.UUID {
		t.Helper()
		var ids []uuid.UUID
		next := "/v1/admin/orders?" + query
		for range 10 {
			var p struct {
				Items      []fullOrder
				NextCursor *string
				HasMore    bool
			}
			r.as("financial").Do("GET", next, nil).Expect(t, 200).Decode(t, &p)
			for _, o := range p.Items {
				ids = append(ids, o.ID)
			}
			if !p.HasMore {
				return ids
			}
			next = "/v1/admin/orders?" + query + "&cursor=" + url.QueryEscape(deref(p.NextCursor))
		}
		t.Fatalf("%s: pagination does not end", query)
		return nil
	}
	same := func(query string, want ...fullOrder) {
		t.Helper()
		got := list(query)
		ids := make([]uuid.UUID, len(want))
		for i, o := range want {
			ids[i] = o.ID
		}
		slices.SortFunc(got, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
		slices.SortFunc(ids, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
		if !slices.Equal(got, ids) {
			t.Fatalf("?%s: %v, want %v", query, got, ids)
		}
	}
	all := []fullOrder{failed, canceledAtStripe, refunded, canceled, processed, pending, unpaid, late}
	same("refundOwed=true", failed, canceledAtStripe, late)
	same("refundOwed=true&limit=1", failed, canceledAtStripe, late)
	same("refundOwed=true&status=CANCELED", canceledAtStripe, late)
	same("refundOwed=true&status=PROCESSED")
	same("refundOwed=false", all...)
	for _, bad := range []string{"maybe", "", "1", "TRUE"} {
		decodeError(t, r.as("financial").Do("GET", "/v1/admin/orders?refundOwed="+bad, nil), 400, "common.errors.validation")
	}
	decodeError(t, r.as("shipper").Do("GET", "/v1/admin/orders?refundOwed=true", nil), 403, "auth.errors.forbidden")

	// The domain's own reading: an order in a final status that owes its payment is not deleted
	// for it; the others in one are.
	for _, o := range []fullOrder{failed, canceledAtStripe, late} {
		decodeError(t, r.as("admin").Do("DELETE", "/v1/admin/orders/"+o.ID.String(), nil), 409, "orders.errors.refundOwed")
	}
	for _, o := range []fullOrder{refunded, canceled, unpaid} {
		r.as("admin").Do("DELETE", "/v1/admin/orders/"+o.ID.String(), nil).Expect(t, 204)
	}
	// Returned outside Stripe, an order owes nothing any more.
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+late.ID.String()+"/refund/outside", map[string]string{"reference": "TR-5"}).Expect(t, 200)
	same("refundOwed=true", failed, canceledAtStripe)
}

// The refund made again after a failed one, when Stripe's answers to it are lost: refused under
// its key (asked again more than 24 h after a run that made it, every answer lost), or failing
// until the retries run out. Either way the refund Stripe made is looked up, recorded in place
// of the failed one, and the request ends; the order no longer owes the payment.
func TestARefundMadeAgainWithItsAnswersLostIsFound(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1000)
	_, c := r.customer()
	for _, fault := range []testenv.Fault{
		{Status: 400, Type: "invalid_request_error", Code: "charge_already_refunded", Message: "Charge has already been refunded."},
		{Status: 500, Type: "api_error", Message: "answer lost"},
	} {
		o := r.processed(c, 1, item)
		path := "/v1/admin/orders/" + o.ID.String()
		r.as("financial").Do("PATCH", path+"/refund", nil).Expect(t, 202)
		r.waitStatus(o.ID, "REFUNDED")
		r.quiesce()
		failed := r.get(o.ID).Refund.RefundID
		r.webhook(payment.TestEvent{ID: eventID(), Type: payment.EventRefundUpdated, RefundID: failed, RefundStatus: "failed",
			PaymentIntentID: *o.Payment.PaymentIntentID, Amount: o.Total, Currency: "usd"}).Expect(t, 200)

		again := "re_again_" + o.ID.String()[24:]
		r.stripe.Fail("POST", "/v1/refunds", fault)
		r.stripe.Fail("GET", "/v1/refunds", testenv.Fault{Status: 200, Body: map[string]any{"object": "list", "has_more": false,
			"data": []map[string]any{
				{"id": again, "object": "refund", "amount": o.Total, "currency": "usd", "status": "succeeded", "payment_intent": *o.Payment.PaymentIntentID},
				{"id": failed, "object": "refund", "amount": o.Total, "currency": "usd", "status": "failed", "payment_intent": *o.Payment.PaymentIntentID},
			}}})
		r.as("financial").Do("PATCH", path+"/refund", nil).Expect(t, 202)
		testenv.Eventually(t, 30*time.Second, "the request ended", func() bool {
			_, action := r.status(o.ID)
			return action == ""
		})
		r.quiesce()
		r.stripe.Clear()
		if got := r.refunds(o.ID); len(got) != 1 || got[0].RefundID != again || got[0].Status != "succeeded" {
			t.Fatalf("%s: refunds %+v, want %s found at Stripe in place of the failed one", fault.Message, got, again)
		}
		if n := len(r.events(o.ID, "actionFailed")); n != 0 {
			t.Fatalf("%s: actionFailed events = %d, want none: the refund was made", fault.Message, n)
		}
		// Refused, the task itself finds the refund (actor the staff member's); failing until
		// its retries ran out, its compensation does (actor worker).
		ev := r.events(o.ID, "refundUpdated")
		if byWorker := ev[len(ev)-1].Actor == order.ActorWorker; byWorker != (fault.Status == 500) {
			t.Fatalf("%s: timeline %v", fault.Message, r.timeline(o.ID))
		}
		r.as("admin").Do("DELETE", path, nil).Expect(t, 204) // owes nothing now
	}
}
