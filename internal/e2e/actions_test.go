package e2e_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// Cancel and refund requested by staff, run by the worker (SPEC §3 Orders, §4).

func TestCancelPendingOrder(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	o := r.place(c, 2, item)
	if got := r.stock(item); got != 8 {
		t.Fatalf("stock after order = %d, want 8", got)
	}

	var accepted fullOrder
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", map[string]string{"reason": "customer asked"}).
		Expect(t, 202).Decode(t, &accepted)
	if accepted.ID != o.ID || accepted.Status != "PENDING" || deref(accepted.PendingAction) != "cancel" {
		t.Fatalf("202 body: status %s pendingAction %v", accepted.Status, deref(accepted.PendingAction))
	}

	r.waitStatus(o.ID, "CANCELED")
	got := r.get(o.ID)
	if got.CanceledAt == nil || got.Payment.Status != "canceled" || got.Refund != nil {
		t.Fatalf("canceled order: %s", mustJSON(got))
	}
	if s := r.stock(item); s != 10 {
		t.Fatalf("stock after cancel = %d, want 10", s)
	}
	calls := r.intentCancels(o)
	if len(calls) != 1 || calls[0].Status != 200 || calls[0].IdempotencyKey == "" {
		t.Fatalf("PaymentIntent cancel calls at Stripe: %+v, want one successful call with an idempotency key", calls)
	}
	if n := len(r.refundCalls(o.ID)); n != 0 {
		t.Fatalf("%d refund calls for an order that captured nothing", n)
	}
	if n := r.settledNotifications(uid, o.ID, notification.EventOrderCanceled); n != 1 {
		t.Fatalf("order.canceled notifications = %d, want 1", n)
	}

	req := r.events(o.ID, "cancelRequested")
	changed := r.events(o.ID, "statusChanged", "PENDING", "CANCELED")
	if len(req) != 1 || len(changed) != 1 {
		t.Fatalf("timeline %v: want one cancelRequested and one statusChanged PENDING→CANCELED", r.timeline(o.ID))
	}
	if deref(req[0].Reason) != "customer asked" || req[0].From != nil || req[0].To != nil {
		t.Fatalf("cancelRequested event: %v", req[0])
	}
	fin := r.as("financial")
	var me struct{ ID uuid.UUID }
	fin.Do("GET", "/v1/users/me", nil).Expect(t, 200).Decode(t, &me)
	if req[0].Actor != me.ID.String() || changed[0].Actor != me.ID.String() {
		t.Fatalf("actors %q / %q, want the financial user %s", req[0].Actor, changed[0].Actor, me.ID)
	}
}

// Each cancel request asks Stripe under a key of its own: Stripe answers a key with its first
// answer for a day, a refusal too, and a cancel refused while a payment was under way must be
// able to succeed once that payment failed.
func TestEachCancelRequestHasItsOwnStripeKey(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	_, c := r.customer()
	o := r.place(c, 2, item)
	r.cancelRefused(o, payment.IntentProcessing)

	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", nil).Expect(t, 202)
	testenv.Eventually(t, 30*time.Second, "the refused cancel failed", func() bool {
		return len(r.events(o.ID, "actionFailed")) == 1
	})
	refused := r.intentCancels(o)
	if len(refused) == 0 {
		t.Fatal("no cancel call reached Stripe")
	}

	r.stripe.Clear() // the payment failed: the PaymentIntent can be canceled
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", nil).Expect(t, 202)
	r.waitStatus(o.ID, "CANCELED")
	calls := r.intentCancels(o)
	prefix := "order-" + o.ID.String() + "-cancel-intent-"
	first, last := calls[0].IdempotencyKey, calls[len(calls)-1].IdempotencyKey
	if !strings.HasPrefix(first, prefix) || !strings.HasPrefix(last, prefix) || first == last || calls[len(calls)-1].Status != 200 {
		t.Fatalf("cancel calls %+v: want the second request's under a key of its own, answered 200", calls)
	}
	for _, call := range refused {
		if call.IdempotencyKey != first {
			t.Fatalf("one request's cancel calls under several keys: %+v", refused)
		}
	}
	r.wantStock(item, 10)
}

