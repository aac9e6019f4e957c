package httpapi_test

import (
	"io"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/assembly"
	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/httpapi"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

func headerInt(t *testing.T, r testenv.Response, name string) int {
	t.Helper()
	v := r.Header.Get(name)
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("header %s = %q, want an integer (status %d)", name, v, r.Status)
	}
	return n
}

// expectBudget checks the rate-limit headers of an allowed response.
func expectBudget(t *testing.T, r testenv.Response, limit, remaining int) {
	t.Helper()
	if got := headerInt(t, r, "X-RateLimit-Limit"); got != limit {
		t.Fatalf("X-RateLimit-Limit = %d, want %d", got, limit)
	}
	if got := headerInt(t, r, "X-RateLimit-Remaining"); got != remaining {
		t.Fatalf("X-RateLimit-Remaining = %d, want %d", got, remaining)
	}
	if reset := headerInt(t, r, "X-RateLimit-Reset"); reset < 1 || reset > 60 {
		t.Fatalf("X-RateLimit-Reset = %d, want seconds until the window ends (1..60)", reset)
	}
}

// expectLimited checks a 429 with its headers.
func expectLimited(t *testing.T, r testenv.Response, limit int, path string) {
	t.Helper()
	expectError(t, r, 429, "common.errors.rateLimited", path)
	expectBudget(t, r, limit, 0)
	if ra := headerInt(t, r, "Retry-After"); ra < 1 || ra > 60 {
		t.Fatalf("Retry-After = %d, want 1..60", ra)
	}
	if ra, reset := headerInt(t, r, "Retry-After"), headerInt(t, r, "X-RateLimit-Reset"); ra < reset-1 || ra > reset+1 {
		t.Fatalf("Retry-After %d and X-RateLimit-Reset %d disagree", ra, reset)
	}
}

func expectNoBudget(t *testing.T, r testenv.Response) {
	t.Helper()
	for _, h := range []string{"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"} {
		if v := r.Header.Get(h); v != "" {
			t.Fatalf("unlimited route answered %s: %s", h, v)
		}
	}
}

func loginBody(email string) map[string]string {
	return map[string]string{"email": email, "password": demo.Password}
}

// behindProxy configures the API as deployed behind a proxy on loopback (the test client).
var behindProxy = []string{"RATE_LIMIT_ENABLED", "true", "TRUSTED_PROXIES", "127.0.0.1/8,::1/128"}

func TestLoginRateLimit(t *testing.T) {
	t.Parallel()
	a := newApp(t, behindProxy...)
	const path = "/v1/auth/login"
	ip1 := a.api.With("X-Forwarded-For", "203.0.113.1")
	admin := a.demoAccount(t, "admin@dispatch.local") // from 127.0.0.1: its own budget
	for i := 1; i <= 5; i++ {
		resp := ip1.Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200)
		expectBudget(t, resp, 5, 5-i)
	}
	sessions, outbox := a.liveSessions(t, admin.ID), a.outboxCount(t)
	limited := ip1.Do("POST", path, loginBody("admin@dispatch.local"))
	expectLimited(t, limited, 5, path)
	// The refused login did nothing: no session, no notification.
	if a.liveSessions(t, admin.ID) != sessions || a.outboxCount(t) != outbox {
		t.Fatal("a rate-limited login opened a session or wrote an outbox row")
	}
	// Wrong credentials count too: the budget is per request, not per success.
	expectLimited(t, ip1.Do("POST", path, map[string]string{"email": "x@example.com", "password": "whatever1"}), 5, path)

	// Per client IP: another address (through the trusted loopback proxy) has its own budget.
	ip2 := a.api.With("X-Forwarded-For", "203.0.113.2")
	expectBudget(t, ip2.Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200), 5, 4)
	// The right-most untrusted address of a chain is the client.
	chain := a.api.With("X-Forwarded-For", "203.0.113.1, 203.0.113.3")
	expectBudget(t, chain.Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200), 5, 4)
	// The direct caller (127.0.0.1) used one login above.
	expectBudget(t, a.api.Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200), 5, 3)

	// Per route: the same IP may still refresh and use other routes.
	resp := ip1.Do("POST", "/v1/auth/refresh", nil, "Authorization", "Bearer "+admin.Refresh).Expect(t, 200)
	expectBudget(t, resp, 20, 19)
	expectBudget(t, ip1.As(admin.Access).Do("GET", "/v1/users/me", nil).Expect(t, 200), 60, 59)
	expectLimited(t, ip1.Do("POST", path, loginBody("admin@dispatch.local")), 5, path)
}

