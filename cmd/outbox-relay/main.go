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

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
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
	log := logging.New(string(config.Relay), cfg.LogLevel, cfg.LogFormat, stdout)
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
	client := asynq.NewClientFromRedisClient(rdb)

	relay := outbox.NewRelay(db, cfg.DatabaseURL, client, "", cfg.OutboxBatchSize, cfg.OutboxPollInterval, log)
	var wg sync.WaitGroup
	wg.Add(1)
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
	}, promhttp.Handler())
	err = server.Serve(ctx, server.New(cfg.OpsAddr, ops), cfg.ShutdownTimeout, log, nil)
	stop()
	wg.Wait() // the batch in progress finishes before the pools close
	log.Info("stopped")
	return err
}