func TestCancelProcessedOrderRefundsThePayment(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	o := r.processed(c, 2, item)

	var accepted fullOrder
	r.as("admin").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", nil).Expect(t, 202).Decode(t, &accepted)
	if deref(accepted.PendingAction) != "cancel" || accepted.Status != "PROCESSED" {
		t.Fatalf("202 body: %s", mustJSON(accepted))
	}
	r.waitStatus(o.ID, "CANCELED")

	got := r.get(o.ID)
	if got.Refund == nil || got.Refund.Status != "succeeded" || !strings.HasPrefix(got.Refund.RefundID, "re_") ||
		got.Refund.Amount != o.Total || got.Refund.Kind != "order" {
		t.Fatalf("refund on the canceled order: %s", mustJSON(got.Refund))
	}
	if got.Payment.Status != "succeeded" {
		t.Fatalf("payment status %q: the captured payment stays recorded", got.Payment.Status)
	}
	calls := r.refundCalls(o.ID)
	if len(calls) != 1 || calls[0].Status != 200 {
		t.Fatalf("refund calls: %+v, want one", calls)
	}
	if n := len(r.intentCancels(o)); n != 0 {
		t.Fatalf("%d PaymentIntent cancel calls for a captured payment", n)
	}
	if s := r.stock(item); s != 10 {
		t.Fatalf("stock after cancel = %d, want 10", s)
	}
	if rs := r.refunds(o.ID); len(rs) != 1 || rs[0].Amount != o.Total {
		t.Fatalf("refund rows: %+v", rs)
	}
	if n := r.settledNotifications(uid, o.ID, notification.EventOrderCanceled); n != 1 {
		t.Fatalf("order.canceled notifications = %d, want 1", n)
	}
	if len(r.events(o.ID, "statusChanged", "PROCESSED", "CANCELED")) != 1 {
		t.Fatalf("timeline: %v", r.timeline(o.ID))
	}
}

func TestRefundDeliveredOrderKeepsStock(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	o := r.processed(c, 2, item)
	r.ship(o.ID)
	r.deliver(o.ID)

	var accepted fullOrder
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", map[string]string{"reason": "damaged"}).
		Expect(t, 202).Decode(t, &accepted)
	if deref(accepted.PendingAction) != "refund" || accepted.Status != "DELIVERED" {
		t.Fatalf("202 body: %s", mustJSON(accepted))
	}
	r.waitStatus(o.ID, "REFUNDED")

	got := r.get(o.ID)
	if got.Refund == nil || got.Refund.Amount != o.Total || got.Refund.RefundID == "" || got.Refund.Status != "succeeded" ||
		got.RefundedAt == nil {
		t.Fatalf("refunded order: %s", mustJSON(got))
	}
	if n := len(r.refundCalls(o.ID)); n != 1 {
		t.Fatalf("refund calls = %d, want 1", n)
	}
	if s := r.stock(item); s != 8 {
		t.Fatalf("stock after refunding delivered goods = %d, want 8 (the goods left)", s)
	}
	if n := r.settledNotifications(uid, o.ID, notification.EventOrderRefunded); n != 1 {
		t.Fatalf("order.refunded notifications = %d, want 1", n)
	}
	ev := r.events(o.ID, "statusChanged", "DELIVERED", "REFUNDED")
	if len(ev) != 1 || deref(ev[0].Reason) != "damaged" || len(r.events(o.ID, "refundRequested")) != 1 {
		t.Fatalf("timeline: %v", r.timeline(o.ID))
	}
}

func TestRefundProcessedOrderRestocks(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a, b := r.item(10, 1250), r.item(5, 300)
	uid, c := r.customer()
	o := r.processed(c, 2, a, b)

	r.as("admin").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", nil).Expect(t, 202)
	r.waitStatus(o.ID, "REFUNDED")
	got := r.get(o.ID)
	if got.Refund == nil || got.Refund.Amount != 3100 || o.Total != 3100 {
		t.Fatalf("refund %s of order total %d", mustJSON(got.Refund), o.Total)
	}
	if sa, sb := r.stock(a), r.stock(b); sa != 10 || sb != 5 {
		t.Fatalf("stock after refund = %d, %d, want 10, 5", sa, sb)
	}
	if n := len(r.refundCalls(o.ID)); n != 1 {
		t.Fatalf("refund calls = %d, want 1", n)
	}
	if n := r.settledNotifications(uid, o.ID, notification.EventOrderRefunded); n != 1 {
		t.Fatalf("order.refunded notifications = %d, want 1", n)
	}
}

