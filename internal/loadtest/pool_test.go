package loadtest_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/loadtest"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// The pool meter reads the API pool's waits from /metrics between two samples, and reports
// nothing against an API that does not serve them.
func TestPoolMeter(t *testing.T) {
	ctx := context.Background()
	bare := httptest.NewServer(http.NotFoundHandler())
	defer bare.Close()
	if m := loadtest.NewPoolMeter(ctx, bare.Client(), bare.URL); m.Report(loadtest.PoolSample{}, loadtest.PoolSample{Waits: 2}, 1, "order") != "" {
		t.Fatal("a meter on an API without the figures reported some")
	}

	_, url := testenv.DB(t)
	db, err := postgres.Open(ctx, url, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	metrics.WatchPool("api", db)
	api := httptest.NewServer(metrics.Handler())
	defer api.Close()

	m := loadtest.NewPoolMeter(ctx, api.Client(), api.URL)
	before := m.Sample(ctx)
	testenv.PoolWait(t, db, 20*time.Millisecond)
	got := m.Report(before, m.Sample(ctx), 2, "order")
	if !strings.Contains(got, "per order: 0.50,") {
		t.Fatalf("one wait over two orders reported as %q", got)
	}
	if strings.Contains(got, " 0.0 ms each") {
		t.Fatalf("a wait of at least 20 ms reported as %q", got)
	}
	t.Log(got)
}
