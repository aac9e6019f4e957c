package orderdb_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/catalog/catalogdb"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/internal/user"
	"github.com/dispatchhq/dispatch/internal/user/userdb"
)

// The load generator's seeding and its read of PROCESSED times go through the store like
// every other query; they are checked here against the reconciler's own read.
func TestSeedPendingAndProcessedAt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, u, it := seed(t)
	if err := (orderdb.Store{}).SeedPending(ctx, db, u.ID, it.ID, it.Price, 3, time.Hour); err != nil {
		t.Fatal(err)
	}
	pending, err := orderdb.Store{}.PendingBefore(ctx, db, time.Now().Add(-30*time.Minute), nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 3 {
		t.Fatalf("seeded 3 orders an hour old, the reconciler sees %d", len(pending))
	}

	ids := []uuid.UUID{pending[0].ID, pending[1].ID, uuid.New()}
	if got, err := (orderdb.Store{}).ProcessedAt(ctx, db, ids); err != nil || len(got) != 0 {
		t.Fatalf("before any order is processed: %v, %v", got, err)
	}
	to := order.Processed
	ev := order.Event{ID: uuid.New(), OrderID: pending[0].ID, Type: order.EventStatusChanged, To: &to, Actor: "system", CorrelationID: "t"}
	if err := (orderdb.Store{}).AddEvent(ctx, db, ev); err != nil {
		t.Fatal(err)
	}
	got, err := orderdb.Store{}.ProcessedAt(ctx, db, ids)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got[pending[0].ID]; len(got) != 1 || !ok {
		t.Fatalf("ProcessedAt = %v, want only %s", got, pending[0].ID)
	}
}

// seed returns a fresh database with one customer and one item.
func seed(t testing.TB) (*postgres.DB, user.User, catalog.Item) {
	t.Helper()
	ctx := context.Background()
	db, _ := testenv.DB(t)
	u := user.User{ID: uuid.New(), Name: "Bench", Email: "bench@example.com", PasswordHash: "x", Role: auth.RoleUser, Language: "en"}
	if err := (userdb.Store{}).Insert(ctx, db, &u); err != nil {
		t.Fatal(err)
	}
	it := catalog.Item{ID: uuid.New(), Name: "Bench item", Description: "d", Price: 500, Currency: "usd", Stock: 10}
	if err := (catalogdb.Store{}).Insert(ctx, db, &it); err != nil {
		t.Fatal(err)
	}
	return db, u, it
}

// place writes a PENDING order of one unit of it for u, with claim's checkpoint (nil: a request
// without a key); the test fails unless it is placed.
func place(t testing.TB, db *postgres.DB, u user.User, it catalog.Item, claim *idempotency.Claim) order.Order {
	t.Helper()
	o := order.Order{ID: uuid.New(), UserID: u.ID, Status: order.Pending,
		Lines: []order.Line{{ID: uuid.New(), ItemID: it.ID, Quantity: 1}}}
	p, err := (orderdb.Store{}).Create(context.Background(), db, &o, order.Event{ID: uuid.New(), Actor: "t", CorrelationID: "t"},
		outbox.Rows{}, claim.At(order.RecoveryOrderCreated, o.ID))
	if err != nil || !p.Placed {
		t.Fatal(p, err)
	}
	o.Lines[0].Name, o.Lines[0].UnitPrice, o.Lines[0].Subtotal = it.Name, it.Price, it.Price
	o.Total, o.Currency = it.Price, it.Currency
	return o
}