// While a cancel or refund is pending, every other action on the order is refused.
func TestActionPendingRefusesOtherActions(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1000)
	_, c := r.customer()
	processed := r.processed(c, 1, item)
	shipped := r.processed(c, 1, item)
	r.ship(shipped.ID)
	r.quiesce()
	r.pauseWorker()

	id, sid := processed.ID.String(), shipped.ID.String()
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+id+"/cancel", nil).Expect(t, 202)
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+sid+"/refund", nil).Expect(t, 202)

	for _, tc := range []struct {
		role, path string
		body       any
	}{
		{"shipper", "/v1/admin/orders/" + id + "/ship", map[string]string{"trackingNumber": "T1", "carrier": "UPS"}},
		{"delivery", "/v1/admin/orders/" + sid + "/deliver", nil},
		{"financial", "/v1/admin/orders/" + id + "/cancel", nil},
		{"financial", "/v1/admin/orders/" + id + "/refund", nil},
		{"financial", "/v1/admin/orders/" + sid + "/cancel", nil}, // refused for the pending action, whatever the status
		{"financial", "/v1/admin/orders/" + sid + "/refund", nil},
		{"admin", "/v1/admin/orders/" + id, map[string]string{"status": "SHIPPED", "trackingNumber": "T", "carrier": "UPS"}},
		{"admin", "/v1/admin/orders/" + sid, map[string]string{"status": "DELIVERED"}},
		{"admin", "/v1/admin/orders/" + id, map[string]string{"status": "REFUNDED"}},
	} {
		decodeError(t, r.as(tc.role).Do("PATCH", tc.path, tc.body), 409, "orders.errors.actionPending")
	}
	decodeError(t, r.as("admin").Do("DELETE", "/v1/admin/orders/"+id, nil), 409, "orders.errors.notFinal")

	if st, a := r.status(processed.ID); st != "PROCESSED" || a != "cancel" {
		t.Fatalf("processed order now %s/%s", st, a)
	}
	if st, a := r.status(shipped.ID); st != "SHIPPED" || a != "refund" {
		t.Fatalf("shipped order now %s/%s", st, a)
	}
	if n := len(r.events(processed.ID, "cancelRequested")) + len(r.events(processed.ID, "refundRequested")); n != 1 {
		t.Fatalf("processed order has %d action requests, want 1: %v", n, r.timeline(processed.ID))
	}

	// The queued tasks run once a worker is back.
	r.resumeWorker()
	r.waitStatus(processed.ID, "CANCELED")
	r.waitStatus(shipped.ID, "REFUNDED")
	r.wantStock(item, 9, "the canceled order's unit back, the shipped one gone")
}

