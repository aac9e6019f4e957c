package worker

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/tasks"
)

// ServerConfig tunes the asynq servers.
type ServerConfig struct {
	Concurrency     int            // slots the queues without their own share
	Weights         map[string]int // queue priorities by queue name
	Own             map[string]int // queues that run on a server of their own, with its slots
	Namespace       tasks.Namespace
	RetryBase       time.Duration // first retry delay (SPEC §5: 2 s)
	ShutdownTimeout time.Duration
	// PollInterval is how often an idle worker looks for new tasks (asynq polls; it does not
	// block on Redis). It bounds the queueing latency of a task: 20 ms by default.
	PollInterval time.Duration
	// DelayedInterval is how often retries whose delay passed are moved back to their queue.
	DelayedInterval time.Duration
}

// NewServers returns the asynq servers of a worker: one per queue that has slots of its own
// (cfg.Own), and one processing the other queues by weight on the shared slots. A queue of its
// own cannot borrow idle slots from the others nor lend its own; its tasks are dequeued without
// first trying the other queues, one script per task where the shared server runs one per queue
// it tries.
func NewServers(rdb redis.UniversalClient, cfg ServerConfig, log *slog.Logger) []*asynq.Server {
	var servers []*asynq.Server
	shared := map[string]int{}
	for q, w := range cfg.Weights {
		if n, own := cfg.Own[q]; own {
			servers = append(servers, NewServer(rdb, cfg, map[string]int{q: 1}, n, log))
		} else {
			shared[q] = w
		}
	}
	if len(shared) > 0 {
		servers = append(servers, NewServer(rdb, cfg, shared, cfg.Concurrency, log))
	}
	return servers
}

// NewServer returns an asynq server processing the namespaced queues (by weight) with
// concurrency slots.
func NewServer(rdb redis.UniversalClient, cfg ServerConfig, weights map[string]int, concurrency int, log *slog.Logger) *asynq.Server {
	queues := make(map[string]int, len(weights))
	for q, w := range weights {
		queues[cfg.Namespace.Queue(q)] = w
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	if cfg.DelayedInterval == 0 {
		cfg.DelayedInterval = time.Second
	}
	return asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              concurrency,
		TaskCheckInterval:        cfg.PollInterval,
		DelayedTaskCheckInterval: cfg.DelayedInterval,
		Queues:                   queues,
		RetryDelayFunc:           RetryDelay(cfg.RetryBase),
		IsFailure:                func(err error) bool { return !isOutage(err) },
		ShutdownTimeout:          cfg.ShutdownTimeout,
		Logger:                   asynqLogger{log},
		LogLevel:                 asynq.WarnLevel,
	})
}

// asynqLogger routes asynq's own logs to slog.
type asynqLogger struct{ log *slog.Logger }

func (l asynqLogger) Debug(args ...any) { l.log.Debug(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Info(args ...any)  { l.log.Info(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Warn(args ...any)  { l.log.Warn(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Error(args ...any) { l.log.Error(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Fatal(args ...any) {
	l.log.Error(fmt.Sprint(args...), "component", "asynq", "fatal", true)
}
