package loadtest_test

import (
	"context"
	"testing"

	"github.com/dispatchhq/dispatch/internal/loadtest"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// The statement meter counts what the database ran between two samples, and reports nothing
// where pg_stat_statements cannot be read.
func TestStatementMeter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := testenv.StartPGServer(t) // loads pg_stat_statements
	db, err := postgres.Open(ctx, srv.URL("dispatch"), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if m := loadtest.NewStatementMeter(ctx, db); m.Report(0, 10, 1, "order") != "" {
		t.Fatal("a meter without the extension reported a figure")
	}
	if _, err := db.ExecContext(ctx, `CREATE EXTENSION pg_stat_statements`); err != nil {
		t.Fatal(err)
	}
	m := loadtest.NewStatementMeter(ctx, db)
	before := m.Sample(ctx)
	for range 4 {
		var n int
		if err := db.GetContext(ctx, &n, `SELECT 1`); err != nil {
			t.Fatal(err)
		}
	}
	after := m.Sample(ctx)
	// The four statements, and the meter's own first sample.
	if got := after - before; got != 5 {
		t.Fatalf("counted %d statements, want 5", got)
	}
	if got, want := m.Report(before, after, 2, "order"), "  PostgreSQL statements per order: 2.50 (pg_stat_statements; BEGIN and COMMIT included)\n"; got != want {
		t.Fatalf("report %q, want %q", got, want)
	}
}
