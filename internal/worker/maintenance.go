package worker

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/platform/lock"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
)

// Retention of expired sessions before cleanup deletes them.
const sessionRetention = 24 * time.Hour

// Cleanup deletes idempotency records past their 24 h and sessions expired or revoked for more
// than a day.
func Cleanup(idem *idempotency.Store, sessions *auth.Service, log *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		now := time.Now()
		keys, err := idem.DeleteExpired(ctx, now)
		if err != nil {
			return err
		}
		gone, err := sessions.DeleteExpiredSessions(ctx, now.Add(-sessionRetention))
		if err != nil {
			return err
		}
		log.InfoContext(ctx, "cleanup done", "idempotencyKeys", keys, "sessions", gone)
		return nil
	}
}

// Reconcile runs the payment reconciler under a cluster-wide lock, so a run never overlaps
// another: a worker that finds the lock taken skips. A run is bounded (ReconcilePolicy); where it
// stopped is kept in Redis for an hour, and the next run, on any worker, resumes there. If the
// position is lost the next run starts from the oldest order, which only repeats lookups.
func Reconcile(orders *order.Service, rdb *redis.Client, locks *redsync.Redsync, keys redisx.Prefix, p order.ReconcilePolicy, log *slog.Logger) func(context.Context) error {
	cursor := keys.Key("reconcile", "cursor")
	return func(ctx context.Context) error {
		m := locks.NewMutex(keys.Key("lock", "reconcile"), redsync.WithExpiry(reconcileLockExpiry), redsync.WithTries(1))
		if err := m.TryLockContext(ctx); err != nil {
			var taken *redsync.ErrTaken
			if errors.Is(err, redsync.ErrFailed) || errors.As(err, &taken) {
				log.InfoContext(ctx, "reconciler already running elsewhere; skipped")
				return nil
			}
			return err
		}
		stop := lock.Keep(ctx, m, reconcileLockExpiry/3, log)
		defer func() {
			stop()
			_, _ = m.UnlockContext(context.WithoutCancel(ctx))
		}()
		from := loadCursor(ctx, rdb, cursor, log)
		start := time.Now()
		rep, err := orders.Reconcile(ctx, start, p, from)
		saveCursor(context.WithoutCancel(ctx), rdb, cursor, rep.Next, log)
		metrics.Reconciled(map[string]int{"checked": rep.Checked, "paid": rep.Paid, "canceled": rep.Canceled,
			"skipped": rep.Skipped, "requeued": rep.Requeued, "refunds": rep.Refunds, "failed": rep.Failed})
		log.InfoContext(ctx, "reconciler run", "checked", rep.Checked, "paid", rep.Paid, "canceled", rep.Canceled,
			"skipped", rep.Skipped, "failed", rep.Failed, "requeued", rep.Requeued, "refunds", rep.Refunds, "resumed", from != nil,
			"finished", rep.Next == nil, "durationMs", time.Since(start).Milliseconds(), "err", err)
		return err
	}
}

// reconcileLockExpiry is how long the reconciler's lock outlives a worker killed during a run:
// well inside the one-minute period, so the next run is not skipped for it.
const reconcileLockExpiry = 15 * time.Second

// cursorTTL bounds how long a reconciler position is kept: long after the next run has used it.
const cursorTTL = time.Hour

func loadCursor(ctx context.Context, rdb *redis.Client, key string, log *slog.Logger) *order.PendingOrder {
	raw, err := rdb.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	var at order.PendingOrder
	if err == nil {
		err = json.Unmarshal(raw, &at)
	}
	if err != nil {
		log.WarnContext(ctx, "reconciler position not read; starting from the oldest order", "err", err)
		return nil
	}
	return &at
}

func saveCursor(ctx context.Context, rdb *redis.Client, key string, at *order.PendingOrder, log *slog.Logger) {
	var err error
	if at == nil {
		err = rdb.Del(ctx, key).Err()
	} else {
		var raw []byte
		if raw, err = json.Marshal(at); err == nil {
			err = rdb.Set(ctx, key, raw, cursorTTL).Err()
		}
	}
	if err != nil {
		log.WarnContext(ctx, "reconciler position not saved; the next run starts from the oldest order", "err", err)
	}
}
