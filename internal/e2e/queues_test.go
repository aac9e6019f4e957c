package e2e_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// With QUEUE_CONCURRENCY the queues named there run on servers of their own and the others
// share WORKER_CONCURRENCY: a payment still takes the order to PROCESSED through the orders
// queue, its notifications arrive through theirs, and the customer's Stripe sync runs on the
// shared one.
func TestQueuesWithSlotsOfTheirOwn(t *testing.T) {
	t.Parallel()
	s := newStack(t, func(o *stackOptions) { o.env = []string{"QUEUE_CONCURRENCY", "orders=2,notifications=1"} })
	if n := len(s.worker.Servers()); n != 3 {
		t.Fatalf("%d asynq servers, want 3 (orders, notifications, and the shared one)", n)
	}
	item := s.item(10, 700)
	uid, c := s.customer()
	o := s.order(c, 1, item)
	body, sig := s.payEvent(o, "evt_queues_"+uuid.NewString()[:12])
	if outcomes := s.webhookBurst(1, func(int) ([]byte, string) { return body, sig }); outcomes[order.OutcomeApplied] != 1 {
		t.Fatalf("webhook outcomes %v", outcomes)
	}
	s.waitStatus(o.ID, "PROCESSED")
	s.waitNotified(uid, o.ID, notification.EventOrderProcessed)
	testenv.Eventually(t, 30*time.Second, "the customer's Stripe sync (payments queue, shared slots)", func() bool {
		return s.count(`SELECT count(*) FROM users WHERE id = $1 AND stripe_customer_id IS NOT NULL`, uid) == 1
	})
}
