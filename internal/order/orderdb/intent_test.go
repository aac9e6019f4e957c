package orderdb_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// SetIntent stores the PaymentIntent and, in the same statement, the response of the request
// it ends; without a claim it stores the PaymentIntent alone.
func TestSetIntentStoresTheResponseWithIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, u, it := seed(t)
	idem := idempotency.NewStore(db, "test")
	intent := func(id uuid.UUID) string {
		t.Helper()
		var pi string
		if err := db.GetContext(ctx, &pi, `SELECT COALESCE(payment_intent_id, '') FROM payments WHERE order_id = $1`, id); err != nil {
			t.Fatal(err)
		}
		return pi
	}

	claim, _, err := idem.Begin(ctx, idempotency.Scope{Owner: u.ID.String(), Method: "POST", Path: "/v1/orders", Key: "k"}, []byte("fp"))
	if err != nil {
		t.Fatal(err)
	}
	o := place(t, db, u, it, claim)
	body := []byte(`{"id":"` + o.ID.String() + `"}`)
	if ok, err := (orderdb.Store{}).SetIntent(ctx, db, o.ID, "pi_1", "secret", order.PaymentRequiresPayment, claim.Completion(201, body)); err != nil || !ok {
		t.Fatalf("SetIntent: %v, %v", ok, err)
	}
	if pi := intent(o.ID); pi != "pi_1" || !claim.Completed {
		t.Fatalf("PaymentIntent %q, claim completed %v", pi, claim.Completed)
	}
	_, replay, err := idem.Begin(ctx, claim.Scope, []byte("fp"))
	if err != nil || replay == nil || replay.Status != 201 || string(replay.Body) != string(body) {
		t.Fatalf("replay %+v (%v), want 201 %s", replay, err, body)
	}

	alone := place(t, db, u, it, nil)
	var none *idempotency.Claim
	if ok, err := (orderdb.Store{}).SetIntent(ctx, db, alone.ID, "pi_2", "", order.PaymentRequiresPayment, none.Completion(201, body)); err != nil || !ok {
		t.Fatalf("SetIntent: %v, %v", ok, err)
	}
	var records int
	if err := db.GetContext(ctx, &records, `SELECT count(*) FROM idempotency_keys WHERE state = 'completed'`); err != nil {
		t.Fatal(err)
	}
	if pi := intent(alone.ID); pi != "pi_2" || records != 1 {
		t.Fatalf("without a claim: PaymentIntent %q, %d completed records, want pi_2 and the first one only", pi, records)
	}
}

