package metrics_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// A query that finds the pool's every connection taken waits for one, and the pool's figures
// say so under the program's name: the wait counted and timed, the connection in use while a
// transaction holds it. A second pool watched under the same name replaces the first.
func TestWatchPoolReportsWaits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := testenv.DB(t)
	open := func(conns int) *postgres.DB {
		db, err := postgres.Open(ctx, url, conns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	name := "test-" + uuid.NewString()[:8]
	metric := func(m string) float64 { return testenv.Metric(t, m, "db_name", name) }

	db := open(1)
	metrics.WatchPool(name, db.Pool().DB)
	if got := metric("go_sql_max_open_connections"); got != 1 {
		t.Fatalf("max open connections %v, want 1", got)
	}
	tx, err := db.BeginTxx(ctx, nil) // holds the only connection
	if err != nil {
		t.Fatal(err)
	}
	if got := metric("go_sql_in_use_connections"); got != 1 {
		t.Errorf("in use while a transaction holds the connection: %v, want 1", got)
	}
	done := make(chan error, 1)
	go func() {
		var one int
		done <- db.GetContext(ctx, &one, `SELECT 1`)
	}()
	for deadline := time.Now().Add(10 * time.Second); metric("go_sql_wait_count_total") == 0; {
		if time.Now().After(deadline) {
			t.Fatal("a query waiting for the pool's only connection was never counted as waiting")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // the wait lasts at least this long
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := metric("go_sql_wait_count_total"); got != 1 {
		t.Errorf("waits %v, want 1", got)
	}
	if got := metric("go_sql_wait_duration_seconds_total"); got < 0.02 {
		t.Errorf("time waited %vs, want at least 0.02", got)
	}
	if got := metric("go_sql_in_use_connections"); got != 0 {
		t.Errorf("in use after both finished: %v, want 0", got)
	}

	metrics.WatchPool(name, open(3).Pool().DB)
	if got := metric("go_sql_max_open_connections"); got != 3 {
		t.Errorf("max open connections after watching a pool of 3 under the same name: %v, want 3", got)
	}
	if got := metric("go_sql_wait_count_total"); got != 0 {
		t.Errorf("waits of the new pool %v, want 0 (the old pool's figures replaced)", got)
	}
}
