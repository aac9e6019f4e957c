// Command api serves the Dispatch HTTP API.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/gin-gonic/gin"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/httpapi"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/platform/server"
)

func main() {
	if err := run(context.Background(), os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.Load(config.API, getenv)
	if err != nil {
		return err
	}
	log, closeLog, err := logging.Setup(string(config.API), cfg.LogLevel, cfg.LogFormat, cfg.LokiURL, stdout, metrics.LogsDropped.Inc)
	if err != nil {
		return err
	}
	defer closeLog()
	log.Info("starting", "config", cfg)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	db, err := postgres.Open(ctx, cfg.DatabaseURL, 64)
	if err != nil {
		return err
	}
	defer db.Close()
	rdb, err := redisx.Open(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()

	gin.SetMode(gin.ReleaseMode)
	api := httpapi.New(cfg, httpapi.Infra{
		DB: db, Redis: rdb, Keys: redisx.DefaultPrefix, Log: log,
		Gateway: payment.NewStripe(cfg.StripeSecretKey, cfg.StripeAPIBase),
	})
	defer api.Close()
	if cfg.SeedDemoData {
		if err := demo.Seed(ctx, db, api.Users(), api.Catalog(), log); err != nil {
			return err
		}
	}
	err = server.Serve(ctx, server.New(cfg.HTTPAddr, api.Handler()), cfg.ShutdownTimeout, log, nil)
	log.Info("stopped", "err", err)
	return err
}
