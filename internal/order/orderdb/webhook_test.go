package orderdb_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/catalog/catalogdb"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// counting is the orders store, counting the calls that tell the webhook's two ways apart.
type counting struct {
	orderdb.Store
	locks, records, saves atomic.Int32
}

func (c *counting) LockByIntent(ctx context.Context, tx postgres.Querier, intentID string) (order.Order, error) {
	c.locks.Add(1)
	return c.Store.LockByIntent(ctx, tx, intentID)
}

func (c *counting) RecordStripeEvent(ctx context.Context, tx sqlx.ExecerContext, id, typ, outcome string) (bool, error) {
	c.records.Add(1)
	return c.Store.RecordStripeEvent(ctx, tx, id, typ, outcome)
}

func (c *counting) Save(ctx context.Context, tx postgres.Querier, o *order.Order, ch order.Change) error {
	c.saves.Add(1)
	return c.Store.Save(ctx, tx, o, ch)
}

// A payment event that moves its order takes no lock and no transaction of its own: the order
// is read, then changed and the event recorded in one statement. An event seen before, or one
// that moves nothing, is left to the locking way, which tells it apart.
func TestAPaymentIsAppliedWithoutALock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, u, it := seed(t)
	rdb, keys, _ := testenv.Redis(t)
	log := slog.New(slog.DiscardHandler)
	store := &counting{}
	svc := order.NewService(db, store, catalogdb.Store{}, catalog.NewCache(rdb, keys, time.Minute, log), nil,
		idempotency.NewStore(db, "test"), nil, outbox.NewWaker(db, log), log)

	o := place(t, db, u, it, nil)
	intent := "pi_" + uuid.NewString()
	if ok, err := (orderdb.Store{}).SetIntent(ctx, db, o.ID, intent, "", order.PaymentRequiresPayment, idempotency.Completion{}); err != nil || !ok {
		t.Fatalf("SetIntent: %v, %v", ok, err)
	}
	ev := payment.Event{ID: "evt_" + uuid.NewString(), Type: payment.EventIntentSucceeded, APIVersion: payment.APIVersion,
		PaymentIntentID: intent, AmountReceived: o.Total, Currency: o.Currency}
	calls := func() [3]int32 { return [3]int32{store.locks.Load(), store.records.Load(), store.saves.Load()} }

	if outcome, err := svc.HandlePaymentEvent(ctx, ev); err != nil || outcome != order.OutcomeApplied {
		t.Fatalf("first delivery: %q, %v", outcome, err)
	}
	if c := calls(); c != [3]int32{0, 0, 1} {
		t.Fatalf("first delivery: %d locks, %d separate records, %d saves; want 0, 0, 1", c[0], c[1], c[2])
	}
	if outcome, err := svc.HandlePaymentEvent(ctx, ev); err != nil || outcome != order.OutcomeDuplicate {
		t.Fatalf("second delivery: %q, %v", outcome, err)
	}
	if c := calls(); c != [3]int32{1, 1, 1} {
		t.Fatalf("after the second delivery: %d locks, %d separate records, %d saves; want 1, 1, 1", c[0], c[1], c[2])
	}
	var status string
	var events int
	if err := db.GetContext(ctx, &status, `SELECT status FROM orders WHERE id = $1`, o.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.GetContext(ctx, &events, `SELECT count(*) FROM stripe_events WHERE id = $1 AND outcome = 'applied'`, ev.ID); err != nil {
		t.Fatal(err)
	}
	if status != "PAID" || events != 1 {
		t.Fatalf("order %s with %d applied records of the event, want PAID and 1", status, events)
	}
}
