// Command outbox-relay drains the outbox table into the Asynq queues and serves /metrics,
// /health and /ready on its ops port.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/outbox/relay"
	"github.com/dispatchhq/dispatch/internal/platform/boot"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/platform/server"
)

func main() {
	if err := run(context.Background(), os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "outbox-relay:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	p, ctx, err := boot.Start(ctx, config.Relay, getenv, stdout)
	if err != nil {
		return err
	}
	defer p.Close()

	r := relay.New(p.DB, p.Cfg.DatabaseURL, p.Redis, "", p.Cfg.OutboxBatchSize, p.Cfg.OutboxPollInterval, p.Log)
	r.RedeliverAfter = p.Cfg.OutboxRedeliverAfter
	r.Observe, r.Redelivered = metrics.RelayBatch, metrics.Redelivered
	monitor := relay.NewMonitor(p.DB, p.Log, func(b relay.Backlog) {
		metrics.OutboxBacklog.Set(float64(b.Waiting))
		metrics.OutboxOldestAge.Set(b.OldestWaiting.Seconds())
		metrics.OutboxInFlight.Set(float64(b.InFlight))
		metrics.OutboxOldestInFlightAge.Set(b.OldestInFlight.Seconds())
	})
	monitor.Failed = func(error) { metrics.OutboxBacklogReadFailures.Inc() }
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); monitor.Run(ctx, 5*time.Second) }()
	go func() {
		defer wg.Done()
		if err := r.Run(ctx); err != nil {
			p.Log.Error("relay stopped", "err", err)
			p.Stop()
		}
	}()

	checks := p.Checks()
	checks["outbox"] = monitor.Fresh
	err = server.Serve(ctx, server.OpsServer(p.Cfg.OpsAddr, checks, metrics.Handler(), p.Cfg.PprofEnabled), server.Stop{Timeout: p.Cfg.ShutdownTimeout}, p.Log, nil)
	p.Stop()
	wg.Wait() // the batch in progress finishes before the pools close
	p.Log.Info("stopped")
	return err
}
