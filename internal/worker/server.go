package worker

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/tasks"
)

// ServerConfig tunes the asynq server.
type ServerConfig struct {
	Concurrency     int
	Weights         map[string]int // queue priorities by queue name
	Namespace       tasks.Namespace
	RetryBase       time.Duration // first retry delay (SPEC §5: 2 s)
	ShutdownTimeout time.Duration
	// PollInterval is how often an idle worker looks for new tasks (asynq polls; it does not
	// block on Redis). It bounds the queueing latency of a task: 20 ms by default.
	PollInterval time.Duration
	// DelayedInterval is how often retries whose delay passed are moved back to their queue.
	DelayedInterval time.Duration
}

// NewServer returns the asynq server processing the namespaced queues by weight.
func NewServer(rdb redis.UniversalClient, cfg ServerConfig, log *slog.Logger) *asynq.Server {
	queues := make(map[string]int, len(cfg.Weights))
	for q, w := range cfg.Weights {
		queues[cfg.Namespace.Queue(q)] = w
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	if cfg.DelayedInterval == 0 {
		cfg.DelayedInterval = time.Second
	}
	return asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              cfg.Concurrency,
		TaskCheckInterval:        cfg.PollInterval,
		DelayedTaskCheckInterval: cfg.DelayedInterval,
		Queues:                   queues,
		RetryDelayFunc:           RetryDelay(cfg.RetryBase),
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
