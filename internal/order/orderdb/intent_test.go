package orderdb_test

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
)

// SetIntent stores the PaymentIntent and, in the same statement, the response of the request
// it ends; without a claim it stores the PaymentIntent alone.
func TestSetIntentStoresTheResponseWithIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, u, it := seed(t)
	idem := idempotency.NewStore(db)
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
	if err := (orderdb.Store{}).SetIntent(ctx, db, o.ID, "pi_1", "secret", order.PaymentRequiresPayment, claim.Completion(201, body)); err != nil {
		t.Fatal(err)
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
	if err := (orderdb.Store{}).SetIntent(ctx, db, alone.ID, "pi_2", "", order.PaymentRequiresPayment, none.Completion(201, body)); err != nil {
		t.Fatal(err)
	}
	var records int
	if err := db.GetContext(ctx, &records, `SELECT count(*) FROM idempotency_keys WHERE state = 'completed'`); err != nil {
		t.Fatal(err)
	}
	if pi := intent(alone.ID); pi != "pi_2" || records != 1 {
		t.Fatalf("without a claim: PaymentIntent %q, %d completed records, want pi_2 and the first one only", pi, records)
	}
}
