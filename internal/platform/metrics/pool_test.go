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
// say so under the program's name: the wait counted and timed. A second pool watched under the
// same name replaces the first.
func TestWatchPoolReportsWaits(t *testing.T) {
	t.Parallel()
	_, url := testenv.DB(t)
	open := func(conns int) *postgres.DB {
		db, err := postgres.Open(context.Background(), url, conns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	name := "test-" + uuid.NewString()[:8]
	metric := func(m string) float64 { return testenv.Metric(t, m, "db_name", name) }

	db := open(1)
	metrics.WatchPool(name, db)
	if got := metric("go_sql_max_open_connections"); got != 1 {
		t.Fatalf("max open connections %v, want 1", got)
	}
	testenv.PoolWait(t, db, 20*time.Millisecond)
	if got := metric("go_sql_wait_count_total"); got != 1 {
		t.Errorf("waits %v, want 1", got)
	}
	if got := metric("go_sql_wait_duration_seconds_total"); got < 0.02 {
		t.Errorf("time waited %vs, want at least 0.02", got)
	}
	if got := metric("go_sql_in_use_connections"); got != 0 {
		t.Errorf("in use after the wait: %v, want 0", got)
	}

	metrics.WatchPool(name, open(3))
	if got := metric("go_sql_max_open_connections"); got != 3 {
		t.Errorf("max open connections after watching a pool of 3 under the same name: %v, want 3", got)
	}
	if got := metric("go_sql_wait_count_total"); got != 0 {
		t.Errorf("waits of the new pool %v, want 0 (the old pool's figures replaced)", got)
	}
}
