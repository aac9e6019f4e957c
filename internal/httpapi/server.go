// Package httpapi is the HTTP face of Dispatch: the gin engine, every route (routes.go), the
// middleware, the handlers per resource and the single mapping of errors to responses.
package httpapi

import (
	"cmp"
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/assembly"
	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/ratelimit"
	"github.com/dispatchhq/dispatch/internal/user"
)

// Options adjust the API beyond its configuration.
type Options struct {
	// Unobserved drops the access log and the request metrics; only the benchmark that
	// measures their cost sets it.
	Unobserved bool
	// Deadline bounds every request (default DefaultDeadline); tests shorten it.
	Deadline time.Duration
	// Stopping, closed when the server begins to stop (server.Stop.Draining), turns /ready to
	// 503 while it drains (config.Config.ShutdownDrain).
	Stopping <-chan struct{}
}

// Server is the API: the services it serves and the gin engine routing to them.
type Server struct {
	cfg           config.Config
	log           *slog.Logger
	outage        *slog.Logger // what every request logs during an outage, once in a while
	db            *postgres.DB
	rdb           *redis.Client
	keys          redisx.Prefix
	auth          *auth.Service
	users         *user.Service
	catalog       *catalog.Service
	orders        *order.Service
	notifications notification.Store
	idem          *idempotency.Store
	limiter       *ratelimit.Limiter
	engine        *gin.Engine
	closers       []func() error
	unobserved    bool
	deadline      time.Duration
	stopping      <-chan struct{}
}

// New routes to the services of a (built by package assembly).
func New(cfg config.Config, a *assembly.App, opts Options) *Server {
	s := &Server{
		cfg: cfg, log: a.Log, outage: logging.Sometimes(a.Log, logging.OutageEvery), db: a.DB, rdb: a.Redis, keys: a.Keys,
		auth:          a.Auth,
		users:         a.Users,
		catalog:       a.Catalog,
		orders:        a.Orders,
		notifications: a.Notifications,
		idem:          a.Idempotency,
		limiter:       ratelimit.New(a.Redis),
		unobserved:    opts.Unobserved,
		deadline:      cmp.Or(opts.Deadline, DefaultDeadline),
		stopping:      opts.Stopping,
	}
	s.engine = s.newEngine()
	s.routes()
	ctx, stop := context.WithCancel(context.Background())
	following := make(chan struct{})
	go func() {
		defer close(following)
		a.Auth.FollowDenylist(ctx)
	}()
	s.closers = append(s.closers, func() error { stop(); <-following; return nil })
	return s
}

// Close releases what the server holds beyond its dependencies: the copy of the denylist it
// follows, the queue UI's Redis client.
func (s *Server) Close() {
	for _, f := range s.closers {
		if err := f(); err != nil {
			s.log.Warn("close", "err", err)
		}
	}
}

// Handler returns the HTTP handler: the engine, served by ServeHTTP.
func (s *Server) Handler() http.Handler { return s }

// Engine exposes the gin engine (its route table is checked against the OpenAPI document).
func (s *Server) Engine() *gin.Engine { return s.engine }

func (s *Server) newEngine() *gin.Engine {
	e := gin.New()
	e.HandleMethodNotAllowed = true
	// A path with a trailing slash is not a route: it gets the JSON 404, not an HTML redirect.
	e.RedirectTrailingSlash = false
	e.ContextWithFallback = true
	// The client IP is the peer address unless it is a proxy named in TRUSTED_PROXIES; then
	// it is the right-most X-Forwarded-For hop that is not one (see docs/decisions.md).
	if err := e.SetTrustedProxies(s.cfg.TrustedProxies); err != nil {
		s.log.Error("trusted proxies refused", "err", err)
	}
	e.RemoteIPHeaders = []string{"X-Forwarded-For"}
	if !s.unobserved {
		e.Use(s.accessLog)
	}
	e.Use(s.recovery, s.cors, s.negotiate, s.checkQuery, s.limitBody)
	e.NoRoute(func(c *gin.Context) { s.respondError(c, apperr.ErrRouteNotFound) })
	e.NoMethod(func(c *gin.Context) { s.respondError(c, apperr.ErrMethodNotAllowed) })
	return e
}
