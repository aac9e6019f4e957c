// Command worker runs the asynchronous tasks (order strategies, customer sync, notifications,
// reconciliation, cleanup) and serves /metrics, /health and /ready on its ops port.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dispatchhq/dispatch/internal/assembly"
	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/platform/boot"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
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
	p, ctx, err := boot.Start(ctx, config.Worker, getenv, stdout)
	if err != nil {
		return err
	}
	defer p.Close()

	a := assembly.New(p.Cfg, assembly.Infra{DB: p.DB, Redis: p.Redis, Keys: redisx.DefaultPrefix, Log: p.Log, Gateway: assembly.Stripe(p.Cfg)})
	w, err := worker.New(p.Cfg, a, worker.Options{})
	if err != nil {
		return err
	}
	if err := w.Start(); err != nil {
		return err
	}
	defer w.Shutdown() // running tasks finish (or go back to their queue) before the pools close

	prometheus.MustRegister(worker.NewQueueCollector(p.Redis, ""))
	scheduler := worker.NewScheduler(asynq.NewClientFromRedisClient(p.Redis), "", p.Log,
		worker.Periodic{Type: tasks.ReconcilePayments, Every: time.Minute},
		worker.Periodic{Type: tasks.CleanupExpired, Every: time.Hour},
	)
	scheduled := make(chan struct{})
	go func() { defer close(scheduled); scheduler.Run(ctx) }()

	ops := server.OpsServer(p.Cfg.OpsAddr, p.Checks(), metrics.Handler(), p.Cfg.PprofEnabled)
	err = server.Serve(ctx, ops, server.Stop{Timeout: p.Cfg.ShutdownTimeout}, p.Log, nil)
	p.Stop()
	<-scheduled // no enqueue is in flight when the Redis client closes
	p.Log.Info("stopping: waiting for running tasks")
	return err
}