// Refused at request time: a target not reachable from the current status answers 409 at once
// and queues nothing (SPEC §11).
func TestWrongStatusIsRefusedAndQueuesNothing(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(20, 1000)
	_, c := r.customer()
	pending := r.place(c, 1, item)
	processed := r.processed(c, 1, item)
	delivered := r.processed(c, 1, item)
	r.ship(delivered.ID)
	r.deliver(delivered.ID)
	canceled := r.place(c, 1, item)
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+canceled.ID.String()+"/cancel", nil).Expect(t, 202)
	r.waitStatus(canceled.ID, "CANCELED")
	r.quiesce()
	r.pauseRelay() // from here on, any outbox row stays where it can be counted

	type attempt struct {
		order      fullOrder
		role, verb string
		body       any
	}
	ship := map[string]string{"trackingNumber": "T1", "carrier": "UPS"}
	shipStatus := map[string]string{"status": "SHIPPED", "trackingNumber": "T1", "carrier": "UPS"}
	attempts := []attempt{
		{pending, "shipper", "ship", ship},
		{pending, "delivery", "deliver", nil},
		{pending, "financial", "refund", nil},
		{pending, "admin", "", shipStatus},
		// An admin PATCH is judged on its target before the ship fields: an order that cannot
		// ship is a 409 even when they are missing.
		{pending, "admin", "", map[string]string{"status": "SHIPPED"}},
		{canceled, "admin", "", map[string]string{"status": "SHIPPED", "carrier": "UPS"}},
		{pending, "admin", "", map[string]string{"status": "DELIVERED"}},
		{pending, "admin", "", map[string]string{"status": "REFUNDED"}},
		{pending, "admin", "", map[string]string{"status": "PROCESSED"}},
		{processed, "delivery", "deliver", map[string]any{}},
		{processed, "admin", "", map[string]string{"status": "DELIVERED"}},
		{processed, "admin", "", map[string]string{"status": "PAID"}},
		{delivered, "shipper", "ship", ship},
		{delivered, "delivery", "deliver", nil},
		{delivered, "financial", "cancel", nil},
		{delivered, "admin", "", map[string]string{"status": "CANCELED"}},
		{delivered, "admin", "", shipStatus},
		{canceled, "shipper", "ship", ship},
		{canceled, "delivery", "deliver", nil},
		{canceled, "financial", "cancel", map[string]string{"reason": "again"}},
		{canceled, "financial", "refund", nil},
		{canceled, "admin", "", map[string]string{"status": "CANCELED"}},
		{canceled, "admin", "", map[string]string{"status": "REFUNDED"}},
		{canceled, "admin", "", map[string]string{"status": "PENDING"}},
	}
	before := map[uuid.UUID]int{}
	for _, o := range []fullOrder{pending, processed, delivered, canceled} {
		before[o.ID] = len(r.timeline(o.ID))
	}
	// The ship route checks its body first: without its fields it is a 400 on any order, as a
	// request validated before it is sent would be.
	shipPath := "/v1/admin/orders/" + pending.ID.String() + "/ship"
	decodeError(t, r.as("shipper").Do("PATCH", shipPath, map[string]any{}), 400, "common.errors.validation")
	decodeError(t, r.as("shipper").Do("PATCH", shipPath, map[string]any{"carrier": "UPS", "trackingNumber": " "}), 400, "common.errors.validation")
	// A reason is text people read: at most 500 characters, no control characters.
	orderPath := "/v1/admin/orders/" + pending.ID.String()
	for _, reason := range []string{strings.Repeat("r", 501), "wipe \u001b[2J the screen"} {
		decodeError(t, r.as("financial").Do("PATCH", orderPath+"/cancel", map[string]string{"reason": reason}), 400, "common.errors.validation")
		decodeError(t, r.as("admin").Do("PATCH", orderPath, map[string]string{"status": "CANCELED", "reason": reason}), 400, "common.errors.validation")
	}
	for _, a := range attempts {
		path := "/v1/admin/orders/" + a.order.ID.String()
		if a.verb != "" {
			path += "/" + a.verb
		}
		e := decodeError(t, r.as(a.role).Do("PATCH", path, a.body), 409, "orders.errors.badPreconditions")
		// The message names the current status ("Cannot change order to X from Y.").
		if cur, _ := r.status(a.order.ID); !strings.Contains(e.Message, "from "+cur) {
			t.Errorf("%s %s: message %q does not name the status %s", a.role, path, e.Message, cur)
		}
	}
	want := map[uuid.UUID]string{pending.ID: "PENDING", processed.ID: "PROCESSED", delivered.ID: "DELIVERED", canceled.ID: "CANCELED"}
	for id, st := range want {
		if got, a := r.status(id); got != st || a != "" {
			t.Errorf("order %s is %s/%q after refused requests, want %s", id, got, a, st)
		}
		if n := r.outboxRows(id); n != 0 {
			t.Errorf("order %s: %d outbox rows written by refused requests", id, n)
		}
		if n := len(r.timeline(id)); n != before[id] {
			t.Errorf("order %s: timeline grew from %d to %d", id, before[id], n)
		}
	}
	if n := r.outboxBacklog(); n != 0 {
		t.Fatalf("%d outbox rows after refused requests", n)
	}
}