// TestRateLimitIgnoresForwardedForFromUntrustedPeers: when the peer is not a trusted proxy,
// X-Forwarded-For cannot buy a fresh budget.
func TestRateLimitIgnoresForwardedForFromUntrustedPeers(t *testing.T) {
	t.Parallel()
	a := newApp(t, "RATE_LIMIT_ENABLED", "true", "TRUSTED_PROXIES", "10.0.0.0/8", "RATE_LIMITS", "login=2")
	const path = "/v1/auth/login"
	a.api.With("X-Forwarded-For", "198.51.100.1").Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200)
	a.api.With("X-Forwarded-For", "198.51.100.2").Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200)
	expectLimited(t, a.api.With("X-Forwarded-For", "198.51.100.3").Do("POST", path, loginBody("admin@dispatch.local")), 2, path)
}

// TestForgedForwardingHeadersDoNotLiftLimits: in the default configuration no proxy is
// trusted, so a client cannot name its own IP with X-Forwarded-For or X-Real-IP.
func TestForgedForwardingHeadersDoNotLiftLimits(t *testing.T) {
	t.Parallel()
	a := newApp(t, "RATE_LIMIT_ENABLED", "true")
	const path = "/v1/auth/login"
	wrong := map[string]string{"email": "nobody@example.com", "password": "wrong-password"}
	for i := 1; i <= 5; i++ {
		resp := a.api.With("X-Forwarded-For", "198.51.100."+strconv.Itoa(i)).With("X-Real-IP", "192.0.2."+strconv.Itoa(i)).Do("POST", path, wrong)
		expectError(t, resp, 401, "auth.errors.invalidCredentials", path)
		expectBudget(t, resp, 5, 5-i)
	}
	for i := 6; i <= 8; i++ {
		forged := a.api.With("X-Forwarded-For", "198.51.100."+strconv.Itoa(i)).With("X-Real-IP", "192.0.2."+strconv.Itoa(i))
		expectLimited(t, forged.Do("POST", path, wrong), 5, path)
	}
}

// TestTrustedProxyChain: behind a trusted proxy, the client is the right-most hop of
// X-Forwarded-For that is not a trusted proxy; hops a client prepends change nothing.
func TestTrustedProxyChain(t *testing.T) {
	t.Parallel()
	a := newApp(t, "RATE_LIMIT_ENABLED", "true", "TRUSTED_PROXIES", "127.0.0.1/8,::1/128,10.0.0.0/8", "RATE_LIMITS", "login=2")
	const path = "/v1/auth/login"
	// The client 203.0.113.9 went through the proxies 10.1.1.1 and loopback.
	for i, forged := range []string{"", "198.51.100.1, ", "198.51.100.2, 198.51.100.3, "} {
		resp := a.api.With("X-Forwarded-For", forged+"203.0.113.9, 10.1.1.1").Do("POST", path, loginBody("admin@dispatch.local"))
		if i < 2 {
			expectBudget(t, resp.Expect(t, 200), 2, 1-i)
		} else {
			expectLimited(t, resp, 2, path)
		}
	}
	// X-Real-IP is not read, even from a trusted proxy: these count against the proxy's own IP.
	for i := 0; i < 2; i++ {
		resp := a.api.With("X-Real-IP", "203.0.113.5"+strconv.Itoa(i)).Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200)
		expectBudget(t, resp, 2, 1-i)
	}
	expectLimited(t, a.api.With("X-Real-IP", "203.0.113.52").Do("POST", path, loginBody("admin@dispatch.local")), 2, path)
}

