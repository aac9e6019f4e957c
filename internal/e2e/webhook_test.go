package e2e_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// Stripe webhooks (SPEC §6).

func (r *rig) stripeEvents(id string) int {
	return r.count(`SELECT count(*) FROM stripe_events WHERE id = $1`, id)
}

func (r *rig) eventOutcome(id string) string {
	r.t.Helper()
	var out string
	if err := r.db.Get(&out, `SELECT outcome FROM stripe_events WHERE id = $1`, id); err != nil {
		r.t.Fatal(err)
	}
	return out
}

func eventID() string { return "evt_" + strings.ReplaceAll(uuid.NewString(), "-", "") }

func TestPaymentFailedThenSucceeded(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	o := r.place(c, 2, item)

	id := eventID()
	resp := r.webhook(payment.TestEvent{ID: id, Type: payment.EventIntentFailed, PaymentIntentID: *o.Payment.PaymentIntentID,
		OrderID: o.ID.String(), Amount: o.Total, Currency: o.Currency, FailureMessage: "Your card was declined."})
	resp.Expect(t, 200)
	if r.eventOutcome(id) != "applied" {
		t.Fatalf("outcome %q", r.eventOutcome(id))
	}
	if st, a := r.status(o.ID); st != "PENDING" || a != "" {
		t.Fatalf("order %s/%s after a failed payment, want PENDING", st, a)
	}
	var mine fullOrder
	c.Do("GET", "/v1/orders/"+o.ID.String(), nil).Expect(t, 200).Decode(t, &mine)
	if mine.Payment.Status != "failed" || deref(mine.Payment.LastError) != "Your card was declined." {
		t.Fatalf("payment after the failure: %s", mustJSON(mine.Payment))
	}
	if mine.Payment.ClientSecret == nil || *mine.Payment.ClientSecret != *o.Payment.ClientSecret {
		t.Fatal("the customer lost the client secret to retry with")
	}
	if n := r.settledNotifications(uid, o.ID, notification.EventOrderPaymentFailed); n != 1 {
		t.Fatalf("order.paymentFailed notifications = %d, want 1", n)
	}
	ev := r.events(o.ID, "paymentFailed")
	if len(ev) != 1 || ev[0].Actor != "webhook" || deref(ev[0].Reason) != "Your card was declined." {
		t.Fatalf("timeline: %v", r.timeline(o.ID))
	}
	r.wantStock(item, 8)

	// The customer retries and the payment goes through.
	r.paid(o)
	r.waitStatus(o.ID, "PROCESSED")
	got := r.get(o.ID)
	if got.Payment.Status != "succeeded" || got.Payment.LastError != nil || got.Payment.AmountReceived == nil ||
		*got.Payment.AmountReceived != o.Total {
		t.Fatalf("payment after success: %s", mustJSON(got.Payment))
	}
	r.waitNotified(uid, o.ID, notification.EventOrderPaid)
}

func TestPaymentIntentCanceledCancelsTheOrder(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	o := r.place(c, 4, item)

	id := eventID()
	r.webhook(payment.TestEvent{ID: id, Type: payment.EventIntentCanceled, PaymentIntentID: *o.Payment.PaymentIntentID,
		OrderID: o.ID.String(), Amount: o.Total, Currency: o.Currency}).Expect(t, 200)
	r.waitStatus(o.ID, "CANCELED")
	r.wantStock(item, 10)
	if n := len(r.intentCancels(o)); n != 0 {
		t.Fatalf("canceled an already canceled PaymentIntent at Stripe %d times", n)
	}
	if got := r.get(o.ID); got.Payment.Status != "canceled" {
		t.Fatalf("payment status %q", got.Payment.Status)
	}
	req := r.events(o.ID, "cancelRequested")
	if len(req) != 1 || req[0].Actor != "webhook" || len(r.events(o.ID, "statusChanged", "PENDING", "CANCELED")) != 1 {
		t.Fatalf("timeline: %v", r.timeline(o.ID))
	}
	if n := r.settledNotifications(uid, o.ID, notification.EventOrderCanceled); n != 1 {
		t.Fatalf("order.canceled notifications = %d, want 1", n)
	}
}