func TestAdminStatusPatchValidation(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1000)
	uid, c := r.customer()
	o := r.processed(c, 1, item)
	path := "/v1/admin/orders/" + o.ID.String()
	admin := r.as("admin")

	for _, body := range []any{
		map[string]string{"status": "SHIPPED"},
		map[string]string{"status": "SHIPPED", "trackingNumber": "T1"},
		map[string]string{"status": "SHIPPED", "carrier": "UPS"},
		map[string]string{"status": "SHIPPED", "trackingNumber": "  ", "carrier": "UPS"},
	} {
		e := decodeError(t, admin.Do("PATCH", path, body), 400, "common.errors.validation")
		if !e.hasDetail("trackingNumber") && !e.hasDetail("carrier") {
			t.Errorf("%v: details %+v name neither ship field", body, e.Details)
		}
	}
	for _, st := range []string{"LOST", "shipped", ""} {
		e := decodeError(t, admin.Do("PATCH", path, map[string]string{"status": st}), 400, "common.errors.validation")
		if !e.hasDetail("status") {
			t.Errorf("status %q: details %+v", st, e.Details)
		}
	}
	decodeError(t, admin.Do("PATCH", path, map[string]any{"status": "SHIPPED", "extra": 1}), 400, "common.errors.validation")
	decodeError(t, admin.Do("PATCH", path, map[string]string{"status": "PAID"}), 409, "orders.errors.badPreconditions")
	// Only ADMIN may use the generic PATCH.
	decodeError(t, r.as("financial").Do("PATCH", path, map[string]string{"status": "CANCELED"}), 403, "auth.errors.forbidden")
	decodeError(t, c.Do("PATCH", path, map[string]string{"status": "CANCELED"}), 403, "auth.errors.forbidden")
	if st, a := r.status(o.ID); st != "PROCESSED" || a != "" {
		t.Fatalf("order now %s/%s", st, a)
	}

	// With the fields, the PATCH ships like the dedicated route.
	var shipped fullOrder
	admin.Do("PATCH", path, map[string]string{"status": "SHIPPED", "trackingNumber": "TRK9", "carrier": "DHL"}).
		Expect(t, 200).Decode(t, &shipped)
	if shipped.Status != "SHIPPED" || deref(shipped.TrackingNumber) != "TRK9" || deref(shipped.Carrier) != "DHL" || shipped.ShippedAt == nil {
		t.Fatalf("shipped via PATCH: %s", mustJSON(shipped))
	}
	admin.Do("PATCH", path, map[string]string{"status": "DELIVERED"}).Expect(t, 200)
	var refunding fullOrder
	admin.Do("PATCH", path, map[string]string{"status": "REFUNDED", "reason": "goodwill"}).Expect(t, 202).Decode(t, &refunding)
	if deref(refunding.PendingAction) != "refund" {
		t.Fatalf("REFUNDED via PATCH: %s", mustJSON(refunding))
	}
	r.waitStatus(o.ID, "REFUNDED")
	// The generic PATCH notifies order.statusChanged for ship and deliver.
	r.waitNotified(uid, o.ID, notification.EventOrderStatusChanged)
	if n := r.settledNotifications(uid, o.ID, notification.EventOrderStatusChanged); n != 2 {
		t.Fatalf("order.statusChanged notifications = %d, want 2", n)
	}
	var list notificationPage
	c.Do("GET", "/v1/notifications?limit=100", nil).Expect(t, 200).Decode(t, &list)
	seen := map[string]string{}
	for _, n := range list.Items {
		if n.Event == notification.EventOrderStatusChanged {
			st, _ := n.Data["status"].(string)
			seen[st] = n.Message
		}
	}
	for st, word := range map[string]string{"SHIPPED": "shipped", "DELIVERED": "delivered"} {
		if want := fmt.Sprintf("Order #%d is now %s.", o.Number, word); seen[st] != want {
			t.Errorf("statusChanged to %s: %q, want %q", st, seen[st], want)
		}
	}
}

