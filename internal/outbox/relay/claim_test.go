package relay

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// TestClaimRelaxesOnlyItsOwnCommit: the claim turns synchronous commit off for the relay's
// transaction (its bookkeeping may be lost in a crash and redone) and sets how long it may sit
// idle, both for nothing after it.
func TestClaimRelaxesOnlyItsOwnCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := testenv.DB(t)
	if _, err := db.ExecContext(ctx, `INSERT INTO outbox (type, payload, correlation_id) VALUES ('notify:user', '{}', 'c')`); err != nil {
		t.Fatal(err)
	}
	settings := func(q interface {
		GetContext(context.Context, any, string, ...any) error
	}) string {
		t.Helper()
		var v string
		if err := q.GetContext(ctx, &v, `SELECT current_setting('synchronous_commit') || ' ' ||
			current_setting('idle_in_transaction_session_timeout')`); err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := settings(db)
	err := postgres.WithTx(ctx, db, func(tx *postgres.Tx) error {
		var rows []row
		if err := tx.SelectContext(ctx, &rows, claimQuery, 10, time.Minute.Milliseconds(), "45000"); err != nil {
			return err
		}
		if len(rows) != 1 {
			t.Fatalf("claimed %d rows, want 1", len(rows))
		}
		if got := settings(tx); got != "off 45s" {
			t.Fatalf("synchronous_commit and idle limit in the claim's transaction = %q, want off 45s", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := settings(db); got != before || !strings.HasPrefix(got, "on ") {
		t.Fatalf("settings after the claim's transaction = %q, want %q as before it", got, before)
	}
}

// A claim finds its rows by the relay_at index and updates them by key, in the plans of a
// prepared statement's first executions and in the one it settles on: an `id IN (...)` was
// planned as a join that read the whole outbox for every batch, so that draining a backlog
// took time growing with its square.
func TestAClaimReadsOnlyTheRowsItTakes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := testenv.DB(t)
	if _, err := db.Pool().ExecContext(ctx, `INSERT INTO outbox (type, payload, correlation_id)
		SELECT 'notify:user', '{}', 'c' FROM generate_series(1, 5000)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool().ExecContext(ctx, `ANALYZE outbox`); err != nil {
		t.Fatal(err)
	}
	claims := func(q postgres.Querier, batch int) (int, error) {
		n := 0
		for _, c := range []struct {
			sql  string
			args []any
		}{
			{claimQuery, []any{batch, time.Minute.Milliseconds(), "60000"}},
			{claimRecentQuery, []any{batch, time.Minute.Milliseconds(), "60000", time.Hour.Milliseconds()}},
		} {
			var rows []row
			if err := q.SelectContext(ctx, &rows, c.sql, c.args...); err != nil {
				return n, err
			}
			n += len(rows)
		}
		return n, nil
	}
	// Outside a transaction the pool prepares the statements before running them (here
	// claiming nothing); inside one it runs a statement it has not prepared yet as it is.
	if _, err := claims(db, 0); err != nil {
		t.Fatal(err)
	}
	err := postgres.WithTx(ctx, db, func(tx *postgres.Tx) error {
		before, claimed := testenv.ScansOf(t, tx, "outbox"), 0
		for i := 0; i < 10; i++ { // a prepared statement's first five runs are planned for their values
			n, err := claims(tx, 50)
			if err != nil {
				return err
			}
			claimed += n
		}
		if n := testenv.ScansOf(t, tx, "outbox").Seq - before.Seq; n != 0 || claimed != 1000 {
			t.Fatalf("20 claims of 50 took %d rows and read the whole outbox %d times", claimed, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