// A payment that succeeds after its order was canceled is refunded; the order stays CANCELED.
func TestLatePaymentIsRefunded(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	o := r.canceled(c, 2, item)

	id := eventID()
	r.webhook(payment.TestEvent{ID: id, Type: payment.EventIntentSucceeded, PaymentIntentID: *o.Payment.PaymentIntentID,
		OrderID: o.ID.String(), Amount: o.Total, Currency: o.Currency}).Expect(t, 200)
	if out := r.eventOutcome(id); out != "late_payment" {
		t.Fatalf("outcome %q", out)
	}
	testenv.Eventually(t, 30*time.Second, "late refund recorded", func() bool { return len(r.refunds(o.ID)) > 0 })
	r.quiesce()

	if st, a := r.status(o.ID); st != "CANCELED" || a != "" {
		t.Fatalf("order %s/%s, want CANCELED", st, a)
	}
	got := r.get(o.ID)
	if got.Refund == nil || got.Refund.Kind != "late_payment" || got.Refund.Amount != o.Total || got.Refund.RefundID == "" {
		t.Fatalf("late refund: %s", mustJSON(got.Refund))
	}
	calls := r.refundCalls(o.ID)
	if len(calls) != 1 || calls[0].IdempotencyKey != "order-"+o.ID.String()+"-late-refund" {
		t.Fatalf("refund calls: %+v", calls)
	}
	if len(r.events(o.ID, "latePayment")) != 1 || len(r.events(o.ID, "lateRefund")) != 1 {
		t.Fatalf("timeline: %v", r.timeline(o.ID))
	}
	if len(r.events(o.ID, "statusChanged", "CANCELED", "PAID")) != 0 || r.notifications(uid, o.ID, notification.EventOrderPaid) != 0 {
		t.Fatal("the late payment moved the order or announced it as paid")
	}
	r.wantStock(item, 10, "released once")
	if n := r.settledNotifications(uid, o.ID, notification.EventOrderRefunded); n != 1 {
		t.Fatalf("order.refunded notifications = %d, want 1", n)
	}
	var list notificationPage
	c.Do("GET", "/v1/notifications?limit=100", nil).Expect(t, 200).Decode(t, &list)
	found := false
	for _, n := range list.Items {
		if n.Event == notification.EventOrderRefunded && n.Data["orderId"] == o.ID.String() {
			found = true
			if n.Title != "Payment returned" || !strings.Contains(n.Message, "$25.00") || !strings.Contains(n.Message, "canceled") {
				t.Fatalf("late refund notification: %q / %q", n.Title, n.Message)
			}
		}
	}
	if !found {
		t.Fatal("late refund notification not listed")
	}
}

