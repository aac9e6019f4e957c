package e2e_test

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// Stripe failing while an order is created (SPEC §3 Create step 4, §7).

// intentCreates are the PaymentIntent create calls: all of them, and the successful ones.
func (r *rig) intentCreates() (all, ok []testenv.Call) {
	for _, c := range r.stripe.Calls("POST", "/v1/payment_intents") {
		if c.Path != "/v1/payment_intents" {
			continue // cancels and other sub-resources
		}
		all = append(all, c)
		if c.Status == 200 {
			ok = append(ok, c)
		}
	}
	return all, ok
}

// onlyOrder returns the user's one order id.
func (r *rig) onlyOrder(userID uuid.UUID) uuid.UUID {
	r.t.Helper()
	var ids []uuid.UUID
	if err := r.db.Select(&ids, `SELECT id FROM orders WHERE user_id = $1`, userID); err != nil {
		r.t.Fatal(err)
	}
	if len(ids) != 1 {
		r.t.Fatalf("user has %d orders, want 1", len(ids))
	}
	return ids[0]
}

func TestCreateRejectedByStripeCancelsTheOrder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault testenv.Fault
	}{
		{"card_error", testenv.Fault{Status: 402, Type: "card_error", Code: "card_declined", Message: "Your card was declined."}},
		{"invalid_request_error", testenv.Fault{Status: 400, Type: "invalid_request_error", Message: "Invalid currency."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			item := r.item(10, 1250)
			uid, c := r.customer()
			r.stripe.Fail("POST", "/v1/payment_intents", tc.fault)

			key := uuid.NewString()
			body := map[string]any{"items": []map[string]any{{"itemId": item, "quantity": 3}}}
			resp := c.Do("POST", "/v1/orders", body, "Idempotency-Key", key)
			decodeError(t, resp, 502, "payments.errors.gatewayRejected")

			id := r.onlyOrder(uid)
			r.waitStatus(id, "CANCELED")
			if s := r.stock(item); s != 10 {
				t.Fatalf("stock = %d, want 10 (released)", s)
			}
			got := r.get(id)
			if got.Payment.PaymentIntentID != nil || got.Payment.Status != "canceled" || got.CanceledAt == nil ||
				deref(got.Payment.LastError) != tc.fault.Message {
				t.Fatalf("order after the rejection: %s", mustJSON(got))
			}
			all, _ := r.intentCreates()
			if len(all) != 1 || all[0].IdempotencyKey != "order-"+id.String()+"-intent" {
				t.Fatalf("PaymentIntent create calls: %+v (a definitive error is not retried)", all)
			}
			if ev := r.events(id, "statusChanged", "PENDING", "CANCELED"); len(ev) != 1 {
				t.Fatalf("timeline: %v", r.timeline(id))
			}

			// A retry with the same key says the same and creates nothing.
			r.stripe.Clear()
			decodeError(t, c.Do("POST", "/v1/orders", body, "Idempotency-Key", key), 502, "payments.errors.gatewayRejected")
			if n := r.ordersOf(uid); n != 1 {
				t.Fatalf("orders = %d after the retry, want 1", n)
			}
			if all, _ := r.intentCreates(); len(all) != 1 {
				t.Fatalf("the retry called Stripe again: %+v", all)
			}
			if s := r.stock(item); s != 10 {
				t.Fatalf("stock after the retry = %d, want 10", s)
			}
		})
	}
}

