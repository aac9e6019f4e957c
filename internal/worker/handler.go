package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/hibiken/asynq"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/lock"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/platform/outage"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/tasks"
)

// Observer is told how each task attempt ends, besides the metrics (tests count per worker
// with it); nil fields are skipped.
type Observer struct {
	// Done is called once per attempt: outcome is success, retry or failed.
	Done func(taskType, outcome string, d time.Duration)
	// Compensated is called when a compensation changed something.
	Compensated func(taskType string)
}

// Runner is the asynq handler of every task: it looks the strategy up by exact type, decodes
// the envelope, carries the correlation id into the logs, holds the order's lock while the
// strategy runs, and applies the retry and compensation policy.
type Runner struct {
	reg   map[string]Strategy
	locks *redsync.Redsync
	keys  redisx.Prefix
	log   *slog.Logger
	// Observe is told how attempts end.
	Observe Observer
	// LockExpiry is the order lock's time to live; it is extended every third of it while the
	// strategy runs, so a crashed worker frees the order soon.
	LockExpiry time.Duration
	// LockWait is how long an attempt waits for a handler of the same order to finish before
	// it gives way (and runs again later, without counting as a failure).
	LockWait time.Duration
	// Ack is told the outbox row (id, time of writing) of every task that finished, for good or
	// ill (nil: none).
	Ack func(outboxID int64, created time.Time)
}

// NewRunner returns the handler over a checked registry.
func NewRunner(reg map[string]Strategy, locks *redsync.Redsync, keys redisx.Prefix, log *slog.Logger) (*Runner, error) {
	if err := Check(reg); err != nil {
		return nil, err
	}
	return &Runner{reg: reg, locks: locks, keys: keys, log: log, LockExpiry: 10 * time.Second, LockWait: 6 * time.Second}, nil
}

// errMalformed marks payloads no retry can fix.
var errMalformed = errors.New("malformed task")

func malformed(err error) error { return fmt.Errorf("%w: %v", errMalformed, err) }

