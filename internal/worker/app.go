package worker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/hibiken/asynq"

	"github.com/dispatchhq/dispatch/internal/assembly"
	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/outbox/relay"
	"github.com/dispatchhq/dispatch/internal/tasks"
)

// Options adjust the worker beyond its configuration.
type Options struct {
	Namespace tasks.Namespace
	// RetryBase is the first retry delay (SPEC §5: 2 s); tests shorten it, with DelayedInterval.
	RetryBase       time.Duration
	DelayedInterval time.Duration
	Observe         Observer
}

// Worker is the task servers with their strategies.
type Worker struct {
	Runner  *Runner
	servers []*asynq.Server
	acker   *relay.Acker
}

// New runs the strategies on the services of a (built by package assembly) behind the asynq
// server. It fails if a task type has no strategy.
func New(cfg config.Config, a *assembly.App, opts Options) (*Worker, error) {
	locks := redsync.New(goredis.NewPool(a.Redis))
	reg := Registry(Deps{
		Orders: a.Orders, Notifications: a.Notifications, Customers: a.Customers,
		Maintenance: map[string]func(context.Context) error{
			tasks.CleanupExpired:    Cleanup(a.Idempotency, a.Auth, a.Log),
			tasks.ReconcilePayments: Reconcile(a.Orders, a.Redis, locks, a.Keys, order.DefaultReconcilePolicy(cfg.OrderUnpaidTTL), a.Log),
		},
	})
	runner, err := NewRunner(reg, locks, a.Keys, a.Log)
	if err != nil {
		return nil, err
	}
	runner.Observe = opts.Observe
	acker := relay.NewAcker(a.DB, 50*time.Millisecond, a.Log)
	runner.Ack = acker.Ack
	retryBase := opts.RetryBase
	if retryBase == 0 {
		retryBase = 2 * time.Second
	}
	servers := NewServers(a.Redis, ServerConfig{
		Concurrency: cfg.WorkerConcurrency, Weights: cfg.QueueWeights, Own: cfg.QueueConcurrency, Namespace: opts.Namespace,
		RetryBase: retryBase, DelayedInterval: opts.DelayedInterval, ShutdownTimeout: cfg.ShutdownTimeout,
	}, a.Log)
	return &Worker{Runner: runner, servers: servers, acker: acker}, nil
}

// Servers returns the worker's asynq servers (NewServers).
func (w *Worker) Servers() []*asynq.Server { return w.servers }

// Start begins processing tasks.
func (w *Worker) Start() error {
	w.acker.Start()
	for i, srv := range w.servers {
		if err := srv.Start(w.Runner); err != nil {
			w.shutdown(w.servers[:i])
			w.acker.Stop()
			return fmt.Errorf("worker: start: %w", err)
		}
	}
	return nil
}

// Shutdown stops taking tasks and waits for the running ones (up to the shutdown timeout;
// unfinished tasks go back to their queue), then deletes the outbox rows of those that finished.
func (w *Worker) Shutdown() {
	w.shutdown(w.servers)
	w.acker.Stop()
}

// shutdown stops servers together, so that the shutdown timeout bounds them all at once.
func (w *Worker) shutdown(servers []*asynq.Server) {
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Go(srv.Shutdown)
	}
	wg.Wait()
}