func TestCreateWithStripeUnavailableResumesOnRetry(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	// Enough failures for stripe-go's own network retry: the call fails for good.
	r.stripe.Fail("POST", "/v1/payment_intents", testenv.Fault{Status: 500, Type: "api_error", Message: "down", Times: stripeTriesPerCall})

	key := uuid.NewString()
	body := map[string]any{"items": []map[string]any{{"itemId": item, "quantity": 2}}}
	resp := c.Do("POST", "/v1/orders", body, "Idempotency-Key", key)
	decodeError(t, resp, 503, "payments.errors.gatewayUnavailable")
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	id := r.onlyOrder(uid)
	if st, a := r.status(id); st != "PENDING" || a != "" {
		t.Fatalf("order %s/%s, want PENDING", st, a)
	}
	got := r.get(id)
	if got.Payment.PaymentIntentID != nil || got.Payment.Status != "pending" {
		t.Fatalf("order has a PaymentIntent after the failure: %s", mustJSON(got.Payment))
	}
	r.wantStock(item, 8, "still reserved")
	all, ok := r.intentCreates()
	if len(all) != stripeTriesPerCall || len(ok) != 0 {
		t.Fatalf("PaymentIntent create calls %+v", all)
	}

	// The retry with the same key resumes at the PaymentIntent.
	r.stripe.Clear()
	var created fullOrder
	resp = c.Do("POST", "/v1/orders", body, "Idempotency-Key", key).Expect(t, 201)
	resp.Decode(t, &created)
	if created.ID != id || created.Status != "PENDING" || created.Payment.PaymentIntentID == nil ||
		created.Payment.ClientSecret == nil || created.Total != 2500 {
		t.Fatalf("resumed order: %s", mustJSON(created))
	}
	if resp.Header.Get("Idempotent-Replayed") == "true" {
		t.Fatal("the resumed request is marked as a replay")
	}
	all, ok = r.intentCreates()
	if len(ok) != 1 || ok[0].IdempotencyKey != "order-"+id.String()+"-intent" {
		t.Fatalf("successful PaymentIntent creates: %+v", ok)
	}
	for _, call := range all {
		if call.IdempotencyKey != "order-"+id.String()+"-intent" {
			t.Fatalf("a PaymentIntent create without the order's key: %+v", call)
		}
	}
	if n := r.ordersOf(uid); n != 1 {
		t.Fatalf("orders = %d, want 1", n)
	}
	if s := r.stock(item); s != 8 {
		t.Fatalf("stock = %d after the retry, want 8 (reserved once)", s)
	}
	if got := r.get(id); got.Payment.PaymentIntentID == nil || *got.Payment.PaymentIntentID != *created.Payment.PaymentIntentID {
		t.Fatalf("stored PaymentIntent %v, answered %v", got.Payment.PaymentIntentID, *created.Payment.PaymentIntentID)
	}

	// A third identical request replays the stored response.
	replay := c.Do("POST", "/v1/orders", body, "Idempotency-Key", key).Expect(t, 201)
	if replay.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("third request not replayed: headers %v", replay.Header)
	}
	if !bytes.Equal(replay.Body, resp.Body) {
		t.Fatalf("replayed body differs:\n%s\n%s", replay.Body, resp.Body)
	}
	if _, ok := r.intentCreates(); len(ok) != 1 {
		t.Fatalf("the replay called Stripe: %+v", ok)
	}
	if n := r.ordersOf(uid); n != 1 {
		t.Fatalf("orders = %d after the replay, want 1", n)
	}

	// The resumed order pays like any other.
	r.paid(created)
	r.waitStatus(id, "PROCESSED")
}

// A resumed create whose first try named no customer, resumed after the customer was synced:
// Stripe refuses the key with other parameters (an idempotency error), and the create tries
// again with the first try's, instead of canceling the order as for a refused payment.
func TestResumedCreateAfterTheCustomerWasSynced(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	r.quiesce()
	setCustomer := func(id any) {
		if _, err := r.db.Exec(`UPDATE users SET stripe_customer_id = $2 WHERE id = $1`, uid, id); err != nil {
			t.Fatal(err)
		}
	}
	setCustomer(nil) // not synced yet
	body, key := r.createdWithoutIntent(c, item, 1)

	// Stripe (here the proxy, as stripe-mock does not compare) holds the key to the first try's
	// parameters, which named no customer.
	setCustomer("cus_synced_meanwhile")
	r.stripe.Clear()
	r.stripe.Fail("POST", "/v1/payment_intents", testenv.Fault{Status: 400, Type: "idempotency_error", Times: 1,
		Message: "Keys for idempotent requests can only be used with the same parameters they were first used with."})
	var created fullOrder
	c.Do("POST", "/v1/orders", body, "Idempotency-Key", key).Expect(t, 201).Decode(t, &created)
	if created.Status != "PENDING" || created.Payment.PaymentIntentID == nil {
		t.Fatalf("resumed order: %s", mustJSON(created))
	}
	all, ok := r.intentCreates()
	if len(all) != stripeTriesPerCall+2 || len(ok) != 1 || all[stripeTriesPerCall].Form.Get("customer") != "cus_synced_meanwhile" ||
		ok[0].Form.Encode() != all[0].Form.Encode() {
		t.Fatalf("PaymentIntent creates (the first try's, then the resumed request's): %+v", all)
	}
	if st, a := r.status(created.ID); st != "PENDING" || a != "" {
		t.Fatalf("order %s/%s, want PENDING", st, a)
	}
	r.wantStock(item, 9)
}

