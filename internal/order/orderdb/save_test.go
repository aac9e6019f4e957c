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
		return orderdb.Store{}.Save(ctx, db, &o, order.Change{Was: was, Event: &ev, Paid: true, Msgs: msgs})
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

// A change recorded with the Stripe event behind it is written with the event, or not at all:
// when the order moved meanwhile, and when the event was recorded before (by a
// handling that did not move the order), which only its primary key can tell.
func TestSaveRecordsItsStripeEventOrNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, u, it := seed(t)
	msgs, err := outbox.Encode(ctx, outbox.Message{Type: tasks.NotifyUser, Payload: tasks.Notify{UserID: u.ID, Event: "order.paid"}})
	if err != nil {
		t.Fatal(err)
	}
	pay := func(o order.Order, eventID string) error {
		o.Status = order.Paid
		return orderdb.Store{}.Save(ctx, db, &o, order.Change{Was: order.Pending, Msgs: msgs,
			Stripe: &order.StripeEvent{ID: eventID, Type: "payment_intent.succeeded", Outcome: order.OutcomeApplied}})
	}
	written := func(o order.Order, eventID string) (status string, events, outboxRows int) {
		t.Helper()
		if err := db.GetContext(ctx, &status, `SELECT status FROM orders WHERE id = $1`, o.ID); err != nil {
			t.Fatal(err)
		}
		if err := db.GetContext(ctx, &events, `SELECT count(*) FROM stripe_events WHERE id = $1`, eventID); err != nil {
			t.Fatal(err)
		}
		if err := db.GetContext(ctx, &outboxRows, `SELECT count(*) FROM outbox`); err != nil {
			t.Fatal(err)
		}
		return status, events, outboxRows
	}

	seen := place(t, db, u, it, nil)
	seenID := "evt_seen_" + uuid.NewString()
	if _, err := (orderdb.Store{}).RecordStripeEvent(ctx, db, seenID, "payment_intent.succeeded", order.OutcomeUnknownIntent); err != nil {
		t.Fatal(err)
	}
	if err := pay(seen, seenID); !errors.Is(err, order.ErrConcurrentUpdate) {
		t.Fatalf("a change recorded with an event seen before: %v, want ErrConcurrentUpdate", err)
	}
	if st, n, m := written(seen, seenID); st != "PENDING" || n != 1 || m != 0 {
		t.Fatalf("after the refused save: order %s, %d event rows, %d outbox rows; want PENDING, 1, 0", st, n, m)
	}

	fresh := place(t, db, u, it, nil)
	freshID := "evt_fresh_" + uuid.NewString()
	if err := pay(fresh, freshID); err != nil {
		t.Fatal(err)
	}
	if st, n, m := written(fresh, freshID); st != "PAID" || n != 1 || m != 1 {
		t.Fatalf("after the save: order %s, %d event rows, %d outbox rows; want PAID, 1, 1", st, n, m)
	}
	againID := "evt_again_" + uuid.NewString()
	if err := pay(fresh, againID); !errors.Is(err, order.ErrConcurrentUpdate) {
		t.Fatalf("a change of an order that moved: %v, want ErrConcurrentUpdate", err)
	}
	if _, n, _ := written(fresh, againID); n != 0 {
		t.Fatalf("the refused change recorded its event %d times", n)
	}

}