// Deleting an order hides it, not its money: a payment that arrives after a canceled order was
// deleted is refunded like any late payment. While a late payment waits for its refund the
// order cannot be deleted (the refund is its pending action).
func TestLatePaymentOfADeletedOrderIsRefunded(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	admin := r.as("admin")
	deleteOrder := func(o fullOrder) {
		admin.Do("DELETE", "/v1/admin/orders/"+o.ID.String(), nil).Expect(t, 204)
		decodeError(t, admin.Do("GET", "/v1/admin/orders/"+o.ID.String(), nil), 404, "orders.errors.notFound")
	}
	succeeded := func(o fullOrder, id string) {
		r.webhook(payment.TestEvent{ID: id, Type: payment.EventIntentSucceeded, PaymentIntentID: *o.Payment.PaymentIntentID,
			OrderID: o.ID.String(), Amount: o.Total, Currency: o.Currency}).Expect(t, 200)
	}
	refunded := func(name string, o fullOrder) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, name+": late refund recorded", func() bool { return len(r.refunds(o.ID)) > 0 })
		r.quiesce()
		if got := r.refunds(o.ID); len(got) != 1 || got[0].Kind != "late_payment" || got[0].Amount != o.Total {
			t.Fatalf("%s: refunds %+v", name, got)
		}
		if calls := r.refundCalls(o.ID); len(calls) != 1 {
			t.Fatalf("%s: %d refund calls to Stripe, want 1", name, len(calls))
		}
		if st, a := r.status(o.ID); st != "CANCELED" || a != "" {
			t.Fatalf("%s: order %s/%s, want CANCELED", name, st, a)
		}
		if len(r.events(o.ID, "latePayment")) != 1 || len(r.events(o.ID, "lateRefund")) != 1 {
			t.Fatalf("%s: timeline %v", name, r.timeline(o.ID))
		}
		if n := r.settledNotifications(uid, o.ID, notification.EventOrderRefunded); n != 1 {
			t.Fatalf("%s: order.refunded notifications = %d, want 1", name, n)
		}
	}

	// Not in a final status: refused, naming the status in the reader's language.
	open := r.place(c, 1, item)
	if e := decodeError(t, admin.Do("DELETE", "/v1/admin/orders/"+open.ID.String(), nil, "Accept-Language", "pt-BR"), 409, "orders.errors.notFinal"); !strings.HasSuffix(e.Message, "; este está aguardando pagamento.") {
		t.Fatalf("deletion of a PENDING order refused with %q", e.Message)
	}

	// Deleted, then paid: the webhook is taken (not answered 404 for Stripe to send forever).
	first := r.canceled(c, 1, item)
	deleteOrder(first)
	failed := eventID()
	r.webhook(payment.TestEvent{ID: failed, Type: payment.EventIntentFailed, PaymentIntentID: *first.Payment.PaymentIntentID,
		OrderID: first.ID.String(), Amount: first.Total, Currency: first.Currency}).Expect(t, 200)
	if out := r.eventOutcome(failed); out != "ignored" {
		t.Fatalf("a failed payment of a deleted order: outcome %q, want ignored", out)
	}
	paid := eventID()
	succeeded(first, paid)
	if out := r.eventOutcome(paid); out != "late_payment" {
		t.Fatalf("outcome %q, want late_payment", out)
	}
	refunded("deleted before the webhook", first)
	succeeded(first, paid) // Stripe sends it again
	if n := r.stripeEvents(paid); n != 1 || len(r.refundCalls(first.ID)) != 1 {
		t.Fatalf("a repeated event: recorded %d times, %d refund calls", n, len(r.refundCalls(first.ID)))
	}

	decodeError(t, admin.Do("GET", "/v1/admin/orders/"+first.ID.String(), nil), 404, "orders.errors.notFound")

	// Paid, then a deletion before the worker refunds: refused until the payment is returned.
	second := r.canceled(c, 1, item)
	r.pauseWorker()
	r.paid(second) // late
	var owed fullOrder
	admin.Do("GET", "/v1/admin/orders/"+second.ID.String(), nil).Expect(t, 200).Decode(t, &owed)
	if owed.Status != "CANCELED" || deref(owed.PendingAction) != "refund" {
		t.Fatalf("a late payment waiting for its refund: %s/%q, want CANCELED with refund pending", owed.Status, deref(owed.PendingAction))
	}
	pending := decodeError(t, admin.Do("DELETE", "/v1/admin/orders/"+second.ID.String(), nil, "Accept-Language", "pt-BR"), 409, "orders.errors.actionPending")
	if want := "O pedido tem uma ação pendente (reembolso); aguarde sua conclusão."; pending.Message != want {
		t.Fatalf("deletion refused with %q, want %q", pending.Message, want)
	}
	r.resumeWorker()
	refunded("refund before the deletion", second)
	deleteOrder(second)
}

// refund.updated and charge.refunded keep the recorded refund's status current, forward only:
// Stripe delivers events out of order, and a refund goes from under way to succeeded, failed or
// canceled, and from succeeded at most to failed. A late earlier event changes nothing, nor
// does a charge.refunded that does not carry its refund (its charge counts refunds under way).
func TestRefundStatusWebhooks(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	_, c := r.customer()
	o := r.processed(c, 1, item)
	refundID := r.refundUnderWay(o)
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", nil).Expect(t, 202)
	r.waitStatus(o.ID, "REFUNDED")
	if refund := r.get(o.ID).Refund; refund == nil || refund.Status != "pending" || refund.RefundID != refundID {
		t.Fatalf("refund: %s", mustJSON(refund))
	}
	send := func(typ, refund, status string) string {
		id := eventID()
		r.webhook(payment.TestEvent{ID: id, Type: typ, RefundID: refund, RefundStatus: status,
			PaymentIntentID: *o.Payment.PaymentIntentID, Amount: o.Total, Currency: "usd"}).Expect(t, 200)
		return id
	}
	for _, step := range []struct {
		typ, refund, status string
		outcome, want       string
	}{
		{payment.EventChargeRefunded, "", "succeeded", "ignored", "pending"}, // no refund in it: says nothing of one under way
		{payment.EventChargeRefunded, refundID, "succeeded", "applied", "succeeded"},
		{payment.EventRefundUpdated, refundID, "pending", "ignored", "succeeded"},
		{payment.EventRefundUpdated, refundID, "reversed", "ignored", "succeeded"}, // no status Stripe gives a refund
		{payment.EventRefundUpdated, refundID, "failed", "applied", "failed"},
		{payment.EventRefundUpdated, refundID, "succeeded", "ignored", "failed"},
		{payment.EventChargeRefunded, refundID, "succeeded", "ignored", "failed"},
		{payment.EventRefundUpdated, "re_unknown", "failed", "ignored", "failed"},
	} {
		id := send(step.typ, step.refund, step.status)
		got := r.get(o.ID)
		if out := r.eventOutcome(id); out != step.outcome || got.Refund.Status != step.want || got.Status != "REFUNDED" {
			t.Fatalf("after %s %s of %q: outcome %q, refund %s; want %q, %s", step.typ, step.status, step.refund, out,
				mustJSON(got.Refund), step.outcome, step.want)
		}
	}
	ev := r.events(o.ID, "refundUpdated")
	if len(ev) != 2 || deref(ev[0].Reason) != "refund succeeded" || deref(ev[1].Reason) != "refund failed" || ev[1].Actor != "webhook" {
		t.Fatalf("timeline: %v", r.timeline(o.ID))
	}
}

