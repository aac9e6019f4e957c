// Command api serves the Dispatch HTTP API.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/gin-gonic/gin"
	"golang.org/x/sync/errgroup"

	"github.com/dispatchhq/dispatch/internal/assembly"
	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/httpapi"
	"github.com/dispatchhq/dispatch/internal/platform/boot"
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
	p, ctx, err := boot.Start(ctx, config.API, getenv, stdout)
	if err != nil {
		return err
	}
	defer p.Close()

	gin.SetMode(gin.ReleaseMode)
	a := assembly.New(p.Cfg, assembly.Infra{DB: p.DB, Redis: p.Redis, Keys: redisx.DefaultPrefix, Log: p.Log, Gateway: assembly.Stripe(p.Cfg)})
	if p.Cfg.SeedDemoData {
		if err := demo.Seed(ctx, p.DB, a.Users, a.Catalog, p.Log); err != nil {
			return err
		}
	}
	stopping := make(chan struct{}) // closed once every answer closes its connection
	api := httpapi.New(p.Cfg, a, httpapi.Options{Stopping: stopping})
	defer api.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		stop := server.Stop{Drain: p.Cfg.ShutdownDrain, Timeout: p.Cfg.ShutdownTimeout, Draining: func() { close(stopping) }}
		return server.Serve(gctx, server.New(p.Cfg.HTTPAddr, api.Handler()), stop, p.Log, nil)
	})
	if p.Cfg.PprofEnabled { // the API serves /metrics itself; its ops port is for the profiles
		g.Go(func() error {
			return server.Serve(gctx, server.OpsServer(p.Cfg.OpsAddr, p.Checks(), nil, true), server.Stop{Timeout: p.Cfg.ShutdownTimeout}, p.Log, nil)
		})
	}
	err = g.Wait()
	p.Log.Info("stopped", "err", err)
	return err
}
