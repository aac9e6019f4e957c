// Package lock keeps a redsync mutex alive while its holder works.
package lock

import (
	"context"
	"log/slog"
	"time"

	"github.com/go-redsync/redsync/v4"
)

// Keep extends m every period until the returned function is called, which stops the extender
// and waits for it. A failed extension is logged, never silent: the lock may then expire while
// its holder still works, which the holders tolerate because their writes are compare-and-set.
func Keep(ctx context.Context, m *redsync.Mutex, every time.Duration, log *slog.Logger) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				if ok, err := m.ExtendContext(ctx); !ok || err != nil {
					log.WarnContext(ctx, "lock not extended; it may expire", "lock", m.Name(), "err", err)
				}
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}
