package loadtest

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/catalog/catalogdb"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/outbox/relay"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/user/userdb"
)

// DemoAdmin returns the id of the demo admin, whom the API seeds at start.
func DemoAdmin(ctx context.Context, db *postgres.DB) (uuid.UUID, error) {
	c, ok, err := userdb.Store{}.CredentialsByEmail(ctx, db, demo.AdminEmail)
	if err != nil {
		return uuid.Nil, err
	}
	if !ok {
		return uuid.Nil, fmt.Errorf("the demo admin %s is needed: start the API once to seed it", demo.AdminEmail)
	}
	return c.UserID, nil
}

// DemoItem returns the first demo item as stored.
func DemoItem(ctx context.Context, db *postgres.DB) (catalog.Item, error) {
	return catalogdb.Store{}.Get(ctx, db, demo.Items()[0].ID, false)
}

// RelayDrain writes rows notify:user outbox messages for userID in one transaction and measures
// how long the running relay(s) take to empty the outbox. Run it with the relay up and the
// worker down to measure the relay alone.
func RelayDrain(ctx context.Context, db *postgres.DB, rows int, userID uuid.UUID) (time.Duration, error) {
	if n, err := backlog(ctx, db); err != nil || n > 0 {
		if err == nil {
			err = fmt.Errorf("the outbox already holds %d rows; drain it first", n)
		}
		return 0, err
	}
	msgs := make([]outbox.Message, rows)
	for i := range msgs {
		msgs[i] = outbox.Message{Type: tasks.NotifyUser,
			Payload: tasks.Notify{UserID: userID, Event: "auth.login", Data: map[string]any{"n": i}}}
	}
	write := func(tx *postgres.Tx) error { return outbox.Write(ctx, tx, msgs...) }
	if err := outbox.NewWaker(db, logging.Discard()).InTx(ctx, write); err != nil {
		return 0, err
	}
	start := time.Now()
	for {
		n, err := backlog(ctx, db)
		if err != nil {
			return 0, err
		}
		if n == 0 {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// backlog counts the outbox rows, delivered or not.
func backlog(ctx context.Context, db *postgres.DB) (int64, error) {
	b, err := relay.Stats(ctx, db)
	return b.Waiting + b.InFlight, err
}

// SeedPending creates n PENDING orders of one unit of itemID, each with a PaymentIntent id,
// created age ago, so that a reconciler run has them all to look at.
func SeedPending(ctx context.Context, db *postgres.DB, userID, itemID uuid.UUID, price int64, n int, age time.Duration) error {
	return orderdb.Store{}.SeedPending(ctx, db, userID, itemID, price, n, age)
}

// Reconcile times one reconciler run resuming at from.
func Reconcile(ctx context.Context, orders *order.Service, p order.ReconcilePolicy, from *order.PendingOrder) (order.ReconcileReport, time.Duration, error) {
	start := time.Now()
	rep, err := orders.Reconcile(ctx, start, p, from)
	return rep, time.Since(start), err
}
