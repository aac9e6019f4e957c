package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/catalog/catalogdb"
	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
	"github.com/dispatchhq/dispatch/internal/outbox/relay"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/user"
	"github.com/dispatchhq/dispatch/internal/user/userdb"
)

// Infra is what the worker runs on.
type Infra struct {
	DB        *postgres.DB
	Redis     *redis.Client
	Keys      redisx.Prefix
	Namespace tasks.Namespace
	Log       *slog.Logger
	Gateway   payment.Gateway
	// RetryBase is the first retry delay (SPEC §5: 2 s); tests shorten it, with DelayedInterval.
	RetryBase       time.Duration
	DelayedInterval time.Duration
	Observe         Observer
}

// Worker is the task server with its strategies.
type Worker struct {
	Runner *Runner
	Orders *order.Service
	server *asynq.Server
	acker  *relay.Acker
}

// New wires the strategies and the asynq server. It fails if a task type has no strategy.
func New(cfg config.Config, in Infra) (*Worker, error) {
	cache := catalog.NewCache(in.Redis, in.Keys, cfg.CacheTTL, in.Log)
	customers := user.NewCustomerSync(in.DB, userdb.Store{}, in.Gateway)
	locks := redsync.New(goredis.NewPool(in.Redis))
	orders := order.NewService(in.DB, orderdb.Store{}, catalogdb.Store{}, cache, in.Gateway,
		idempotency.NewStore(in.DB), customers, in.Log)
	reg := Registry(Deps{
		Orders: orders, Notifications: notification.NewStore(in.DB), Customers: customers,
		Maintenance: map[string]func(context.Context) error{
			tasks.CleanupExpired:    Cleanup(in.DB, in.Log),
			tasks.ReconcilePayments: Reconcile(orders, locks, in.Keys, order.DefaultReconcilePolicy(cfg.OrderUnpaidTTL), in.Log),
		},
	})
	runner, err := NewRunner(reg, locks, in.Keys, in.Log)
	if err != nil {
		return nil, err
	}
	runner.Observe = in.Observe
	acker := relay.NewAcker(in.DB, 50*time.Millisecond, in.Log)
	runner.Ack = acker.Ack
	retryBase := in.RetryBase
	if retryBase == 0 {
		retryBase = 2 * time.Second
	}
	srv := NewServer(in.Redis, ServerConfig{
		Concurrency: cfg.WorkerConcurrency, Weights: cfg.QueueWeights, Namespace: in.Namespace,
		RetryBase: retryBase, DelayedInterval: in.DelayedInterval, ShutdownTimeout: cfg.ShutdownTimeout,
	}, in.Log)
	return &Worker{Runner: runner, Orders: orders, server: srv, acker: acker}, nil
}

// Start begins processing tasks.
func (w *Worker) Start() error {
	w.acker.Start()
	if err := w.server.Start(w.Runner); err != nil {
		w.acker.Stop()
		return fmt.Errorf("worker: start: %w", err)
	}
	return nil
}

// Shutdown stops taking tasks and waits for the running ones (up to the shutdown timeout;
// unfinished tasks go back to their queue), then deletes the outbox rows of those that finished.
func (w *Worker) Shutdown() {
	w.server.Shutdown()
	w.acker.Stop()
}
