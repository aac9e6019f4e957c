package relay

import (
	"context"
	"time"
)

// RecoverOrphans runs one look for the tasks of silent workers, as Run does every orphanCheck.
func (r *Relay) RecoverOrphans(ctx context.Context) { r.recoverOrphans(ctx) }

// SetClock replaces the relay's clock.
func (r *Relay) SetClock(now func() time.Time) { r.now = now }

// NoticeLostQueues runs one look for a Redis that lost the queues, as Run does at every poll.
func (r *Relay) NoticeLostQueues(ctx context.Context) { r.noticeLostQueues(ctx) }

// BatchTimeout bounds a batch.
const BatchTimeout = batchTimeout

// SetIdleLimit sets how long a batch's transaction may wait idle before PostgreSQL ends it.
func (r *Relay) SetIdleLimit(d time.Duration) { r.idleLimit = d }