func TestDeleteOrderOnlyWhenFinal(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1000)
	_, c := r.customer()
	o := r.place(c, 1, item)
	admin := r.as("admin")
	path := "/v1/admin/orders/" + o.ID.String()

	e := decodeError(t, admin.Do("DELETE", path, nil), 409, "orders.errors.notFinal")
	if !strings.HasSuffix(e.Message, "; this one is pending payment.") {
		t.Errorf("notFinal message %q does not name the status", e.Message)
	}
	decodeError(t, r.as("financial").Do("DELETE", path, nil), 403, "auth.errors.forbidden")

	r.as("financial").Do("PATCH", path+"/cancel", nil).Expect(t, 202)
	r.waitStatus(o.ID, "CANCELED")

	resp := admin.Do("DELETE", path, nil).Expect(t, 204)
	if len(resp.Body) != 0 {
		t.Fatalf("204 with a body: %s", resp.Body)
	}
	decodeError(t, admin.Do("GET", path, nil), 404, "orders.errors.notFound")
	decodeError(t, c.Do("GET", "/v1/orders/"+o.ID.String(), nil), 404, "orders.errors.notFound")
	decodeError(t, c.Do("GET", "/v1/orders/"+o.ID.String()+"/events", nil), 404, "orders.errors.notFound")
	decodeError(t, admin.Do("DELETE", path, nil), 404, "orders.errors.notFound")
	decodeError(t, admin.Do("PATCH", path+"/refund", nil), 404, "orders.errors.notFound")
	var list struct{ Items []fullOrder }
	c.Do("GET", "/v1/orders/me", nil).Expect(t, 200).Decode(t, &list)
	if len(list.Items) != 0 {
		t.Fatalf("deleted order still listed: %s", mustJSON(list))
	}
	if n := r.count(`SELECT count(*) FROM orders WHERE id = $1 AND deleted_at IS NOT NULL`, o.ID); n != 1 {
		t.Fatalf("the order row is not soft-deleted")
	}
}

// TestOrderCommandsResumeAfterACrashLostTheirResponse: when the API dies after a cancel,
// refund, ship or refund returned outside Stripe committed but before its idempotency record
// kept the response, the client's retry with the same key (once the lease is over) answers as
// the first attempt would have, with the order as it is now (a deleted one too: the command
// reached it), and the change is not made twice.
func TestOrderCommandsResumeAfterACrashLostTheirResponse(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 900)
	_, c := r.customer()
	for _, step := range []struct {
		role, action string
		order        func() fullOrder
		status       int
		event        []string
	}{
		{"financial", "cancel", func() fullOrder { return r.place(c, 1, item) }, 202, []string{"cancelRequested"}},
		{"financial", "refund", func() fullOrder { return r.processed(c, 1, item) }, 202, []string{"refundRequested"}},
		{"shipper", "ship", func() fullOrder { return r.processed(c, 1, item) }, 200, []string{"statusChanged", "PROCESSED", "SHIPPED"}},
		{"financial", "refund/outside", func() fullOrder { // a deleted order paid late, its refund refused
			o := r.canceled(c, 1, item)
			r.as("admin").Do("DELETE", "/v1/admin/orders/"+o.ID.String(), nil).Expect(t, 204)
			o = r.lateRefundFailedOf(o, testenv.Fault{Status: 400, Type: "invalid_request_error", Code: "charge_expired_for_refund",
				Message: "The charge is too old to be refunded."})
			r.stripe.Clear()
			return o
		}, 200, []string{"refundedOutsideStripe"}},
	} {
		o := step.order()
		path := "/v1/admin/orders/" + o.ID.String() + "/" + step.action
		body := map[string]string{"reason": "asked"}
		switch step.action {
		case "ship":
			body = map[string]string{"trackingNumber": "TRK-1", "carrier": "DHL"}
		case "refund/outside":
			body = map[string]string{"reference": "TR-5"}
		}
		key := uuid.NewString()
		r.as(step.role).Do("PATCH", path, body, "Idempotency-Key", key).Expect(t, step.status)
		r.crashAfterCommit(key)
		var again fullOrder
		r.as(step.role).Do("PATCH", path, body, "Idempotency-Key", key).Expect(t, step.status).Decode(t, &again)
		if again.ID != o.ID {
			t.Fatalf("%s retried after a crash answered order %s, want %s", step.action, again.ID, o.ID)
		}
		if n := len(r.events(o.ID, step.event[0], step.event[1:]...)); n != 1 {
			t.Fatalf("%s: %d %v events after the retry, want 1: %v", step.action, n, step.event, r.timeline(o.ID))
		}
		// The retry's answer is kept: a third attempt replays it.
		r.as(step.role).Do("PATCH", path, body, "Idempotency-Key", key).Expect(t, step.status)
	}
}

