package postgres_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// With every connection taken, callers get one in the order they came. database/sql alone
// hands a freed connection to a waiter picked at random, and this test fails on it.
func TestQueueServesTheLongestWaitingFirst(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	db.SetMaxConns(1)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE arrivals (id serial PRIMARY KEY, n int NOT NULL)`); err != nil {
		t.Fatal(err)
	}

	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	done := make(chan error, n)
	for i := range n {
		waits := db.Stats().WaitCount
		go func() {
			_, err := db.ExecContext(ctx, `INSERT INTO arrivals (n) VALUES ($1)`, i)
			done <- err
		}()
		testenv.AwaitPoolWait(t, db, waits)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	var order []int
	if err := db.SelectContext(ctx, &order, `SELECT n FROM arrivals ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 1, 2, 3, 4, 5, 6, 7}; !slices.Equal(order, want) {
		t.Errorf("served in the order %v, want %v (the order they came)", order, want)
	}
}

// However a call ends (an error from the database, no rows, a canceled context, a transaction
// rolled back, committed, or left by a panic, a wait given up), its place in the queue is given
// back: afterwards the pool still admits as many callers at once as it has connections.
func TestQueueGivesEveryPlaceBack(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	db.SetMaxConns(2)
	ctx := context.Background()
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	var n int

	if _, err := db.ExecContext(ctx, `SELECT * FROM no_such_table`); err == nil {
		t.Error("a query on a missing table: no error")
	}
	if err := db.GetContext(ctx, &n, `SELECT 1 WHERE false`); !postgres.IsNoRows(err) {
		t.Errorf("a read of no rows: %v, want no rows", err)
	}
	if err := db.SelectContext(canceled, &[]int{}, `SELECT 1`); err == nil {
		t.Error("a read with a canceled context: no error")
	}
	if _, err := db.BeginTxx(canceled, nil); err == nil {
		t.Error("a transaction begun with a canceled context: no error")
	}
	failed := errors.New("failed")
	if err := postgres.WithTx(ctx, db, func(*postgres.Tx) error { return failed }); !errors.Is(err, failed) {
		t.Errorf("a transaction whose work failed: %v", err)
	}
	func() {
		defer func() { _ = recover() }()
		_ = postgres.WithTx(ctx, db, func(*postgres.Tx) error { panic("in the transaction") })
	}()
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err == nil {
		t.Error("a rollback after the commit: no error")
	}

	// Both places taken: a caller waits, then gives up with its deadline.
	held := holdPlaces(t, db, 2)
	short, stop := context.WithTimeout(ctx, 20*time.Millisecond)
	defer stop()
	if err := db.GetContext(short, &n, `SELECT 1`); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a wait for a full pool past its deadline: %v, want the deadline", err)
	}
	held()

	holdPlaces(t, db, 2)()
	if s := db.Stats(); s.InUse != 0 || s.WaitCount == 0 {
		t.Errorf("after the calls: %d connections in use, %d waits; want 0 and the wait given up", s.InUse, s.WaitCount)
	}
}

// holdPlaces opens n transactions at once, failing the test unless it can within a few
// seconds; the function returned rolls them back.
func holdPlaces(t *testing.T, db *postgres.DB, n int) func() {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	var txs []*postgres.Tx
	for range n {
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatalf("transaction %d of %d: %v (a place not given back)", len(txs)+1, n, err)
		}
		txs = append(txs, tx)
	}
	return func() {
		for _, tx := range txs {
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// A readiness check answers whether PostgreSQL does, not how long the line is: with every place
// taken but a connection free (a transaction whose context ended, not yet rolled back), a read
// waits in the line and a ping answers.
func TestPingSkipsTheQueue(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	db.SetMaxConns(1)
	ctx, end := context.WithCancel(context.Background())
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	end() // database/sql rolls the transaction back and frees its connection; the place stays taken
	testenv.Eventually(t, 10*time.Second, "the connection freed", func() bool { return db.Stats().InUse == 0 })

	short, stop := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer stop()
	var n int
	if err := db.GetContext(short, &n, `SELECT 1`); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a read with the only place taken: %v, want to wait past its deadline", err)
	}
	pingCtx, stopPing := context.WithTimeout(context.Background(), 5*time.Second)
	defer stopPing()
	if err := db.PingContext(pingCtx); err != nil {
		t.Errorf("a ping with the only place taken: %v", err)
	}
	if err := tx.Rollback(); err == nil {
		t.Error("a rollback of the ended transaction: no error")
	}
	if err := db.GetContext(context.Background(), &n, `SELECT 1`); err != nil {
		t.Errorf("a read after the rollback: %v", err)
	}
}
