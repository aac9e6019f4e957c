package orderdb_test

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// A lock that waited for another transaction of the order reads the refund that transaction
// recorded, not the one its statement's snapshot held: staff deciding on an order (a refund
// asked for, one recorded as returned outside Stripe, a delete) decide on the refund as it is.
func TestALockTakenAfterWaitingReadsTheRefundCommittedMeanwhile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, u, it := seed(t)
	store := orderdb.Store{}
	for name, lock := range map[string]func(tx *postgres.Tx, o order.Order) (order.Order, error){
		"by id": func(tx *postgres.Tx, o order.Order) (order.Order, error) { return store.Lock(ctx, tx, o.ID) },
		"by intent": func(tx *postgres.Tx, o order.Order) (order.Order, error) {
			return store.LockByIntent(ctx, tx, *o.Payment.IntentID)
		},
	} {
		t.Run(name, func(t *testing.T) {
			o := place(t, db, u, it, nil)
			intent := "pi_" + uuid.NewString()
			if _, err := db.ExecContext(ctx, `UPDATE payments SET payment_intent_id = $2 WHERE order_id = $1`, o.ID, intent); err != nil {
				t.Fatal(err)
			}
			o.Payment.IntentID = &intent
			holder, err := db.BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Rollback()
			held, err := store.Lock(ctx, holder, o.ID)
			if err != nil || held.Refund != nil {
				t.Fatalf("holder's lock: %+v, %v", held.Refund, err)
			}
			var got order.Order
			waited := testenv.Blocked(t, db, func(tx *postgres.Tx) (err error) {
				got, err = lock(tx, o)
				return err
			})

			// The holder records a refund and saves the order with it, as every refund under the
			// lock is written.
			r := order.Refund{Kind: order.RefundOrder, RefundID: "re_" + uuid.NewString(), Amount: held.Total,
				Currency: held.Currency, Status: "pending", Method: order.RefundByStripe}
			if err := store.PutRefund(ctx, holder, o.ID, r); err != nil {
				t.Fatal(err)
			}
			ev := order.Event{ID: uuid.New(), OrderID: o.ID, Type: order.EventRefundUpdated, Actor: "t", CorrelationID: "t"}
			if err := store.Save(ctx, holder, &held, order.Change{Was: held.Status, Event: &ev}); err != nil {
				t.Fatal(err)
			}
			if err := holder.Commit(); err != nil {
				t.Fatal(err)
			}
			if err := waited(); err != nil {
				t.Fatal(err)
			}
			if got.Refund == nil || *got.Refund != r {
				t.Fatalf("the waiter read refund %+v, want %+v", got.Refund, r)
			}
			if !got.UpdatedAt.Equal(held.UpdatedAt) {
				t.Fatalf("the waiter read the order as of %v, the holder saved it at %v", got.UpdatedAt, held.UpdatedAt)
			}
		})
	}
}

// BenchmarkLock prices a locked read of an order (begin, lock, roll back): what every order
// change pays before it writes.
func BenchmarkLock(b *testing.B) {
	ctx := context.Background()
	db, u, it := seed(b)
	o := place(b, db, u, it, nil)
	for b.Loop() {
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := (orderdb.Store{}).Lock(ctx, tx, o.ID); err != nil {
			b.Fatal(err)
		}
		if err := tx.Rollback(); err != nil {
			b.Fatal(err)
		}
	}
}
