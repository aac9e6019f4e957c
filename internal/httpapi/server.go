// Package httpapi is the HTTP face of Dispatch: the gin engine, every route (routes.go), the
// middleware, the handlers per resource and the single mapping of errors to responses.
package httpapi

import (
	"log/slog"
	"net/http"
	"runtime"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/catalog/catalogdb"
	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/ratelimit"
	"github.com/dispatchhq/dispatch/internal/user"
	"github.com/dispatchhq/dispatch/internal/user/userdb"
)

// Infra is what the API runs on.
type Infra struct {
	DB      *postgres.DB
	Redis   *redis.Client
	Keys    redisx.Prefix
	Log     *slog.Logger
	Gateway payment.Gateway
	// Unobserved drops the access log and the request metrics; only the benchmark that
	// measures their cost sets it.
	Unobserved bool
}

// Server is the API: its services and the gin engine routing to them.
type Server struct {
	cfg           config.Config
	log           *slog.Logger
	db            *postgres.DB
	rdb           *redis.Client
	keys          redisx.Prefix
	auth          *auth.Service
	users         *user.Service
	catalog       *catalog.Service
	orders        *order.Service
	notifications *notification.Store
	idem          *idempotency.Store
	limiter       *ratelimit.Limiter
	engine        *gin.Engine
	closers       []func() error
	unobserved    bool
}

// New wires the services and the routes.
func New(cfg config.Config, in Infra) *Server {
	hasher := auth.NewHasher(auth.Params(cfg.Argon2), 2*runtime.GOMAXPROCS(0))
	tokens := auth.NewTokens(cfg.JWTAccessSecret, cfg.JWTRefreshSecret, cfg.JWTAccessTTL, cfg.JWTRefreshTTL)
	authSvc := auth.NewService(in.DB, in.Redis, in.Keys, hasher, tokens, userdb.Credentials{DB: in.DB}, in.Log)
	cache := catalog.NewCache(in.Redis, in.Keys, cfg.CacheTTL, in.Log)
	idem := idempotency.NewStore(in.DB)
	orders := order.NewService(in.DB, orderdb.Store{}, catalogdb.Store{}, cache, in.Gateway, idem,
		user.NewCustomerSync(in.DB, userdb.Store{}, in.Gateway), in.Log)
	s := &Server{
		cfg: cfg, log: in.Log, db: in.DB, rdb: in.Redis, keys: in.Keys,
		auth:          authSvc,
		users:         user.NewService(in.DB, userdb.Store{}, authSvc, in.Log),
		catalog:       catalog.NewService(in.DB, catalogdb.Store{}, cache),
		orders:        orders,
		notifications: notification.NewStore(in.DB),
		idem:          idem,
		limiter:       ratelimit.New(in.Redis),
		unobserved:    in.Unobserved,
	}
	s.engine = s.newEngine()
	s.routes()
	return s
}

// Close releases what the server holds beyond its dependencies (the queue UI's Redis client).
func (s *Server) Close() {
	for _, f := range s.closers {
		if err := f(); err != nil {
			s.log.Warn("close", "err", err)
		}
	}
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.engine }

// Engine exposes the gin engine (its route table is checked against the OpenAPI document).
func (s *Server) Engine() *gin.Engine { return s.engine }

// Users exposes the users service (demo data seeding uses it).
func (s *Server) Users() *user.Service { return s.users }

// Orders exposes the orders service.
func (s *Server) Orders() *order.Service { return s.orders }

// Notifications exposes the notifications store.
func (s *Server) Notifications() *notification.Store { return s.notifications }

// Catalog exposes the catalog service.
func (s *Server) Catalog() *catalog.Service { return s.catalog }

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
	e.Use(secureHeaders, s.correlate)
	if !s.unobserved {
		e.Use(s.accessLog)
	}
	e.Use(s.recovery, s.cors, s.negotiate, s.limitBody)
	e.NoRoute(func(c *gin.Context) { s.respondError(c, apperr.ErrRouteNotFound) })
	e.NoMethod(func(c *gin.Context) { s.respondError(c, apperr.ErrMethodNotAllowed) })
	return e
}
