// Command worker runs the asynchronous tasks (order strategies, customer sync, notifications,
// maintenance) and serves /metrics, /health and /ready on its ops port.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/platform/server"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/worker"
)

func main() {
	if err := run(context.Background(), os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.Load(config.Worker, getenv)
	if err != nil {
		return err
	}
	log, closeLog, err := logging.Setup(string(config.Worker), cfg.LogLevel, cfg.LogFormat, cfg.LokiURL, stdout, metrics.LogsDropped.Inc)
	if err != nil {
		return err
	}
	defer closeLog()
	log.Info("starting", "config", cfg)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	db, err := postgres.Open(ctx, cfg.DatabaseURL, cfg.WorkerConcurrency+4)
	if err != nil {
		return err
	}
	defer db.Close()
	rdb, err := redisx.Open(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()

	w, err := worker.New(cfg, worker.Infra{
		DB: db, Redis: rdb, Keys: redisx.DefaultPrefix, Log: log,
		Gateway: payment.NewStripe(cfg.StripeSecretKey, cfg.StripeAPIBase),
	})
	if err != nil {
		return err
	}
	if err := w.Start(); err != nil {
		return err
	}
	defer w.Shutdown()

	prometheus.MustRegister(worker.NewQueueCollector(rdb, ""))
	client := asynq.NewClientFromRedisClient(rdb)
	go worker.NewScheduler(client, "", log,
		worker.Periodic{Type: tasks.ReconcilePayments, Every: time.Minute},
		worker.Periodic{Type: tasks.CleanupExpired, Every: time.Hour},
	).Run(ctx)

	ops := server.Ops(map[string]func(context.Context) error{
		"postgres": db.PingContext,
		"redis":    func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
	}, metrics.Handler())
	err = server.Serve(ctx, server.New(cfg.OpsAddr, ops), cfg.ShutdownTimeout, log, nil)
	log.Info("stopping: waiting for running tasks")
	return err
}
