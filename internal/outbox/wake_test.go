package outbox_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// listen returns the notifications on outbox.Channel of the database at dbURL.
func listen(t *testing.T, dbURL string) <-chan *pq.Notification {
	t.Helper()
	l := pq.NewListener(dbURL, 10*time.Millisecond, time.Second, nil)
	t.Cleanup(func() { _ = l.Close() })
	if err := l.Listen(outbox.Channel); err != nil {
		t.Fatal(err)
	}
	return l.Notify
}

// TestTheWritingTransactionSendsNoNotify: a transaction that writes outbox rows commits without
// a NOTIFY of its own (PostgreSQL would serialize its commit behind every other notifying
// one); the Waker sends it once the commit is done.
func TestTheWritingTransactionSendsNoNotify(t *testing.T) {
	t.Parallel()
	db, dbURL := testenv.DB(t)
	ctx := testenv.Context(t)
	notes := listen(t, dbURL)
	write := func(tx *postgres.Tx) error {
		return outbox.Write(ctx, tx, outbox.Message{Type: tasks.CustomerCreate, Payload: tasks.Customer{UserID: uuid.New()}})
	}
	if err := postgres.WithTx(ctx, db, write); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-notes:
		t.Fatalf("the writing transaction notified: %+v", n)
	case <-time.After(300 * time.Millisecond):
	}

	if err := outbox.NewWaker(db, logging.Discard()).InTx(ctx, write); err != nil {
		t.Fatal(err)
	}
	select {
	case <-notes:
	case <-time.After(10 * time.Second):
		t.Fatal("no NOTIFY after the commit")
	}
}

// TestWakesComingTogetherShareANotify: wakes from many goroutines at once are answered by at
// least one NOTIFY, and by far fewer NOTIFYs than wakes.
func TestWakesComingTogetherShareANotify(t *testing.T) {
	t.Parallel()
	db, dbURL := testenv.DB(t)
	notes := listen(t, dbURL)
	w := outbox.NewWaker(db, logging.Discard())
	const wakes = 2000
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range wakes / 8 {
				w.Wake()
			}
		}()
	}
	wg.Wait()
	receive(t, notes, 1, "wakes from many goroutines")
	testenv.Eventually(t, 10*time.Second, "the waker idle", w.Idle)
	if got := 1 + count(notes); got > wakes/10 {
		t.Fatalf("%d NOTIFYs for %d wakes, want at most %d", got, wakes, wakes/10)
	}
}

// TestAWakeDuringASendGetsANotifyOfItsOwn: of two wakes in a row, the second comes while the
// first one's NOTIFY is in flight or after it; either way a NOTIFY follows it.
func TestAWakeDuringASendGetsANotifyOfItsOwn(t *testing.T) {
	t.Parallel()
	db, dbURL := testenv.DB(t)
	notes := listen(t, dbURL)
	w := outbox.NewWaker(db, logging.Discard())
	for round := 1; round <= 5; round++ {
		w.Wake()
		w.Wake()
		what := fmt.Sprintf("round %d, two wakes in a row", round)
		receive(t, notes, 2, what)
		// Idle before the next round: a wake that came while this round's sender was still
		// finishing would rightly share the NOTIFY it sends next.
		testenv.Eventually(t, 10*time.Second, "the waker idle", w.Idle)
		if extra := count(notes); extra != 0 {
			t.Fatalf("%s: %d NOTIFYs, want 2", what, 2+extra)
		}
	}
}

// receive waits for n notifications, as long as a loaded machine may take to deliver them.
func receive(t *testing.T, notes <-chan *pq.Notification, n int, what string) {
	t.Helper()
	for i := range n {
		select {
		case <-notes:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: %d NOTIFYs, want %d", what, i, n)
		}
	}
}

// count counts the notifications that come until none came for 300 ms. A loaded machine can only
// make it count too few, so it serves for the NOTIFYs that must not come.
func count(notes <-chan *pq.Notification) int {
	got := 0
	for {
		select {
		case <-notes:
			got++
		case <-time.After(300 * time.Millisecond):
			return got
		}
	}
}
