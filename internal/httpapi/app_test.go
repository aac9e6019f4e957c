package httpapi_test

import (
	"net/http/httptest"
	"os"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/assembly"
	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/httpapi"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	os.Exit(m.Run())
}

// app is a real API over a database and Redis prefix of the test's own, served over HTTP,
// with the demo data seeded.
type app struct {
	t    *testing.T
	srv  *httpapi.Server
	svc  *assembly.App
	db   *postgres.DB
	rdb  *redis.Client
	keys redisx.Prefix
	cfg  config.Config
	api  *testenv.Client
	logs *testenv.Buffer // the API's log lines
}

// newApp starts an API; overrides are configuration name, value pairs.
func newApp(t *testing.T, overrides ...string) *app {
	t.Helper()
	rdb, keys, redisURL := testenv.Redis(t)
	return startApp(t, rdb, keys, redisURL, overrides...)
}

// startApp starts an API on a fresh database with the given Redis client.
func startApp(t *testing.T, rdb *redis.Client, keys redisx.Prefix, redisURL string, overrides ...string) *app {
	t.Helper()
	return startAppWith(t, httpapi.Options{}, rdb, keys, redisURL, overrides...)
}

// startAppWith is startApp with the server's options.
func startAppWith(t *testing.T, opts httpapi.Options, rdb *redis.Client, keys redisx.Prefix, redisURL string, overrides ...string) *app {
	t.Helper()
	db, dbURL := testenv.DB(t)
	cfg := testenv.Config(t, config.API, dbURL, redisURL, overrides...)
	db.SetMaxConns(cfg.DBMaxConns) // the pool cmd/api opens
	logs := &testenv.Buffer{}
	log := logging.New("api", cfg.LogLevel, "json", logs)
	services := assembly.New(cfg, assembly.Infra{DB: db, Redis: rdb, Keys: keys, Log: log,
		Gateway: payment.NewStripe(cfg.StripeSecretKey, testenv.StripeURL(t))})
	srv := httpapi.New(cfg, services, opts)
	t.Cleanup(srv.Close)
	if err := demo.Seed(testenv.Context(t), db, services.Users, services.Catalog, log); err != nil {
		t.Fatalf("seed: %v", err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &app{t: t, srv: srv, svc: services, db: db, rdb: rdb, keys: keys, cfg: cfg, api: testenv.NewClient(t, hs.URL), logs: logs}
}

// as returns a client logged in as a demo user.
func (a *app) as(email string) *testenv.Client {
	a.t.Helper()
	access, _ := a.login(a.t, email, demo.Password)
	return a.api.As(access)
}

// key returns a fresh Idempotency-Key header pair.
func key() []string { return []string{"Idempotency-Key", uuid.NewString()} }

// signUp creates a customer and returns its id and a client logged in as it.
func (a *app) signUp(email string) (string, *testenv.Client) {
	a.t.Helper()
	var u struct{ ID string }
	a.api.Do("POST", "/v1/users", map[string]any{"name": "Customer", "email": email, "password": "password123"}, key()...).
		Expect(a.t, 201).Decode(a.t, &u)
	access, _ := a.login(a.t, email, "password123")
	return u.ID, a.api.As(access)
}
