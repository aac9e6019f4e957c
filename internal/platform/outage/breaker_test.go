package outage_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/platform/outage"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// clock is a time the test moves by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time       { return c.t }
func (c *clock) pass(d time.Duration) { c.t = c.t.Add(d) }

func newBreaker(logs *testenv.Buffer) (*outage.Breaker, *clock) {
	b := outage.NewBreaker("redis", 3, time.Second, slog.New(slog.NewJSONHandler(logs, nil)))
	c := &clock{t: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	outage.SetClock(b, c.now)
	return b, c
}

var timeout = &net.OpError{Op: "read", Net: "tcp", Err: errors.New("i/o timeout")}

// returning is a call that ends with err and counts that it ran.
func returning(ran *int, err error) func() error {
	return func() error { *ran++; return err }
}

// TestBreakerOpensAfterOutagesInARowAndTriesOneAtATime: three outages in a row open it; then a
// trial goes a cooldown after the last one ended and no other call beside it, a failed trial
// keeps it open, and an answer closes it.
func TestBreakerOpensAfterOutagesInARowAndTriesOneAtATime(t *testing.T) {
	t.Parallel()
	var logs testenv.Buffer
	b, c := newBreaker(&logs)
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
	skipped := func(when string) {
		t.Helper()
		if err := b.Do(ctx, returning(&ran, nil)); !errors.Is(err, outage.ErrSkipped) {
			t.Fatalf("%s: %v, want %v", when, err, outage.ErrSkipped)
		}
	}
	c.pass(999 * time.Millisecond)
	skipped("before the cooldown passed")
	c.pass(time.Millisecond)

	// The trial is under way for longer than a cooldown: nothing goes beside it.
	trialErr := b.Do(ctx, func() error {
		ran++
		c.pass(5 * time.Second)
		skipped("beside the trial")
		return timeout
	})
	if !errors.Is(trialErr, timeout) || ran != 4 || !b.Open() {
		t.Fatalf("trial: %v after %d calls, open %v", trialErr, ran, b.Open())
	}
	c.pass(999 * time.Millisecond) // the next trial waits a cooldown after the last one ended
	skipped("a cooldown after the failed trial began")
	c.pass(time.Millisecond)
	if err := b.Do(ctx, returning(&ran, redis.Nil)); !errors.Is(err, redis.Nil) || b.Open() {
		t.Fatalf("an answer (%v) did not close the breaker", err)
	}
	if err := b.Do(ctx, returning(&ran, nil)); err != nil || ran != 6 {
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
	b, c := newBreaker(&testenv.Buffer{})
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
	// A trial whose caller gave up leaves it open; the next trial waits a cooldown.
	c.pass(time.Second)
	b.Do(gone, returning(&ran, context.Canceled))
	if !b.Open() {
		t.Fatal("a trial whose caller gave up closed the breaker")
	}
	c.pass(time.Second)
	b.Do(gone, returning(&ran, nil)) // an answer, though its caller has gone since
	if b.Open() {
		t.Fatal("an answer did not close the breaker")
	}
}

// TestATrialThatPanicsEndsAsATrial: the next trial still goes a cooldown later.
func TestATrialThatPanicsEndsAsATrial(t *testing.T) {
	t.Parallel()
	b, c := newBreaker(&testenv.Buffer{})
	ctx := context.Background()
	ran := 0
	for i := 0; i < 3; i++ {
		b.Do(ctx, returning(&ran, timeout))
	}
	c.pass(time.Second)
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the trial's panic did not reach its caller")
			}
		}()
		b.Do(ctx, func() error { panic("in the trial") })
	}()
	c.pass(time.Second)
	if err := b.Do(ctx, returning(&ran, nil)); err != nil || ran != 4 || b.Open() {
		t.Fatalf("after a trial that panicked: %v, %d calls ran, open %v", err, ran, b.Open())
	}
}

func TestSkippedIsAnOutage(t *testing.T) {
	t.Parallel()
	if !outage.Is(fmt.Errorf("rate limit: %w", outage.ErrSkipped)) {
		t.Fatal("a call the breaker skipped is not an outage")
	}
}