// ProcessTask implements asynq.Handler.
func (r *Runner) ProcessTask(ctx context.Context, at *asynq.Task) error {
	start := time.Now()
	s, ok := r.reg[at.Type()] // exact names: no prefix fallback
	if !ok {
		// Archived unfinished and unacknowledged: its outbox row stays, and the relay runs it
		// again when it is due, for a worker that knows the type (a newer version's, during a
		// rolling upgrade).
		r.log.WarnContext(ctx, "task of a type this worker does not know; left for one that does", "taskType", at.Type())
		return fmt.Errorf("%s: no strategy for %q: %w", tasks.Unfinished, at.Type(), asynq.SkipRetry)
	}
	var env tasks.Envelope
	if len(at.Payload()) > 0 {
		if err := json.Unmarshal(at.Payload(), &env); err != nil {
			r.log.ErrorContext(ctx, "task payload malformed", "taskType", at.Type(), "err", err)
			return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
		}
	}
	t := Task{Type: at.Type(), Envelope: env}
	taskID, _ := asynq.GetTaskID(ctx)
	ctx = logging.WithCorrelationID(ctx, env.CorrelationID)
	ctx = logging.With(ctx, slog.String("taskId", taskID), slog.String("taskType", t.Type))

	if s.Lock != nil {
		if sub := s.Lock(t); sub.ID != "" {
			ctx = logging.With(ctx, slog.String(sub.Kind+"Id", sub.ID))
		}
	}
	err := r.holdingLock(ctx, s, t, func() error { return unpanicked(func() error { return s.Run(ctx, t) }) })
	if err == nil {
		r.finish(t)
		r.observe(t.Type, metrics.TaskSuccess, start)
		return nil
	}
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	if errors.Is(ctx.Err(), context.Canceled) {
		// Asynq let go of the attempt (a shutdown requeued it, or its lease was lost) and
		// ignores its result: the task runs again, so nothing here may end it.
		r.log.WarnContext(ctx, "attempt stopped by the queue server; the task will run again", "err", err, "attempt", retried+1)
		r.observe(t.Type, metrics.TaskWaited, start)
		return outageError{err}
	}
	if errors.Is(err, errPanicked) {
		// A bug, not the order's fate: retried as usual, then left for the relay to run again
		// (a fixed release, say) rather than compensated.
		r.log.ErrorContext(ctx, "task panicked", "err", err, "attempt", retried+1, "maxRetry", maxRetry)
		if retried >= maxRetry {
			r.observe(t.Type, metrics.TaskFailed, start)
			return fmt.Errorf("%s: %w", tasks.Unfinished, err)
		}
		r.observe(t.Type, metrics.TaskRetry, start)
		return err
	}
	permanent := isPermanent(err)
	if (waits(err) || s.Compensate == nil && stripeDown(ctx, err)) && t.OutboxID != 0 {
		// Not the task's failure: the attempt does not count (outageError), no compensation
		// runs and the outbox row stays. Asynq archives a task whose last attempt fails all
		// the same; marked Unfinished, the relay delivers it again. (A periodic task, with no
		// row, fails as usual: its next period runs it again.)
		r.log.WarnContext(ctx, "backing service unavailable, or subject busy or changed meanwhile; the task will run again", "err", err, "attempt", retried+1)
		r.observe(t.Type, metrics.TaskWaited, start)
		if retried >= maxRetry {
			return outageError{fmt.Errorf("%s: %w", tasks.Unfinished, err)}
		}
		return outageError{err}
	}
	if !permanent && retried < maxRetry {
		r.log.WarnContext(ctx, "task failed; will retry", "err", err, "attempt", retried+1, "maxRetry", maxRetry)
		r.observe(t.Type, metrics.TaskRetry, start)
		return err
	}
	r.log.ErrorContext(ctx, "task failed for good", "err", err, "permanent", permanent, "attempt", retried+1)
	if s.Compensate != nil && !errors.Is(err, errMalformed) {
		// A last attempt that ran out of time ends with its context: the compensation has time
		// of its own, or it could not even take the lock, and would never run.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), compensationTimeout)
		defer cancel()
		var done bool
		cerr := r.holdingLock(cctx, s, t, func() error {
			return unpanicked(func() (err2 error) {
				done, err2 = s.Compensate(cctx, t, err)
				return err2
			})
		})
		switch {
		case errors.Is(cerr, errPanicked):
			r.log.ErrorContext(ctx, "compensation panicked; the relay will run the task again", "err", cerr, "cause", err)
			r.observe(t.Type, metrics.TaskFailed, start)
			return fmt.Errorf("%s: %w: %w", tasks.Unfinished, cerr, asynq.SkipRetry)
		case waits(cerr):
			// The failure policy could not run: the task stays unfinished, as above.
			r.log.WarnContext(ctx, "compensation could not reach a backing service or its order; the task will run again", "err", cerr, "cause", err)
			r.observe(t.Type, metrics.TaskWaited, start)
			return outageError{fmt.Errorf("%s: %w", tasks.Unfinished, cerr)}
		case cerr != nil:
			r.log.ErrorContext(ctx, "compensation failed; the order needs attention", "err", cerr, "cause", err)
		case done:
			r.log.ErrorContext(ctx, "compensation ran", "cause", err)
			metrics.Compensated(t.Type)
			if r.Observe.Compensated != nil {
				r.Observe.Compensated(t.Type)
			}
		}
	}
	r.finish(t)
	r.observe(t.Type, metrics.TaskFailed, start)
	if permanent {
		return fmt.Errorf("%v: %w", err, asynq.SkipRetry)
	}
	return err
}

// compensationTimeout bounds a compensation: a Stripe refund and a transaction.
const compensationTimeout = time.Minute

// holdingLock runs f holding the lock of t's subject, if its strategy names one. The
// compensation holds it too: it calls Stripe before its compare-and-set write, and another
// copy of the task (an orphan's, a redelivery) finishing the order meanwhile would otherwise
// see it refunded by Stripe and shipped all the same. Waiting for the lock in vain is errBusy:
// not the task's failure.
func (r *Runner) holdingLock(ctx context.Context, s Strategy, t Task, f func() error) error {
	if s.Lock != nil {
		if sub := s.Lock(t); sub.ID != "" {
			unlock, err := r.lock(ctx, sub)
			if err != nil {
				return err
			}
			defer unlock()
		}
	}
	return f()
}

// finish acknowledges the task's outbox row: it will not run again.
func (r *Runner) finish(t Task) {
	if r.Ack != nil {
		r.Ack(t.OutboxID, t.CreatedAt)
	}
}

func (r *Runner) observe(taskType, outcome string, start time.Time) {
	metrics.TaskDone(taskType, outcome, time.Since(start))
	if r.Observe.Done != nil {
		r.Observe.Done(taskType, outcome, time.Since(start))
	}
}

