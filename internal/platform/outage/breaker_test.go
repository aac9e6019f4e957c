package outage_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/platform/outage"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

var timeout = &net.OpError{Op: "read", Net: "tcp", Err: errors.New("i/o timeout")}

// returning is a call that ends with err and counts that it ran.
func returning(ran *int, err error) func() error {
	return func() error { *ran++; return err }
}

// probe is a service the test brings back: its probes time out until then.
type probe struct {
	back  atomic.Bool
	tries atomic.Int32
}

func (p *probe) call(context.Context) error {
	p.tries.Add(1)
	if p.back.Load() {
		return nil
	}
	return timeout
}

// TestBreakerOpensAfterOutagesInARowAndItsProbeClosesIt: three outages in a row open it; then
// no call goes, its probe tries the service until it answers, and that closes it.
func TestBreakerOpensAfterOutagesInARowAndItsProbeClosesIt(t *testing.T) {
	t.Parallel()
	var logs testenv.Buffer
	p := &probe{}
	b := outage.NewBreaker("redis", 3, 10*time.Millisecond, p.call, slog.New(slog.NewJSONHandler(&logs, nil)))
	ctx := context.Background()
	ran := 0
	for i := 0; i < 3; i++ {
		if b.Open() {
			t.Fatalf("open after %d outages", i)
		}
		if err := b.Do(ctx, returning(&ran, fmt.Errorf("redis: %w", timeout))); !errors.Is(err, timeout) {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	if !b.Open() || ran != 3 {
		t.Fatalf("not open after three outages in a row (%d calls ran)", ran)
	}
	testenv.Eventually(t, 10*time.Second, "the probe tries the service again and again", func() bool { return p.tries.Load() >= 3 })
	for i := 0; i < 10; i++ {
		if err := b.Do(ctx, returning(&ran, nil)); !errors.Is(err, outage.ErrSkipped) {
			t.Fatalf("a call while open: %v, want %v", err, outage.ErrSkipped)
		}
	}
	if ran != 3 || !b.Open() {
		t.Fatalf("%d calls ran, open %v: a call went while the service was away", ran, b.Open())
	}

	p.back.Store(true)
	testenv.Eventually(t, 10*time.Second, "the probe closes the breaker", func() bool { return !b.Open() })
	if err := b.Do(ctx, returning(&ran, redis.Nil)); !errors.Is(err, redis.Nil) || ran != 4 {
		t.Fatalf("closed again: %v after %d calls", err, ran)
	}
	if !strings.Contains(logs.String(), "not answering") || !strings.Contains(logs.String(), "answers again") {
		t.Fatalf("opening and closing not logged:\n%s", logs.String())
	}

	// Closed again, it counts from zero.
	b.Do(ctx, returning(&ran, timeout))
	b.Do(ctx, returning(&ran, timeout))
	if b.Open() {
		t.Fatal("the outages before the answer still counted")
	}
}

// TestBreakerCountsOnlyOutagesInARow: an answer between outages, an error answer included,
// starts the count again; a call whose caller gave up or ran out of time says nothing of the
// service, neither way.
func TestBreakerCountsOnlyOutagesInARow(t *testing.T) {
	t.Parallel()
	p := &probe{}
	b := outage.NewBreaker("redis", 3, time.Hour, p.call, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	gone, cancel := context.WithCancel(ctx)
	cancel()
	ran := 0
	for i := 0; i < 10; i++ {
		b.Do(ctx, returning(&ran, timeout))
		b.Do(ctx, returning(&ran, timeout))
		b.Do(ctx, returning(&ran, errors.New("WRONGTYPE Operation against a key holding the wrong kind of value")))
		b.Do(gone, returning(&ran, timeout))
		b.Do(gone, returning(&ran, context.Canceled))
	}
	if b.Open() {
		t.Fatal("opened without three outages in a row")
	}
	b.Do(ctx, returning(&ran, timeout))
	b.Do(gone, returning(&ran, context.Canceled)) // does not start the count again either
	b.Do(ctx, returning(&ran, timeout))
	b.Do(ctx, returning(&ran, timeout))
	if !b.Open() {
		t.Fatal("not open after three outages in a row")
	}
}

func TestSkippedIsAnOutage(t *testing.T) {
	t.Parallel()
	if !outage.Is(fmt.Errorf("rate limit: %w", outage.ErrSkipped)) {
		t.Fatal("a call the breaker skipped is not an outage")
	}
}
