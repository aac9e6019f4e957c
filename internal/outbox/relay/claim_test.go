package relay

import (
	"context"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// TestClaimRelaxesOnlyItsOwnCommit: the claim turns synchronous commit off for the relay's
// transaction (its bookkeeping may be lost in a crash and redone) and for nothing after it.
func TestClaimRelaxesOnlyItsOwnCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := testenv.DB(t)
	if _, err := db.ExecContext(ctx, `INSERT INTO outbox (type, payload, correlation_id) VALUES ('notify:user', '{}', 'c')`); err != nil {
		t.Fatal(err)
	}
	setting := func(q interface {
		GetContext(context.Context, any, string, ...any) error
	}) string {
		t.Helper()
		var v string
		if err := q.GetContext(ctx, &v, `SELECT current_setting('synchronous_commit')`); err != nil {
			t.Fatal(err)
		}
		return v
	}
	err := postgres.WithTx(ctx, db, func(tx *postgres.Tx) error {
		var rows []row
		if err := tx.SelectContext(ctx, &rows, claimQuery, 10, time.Minute.Milliseconds()); err != nil {
			return err
		}
		if len(rows) != 1 {
			t.Fatalf("claimed %d rows, want 1", len(rows))
		}
		if got := setting(tx); got != "off" {
			t.Fatalf("synchronous_commit in the claim's transaction = %q, want off", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := setting(db); got != "on" {
		t.Fatalf("synchronous_commit after the claim's transaction = %q, want on", got)
	}
}