// snapshot is what a webhook that must change nothing is checked against.
type snapshot struct {
	status, action string
	events, outbox int
	payment        string
}

func (r *rig) snapshot(o fullOrder) snapshot {
	st, a := r.status(o.ID)
	g := r.get(o.ID)
	return snapshot{status: st, action: a, events: len(r.timeline(o.ID)), outbox: r.outboxRows(o.ID), payment: mustJSON(g.Payment)}
}

func TestIgnoredWebhooksChangeNothing(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	_, c := r.customer()
	o := r.place(c, 1, item)
	other := r.place(c, 1, item)
	r.quiesce()
	r.pauseRelay()
	before, otherBefore := r.snapshot(o), r.snapshot(other)

	for _, tc := range []struct {
		name    string
		ev      payment.TestEvent
		outcome string
	}{
		{"unknown type", payment.TestEvent{Type: "customer.subscription.created", PaymentIntentID: *o.Payment.PaymentIntentID,
			OrderID: o.ID.String(), Amount: o.Total, Currency: "usd"}, "unknown_type"},
		{"unknown PaymentIntent", payment.TestEvent{Type: payment.EventIntentSucceeded, PaymentIntentID: "pi_unknown_" + uuid.NewString()[:8],
			Amount: o.Total, Currency: "usd"}, "unknown_intent"},
		{"unknown PaymentIntent naming an order paid through another", payment.TestEvent{Type: payment.EventIntentSucceeded,
			PaymentIntentID: "pi_other_" + uuid.NewString()[:8], OrderID: o.ID.String(), Amount: o.Total, Currency: "usd"}, "unknown_intent"},
		{"unknown PaymentIntent canceled", payment.TestEvent{Type: payment.EventIntentCanceled, PaymentIntentID: "pi_gone_" + uuid.NewString()[:8],
			OrderID: uuid.NewString()}, "unknown_intent"},
		{"other API version", payment.TestEvent{Type: payment.EventIntentSucceeded, PaymentIntentID: *o.Payment.PaymentIntentID,
			OrderID: o.ID.String(), Amount: o.Total, Currency: "usd", APIVersion: "2023-10-16"}, "ignored_version"},
		// A success with nothing received is no payment: taken for one, its processing would
		// fail and refund a total never paid.
		{"nothing received", payment.TestEvent{Type: payment.EventIntentSucceeded, PaymentIntentID: *o.Payment.PaymentIntentID,
			OrderID: o.ID.String(), Amount: 0, Currency: "usd"}, "ignored"},
		{"a negative amount received", payment.TestEvent{Type: payment.EventIntentSucceeded, PaymentIntentID: *o.Payment.PaymentIntentID,
			OrderID: o.ID.String(), Amount: -1250, Currency: "usd"}, "ignored"},
	} {
		tc.ev.ID = eventID()
		resp := r.webhook(tc.ev)
		resp.Expect(t, 200)
		if m := resp.JSON(t); m["received"] != true {
			t.Errorf("%s: body %s", tc.name, resp.Body)
		}
		if r.stripeEvents(tc.ev.ID) != 1 {
			t.Errorf("%s: event not recorded", tc.name)
		} else if out := r.eventOutcome(tc.ev.ID); out != tc.outcome {
			t.Errorf("%s: outcome %q, want %q", tc.name, out, tc.outcome)
		}
	}
	if after := r.snapshot(o); after != before {
		t.Fatalf("order changed:\n%+v\n%+v", before, after)
	}
	if after := r.snapshot(other); after != otherBefore {
		t.Fatalf("other order changed:\n%+v\n%+v", otherBefore, after)
	}
	if n := r.outboxBacklog(); n != 0 {
		t.Fatalf("%d outbox rows written", n)
	}
}

