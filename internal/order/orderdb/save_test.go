package orderdb_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/tasks"
)

// Save writes the change, its event, its payment and its messages in one statement, and none
// of them when the compare-and-set does not match.
func TestSaveWritesItsMessagesOnlyWithTheChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, u, it := seed(t)
	o := place(t, db, u, it, nil)
	msgs, err := outbox.Encode(ctx,
		outbox.Message{Type: tasks.NotifyUser, Payload: tasks.Notify{UserID: u.ID, Event: "order.paid"}},
		outbox.Message{Type: tasks.NotifyUser, Payload: tasks.Notify{UserID: u.ID, Event: "order.other"}})
	if err != nil {
		t.Fatal(err)
	}
	// Outside a transaction, so that what the statement itself writes is what commits.
	amount, currency := it.Price, "usd"
	o.Payment = order.Payment{Status: order.PaymentSucceeded, AmountReceived: &amount, ReceivedCurrency: &currency}
	save := func(was order.Status, to order.Status) error {
		o.Status = to
		from := was
		ev := order.Event{ID: uuid.New(), OrderID: o.ID, Type: order.EventStatusChanged, From: &from, To: &to, Actor: "t", CorrelationID: "t"}
		return orderdb.Store{}.Save(ctx, db, &o, was, order.ActionNone, &ev, true, msgs)
	}
	counts := func() (outboxRows, events int, payment string) {
		t.Helper()
		if err := db.GetContext(ctx, &outboxRows, `SELECT count(*) FROM outbox`); err != nil {
			t.Fatal(err)
		}
		if err := db.GetContext(ctx, &events, `SELECT count(*) FROM order_events WHERE order_id = $1`, o.ID); err != nil {
			t.Fatal(err)
		}
		if err := db.GetContext(ctx, &payment, `SELECT status || ' ' || COALESCE(amount_received::text, '-') FROM payments WHERE order_id = $1`, o.ID); err != nil {
			t.Fatal(err)
		}
		return outboxRows, events, payment
	}

	// Read as PAID by someone who was too late: nothing is written.
	if err := save(order.Paid, order.Processed); !errors.Is(err, order.ErrConcurrentUpdate) {
		t.Fatalf("save over a stale status: %v, want ErrConcurrentUpdate", err)
	}
	if n, e, p := counts(); n != 0 || e != 1 || p != "pending -" {
		t.Fatalf("a refused save wrote %d outbox rows, %d events beyond creation, payment %q", n, e-1, p)
	}
	if err := save(order.Pending, order.Paid); err != nil {
		t.Fatal(err)
	}
	if n, e, p := counts(); n != 2 || e != 2 || p != "succeeded 500" {
		t.Fatalf("a save wrote %d outbox rows, %d events and payment %q, want 2, 1 and succeeded 500", n, e-1, p)
	}
}