// Staff cancel an order while its create waits for Stripe: the create's PaymentIntent is not
// attached to the CANCELED order, it is canceled at Stripe so nobody pays it, and the create
// answers the order as it is (CANCELED, nothing to pay), not a PENDING one with a client secret.
func TestOrderCanceledDuringItsCreate(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	r.quiesce()
	r.stripe.Gather(2) // holds the create's PaymentIntent call; no second call comes
	key := uuid.NewString()
	body := map[string]any{"items": []map[string]any{{"itemId": item, "quantity": 1}}}
	answer := later(t, c, "POST", "/v1/orders", body, "Idempotency-Key", key)
	testenv.Eventually(t, 30*time.Second, "the create at Stripe", func() bool { return r.stripe.Held() == 1 })
	id := r.onlyOrder(uid)
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+id.String()+"/cancel", nil).Expect(t, 202)
	r.waitStatus(id, "CANCELED")

	r.stripe.Gather(0)
	var created fullOrder
	(<-answer).Expect(t, 201).Decode(t, &created)
	if created.Status != "CANCELED" || created.Payment.PaymentIntentID != nil || created.Payment.ClientSecret != nil {
		t.Fatalf("create's answer: %s, want the CANCELED order with nothing to pay", mustJSON(created))
	}
	if _, ok := r.intentCreates(); len(ok) != 1 {
		t.Fatalf("PaymentIntent creates: %+v", ok)
	}
	var cancels []testenv.Call
	for _, call := range r.stripe.Calls("POST", "/v1/payment_intents/") {
		if strings.HasSuffix(call.Path, "/cancel") {
			cancels = append(cancels, call)
		}
	}
	if len(cancels) != 1 || cancels[0].Status != 200 || cancels[0].IdempotencyKey != "order-"+id.String()+"-cancel-intent" {
		t.Fatalf("cancels at Stripe: %+v, want the unattached PaymentIntent's", cancels)
	}
	// Its cancel's event names the order; the CANCELED order does not take it up.
	pi := strings.TrimSuffix(strings.TrimPrefix(cancels[0].Path, "/v1/payment_intents/"), "/cancel")
	var event struct{ Outcome string }
	r.webhook(payment.TestEvent{Type: payment.EventIntentCanceled, PaymentIntentID: pi, OrderID: id.String(),
		Amount: 1250, Currency: "usd"}).Expect(t, 200).Decode(t, &event)
	if event.Outcome != "unknown_intent" {
		t.Fatalf("the unattached PaymentIntent's cancel event: outcome %q, want unknown_intent", event.Outcome)
	}
	if got := r.get(id); got.Status != "CANCELED" || got.Payment.PaymentIntentID != nil {
		t.Fatalf("stored order: %s", mustJSON(got))
	}
	// A retry replays the same answer.
	var replay fullOrder
	c.Do("POST", "/v1/orders", body, "Idempotency-Key", key).Expect(t, 201).Decode(t, &replay)
	if replay.ID != id || replay.Status != "CANCELED" {
		t.Fatalf("replay: %s", mustJSON(replay))
	}
	r.wantStock(item, 10)
}

// A create that got 503 (Stripe down) and is retried after staff canceled its order resumes to
// the order as it is: 201 and CANCELED, nothing to pay, no PaymentIntent made. Only an order
// whose PaymentIntent Stripe refused answers 502 again. Deleted by staff after the cancel, the
// order is still the answer to its own create (a 404 would tell the client it never was).
func TestCreateResumedAfterItsOrderWasCanceled(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	for _, deleted := range []bool{false, true} {
		uid, c := r.customer()
		body, key := r.createdWithoutIntent(c, item, 1)
		id := r.onlyOrder(uid)
		r.as("financial").Do("PATCH", "/v1/admin/orders/"+id.String()+"/cancel", nil).Expect(t, 202)
		r.waitStatus(id, "CANCELED")
		if deleted {
			r.quiesce()
			r.as("admin").Do("DELETE", "/v1/admin/orders/"+id.String(), nil).Expect(t, 204)
		}
		r.stripe.Clear()

		var resumed fullOrder
		c.Do("POST", "/v1/orders", body, "Idempotency-Key", key).Expect(t, 201).Decode(t, &resumed)
		if resumed.ID != id || resumed.Status != "CANCELED" || resumed.Payment.PaymentIntentID != nil || resumed.Payment.LastError != nil {
			t.Fatalf("deleted %v: resumed create: %s", deleted, mustJSON(resumed))
		}
		var creates []testenv.Call
		for _, call := range r.stripe.Calls("POST", "/v1/payment_intents") {
			if call.Path == "/v1/payment_intents" && call.IdempotencyKey == "order-"+id.String()+"-intent" {
				creates = append(creates, call)
			}
		}
		if len(creates) != stripeTriesPerCall {
			t.Fatalf("deleted %v: PaymentIntent creates: %+v, want the first try's only", deleted, creates)
		}
		var replay fullOrder
		c.Do("POST", "/v1/orders", body, "Idempotency-Key", key).Expect(t, 201).Decode(t, &replay)
		if replay.ID != id || replay.Status != "CANCELED" {
			t.Fatalf("deleted %v: replay: %s", deleted, mustJSON(replay))
		}
	}
}