// An IPv6 client is its /64: the addresses of one network share a budget (a host usually has
// the whole /64 to pick from); another /64, and IPv4, count apart.
func TestRateLimitCountsAnIPv6NetworkAsOneClient(t *testing.T) {
	t.Parallel()
	a := newApp(t, "RATE_LIMIT_ENABLED", "true", "TRUSTED_PROXIES", "127.0.0.1/8,::1/128", "RATE_LIMITS", "login=2")
	const path = "/v1/auth/login"
	from := func(ip string) *testenv.Client { return a.api.With("X-Forwarded-For", ip) }
	expectBudget(t, from("2001:db8:1:2::1").Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200), 2, 1)
	expectBudget(t, from("2001:db8:1:2:ffff:1:2:3").Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200), 2, 0)
	expectLimited(t, from("2001:db8:1:2:abcd::9").Do("POST", path, loginBody("admin@dispatch.local")), 2, path)
	expectBudget(t, from("2001:db8:1:3::1").Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200), 2, 1)
	expectBudget(t, from("203.0.113.7").Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200), 2, 1)
	expectBudget(t, from("::ffff:203.0.113.7").Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200), 2, 0)
}

func TestRateLimitOverridesAndUnlimitedRoutes(t *testing.T) {
	t.Parallel()
	a := newApp(t, "RATE_LIMIT_ENABLED", "true", "TRUSTED_PROXIES", "127.0.0.1/8,::1/128", "RATE_LIMITS", "login=2,default=3,session=4,create=1")
	const login = "/v1/auth/login"
	for i := 1; i <= 2; i++ {
		expectBudget(t, a.api.Do("POST", login, loginBody("admin@dispatch.local")).Expect(t, 200), 2, 2-i)
	}
	expectLimited(t, a.api.Do("POST", login, loginBody("admin@dispatch.local")), 2, login)

	// Log in from other addresses for the rest of the test.
	admin := a.api.With("X-Forwarded-For", "192.0.2.10")
	var pair struct{ AccessToken, RefreshToken string }
	admin.Do("POST", login, loginBody("admin@dispatch.local")).Expect(t, 200).Decode(t, &pair)
	admin = admin.As(pair.AccessToken)

	// GET lists are unlimited.
	for _, list := range []string{"/v1/users", "/v1/admin/users", "/v1/items", "/v1/admin/items"} {
		for i := 0; i < 8; i++ {
			expectNoBudget(t, admin.Do("GET", list, nil).Expect(t, 200))
		}
	}
	// Other routes take the default class (3 here), per route, not per path.
	for i := 1; i <= 3; i++ {
		expectBudget(t, admin.Do("GET", "/v1/users/me", nil).Expect(t, 200), 3, 3-i)
	}
	expectLimited(t, admin.Do("GET", "/v1/users/me", nil), 3, "/v1/users/me")
	for i := 1; i <= 3; i++ {
		id := uuid.NewString()
		expectBudget(t, admin.Do("GET", "/v1/users/"+id, nil).Expect(t, 404), 3, 3-i)
	}
	other := "/v1/users/" + uuid.NewString()
	expectLimited(t, admin.Do("GET", other, nil), 3, other)
	// The creating POSTs take the create class.
	body := map[string]any{"name": "Limited", "email": uniqueEmail("rl"), "password": testPassword}
	expectBudget(t, a.api.Do("POST", "/v1/users", body, key()...).Expect(t, 201), 1, 0)
	expectLimited(t, a.api.Do("POST", "/v1/users", map[string]any{"name": "Limited", "email": uniqueEmail("rl"), "password": testPassword}, key()...), 1, "/v1/users")
	// Refresh and logout take the session class.
	expectBudget(t, a.api.As(pair.RefreshToken).Do("POST", "/v1/auth/refresh", nil).Expect(t, 200), 4, 3)
}

func TestOpsRoutesAreNotRateLimited(t *testing.T) {
	t.Parallel()
	a := newApp(t, "RATE_LIMIT_ENABLED", "true", "RATE_LIMITS", "default=1,login=1,session=1,create=1")
	for i := 0; i < 10; i++ {
		expectNoBudget(t, a.api.Do("GET", "/health", nil).Expect(t, 200))
		// A dependency slow to answer on a loaded machine makes /ready a 503; a limit would
		// make it a 429.
		r := a.api.Do("GET", "/ready", nil)
		if r.Status != 200 && r.Status != 503 {
			t.Fatalf("/ready answered %d\n%s", r.Status, r.Body)
		}
		expectNoBudget(t, r)
	}
}

