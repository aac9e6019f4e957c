// Command outbox-relay drains the outbox table into the Asynq queues and serves /metrics,
// /health and /ready on its ops port.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/platform/server"
)

func main() {
	if err := run(context.Background(), os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "outbox-relay:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.Load(config.Relay, getenv)
	if err != nil {
		return err
	}
	log, closeLog, err := logging.Setup(string(config.Relay), cfg.LogLevel, cfg.LogFormat, cfg.LokiURL, stdout, metrics.LogsDropped.Inc)
	if err != nil {
		return err
	}
	defer closeLog()
	log.Info("starting", "config", cfg)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	db, err := postgres.Open(ctx, cfg.DatabaseURL, 4)
	if err != nil {
		return err
	}
	defer db.Close()
	rdb, err := redisx.Open(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()

	relay := outbox.NewRelay(db, cfg.DatabaseURL, asynq.NewClientFromRedisClient(rdb), "", cfg.OutboxBatchSize, cfg.OutboxPollInterval, log)
	relay.Observe = metrics.RelayBatch
	monitor := outbox.NewMonitor(db, func(backlog int64, oldest time.Duration) {
		metrics.OutboxBacklog.Set(float64(backlog))
		metrics.OutboxOldestAge.Set(oldest.Seconds())
	})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); monitor.Run(ctx, 5*time.Second) }()
	go func() {
		defer wg.Done()
		if err := relay.Run(ctx); err != nil {
			log.Error("relay stopped", "err", err)
			stop()
		}
	}()

	ops := server.Ops(map[string]func(context.Context) error{
		"postgres": db.PingContext,
		"redis":    func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		"outbox":   monitor.Fresh,
	}, metrics.Handler())
	err = server.Serve(ctx, server.New(cfg.OpsAddr, ops), cfg.ShutdownTimeout, log, nil)
	stop()
	wg.Wait() // the batch in progress finishes before the pools close
	log.Info("stopped")
	return err
}