// A cancel of a PENDING order whose PaymentIntent Stripe says succeeded, while its payment
// event never came (lost, or of another API version and so not applied): the cancel records
// the payment as the webhook would have and refunds it, and the order ends CANCELED. Before,
// the cancel gave up after its retries and the reconciler later marked the order PAID and
// fulfilled it, although staff had asked to cancel it. It refunds in the same attempt, which may
// be its last.
func TestCancelFindsAPaymentItsEventNeverBrought(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	_, c := r.customer()
	o := r.place(c, 2, item)
	r.cancelRefused(o, payment.IntentSucceeded)

	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", nil).Expect(t, 202)
	r.waitStatus(o.ID, "CANCELED")
	got := r.get(o.ID)
	if got.Payment.Status != "succeeded" || got.Payment.AmountReceived == nil || *got.Payment.AmountReceived != o.Total ||
		got.Refund == nil || got.Refund.Amount != o.Total {
		t.Fatalf("canceled order: %s", mustJSON(got))
	}
	if calls := r.refundCalls(o.ID); len(calls) == 0 || calls[0].IdempotencyKey != "order-"+o.ID.String()+"-refund" {
		t.Fatalf("refund calls: %+v, want the order's refund", calls)
	}
	r.wantStock(item, 10)
	// In one attempt: a cancel on its last attempt must not leave the paid order to be fulfilled.
	testenv.Eventually(t, 30*time.Second, "the cancel task's outcome recorded", func() bool {
		return r.obs.outcomes(tasks.OrderCancel)["success"] == 1
	})
	if got := r.obs.outcomes(tasks.OrderCancel); got["retry"] != 0 {
		t.Fatalf("cancel task outcomes %v, want one success without a retry", got)
	}
}

// A payment that arrives while a cancel is pending pays the order, and the cancel ends it:
// refunded, never processed, though the payment's own processing task was queued first.
func TestAPaymentDuringAPendingCancelIsRefundedNotProcessed(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	o := r.place(c, 2, item)
	r.quiesce()
	r.pauseWorker()
	r.paid(o) // its processing queued first
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", nil).Expect(t, 202)
	r.resumeWorker()
	r.waitStatus(o.ID, "CANCELED")
	r.quiesce()
	if n := r.transitions(o.ID, "PROCESSED"); n != 0 {
		t.Fatalf("processed %d times while its cancel was pending: %v", n, r.timeline(o.ID))
	}
	if got := r.get(o.ID); got.Refund == nil || got.Refund.Amount != o.Total || len(r.refundCalls(o.ID)) != 1 {
		t.Fatalf("canceled order %s, %d refund calls; want its total refunded once", mustJSON(got), len(r.refundCalls(o.ID)))
	}
	if n := r.notifications(uid, o.ID, notification.EventOrderProcessed); n != 0 {
		t.Fatalf("%d order.processed notifications for an order canceled before its processing", n)
	}
	r.wantStock(item, 10)
}

// A refund of a paid order that Stripe refuses for good hands the order back to its
// processing, which the pending refund had held back: it is processed, not left PAID.
func TestAPaidOrderIsProcessedOnceItsRefundFails(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	_, c := r.customer()
	o := r.place(c, 1, item)
	r.quiesce()
	r.pauseWorker()
	r.paid(o)
	r.stripe.Fail("POST", "/v1/refunds", testenv.Fault{Status: 400, Type: "invalid_request_error", Code: "charge_disputed",
		Message: "The charge is disputed."})
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", nil).Expect(t, 202)
	r.resumeWorker()
	testenv.Eventually(t, 30*time.Second, "the refund fails", func() bool { return len(r.events(o.ID, "actionFailed")) == 1 })
	r.waitStatus(o.ID, "PROCESSED")
	if st, a := r.status(o.ID); st != "PROCESSED" || a != "" {
		t.Fatalf("order %s/%q, want PROCESSED with no pending action", st, a)
	}
	if n := r.transitions(o.ID, "PROCESSED"); n != 1 {
		t.Fatalf("processed %d times: %v", n, r.timeline(o.ID))
	}
}