// A payment event for an order whose PaymentIntent id is not stored yet, which waits for the
// order's lock while the create (or another event of the same PaymentIntent) stores that very
// id, is the order's payment: it finds the id stored when it gets the lock, and must not take
// it for another PaymentIntent's (answered unknown_intent, the payment left unrecorded until
// the reconciler's sweep).
func TestPaymentWaitingWhileItsIntentIsStored(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	r.createdWithoutIntent(c, item, 2)
	id := r.onlyOrder(uid)

	held := r.holdOrder(id)
	pi := "pi_stored_meanwhile_" + uuid.NewString()[:8]
	answered := r.webhookLater(payment.TestEvent{Type: payment.EventIntentSucceeded, PaymentIntentID: pi, OrderID: id.String(),
		Amount: 2500, Currency: "usd"})
	r.waitForOrderLock("the event")
	r.attachIntent(held, id, pi)
	var got struct{ Outcome string }
	(<-answered).Expect(t, 200).Decode(t, &got)
	if got.Outcome != order.OutcomeApplied {
		t.Fatalf("outcome %q, want %q", got.Outcome, order.OutcomeApplied)
	}
	r.waitStatus(id, "PROCESSED")
}

// A cancel that read the order before its create attached a PaymentIntent and takes the
// order's lock after: it must not end the order CANCELED with that PaymentIntent still payable
// at Stripe. The worker's cancel starts over and cancels it there.
func TestCancelMeetsAPaymentIntentAttachedMeanwhile(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	r.createdWithoutIntent(c, item, 1)
	id := r.onlyOrder(uid)
	r.pauseWorker()
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+id.String()+"/cancel", nil).Expect(t, 202)

	// The order's row is held, so the worker's cancel reads the order without a PaymentIntent
	// and then waits for its lock while the create's statement attaches one.
	held := r.holdOrder(id)
	r.resumeWorker()
	r.waitForOrderLock("the cancel")
	pi := "pi_attached_" + uuid.NewString()[:8]
	r.attachIntent(held, id, pi)

	r.waitStatus(id, "CANCELED")
	got := r.get(id)
	if cancels := r.intentCancels(got); len(cancels) != 1 || cancels[0].Status != 200 {
		t.Fatalf("cancels of %s at Stripe: %+v, want one (order %s)", pi, cancels, mustJSON(got))
	}
	if got.Payment.Status != "canceled" || got.PendingAction != nil {
		t.Fatalf("order: %s", mustJSON(got))
	}
	r.wantStock(item, 10)
}

// A payment for an order whose PaymentIntent id was never stored (Stripe created it but the
// answer was lost) is matched through the order id in the PaymentIntent's metadata.
func TestPaymentForAnOrderWithoutStoredIntent(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	body, key := r.createdWithoutIntent(c, item, 2)
	id := r.onlyOrder(uid)

	pi := "pi_lost_" + uuid.NewString()[:8]
	r.webhook(payment.TestEvent{Type: payment.EventIntentSucceeded, PaymentIntentID: pi, OrderID: id.String(),
		Amount: 2500, Currency: "usd"}).Expect(t, 200)
	r.waitStatus(id, "PROCESSED")
	got := r.get(id)
	if got.Payment.PaymentIntentID == nil || *got.Payment.PaymentIntentID != pi || got.Payment.Status != "succeeded" {
		t.Fatalf("payment: %s", mustJSON(got.Payment))
	}

	// The client's retry now finds the order paid and creates no PaymentIntent.
	var resumed fullOrder
	c.Do("POST", "/v1/orders", body, "Idempotency-Key", key).Expect(t, 201).Decode(t, &resumed)
	if resumed.ID != id || resumed.Payment.PaymentIntentID == nil || *resumed.Payment.PaymentIntentID != pi {
		t.Fatalf("resumed: %s", mustJSON(resumed))
	}
	if _, ok := r.intentCreates(); len(ok) != 0 {
		t.Fatalf("a PaymentIntent was created for a paid order: %+v", ok)
	}
	r.wantStock(item, 8)
}
