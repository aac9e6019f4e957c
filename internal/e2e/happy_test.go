package e2e_test

import (
	"testing"

	"github.com/dispatchhq/dispatch/internal/notification"
)

func TestHappyPathToDelivered(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	item := s.item(10, 1250)
	uid, c := s.customer()

	o := s.order(c, 2, item)
	// The payment's status is the PaymentIntent's, as Stripe names it (SPEC §3).
	if o.Status != "PENDING" || o.Total != 2500 || o.Payment.PaymentIntentID == nil || o.Payment.ClientSecret == nil ||
		o.Payment.Status != "requires_payment_method" {
		t.Fatalf("created order: %+v", o)
	}
	if got := s.stock(item); got != 8 {
		t.Fatalf("stock after order = %d, want 8", got)
	}
	s.pay(o)
	s.waitStatus(o.ID, "PROCESSED")

	s.staff("shipper").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/ship",
		map[string]string{"trackingNumber": "TRK123", "carrier": "UPS"}).Expect(t, 200)
	s.staff("delivery").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/deliver", nil).Expect(t, 200)
	s.waitStatus(o.ID, "DELIVERED")

	var timeline struct {
		Items []struct {
			Type, Actor          string
			FromStatus, ToStatus *string
		}
	}
	c.Do("GET", "/v1/orders/"+o.ID.String()+"/events", nil).Expect(t, 200).Decode(t, &timeline)
	if len(timeline.Items) == 0 || timeline.Items[0].Type != "created" {
		t.Fatalf("the timeline does not open with the created event: %+v", timeline.Items)
	}
	path := []string{"PENDING"}
	for _, e := range timeline.Items {
		if e.ToStatus != nil {
			path = append(path, *e.FromStatus+"→"+*e.ToStatus)
		}
	}
	want := []string{"PENDING", "PENDING→PAID", "PAID→PROCESSED", "PROCESSED→SHIPPED", "SHIPPED→DELIVERED"}
	if len(path) != len(want) {
		t.Fatalf("timeline statuses %v, want %v", path, want)
	}
	for i := range want {
		if path[i] != want[i] {
			t.Fatalf("timeline statuses %v, want %v", path, want)
		}
	}
	for _, ev := range []string{notification.EventOrderCreated, notification.EventOrderPaid, notification.EventOrderProcessed,
		notification.EventOrderShipped, notification.EventOrderDelivered} {
		s.waitNotified(uid, o.ID, ev)
		if n := s.notifications(uid, o.ID, ev); n != 1 {
			t.Fatalf("%s notifications = %d, want 1", ev, n)
		}
	}
	if got := s.stock(item); got != 8 {
		t.Fatalf("stock after delivery = %d, want 8", got)
	}
}
