package worker

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/go-redsync/redsync/v4"

	"github.com/dispatchhq/dispatch/internal/auth/authdb"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
)

// Retention of expired sessions before cleanup deletes them.
const sessionRetention = 24 * time.Hour

// Cleanup deletes idempotency records past their 24 h and sessions expired or revoked for more
// than a day.
func Cleanup(db *postgres.DB, log *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		now := time.Now()
		keys, err := idempotency.NewStore(db).DeleteExpired(ctx, now)
		if err != nil {
			return err
		}
		sessions, err := authdb.DeleteExpired(ctx, db, now.Add(-sessionRetention))
		if err != nil {
			return err
		}
		log.InfoContext(ctx, "cleanup done", "idempotencyKeys", keys, "sessions", sessions)
		return nil
	}
}

// Reconcile runs the payment reconciler under a cluster-wide lock, so a run that outlasts its
// minute never overlaps the next one: the next finds the lock taken and skips.
func Reconcile(orders *order.Service, locks *redsync.Redsync, keys redisx.Prefix, p order.ReconcilePolicy, log *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		m := locks.NewMutex(keys.Key("lock", "reconcile"), redsync.WithExpiry(time.Minute), redsync.WithTries(1))
		if err := m.TryLockContext(ctx); err != nil {
			var taken *redsync.ErrTaken
			if errors.Is(err, redsync.ErrFailed) || errors.As(err, &taken) {
				log.InfoContext(ctx, "reconciler already running elsewhere; skipped")
				return nil
			}
			return err
		}
		stop := make(chan struct{})
		go func() {
			tick := time.NewTicker(20 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					_, _ = m.ExtendContext(ctx)
				}
			}
		}()
		defer func() {
			close(stop)
			_, _ = m.UnlockContext(context.WithoutCancel(ctx))
		}()
		start := time.Now()
		rep, err := orders.Reconcile(ctx, start, p)
		log.InfoContext(ctx, "reconciler run", "checked", rep.Checked, "paid", rep.Paid, "canceled", rep.Canceled,
			"skipped", rep.Skipped, "failed", rep.Failed, "requeued", rep.Requeued, "durationMs", time.Since(start).Milliseconds(), "err", err)
		return err
	}
}
