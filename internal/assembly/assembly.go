// Package assembly is the composition root: the one place where Dispatch's stores, services
// and payment gateway are built, once, from the configuration and the connections boot opened.
// The programs (cmd/api, cmd/worker, dispatchctl) and the tests that run them in process hand
// the result to the transports (httpapi, worker); no other package builds a service.
package assembly

import (
	"log/slog"
	"runtime"

	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/catalog/catalogdb"
	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/notification/notificationdb"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/user"
	"github.com/dispatchhq/dispatch/internal/user/userdb"
)

// Infra is what the services run on.
type Infra struct {
	DB      *postgres.DB
	Redis   *redis.Client
	Keys    redisx.Prefix
	Log     *slog.Logger
	Gateway payment.Gateway
}

// App is the assembled program: its infrastructure and every service built on it.
type App struct {
	Infra
	Auth          *auth.Service
	Users         *user.Service
	Catalog       *catalog.Service
	Orders        *order.Service
	Customers     *user.CustomerSync
	Notifications notification.Store
	Idempotency   *idempotency.Store
}

// New builds the services of cfg on in.
func New(cfg config.Config, in Infra) *App {
	hasher := auth.NewHasher(auth.Params(cfg.Argon2), 2*runtime.GOMAXPROCS(0))
	tokens := auth.NewTokens(cfg.JWTAccessSecret, cfg.JWTRefreshSecret, cfg.JWTAccessTTL, cfg.JWTRefreshTTL)
	cache := catalog.NewCache(in.Redis, in.Keys, cfg.CacheTTL, in.Log)
	wake := outbox.NewWaker(in.DB, in.Log)
	idem := idempotency.NewStore(in.DB, cfg.JWTRefreshSecret)
	a := &App{
		Infra:         in,
		Auth:          auth.NewService(in.DB, in.Redis, in.Keys, hasher, tokens, userdb.Credentials{DB: in.DB}, wake, in.Log),
		Catalog:       catalog.NewService(in.DB, catalogdb.Store{}, cache, idem),
		Customers:     user.NewCustomerSync(in.DB, userdb.Store{}, in.Gateway),
		Notifications: notificationdb.New(in.DB),
		Idempotency:   idem,
	}
	a.Users = user.NewService(in.DB, userdb.Store{}, a.Auth, idem, wake, in.Log)
	a.Orders = order.NewService(in.DB, orderdb.Store{}, catalogdb.Store{}, cache, in.Gateway, a.Idempotency, a.Customers, wake, in.Log)
	return a
}

// Stripe is the payment gateway cfg names.
func Stripe(cfg config.Config) payment.Gateway {
	return payment.NewStripe(cfg.StripeSecretKey, cfg.StripeAPIBase)
}
