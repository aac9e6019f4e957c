package relay_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/outbox/relay"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// TestMonitorReportsFailedReadings: a backlog reading that fails reaches Failed instead of
// leaving the gauges stale without a sign.
func TestMonitorReportsFailedReadings(t *testing.T) {
	t.Parallel()
	_, url := testenv.DB(t)
	db, err := postgres.Open(context.Background(), url, 1)
	if err != nil {
		t.Fatal(err)
	}
	db.Close() // every reading fails from now on
	var published, failed atomic.Int32
	m := relay.NewMonitor(db, logging.Discard(), func(relay.Backlog) { published.Add(1) })
	// Stopped by the first failure, however late it comes; the minute only ends a monitor
	// that never reports one.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m.Failed = func(error) { failed.Add(1); cancel() }
	m.Run(ctx, 20*time.Millisecond)
	if failed.Load() == 0 || published.Load() != 0 {
		t.Fatalf("failed %d, published %d; want failures and no reading", failed.Load(), published.Load())
	}
}