func TestRateLimitDisabled(t *testing.T) {
	t.Parallel()
	a := newApp(t) // the test configuration turns rate limits off
	for i := 0; i < 8; i++ {
		expectNoBudget(t, a.api.Do("POST", "/v1/auth/login", loginBody("admin@dispatch.local")).Expect(t, 200))
	}
}

// TestRateLimitSharedByReplicas: two API instances over the same Redis enforce one budget.
func TestRateLimitSharedByReplicas(t *testing.T) {
	t.Parallel()
	a := newApp(t, "RATE_LIMIT_ENABLED", "true", "RATE_LIMITS", "login=4")
	log := logging.New("api", a.cfg.LogLevel, "json", io.Discard)
	replica := httpapi.New(a.cfg, assembly.New(a.cfg, assembly.Infra{DB: a.db, Redis: a.rdb, Keys: a.keys, Log: log}), httpapi.Options{})
	t.Cleanup(replica.Close)
	hs := httptest.NewServer(replica.Handler())
	t.Cleanup(hs.Close)
	b := testenv.NewClient(t, hs.URL)
	const path = "/v1/auth/login"
	expectBudget(t, a.api.Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200), 4, 3)
	expectBudget(t, b.Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200), 4, 2)
	expectBudget(t, a.api.Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200), 4, 1)
	expectBudget(t, b.Do("POST", path, loginBody("admin@dispatch.local")).Expect(t, 200), 4, 0)
	expectLimited(t, a.api.Do("POST", path, loginBody("admin@dispatch.local")), 4, path)
	expectLimited(t, b.Do("POST", path, loginBody("admin@dispatch.local")), 4, path)
}

// TestRateLimitFailsOpenWhenRedisIsDown: rate limiting protects the API; an unreachable Redis
// lets requests through instead of failing them, and sessions still end on logout.
func TestRateLimitFailsOpenWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	a := newAppRedisDown(t, "RATE_LIMIT_ENABLED", "true", "RATE_LIMITS", "login=1,default=1,session=1", "LOG_LEVEL", "warn")
	var access string
	for i := 0; i < 4; i++ {
		resp := a.api.Do("POST", "/v1/auth/login", loginBody("admin@dispatch.local")).Expect(t, 200)
		expectNoBudget(t, resp)
		var pair struct{ AccessToken string }
		resp.Decode(t, &pair)
		access = pair.AccessToken
	}
	c := a.api.As(access)
	for i := 0; i < 3; i++ {
		expectNoBudget(t, c.Do("GET", "/v1/users/me", nil).Expect(t, 200))
	}
	acc := a.provision(t, auth.RoleUser)
	a.api.As(acc.Access).Do("PATCH", "/v1/users/me", map[string]any{"name": "Still Works"}).Expect(t, 200)

	// Without the denylist, the database still ends a logged-out session.
	c.Do("POST", "/v1/auth/logout", nil).Expect(t, 204)
	expectError(t, c.Do("GET", "/v1/users/me", nil), 401, "auth.errors.invalidToken", "/v1/users/me")
	// And readiness reports Redis. A Postgres ping that misses its second on a loaded machine
	// adds Postgres: that answer is asked again.
	var resp testenv.Response
	testenv.Eventually(t, 20*time.Second, "readiness without a slow Postgres", func() bool {
		resp = a.api.Do("GET", "/ready", nil)
		return !slices.ContainsFunc(details(t, resp), func(d detail) bool { return d.Field == "postgres" })
	})
	expectError(t, resp, 503, "common.errors.notReady", "/ready")
	if d := details(t, resp); len(d) != 1 || d[0].Field != "redis" {
		t.Fatalf("readiness details: %+v", d)
	}
	a.api.Do("GET", "/health", nil).Expect(t, 200)

	// Every request fell back, but each fallback is logged once per 10 s, not once per request:
	// an outage under load would flood the log. (Twice allows for a slow run crossing 10 s.)
	for _, msg := range []string{"rate limiter unavailable", "denylist unavailable"} {
		if n := strings.Count(a.logs.String(), msg); n < 1 || n > 2 {
			t.Errorf("%q logged %d times for a dozen requests, want once", msg, n)
		}
	}
}
