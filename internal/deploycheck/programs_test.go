package deploycheck_test

// The real programs, as the image runs them: the binaries of the Dockerfile's build command,
// started with the environment docker-compose.yml gives them (addresses replaced by this
// machine's), against a database prepared by `migrate up`, a Redis logical database of their
// own, stripe-mock behind a fault-injecting proxy, and a fake Loki that records what they push.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki-client-go/pkg/logproto"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// serviceEnv is a compose service's environment with overrides (name, value pairs); every
// override must be a variable internal/config reads.
func serviceEnv(t *testing.T, service string, overrides ...string) []string {
	t.Helper()
	env := composeEnv(loadCompose(t).Services[service])
	known := map[string]bool{}
	for _, v := range config.Vars() {
		known[v] = true
	}
	for i := 0; i+1 < len(overrides); i += 2 {
		if !known[overrides[i]] {
			t.Fatalf("override %s is not a configuration variable", overrides[i])
		}
		env[overrides[i]] = overrides[i+1]
	}
	out := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// startProgram runs /app/<name> of the image with env; see testenv.StartProgram.
func startProgram(t *testing.T, name string, env []string, args ...string) *testenv.Program {
	t.Helper()
	return testenv.StartProgram(t, name, filepath.Join(dockerBuild(t), name), env, args...)
}

// system is Dispatch running as docker-compose.yml runs it, on this machine's services.
type system struct {
	db      *postgres.DB
	stripe  *testenv.StripeProxy
	api     string   // the API's address
	relay   string   // the relay's ops address
	workers []string // the workers' ops addresses
	driver  *driver
}

// startSystem runs migrate up on a database of its own, then api, outbox-relay and the given
// number of workers with the compose environment, pushing their logs to lokiURL, and waits
// until each is ready. The programs listen on free ports, never on the compose defaults.
func startSystem(t *testing.T, lokiURL string, workers int) *system {
	t.Helper()
	dbURL := testenv.EmptyDB(t)
	migrate := startProgram(t, "migrate", serviceEnv(t, "migrate", "DATABASE_URL", dbURL), "up")
	select {
	case <-migrate.Done():
	case <-time.After(2 * time.Minute):
		t.Fatal("migrate up did not finish")
	}
	if migrate.Err() != nil || !strings.Contains(migrate.Output(6000), "(dirty: false)") {
		t.Fatalf("migrate up: %v\n%s", migrate.Err(), migrate.Output(6000))
	}
	db, err := postgres.Open(testenv.Context(t), dbURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })

	redisURL, _ := isolatedRedis(t)
	s := &system{db: db, stripe: testenv.NewStripeProxy(t, testenv.StripeURL(t)), api: freeAddr(t), relay: freeAddr(t)}
	common := []string{"DATABASE_URL", dbURL, "REDIS_URL", redisURL, "LOKI_URL", lokiURL}
	api := startProgram(t, "api", serviceEnv(t, "api", append(common, "HTTP_ADDR", s.api,
		"STRIPE_API_BASE", s.stripe.URL, "RATE_LIMIT_ENABLED", "false")...))
	relay := startProgram(t, "outbox-relay", serviceEnv(t, "outbox-relay", append(common, "OPS_ADDR", s.relay)...))
	api.WaitReady(s.api)
	relay.WaitReady(s.relay)
	for i := 0; i < workers; i++ {
		addr := freeAddr(t)
		w := startProgram(t, "worker", serviceEnv(t, "worker", append(common, "OPS_ADDR", addr, "STRIPE_API_BASE", s.stripe.URL)...))
		w.WaitReady(addr)
		s.workers = append(s.workers, addr)
	}
	s.driver = newDriver(t, "http://"+s.api, db, composeEnv(loadCompose(t).Services["api"])["STRIPE_WEBHOOK_SECRET"])
	return s
}

func freeAddr(t *testing.T) string {
	return "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
}

// redisClaimKey is the key internal/e2e claims a Redis logical database with; sharing it keeps
// the two packages, run in parallel by go test, off each other's databases.
const redisClaimKey = "dispatch-e2e:claim"

// isolatedRedis claims an empty Redis logical database (1..15) for programs that use the
// production queue names and key prefix, and deletes what they wrote when the test ends.
// Never FLUSHDB: the server is shared.
func isolatedRedis(t *testing.T) (string, *redis.Client) {
	t.Helper()
	_, _, base := testenv.Redis(t)
	token := make([]byte, 8)
	_, _ = rand.Read(token)
	claim := hex.EncodeToString(token)
	ctx := context.Background()
	release := func(rdb *redis.Client) {
		if v, _ := rdb.Get(ctx, redisClaimKey).Result(); v == claim {
			rdb.Del(ctx, redisClaimKey)
		}
	}
	for n := 15; n >= 1; n-- {
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/" + strconv.Itoa(n)
		rdb, err := redisx.Open(ctx, u.String())
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := rdb.SetNX(ctx, redisClaimKey, claim, time.Hour).Result(); err != nil || !ok {
			rdb.Close()
			continue
		}
		if size, err := rdb.DBSize(ctx).Result(); err != nil || size != 1 {
			release(rdb)
			rdb.Close()
			continue
		}
		t.Cleanup(func() {
			for _, pattern := range []string{"asynq:*", string(redisx.DefaultPrefix) + "*"} {
				iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
				var keys []string
				for iter.Next(ctx) {
					keys = append(keys, iter.Val())
				}
				for len(keys) > 0 {
					k := min(len(keys), 500)
					rdb.Del(ctx, keys[:k]...)
					keys = keys[k:]
				}
			}
			release(rdb)
			rdb.Close()
		})
		return u.String(), rdb
	}
	t.Fatal("no free Redis logical database (1..15)")
	return "", nil
}

// fakeLoki receives the programs' pushes (snappy-compressed protobuf, as Loki's push API).
type fakeLoki struct {
	URL string

	mu      sync.Mutex
	streams []logproto.Stream
	errs    []string
}

func newFakeLoki(t *testing.T) *fakeLoki {
	l := &fakeLoki{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fail := func(msg string) {
			l.mu.Lock()
			l.errs = append(l.errs, msg)
			l.mu.Unlock()
			http.Error(w, msg, http.StatusBadRequest)
		}
		if r.Method != http.MethodPost || r.URL.Path != "/loki/api/v1/push" {
			fail(r.Method + " " + r.URL.Path + ": not the push API")
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
			fail("content type " + ct)
			return
		}
		raw, err := snappy.Decode(nil, body)
		if err != nil {
			fail("snappy: " + err.Error())
			return
		}
		var req logproto.PushRequest
		if err := req.Unmarshal(raw); err != nil {
			fail("protobuf: " + err.Error())
			return
		}
		l.mu.Lock()
		l.streams = append(l.streams, req.Streams...)
		l.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	l.URL = srv.URL
	return l
}

// snapshot returns what was pushed so far and the malformed pushes.
func (l *fakeLoki) snapshot() ([]logproto.Stream, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]logproto.Stream(nil), l.streams...), append([]string(nil), l.errs...)
}
