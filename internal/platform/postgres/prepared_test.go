package postgres_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// A transaction holding the pool's only connection must still run a query the pool has never
// prepared: preparing it on the pool would wait for a second connection forever.
func TestTxRunsUnseenQueryOnFullPool(t *testing.T) {
	ctx, db := openPool(t, 1)

	err := postgres.WithTx(ctx, db, func(tx *postgres.Tx) error {
		var n int
		if err := tx.GetContext(ctx, &n, "SELECT $1::int + 1 AS n", 41); err != nil {
			return err
		}
		if n != 42 {
			t.Errorf("got %d, want 42", n)
		}
		_, err := tx.ExecContext(ctx, "SELECT $1::text", "unseen")
		return err
	})
	if err != nil {
		t.Fatalf("transaction on a full pool: %v", err)
	}
}

// Once the pool knows a query, pool reads and transactions run it as a named prepared statement
// on their connection rather than parsing and planning it again.
func TestQueriesRunPrepared(t *testing.T) {
	ctx, db := openPool(t, 1)

	const query = "SELECT count(*) FROM users WHERE email = $1"
	var n int
	if err := db.GetContext(ctx, &n, query, "nobody@example.com"); err != nil {
		t.Fatal(err)
	}

	prepared := func(q interface {
		GetContext(context.Context, any, string, ...any) error
	}) bool {
		var found bool
		if err := q.GetContext(ctx, &found,
			"SELECT EXISTS (SELECT 1 FROM pg_prepared_statements WHERE statement = $1) AS found", query); err != nil {
			t.Fatal(err)
		}
		return found
	}
	if !prepared(db) {
		t.Fatal("a pool query is not a prepared statement on its connection")
	}
	// Every way of reading on the pool takes the prepared path.
	var ns []int
	for name, get := range map[string]func(q string) error{
		"db.Get":           func(q string) error { return db.Get(&n, q, "x@example.com") },
		"db.SelectContext": func(q string) error { return db.SelectContext(ctx, &ns, q, "x@example.com") },
	} {
		q := "SELECT count(*) FROM users WHERE email = $1 -- " + name
		if err := get(q); err != nil {
			t.Fatal(err)
		}
		var found bool
		if err := db.GetContext(ctx, &found, "SELECT EXISTS (SELECT 1 FROM pg_prepared_statements WHERE statement = $1) AS found", q); err != nil {
			t.Fatal(err)
		}
		if !found {
			t.Errorf("%s ran unprepared", name)
		}
	}
	err := postgres.WithTx(ctx, db, func(tx *postgres.Tx) error {
		if err := tx.GetContext(ctx, &n, query, "nobody@example.com"); err != nil {
			return err
		}
		if !prepared(tx) {
			t.Error("a transaction query is not a prepared statement on its connection")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// A query whose statement fails to prepare reports the error to its caller.
	if err := db.GetContext(ctx, &n, "SELECT count(*) FROM no_such_table"); err == nil {
		t.Fatal("query on a missing table: no error")
	}
}

// Close waits for the background prepares a transaction started: none runs on a closed pool
// or stores a statement after the others were closed (run with -race).
func TestCloseWaitsForBackgroundPrepares(t *testing.T) {
	_, url := testenv.DB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := postgres.Open(ctx, url, 2)
	if err != nil {
		t.Fatal(err)
	}
	err = postgres.WithTx(ctx, db, func(tx *postgres.Tx) error {
		for i := range 20 {
			if _, err := tx.ExecContext(ctx, "SELECT $1::int + "+strconv.Itoa(i), i); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.GetContext(ctx, &n, "SELECT 1"); err == nil {
		t.Fatal("a query ran on a closed pool")
	}
}

// TestCloseGivesUpOnAServerThatStoppedAnswering: closing a prepared statement is a round trip,
// so against a frozen server Close would wait for TCP to give up (minutes), and a program's
// shutdown with it; it returns ErrCloseTimedOut instead.
func TestCloseGivesUpOnAServerThatStoppedAnswering(t *testing.T) {
	db, proxy := testenv.DBBehindProxy(t, 2)
	ctx := testenv.Context(t)
	var n int
	if err := db.GetContext(ctx, &n, "SELECT $1::int", 7); err != nil { // a statement on an idle connection
		t.Fatal(err)
	}
	proxy.Freeze() // thawed when the test ends
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	select {
	case err := <-closed:
		if !errors.Is(err, postgres.ErrCloseTimedOut) {
			t.Fatalf("Close: %v, want ErrCloseTimedOut", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Close still waits for a server that stopped answering")
	}
}

// AfterCommit's functions run once the work they follow has committed: after a transaction's
// commit, never after a rollback or a commit that failed, and at once for a statement on its
// own.
func TestAfterCommitRunsOnlyOnceTheWorkCommitted(t *testing.T) {
	ctx, db := openPool(t, 2)
	if _, err := db.ExecContext(ctx, `CREATE TABLE after_commit (k int UNIQUE DEFERRABLE INITIALLY DEFERRED)`); err != nil {
		t.Fatal(err)
	}
	run := func(fail bool, insert ...int) (ran bool, err error) {
		err = postgres.WithTx(ctx, db, func(tx *postgres.Tx) error {
			for _, k := range insert {
				if _, err := tx.ExecContext(ctx, `INSERT INTO after_commit VALUES ($1)`, k); err != nil {
					return err
				}
			}
			postgres.AfterCommit(tx, func() { ran = true })
			if ran {
				t.Error("ran before the commit")
			}
			if fail {
				return errors.New("rolled back")
			}
			return nil
		})
		return ran, err
	}
	if ran, err := run(false, 1); err != nil || !ran {
		t.Fatalf("committed: ran %v, %v", ran, err)
	}
	if ran, err := run(true, 2); err == nil || ran {
		t.Fatalf("rolled back: ran %v, %v", ran, err)
	}
	// The unique check is deferred to the commit, which then fails.
	if ran, err := run(false, 3, 3); err == nil || ran {
		t.Fatalf("commit failed: ran %v, %v", ran, err)
	}
	ran := false
	postgres.AfterCommit(db, func() { ran = true })
	if !ran {
		t.Fatal("not run at once outside a transaction")
	}
}

// openPool opens a pool of conns connections on a database of the test's own, closed when the
// test ends; ctx bounds the test's statements.
func openPool(t *testing.T, conns int) (context.Context, *postgres.DB) {
	t.Helper()
	_, url := testenv.DB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	db, err := postgres.Open(ctx, url, conns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return ctx, db
}

// After a restart every pooled connection is dead: the first readiness ping must find the
// server that is back, not report it down once per dead connection (each ping used to take one
// and fail).
func TestAPingAfterTheServerClosedEveryConnectionFindsItUp(t *testing.T) {
	t.Parallel()
	_, dbURL := testenv.DB(t)
	ctx := testenv.Context(t)
	name := "ping-" + uuid.NewString()
	const size = 4
	db, err := postgres.Open(ctx, postgres.Named(dbURL, name), size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var wg sync.WaitGroup
	for range size {
		wg.Go(func() {
			if _, err := db.Pool().ExecContext(ctx, `SELECT pg_sleep(0.2)`); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if idle := db.Pool().Stats().Idle; idle != size {
		t.Fatalf("%d idle connections, want %d", idle, size)
	}
	admin, err := postgres.Open(ctx, dbURL, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	// The server ends them, as a restart does.
	var ended int
	if err := admin.Pool().GetContext(ctx, &ended, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))
		FROM pg_stat_activity WHERE application_name = $1`, name); err != nil || ended != size {
		t.Fatalf("ended %d connections (%v), want %d", ended, err, size)
	}
	pingCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		t.Fatalf("the first ping after the server closed every connection: %v", err)
	}
}
