// Package boot starts a program the same way every time: configuration, logger (stdout and
// Loki), signal handling, Postgres and Redis. The mains keep only what is theirs.
package boot

import (
	"context"
	"io"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/platform/server"
)

// Program is a started program's configuration and dependencies.
type Program struct {
	Cfg   config.Config
	Log   *slog.Logger
	DB    *postgres.DB
	Redis *redis.Client
	// Stop cancels the program's context (as SIGINT or SIGTERM do).
	Stop   context.CancelFunc
	closes []func()
}

// Start loads service's configuration from getenv, builds its logger, opens Postgres (with
// cfg.DBMaxConns connections, watched by metrics.WatchPool under the service's name) and Redis
// (which the API may start without), and returns a context cancelled by SIGINT or SIGTERM.
func Start(ctx context.Context, service config.Service, getenv func(string) string, stdout io.Writer) (*Program, context.Context, error) {
	cfg, err := config.Load(service, getenv)
	if err != nil {
		return nil, nil, err
	}
	cfg.DatabaseURL = postgres.Named(postgres.IdleTxLimit(cfg.DatabaseURL, idleTxLimit), "dispatch-"+string(service))
	log, closeLog, err := logging.Setup(string(service), cfg.LogLevel, cfg.LogFormat, cfg.LokiURL, stdout, metrics.LogsDropped.Inc)
	if err != nil {
		return nil, nil, err
	}
	p := &Program{Cfg: cfg, Log: log, closes: []func(){closeLog}}
	redisx.LogThrough(log)
	logging.TakeStandardLog(log)
	log.Info("starting", "config", cfg)
	for _, w := range cfg.Warnings {
		log.Warn("risky configuration: " + w)
	}
	ctx, p.Stop = signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	p.closes = append(p.closes, p.Stop)
	if p.DB, err = postgres.Open(ctx, cfg.DatabaseURL, cfg.DBMaxConns); err != nil {
		p.Close()
		return nil, nil, err
	}
	p.closes = append(p.closes, func() { p.DB.Close() })
	metrics.WatchPool(string(service), p.DB)
	if p.Redis, err = redisx.New(cfg.RedisURL); err != nil {
		p.Close()
		return nil, nil, err
	}
	p.closes = append(p.closes, func() { p.Redis.Close() })
	if service == config.API {
		// Every use the API makes of Redis has a fallback, and a request must not wait on a
		// stalled Redis for each of them: its calls fail fast while Redis is not answering.
		redisx.FailFast(p.Redis, log)
	}
	if err := redisx.Ping(ctx, p.Redis); err != nil {
		if service != config.API {
			p.Close()
			return nil, nil, err
		}
		// The API serves without Redis (rate limits, the denylist and the cache fall back), so it
		// starts without it too: started again during a Redis outage, it answers rather than
		// refusing connections, and /ready names Redis.
		log.Warn("Redis unavailable at start; serving without it until it answers", "err", err)
	}
	p.warnIfRedisForgets(ctx)
	return p, ctx, nil
}

// idleTxLimit is how long a program's transaction may sit idle before the server ends it: a
// worker stopped (SIGSTOP, a frozen VM) while it held an item's row used to stall every order
// create behind it for as long as it stayed stopped.
const idleTxLimit = 10 * time.Second

// Checks are the readiness checks every program shares.
func (p *Program) Checks() map[string]func(context.Context) error {
	return server.Dependencies(p.DB, p.Redis)
}

// Close releases everything in reverse order; the logger is flushed last.
func (p *Program) Close() {
	for i := len(p.closes) - 1; i >= 0; i-- {
		p.closes[i]()
	}
}

// warnIfRedisForgets says at start when Redis keeps nothing on disk. Nothing is lost then
// (PostgreSQL is the source of truth and the relays hand unfinished tasks off again once they
// notice), but a restart delays every queued task and drops rate-limit windows and locks.
func (p *Program) warnIfRedisForgets(ctx context.Context) {
	d, err := redisx.ReadDurability(ctx, p.Redis)
	switch {
	case err != nil:
		p.Log.Warn("Redis persistence unknown", "err", err)
	case !d.Persistent():
		p.Log.Warn("Redis keeps nothing on disk (appendonly no, no save points): a Redis restart loses the queues "+
			"until the relays hand their tasks off again from the outbox (at their next poll); run Redis with appendonly yes",
			"appendonly", d.AppendOnly, "save", d.SavePoints)
	}
}