// lock takes the subject's lock, waiting a few seconds for a handler of the same subject to
// finish, and keeps extending it until the returned function releases it. The lock serialises
// handlers of one order (or user); correctness still rests on the compare-and-set writes.
func (r *Runner) lock(ctx context.Context, sub Subject) (func(), error) {
	const retryDelay = 100 * time.Millisecond
	m := r.locks.NewMutex(r.keys.Key("lock", sub.Kind, sub.ID), redsync.WithExpiry(r.LockExpiry),
		redsync.WithTries(max(1, int(r.LockWait/retryDelay))), redsync.WithRetryDelay(retryDelay))
	if err := m.LockContext(ctx); err != nil {
		var taken *redsync.ErrTaken
		if errors.As(err, &taken) || errors.Is(err, redsync.ErrFailed) {
			err = fmt.Errorf("%w (%v)", errBusy, err)
		}
		return nil, fmt.Errorf("lock %s %s: %w", sub.Kind, sub.ID, err)
	}
	stop := lock.Keep(ctx, m, r.LockExpiry/3, r.log)
	return func() {
		stop()
		if _, err := m.UnlockContext(context.WithoutCancel(ctx)); err != nil {
			r.log.WarnContext(ctx, "order lock not released; it expires", "err", err)
		}
	}, nil
}

// isPermanent tells errors a retry cannot fix: malformed payloads, refusals by the state
// machine, missing orders, payment mismatches, rejections by Stripe.
func isPermanent(err error) bool {
	switch {
	case errors.Is(err, errMalformed), errors.Is(err, payment.ErrRejected), errors.Is(err, payment.ErrNotFound):
		return true
	case errors.Is(err, order.ErrChangedMeanwhile), errors.Is(err, order.ErrConcurrentUpdate), errors.Is(err, payment.ErrTransient):
		return false
	}
	switch apperr.KindOf(err) {
	case apperr.Invalid, apperr.NotFound, apperr.Conflict, apperr.Unprocessable:
		return true
	}
	return false
}

// errPanicked is a strategy or compensation that panicked.
var errPanicked = errors.New("panicked")

// unpanicked runs f, turning a panic into an error that carries the stack.
func unpanicked(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v\n%s", errPanicked, p, debug.Stack())
		}
	}()
	return f()
}

// errBusy is an attempt that found its subject's lock held by another handler throughout.
var errBusy = errors.New("busy with another task")

// waits reports whether the attempt should run again later without counting against the
// task's retries: its order (or user) was busy, or changed under it (the next attempt reads
// it anew and finishes the job), or PostgreSQL or Redis could not be reached, an outage of the
// system itself, which no task should be failed over (a notification or a customer sync has no
// compensation, and a compensation would undo a sound order). Stripe's outages are the
// provider's answer and count as SPEC §5 says. A task that ran out of time counts too
// (context.DeadlineExceeded passes for a network timeout): one that always does must end.
func waits(err error) bool {
	var ge *payment.GatewayError
	return errors.Is(err, errBusy) || errors.Is(err, order.ErrChangedMeanwhile) ||
		outage.Is(err) && !errors.As(err, &ge) && !errors.Is(err, context.DeadlineExceeded)
}

// stripeDown reports whether Stripe could not be reached or answered to try again later. A
// task with nothing to compensate its failure (a customer sync) waits it out like an outage of
// ours: failed for good, it would be lost, and a deleted account's details would stay at Stripe.
// The others count it (waits). A Stripe that hangs is down too: its calls end with their own
// timeout, which passes for context.DeadlineExceeded; only the task's own context running out
// (ctx, the attempt's) counts, so that a task that always does ends.
func stripeDown(ctx context.Context, err error) bool {
	return errors.Is(err, payment.ErrTransient) && ctx.Err() == nil
}

// outageError is an attempt that PostgreSQL or Redis was away for: the server does not count
// it against the task's retries (IsFailure).
type outageError struct{ error }

func (e outageError) Unwrap() error { return e.error }

func isOutage(err error) bool {
	var o outageError
	return errors.As(err, &o)
}

// RetryDelay backs off exponentially from base (base, 2×base, 4×base…) with ±20 % jitter. An
// outage's attempts, which do not count, wait 4×base at least: every task in flight retries
// through it, and a server coming back should not meet them all every base.
func RetryDelay(base time.Duration) asynq.RetryDelayFunc {
	return func(n int, err error, _ *asynq.Task) time.Duration {
		if isOutage(err) {
			n = max(n, 2)
		}
		d := base << min(n, 16)
		jitter := 0.8 + 0.4*rand.Float64()
		return time.Duration(float64(d) * jitter)
	}
}