// A payment event made by hand with the least a test would write (no API version, no
// amount_received, no currency, no metadata) pays the order like Stripe's own: the amount of
// a succeeded PaymentIntent is what it received, in the order's currency.
func TestAHandMadePaymentEventPaysTheOrder(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	_, c := r.customer()
	o := r.place(c, 2, r.item(10, 1250))
	body := []byte(fmt.Sprintf(`{"id":%q,"type":"payment_intent.succeeded","data":{"object":{"id":%q,"amount":%d}}}`,
		eventID(), *o.Payment.PaymentIntentID, o.Total))
	r.api.Do("POST", "/stripe/webhook", body, "Stripe-Signature", payment.Sign(body, r.cfg.StripeWebhookSecret, time.Now())).Expect(t, 200)
	r.waitStatus(o.ID, "PROCESSED")
}

func TestWebhookWithBadSignatureOrBodyIsRefused(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	_, c := r.customer()
	o := r.place(c, 1, item)
	r.quiesce()
	before := r.snapshot(o)
	secret := r.cfg.StripeWebhookSecret

	good := paymentSucceeded(o, o.Total, "usd")
	good.ID = eventID()
	body := good.Build()
	malformed := []byte(`{"id": "evt_malformed", "object": "event", "type": "payment_intent.succeeded", "data": {`)
	noData := []byte(`{"id": "evt_nodata", "object": "event", "type": "payment_intent.succeeded", "api_version": "2024-06-20"}`)
	badObject := []byte(`{"id": "evt_badobj", "object": "event", "type": "payment_intent.succeeded", "api_version": "2024-06-20",
		"data": {"object": {"id": 42, "amount_received": "lots"}}}`)

	for _, tc := range []struct {
		name    string
		body    []byte
		headers []string
		code    string
	}{
		{"missing signature", body, nil, "payments.errors.invalidSignature"},
		{"garbage signature", body, []string{"Stripe-Signature", "not-a-signature"}, "payments.errors.invalidSignature"},
		{"empty signature", body, []string{"Stripe-Signature", ""}, "payments.errors.invalidSignature"},
		{"wrong secret", body, []string{"Stripe-Signature", payment.Sign(body, "whsec_someone_else", time.Now())}, "payments.errors.invalidSignature"},
		{"signed over another body", body, []string{"Stripe-Signature", payment.Sign(noData, secret, time.Now())}, "payments.errors.invalidSignature"},
		{"older than 5 minutes", body, []string{"Stripe-Signature", payment.Sign(body, secret, time.Now().Add(-6*time.Minute))}, "payments.errors.invalidSignature"},
		{"dated 6 minutes ahead", body, []string{"Stripe-Signature", payment.Sign(body, secret, time.Now().Add(6*time.Minute))}, "payments.errors.invalidSignature"},
		{"dated a day ahead", body, []string{"Stripe-Signature", payment.Sign(body, secret, time.Now().Add(24*time.Hour))}, "payments.errors.invalidSignature"},
		{"malformed JSON", malformed, []string{"Stripe-Signature", payment.Sign(malformed, secret, time.Now())}, "payments.errors.invalidEvent"},
		{"event without data", noData, []string{"Stripe-Signature", payment.Sign(noData, secret, time.Now())}, "payments.errors.invalidEvent"},
		{"object of the wrong shape", badObject, []string{"Stripe-Signature", payment.Sign(badObject, secret, time.Now())}, "payments.errors.invalidEvent"},
	} {
		resp := r.api.Do("POST", "/stripe/webhook", tc.body, tc.headers...)
		if resp.Status != 400 {
			t.Errorf("%s: status %d, want 400: %s", tc.name, resp.Status, resp.Body)
			continue
		}
		e := decodeError(t, resp, 400, tc.code)
		if e.Path != "/stripe/webhook" {
			t.Errorf("%s: path %q", tc.name, e.Path)
		}
	}
	if n := r.count(`SELECT count(*) FROM stripe_events`); n != 0 {
		t.Fatalf("%d stripe_events rows written by refused webhooks", n)
	}
	if after := r.snapshot(o); after != before {
		t.Fatalf("order changed:\n%+v\n%+v", before, after)
	}

	// The same event, correctly signed, is accepted.
	r.webhook(good).Expect(t, 200)
	r.waitStatus(o.ID, "PROCESSED")
}
