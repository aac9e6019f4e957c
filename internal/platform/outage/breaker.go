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
var ErrSkipped = errors.New("not tried: the service has not answered lately")

// Breaker fails calls to a service at once while it is away. A service that refuses
// connections fails a call at once anyway, but one that stalls (a process stopped, a network
// that drops packets) costs every call the client's timeout, and every request that makes one
// waits as long. After threshold calls in a row have failed as outages (Is), the breaker opens:
// calls fail with ErrSkipped without trying, and a probe of its own tries the service every
// cooldown until it answers, which closes the breaker. No caller waits on a trial.
type Breaker struct {
	threshold int32
	cooldown  time.Duration
	probe     func(context.Context) error
	log       *slog.Logger

	failures atomic.Int32 // outages in a row
	open     atomic.Bool  // read on every call
	mu       sync.Mutex   // held to open and close
}

// NewBreaker returns a closed breaker of dependency (a name for its log lines); probe is a
// cheap call to the service that does not go through the breaker.
func NewBreaker(dependency string, threshold int, cooldown time.Duration, probe func(context.Context) error, log *slog.Logger) *Breaker {
	return &Breaker{threshold: int32(threshold), cooldown: cooldown, probe: probe, log: log.With("dependency", dependency)}
}

// Do runs call unless the breaker is open, and records how it ended: an outage counts against
// the service; any other outcome, an error answer included, shows it answers. A call that
// failed after its ctx ended says nothing of the service: its caller gave up or ran out of time.
func (b *Breaker) Do(ctx context.Context, call func() error) error {
	if b.open.Load() {
		return ErrSkipped
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

func (b *Breaker) trip(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open.Load() {
		return
	}
	b.open.Store(true)
	b.log.Warn("not answering; calls fail at once until a probe finds it back", "err", err,
		"failuresInARow", b.failures.Load(), "probeEvery", b.cooldown.String())
	go b.probing()
}

// probing tries the service every cooldown until it answers, then closes the breaker.
func (b *Breaker) probing() {
	for {
		time.Sleep(b.cooldown)
		if err := b.probe(context.Background()); err == nil || !Is(err) {
			b.reset()
			return
		}
	}
}

func (b *Breaker) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures.Store(0)
	if b.open.Swap(false) {
		b.log.Info("answers again; calls go through")
	}
}
