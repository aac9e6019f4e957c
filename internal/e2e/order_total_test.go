package e2e_test

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/payment"
)

// An order whose total no Stripe charge can take (past eight digits) is refused with a 400
// before anything is written: no order, no stock taken, no PaymentIntent asked for, no
// notification, and the key may be used again. Before, the order was written, refused its
// PaymentIntent by Stripe (stripe-mock does not enforce the limit), canceled, and answered
// 502. A small total is placed: a 0.01 item is valid (SPEC §3), and Stripe's least charge
// depends on the account (docs/decisions.md). An item dearer than one charge is refused by the
// catalog.
func TestAnOrderStripeCannotChargeIsRefusedBeforeItIsWritten(t *testing.T) {
	t.Parallel()
	s := newStack(t, func(o *stackOptions) { o.noRelay, o.noWorker = true, true })
	cheap, dear, penny := s.item(100, 49), s.item(1, payment.MaxAmount), s.item(100, 1)
	uid, c := s.customer()
	line := func(id uuid.UUID, qty int) map[string]any { return map[string]any{"itemId": id, "quantity": qty} }
	stocks := func() [3]int64 { return [3]int64{s.stock(cheap), s.stock(dear), s.stock(penny)} }
	before := stocks()
	intents := len(s.stripe.Calls("POST", "/v1/payment_intents"))
	messages := func() int { return s.count(`SELECT count(*) FROM outbox WHERE payload->>'userId' = $1`, uid.String()) }
	orders := func() int { return s.count(`SELECT count(*) FROM orders WHERE user_id = $1`, uid) }
	sent, placed := messages(), 0

	for _, tc := range []struct {
		name  string
		lines []map[string]any
		lang  string
		want  []string
	}{
		{"one past the largest", []map[string]any{line(dear, 1), line(penny, 1)}, "en", []string{"$999,999.99", "$1,000,000.00"}},
		{"past the largest", []map[string]any{line(dear, 1), line(cheap, 1)}, "en", []string{"$1,000,000.48"}},
		// The total is judged before the stock: an order that could never be paid is not
		// answered "short of stock" first.
		{"short of stock too", []map[string]any{line(dear, 2)}, "en", []string{"$1,999,999.98"}},
		{"in Portuguese", []map[string]any{line(dear, 1), line(cheap, 1)}, "pt-BR", []string{"US$ 999.999,99", "US$ 1.000.000,48"}},
	} {
		key := uuid.NewString()
		e := decodeError(t, c.With("Accept-Language", tc.lang).Do("POST", "/v1/orders", map[string]any{"items": tc.lines},
			"Idempotency-Key", key), 400, "orders.errors.totalTooLarge")
		for _, w := range tc.want {
			if !strings.Contains(e.Message, w) {
				t.Errorf("%s: message %q does not say %q", tc.name, e.Message, w)
			}
		}
		if got := stocks(); got != before {
			t.Fatalf("%s: stock moved %v → %v", tc.name, before, got)
		}
		if n := orders(); n != placed {
			t.Fatalf("%s: %d orders written", tc.name, n-placed)
		}
		if n := messages(); n != sent {
			t.Fatalf("%s: %d messages written", tc.name, n-sent)
		}
		if n := len(s.stripe.Calls("POST", "/v1/payment_intents")); n != intents {
			t.Fatalf("%s: %d PaymentIntents asked for", tc.name, n-intents)
		}
		// The refusal is not kept: the same key places an order one charge can take.
		c.Do("POST", "/v1/orders", map[string]any{"items": []map[string]any{line(cheap, 2)}}, "Idempotency-Key", key).Expect(t, 201)
		before, sent, placed, intents = stocks(), messages(), orders(), len(s.stripe.Calls("POST", "/v1/payment_intents"))
	}

	// The largest total, and the smallest, are placed.
	for _, lines := range [][]map[string]any{{line(dear, 1)}, {line(penny, 1)}, {line(cheap, 1)}} {
		var o orderView
		c.Do("POST", "/v1/orders", map[string]any{"items": lines}, "Idempotency-Key", uuid.NewString()).Expect(t, 201).Decode(t, &o)
		if o.Status != "PENDING" || o.Payment.PaymentIntentID == nil {
			t.Fatalf("order of %d: %+v", o.Total, o)
		}
	}

	// The catalog takes no price one charge could not pay.
	admin := s.staff("admin")
	e := decodeError(t, admin.Do("POST", "/v1/admin/items", map[string]any{"name": "Too dear", "description": "d",
		"price": payment.MaxAmount + 1, "stock": 1}, "Idempotency-Key", uuid.NewString()), 400, "common.errors.validation")
	if !e.hasDetail("price") {
		t.Fatalf("details %+v do not name price", e.Details)
	}
	e = decodeError(t, admin.Do("PATCH", "/v1/admin/items/"+dear.String(), map[string]any{"price": payment.MaxAmount + 1},
		"Idempotency-Key", uuid.NewString()), 400, "common.errors.validation")
	if !e.hasDetail("price") {
		t.Fatalf("details %+v do not name price", e.Details)
	}
}
