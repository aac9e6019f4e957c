package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/platform/outage"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// Named connections show in pg_stat_activity under the program's name; a name the URL gives
// wins.
func TestConnectionsCarryTheProgramsName(t *testing.T) {
	_, url := testenv.DB(t)
	for _, c := range []struct{ url, want string }{
		{postgres.Named(url, "dispatch-api"), "dispatch-api"},
		{postgres.Named(postgres.Named(url, "reporting"), "dispatch-api"), "reporting"},
	} {
		db, err := postgres.Open(testenv.Context(t), c.url, 1)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		err = db.GetContext(testenv.Context(t), &got, `SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()`)
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s: application_name %q, want %q", c.url, got, c.want)
		}
	}
	if got := postgres.Named("host=db user=x", "dispatch-api"); got != "host=db user=x" {
		t.Errorf("a key=value DSN was changed: %q", got)
	}
}

// TestEnsureDatabase: an existing database is used as it is, by a role that may connect to it
// alone (no right on the server's "postgres" database, as on many managed servers); a missing
// one is created, once, however many migrators race to create it.
func TestEnsureDatabase(t *testing.T) {
	pg := testenv.StartPGServer(t)
	ctx := testenv.Context(t)
	admin, err := postgres.Open(ctx, pg.URL("postgres"), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, stmt := range []string{
		`REVOKE CONNECT ON DATABASE postgres FROM PUBLIC`,
		`CREATE ROLE app LOGIN`,
		`CREATE DATABASE app_own OWNER app`,
	} {
		if _, err := admin.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	own := strings.Replace(pg.URL("app_own"), "postgres@", "app@", 1)
	if err := postgres.EnsureDatabase(ctx, own); err != nil {
		t.Fatalf("the role's own database: %v", err)
	}

	// Missing: created by exactly one of several at once, and none of them fails.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- postgres.EnsureDatabase(ctx, pg.URL("fresh")) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("creating a missing database: %v", err)
		}
	}
	var n int
	if err := admin.GetContext(ctx, &n, `SELECT count(*) FROM pg_database WHERE datname = 'fresh'`); err != nil || n != 1 {
		t.Fatalf("databases named fresh: %d (%v)", n, err)
	}

	// A role that may not create it is told so.
	err = postgres.EnsureDatabase(ctx, strings.Replace(pg.URL("other"), "postgres@", "app@", 1))
	if err == nil || !strings.Contains(err.Error(), "database other does not exist") {
		t.Fatalf("a database the role cannot create: %v, want an error saying it does not exist", err)
	}
}

// TestATransactionLeftIdleLetsItsLocksGo: a connection cut off (its bytes held, as a program
// stopped or a network gone quiet leaves it) while its transaction holds a row lock. With
// IdleTxLimit the server ends that transaction and a writer waiting on the row goes on.
func TestATransactionLeftIdleLetsItsLocksGo(t *testing.T) {
	t.Parallel()
	_, dbURL := testenv.DB(t)
	ctx := testenv.Context(t)
	direct, err := postgres.Open(ctx, dbURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { direct.Close() })
	if _, err := direct.ExecContext(ctx, `CREATE TABLE held (id int PRIMARY KEY, n int); INSERT INTO held VALUES (1, 0)`); err != nil {
		t.Fatal(err)
	}
	proxied, proxy := testenv.BehindProxy(t, dbURL)
	stopped, err := postgres.Open(ctx, postgres.IdleTxLimit(proxied, 500*time.Millisecond), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Thaw(); stopped.Close() })
	tx, err := stopped.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE held SET n = n + 1 WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	proxy.Freeze() // the holder goes quiet with its transaction open

	done := make(chan error, 1)
	go func() {
		_, err := direct.ExecContext(ctx, `UPDATE held SET n = n + 10 WHERE id = 1`)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the row stayed locked by a transaction whose program went quiet")
	}
	// Back, the holder learns its transaction is over as of an outage (its work is retried).
	proxy.Thaw()
	if _, err := tx.ExecContext(ctx, `UPDATE held SET n = n + 1 WHERE id = 1`); err == nil || !outage.Is(err) {
		t.Fatalf("the ended transaction's next statement: %v, want an outage", err)
	}
	if err := tx.Commit(); err == nil || !outage.Is(err) {
		t.Fatalf("the ended transaction's commit: %v, want an outage", err)
	}
	var n int
	if err := direct.GetContext(ctx, &n, `SELECT n FROM held WHERE id = 1`); err != nil || n != 10 {
		t.Fatalf("n = %d (%v), want 10: the quiet transaction's update must not commit", n, err)
	}
}

// A transaction whose context ends after its work, once database/sql has rolled it back, fails
// its commit with the context's error, so that a request whose client went away is answered as
// one (499), not as a server error.
func TestACommitAfterTheContextEndedFailsWithTheContextsError(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	ctx, cancel := context.WithCancel(testenv.Context(t))
	err := postgres.WithTx(ctx, db, func(tx *postgres.Tx) error {
		if _, err := tx.ExecContext(ctx, `SELECT 1`); err != nil {
			return err
		}
		cancel()
		// Wait for database/sql to roll the transaction back on the ended context.
		for {
			if _, err := tx.ExecContext(context.Background(), `SELECT 1`); errors.Is(err, sql.ErrTxDone) {
				return nil
			}
			time.Sleep(time.Millisecond)
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("commit after the context ended: %v, want context.Canceled", err)
	}
}