// SetIntent writes nothing, the response included, for an order that has its PaymentIntent (a
// recorded payment is never set back) or is no longer PENDING; AdoptIntent, the payment
// event's, records one on an order without one whatever its status.
func TestSetIntentOnlyOnAPendingOrderWithout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, u, it := seed(t)
	idem := idempotency.NewStore(db, "test")
	store := orderdb.Store{}
	payment := func(id uuid.UUID) (pi, status string) {
		t.Helper()
		var row struct{ PI, Status string }
		if err := db.GetContext(ctx, &row, `SELECT COALESCE(payment_intent_id, '') AS pi, status FROM payments WHERE order_id = $1`, id); err != nil {
			t.Fatal(err)
		}
		return row.PI, row.Status
	}

	paid := place(t, db, u, it, nil)
	if ok, err := store.SetIntent(ctx, db, paid.ID, "pi_paid", "secret", order.PaymentRequiresPayment, idempotency.Completion{}); err != nil || !ok {
		t.Fatalf("first SetIntent: %v, %v", ok, err)
	}
	if _, err := db.ExecContext(ctx, `UPDATE payments SET status = 'succeeded' WHERE order_id = $1`, paid.ID); err != nil {
		t.Fatal(err)
	}
	for _, pi := range []string{"pi_paid", "pi_other"} { // a slow first attempt, stripe-mock's fresh id
		if ok, err := store.SetIntent(ctx, db, paid.ID, pi, "secret", order.PaymentRequiresPayment, idempotency.Completion{}); err != nil || ok {
			t.Fatalf("SetIntent(%s) on a paid order: %v, %v; want false", pi, ok, err)
		}
	}
	if pi, status := payment(paid.ID); pi != "pi_paid" || status != "succeeded" {
		t.Fatalf("paid order's payment %s/%s, want pi_paid/succeeded", pi, status)
	}

	claim, _, err := idem.Begin(ctx, idempotency.Scope{Owner: u.ID.String(), Method: "POST", Path: "/v1/orders", Key: "canceled"}, []byte("fp"))
	if err != nil {
		t.Fatal(err)
	}
	canceled := place(t, db, u, it, claim)
	if _, err := db.ExecContext(ctx, `UPDATE orders SET status = 'CANCELED' WHERE id = $1`, canceled.ID); err != nil {
		t.Fatal(err)
	}
	if ok, err := store.SetIntent(ctx, db, canceled.ID, "pi_late", "secret", order.PaymentRequiresPayment, claim.Completion(201, []byte(`{}`))); err != nil || ok || claim.Completed {
		t.Fatalf("SetIntent on a CANCELED order: %v, %v, completed %v; want false and no response", ok, err, claim.Completed)
	}
	var state string
	if err := db.GetContext(ctx, &state, `SELECT state FROM idempotency_keys WHERE key = 'canceled'`); err != nil || state == "completed" {
		t.Fatalf("idempotency record %q (%v), want it not completed", state, err)
	}
	if pi, _ := payment(canceled.ID); pi != "" {
		t.Fatalf("CANCELED order got PaymentIntent %q", pi)
	}
	if err := store.AdoptIntent(ctx, db, canceled.ID, "pi_late"); err != nil {
		t.Fatal(err)
	}
	if pi, status := payment(canceled.ID); pi != "pi_late" || status != order.PaymentRequiresPayment {
		t.Fatalf("adopted: %s/%s", pi, status)
	}
}

// A cancel that commits while SetIntent waits for the payment's row (the cancel writes it)
// leaves SetIntent nothing to write: it read the order as PENDING before the wait, and only
// the payment's row is read again after it.
func TestSetIntentBehindACancel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, u, it := seed(t)
	o := place(t, db, u, it, nil)

	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := (orderdb.Store{}).Lock(ctx, tx, o.ID); err != nil {
		t.Fatal(err)
	}
	// What a cancel's Save writes: the order, then its payment.
	if _, err := tx.ExecContext(ctx, `UPDATE orders SET status = 'CANCELED', canceled_at = now() WHERE id = $1`, o.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE payments SET status = 'canceled' WHERE order_id = $1`, o.ID); err != nil {
		t.Fatal(err)
	}
	type result struct {
		ok  bool
		err error
	}
	done := make(chan result, 1)
	go func() {
		ok, err := (orderdb.Store{}).SetIntent(ctx, db, o.ID, "pi_late", "secret", order.PaymentRequiresPayment, idempotency.Completion{})
		done <- result{ok, err}
	}()
	testenv.Eventually(t, 10*time.Second, "SetIntent waiting for the payment's row", func() bool {
		var n int
		if err := db.GetContext(ctx, &n, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.err != nil || r.ok {
		t.Fatalf("SetIntent after the cancel: %v, %v; want false", r.ok, r.err)
	}
	var pi *string
	if err := db.GetContext(ctx, &pi, `SELECT payment_intent_id FROM payments WHERE order_id = $1`, o.ID); err != nil || pi != nil {
		t.Fatalf("CANCELED order's PaymentIntent %v (%v), want none", pi, err)
	}
}

// A payment written under its name from before migration 13, by a program of then still
// running during a rolling deploy, reads under the name that replaced it.
func TestAnOpenPaymentOfBeforeMigration13ReadsUnderItsNewName(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, u, it := seed(t)
	o := place(t, db, u, it, nil)
	if _, err := db.ExecContext(ctx, `UPDATE payments SET status = 'requires_payment' WHERE order_id = $1`, o.ID); err != nil {
		t.Fatal(err)
	}
	got, err := (orderdb.Store{}).Get(ctx, db, o.ID)
	if err != nil || got.Payment.Status != order.PaymentRequiresPayment {
		t.Fatalf("payment status %q (%v), want %q", got.Payment.Status, err, order.PaymentRequiresPayment)
	}
}
