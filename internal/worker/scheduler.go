package worker

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dispatchhq/dispatch/internal/tasks"
)

// Periodic is a task enqueued once per period.
type Periodic struct {
	Type  string
	Every time.Duration
}

// Scheduler enqueues periodic tasks. Every worker runs one; exactly one run per period happens
// cluster-wide because each period's task has an id derived from the period's start, and Asynq
// refuses a second task with an id it knows (the finished task is retained for the period).
type Scheduler struct {
	client *asynq.Client
	ns     tasks.Namespace
	jobs   []Periodic
	log    *slog.Logger
}

// NewScheduler returns a scheduler of jobs.
func NewScheduler(client *asynq.Client, ns tasks.Namespace, log *slog.Logger, jobs ...Periodic) *Scheduler {
	return &Scheduler{client: client, ns: ns, jobs: jobs, log: log}
}

// Retry bounds of an enqueue that failed (Redis down at a period's boundary): tried again
// within its period, so an hourly cleanup is not skipped for the hour.
const (
	enqueueRetryFirst = time.Second
	enqueueRetryMax   = 30 * time.Second
)

// Run enqueues each job for the current period at once and then at every period boundary,
// until ctx ends. A failed enqueue is tried again, backing off, until it succeeds or its
// period ends.
func (s *Scheduler) Run(ctx context.Context) {
	done := make(chan struct{})
	for _, j := range s.jobs {
		go func() {
			defer func() { done <- struct{}{} }()
			retry := enqueueRetryFirst
			for {
				now := time.Now()
				_, err := s.Enqueue(ctx, j, now)
				wait := time.Until(now.Truncate(j.Every).Add(j.Every))
				if err != nil && ctx.Err() == nil {
					wait, retry = min(retry, wait), min(2*retry, enqueueRetryMax)
					s.log.ErrorContext(ctx, "periodic task not enqueued", "taskType", j.Type, "err", err, "retryIn", wait.String())
				} else {
					retry = enqueueRetryFirst
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}()
	}
	for range s.jobs {
		<-done
	}
}

// Enqueue enqueues j for the period containing at. It reports false when the period's task
// exists already (another worker enqueued it).
func (s *Scheduler) Enqueue(ctx context.Context, j Periodic, at time.Time) (bool, error) {
	queue, _ := tasks.QueueOf(j.Type)
	id := j.Type + "@" + strconv.FormatInt(at.Truncate(j.Every).Unix(), 10)
	// The period's task id is also the run's correlation id: its logs, timeline events and
	// outbox rows can be found by it.
	payload, err := json.Marshal(tasks.Envelope{CorrelationID: id})
	if err != nil {
		return false, err
	}
	_, err = s.client.EnqueueContext(ctx, asynq.NewTask(j.Type, payload),
		asynq.TaskID(id), asynq.Queue(s.ns.Queue(queue)),
		asynq.MaxRetry(1), asynq.Retention(j.Every), asynq.Timeout(j.Every))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return false, nil
	}
	return err == nil, err
}
