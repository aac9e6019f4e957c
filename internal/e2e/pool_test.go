package e2e_test

import (
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// TestEveryTaskRunsOnOneConnection: with API, relay and worker sharing one database connection,
// orders still go through payment and processing to delivery, to a cancel with its refund and to
// a refund with its restock. No request or task holds a connection while it waits for another,
// so a small pool (DB_MAX_CONNS) makes work wait, never deadlock.
func TestEveryTaskRunsOnOneConnection(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.db.SetMaxConns(1)
	// Work stuck on the pool stops everything after it, the test's own queries too.
	testenv.Watchdog(t, 2*time.Minute, "the stack on one database connection (work holding a connection while it waits for another)")

	item := s.item(10, 1250)
	uid, c := s.customer()
	delivered, canceled, refunded := s.processed(c, 1, item), s.processed(c, 2, item), s.processed(c, 3, item)
	if got := s.stock(item); got != 4 {
		t.Fatalf("stock after three orders = %d, want 4", got)
	}
	s.staff("shipper").Do("PATCH", "/v1/admin/orders/"+delivered.ID.String()+"/ship",
		map[string]string{"trackingNumber": "TRK1", "carrier": "UPS"}).Expect(t, 200)
	s.staff("delivery").Do("PATCH", "/v1/admin/orders/"+delivered.ID.String()+"/deliver", nil).Expect(t, 200)
	financial := s.staff("financial")
	financial.Do("PATCH", "/v1/admin/orders/"+canceled.ID.String()+"/cancel", nil).Expect(t, 202)
	financial.Do("PATCH", "/v1/admin/orders/"+refunded.ID.String()+"/refund", nil).Expect(t, 202)

	s.waitStatus(delivered.ID, "DELIVERED")
	s.waitStatus(canceled.ID, "CANCELED")
	s.waitStatus(refunded.ID, "REFUNDED")
	if got := s.stock(item); got != 9 {
		t.Fatalf("stock after the cancel and the refund = %d, want 9", got)
	}
	s.waitNotified(uid, delivered.ID, notification.EventOrderDelivered)
	s.waitNotified(uid, canceled.ID, notification.EventOrderCanceled)
	s.waitNotified(uid, refunded.ID, notification.EventOrderRefunded)
}
