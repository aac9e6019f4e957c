package outage

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// ErrSkipped is a call a Breaker did not let go: the service failed the calls before it.
var ErrSkipped = errors.New("not tried: the last calls failed, the next trial is due shortly")

// Breaker fails calls to a service at once while it is away. A service that refuses
// connections fails a call at once anyway, but one that stalls (a process stopped, a network
// that drops packets) costs every call the client's timeout, and every request that makes one
// waits as long. After threshold calls in a row have failed as outages (Is), the breaker opens:
// calls fail with ErrSkipped without trying, but for one trial at a time, a cooldown after the
// last one ended. Any answer from the service closes it.
type Breaker struct {
	threshold int32
	cooldown  time.Duration
	log       *slog.Logger
	now       func() time.Time

	failures atomic.Int32 // outages in a row
	open     atomic.Bool  // read without the lock on every call
	mu       sync.Mutex
	trying   bool      // while open, a trial is under way
	trial    time.Time // while open, when the next trial may go
}

// NewBreaker returns a closed breaker of dependency (a name for its log lines).
func NewBreaker(dependency string, threshold int, cooldown time.Duration, log *slog.Logger) *Breaker {
	return &Breaker{threshold: int32(threshold), cooldown: cooldown, log: log.With("dependency", dependency), now: time.Now}
}

// Do runs call unless the breaker is open, and records how it ended: an outage counts against
// the service; any other outcome, an error answer included, shows it answers. A call that
// failed after its ctx ended says nothing of the service: its caller gave up or ran out of time.
func (b *Breaker) Do(ctx context.Context, call func() error) error {
	ok, trial := b.allow()
	if !ok {
		return ErrSkipped
	}
	if trial {
		defer b.tried() // even if call panics: a trial left under way would skip every call for good
	}
	err := call()
	switch {
	case err != nil && ctx.Err() != nil:
	case Is(err):
		if b.failures.Add(1) >= b.threshold && !b.open.Load() {
			b.trip(err)
		}
	case b.failures.Load() != 0:
		b.reset()
	}
	return err
}

// Open reports whether calls fail fast now.
func (b *Breaker) Open() bool { return b.open.Load() }

// allow reports whether a call may go now, and whether it goes as the open breaker's trial.
func (b *Breaker) allow() (ok, trial bool) {
	if !b.open.Load() {
		return true, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open.Load() {
		return true, false
	}
	if b.trying || b.now().Before(b.trial) {
		return false, false
	}
	b.trying = true
	return true, true
}

// tried ends a trial: the next may go a cooldown from now.
func (b *Breaker) tried() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trying, b.trial = false, b.now().Add(b.cooldown)
}

func (b *Breaker) trip(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open.Load() {
		return
	}
	b.trial = b.now().Add(b.cooldown)
	b.open.Store(true)
	b.log.Warn("not answering; calls fail at once but for one trial at a time, a cooldown apart", "err", err,
		"failuresInARow", b.failures.Load(), "cooldown", b.cooldown.String())
}

func (b *Breaker) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures.Store(0)
	if b.open.Swap(false) {
		b.log.Info("answers again; calls go through")
	}
}
