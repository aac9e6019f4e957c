package httpapi_test

import (
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// access is who may call a route (SPEC §2, §3, §11).
type access int

const (
	public    access = iota // anyone, no token needed
	refresh                 // a refresh token as the Bearer token
	anyUser                 // any valid access token
	admins                  // superadmin, admin
	financial               // superadmin, admin, financial
	shipping                // superadmin, admin, shipper
	delivery                // superadmin, admin, delivery
)

// groups are the roles each guarded access admits (SPEC §2).
var groups = map[access][]string{
	admins:    {"superadmin", "admin"},
	financial: {"superadmin", "admin", "financial"},
	shipping:  {"superadmin", "admin", "shipper"},
	delivery:  {"superadmin", "admin", "delivery"},
}

// matrixRoles are the callers of the matrix; "anonymous" sends no token.
var matrixRoles = []string{"anonymous", "user", "shipper", "delivery", "financial", "admin", "superadmin"}

// refusal is the expected verdict for a caller: 0 when allowed, else the refusal status and code.
func (a access) refusal(role string) (status int, code string) {
	switch {
	case a == public:
		return 0, ""
	case role == "anonymous":
		return 401, "auth.errors.unauthenticated"
	case groups[a] != nil && !slices.Contains(groups[a], role):
		return 403, "auth.errors.forbidden"
	}
	return 0, ""
}

// request is what a matrix case sends; check (optional) verifies the effect afterwards.
type request struct {
	path    string
	body    any
	headers []string
	check   func(t *testing.T, allowed bool)
}

type matrixRoute struct {
	method, pattern string
	access          access
	ok              int // status an allowed caller gets
	token           func(caller account) string
	build           func(t *testing.T, a *app, caller account) request
}

func accessToken(c account) string  { return c.Access }
func refreshToken(c account) string { return c.Refresh }

// freshItem creates a catalog item for one case.
func freshItem(t *testing.T, a *app) catalog.Item {
	t.Helper()
	price, stock := int64(1000), int64(5)
	it, err := a.svc.Catalog.Create(testenv.Context(t), catalog.Create{Name: "Matrix item", Description: "For the matrix.", Price: &price, Stock: &stock}, nil)
	if err != nil {
		t.Fatalf("create item: %v", err)
	}
	return it
}

func itemPrice(t *testing.T, a *app, id uuid.UUID) (int64, bool) {
	t.Helper()
	var row struct {
		Price   int64 `db:"price"`
		Deleted bool  `db:"deleted"`
	}
	if err := a.db.Get(&row, `SELECT price, deleted_at IS NOT NULL AS deleted FROM items WHERE id = $1`, id); err != nil {
		t.Fatalf("read item: %v", err)
	}
	return row.Price, row.Deleted
}

func matrixRoutes() []matrixRoute {
	demoItem := demo.Items()[0].ID.String()
	return []matrixRoute{
		{"POST", "/v1/auth/login", public, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/auth/login", body: map[string]string{"email": c.Email, "password": c.Password}}
		}},
		{"POST", "/v1/auth/refresh", refresh, 200, refreshToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/auth/refresh"}
		}},
		{"POST", "/v1/auth/logout", anyUser, 204, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/auth/logout", check: func(t *testing.T, allowed bool) {
				if c.ID == "" {
					return
				}
				if want := map[bool]int{true: 0, false: 1}[allowed]; a.liveSessions(t, c.ID) != want {
					t.Fatalf("live sessions after logout (allowed=%v) = %d, want %d", allowed, a.liveSessions(t, c.ID), want)
				}
			}}
		}},
		{"POST", "/v1/users", public, 201, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/users", headers: key(),
				body: map[string]any{"name": "Matrix", "email": uniqueEmail("matrix"), "password": testPassword}}
		}},
		{"GET", "/v1/users", anyUser, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/users"}
		}},
		{"GET", "/v1/users/me", anyUser, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/users/me"}
		}},
		{"PATCH", "/v1/users/me", anyUser, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/users/me", body: map[string]any{"name": "Renamed"}}
		}},
		{"DELETE", "/v1/users/me", anyUser, 204, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/users/me", check: func(t *testing.T, allowed bool) {
				if c.ID != "" && a.userRow(t, c.ID).Deleted != allowed {
					t.Fatalf("caller deleted = %v, want %v", !allowed, allowed)
				}
			}}
		}},
		{"GET", "/v1/users/:id", anyUser, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/users/" + a.provision(t, auth.RoleUser).ID}
		}},
		{"POST", "/v1/admin/users", admins, 201, accessToken, func(t *testing.T, a *app, c account) request {
			email := uniqueEmail("created")
			return request{path: "/v1/admin/users", headers: key(),
				body: map[string]any{"name": "Created", "email": email, "password": testPassword, "role": "shipper"},
				check: func(t *testing.T, allowed bool) {
					if n := a.usersWithEmail(t, email, false); (n == 1) != allowed {
						t.Fatalf("users created = %d (allowed=%v)", n, allowed)
					}
				}}
		}},
		{"GET", "/v1/admin/users", admins, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/admin/users"}
		}},
		{"GET", "/v1/admin/users/:id", admins, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/admin/users/" + a.provision(t, auth.RoleUser).ID}
		}},
		{"PATCH", "/v1/admin/users/:id", admins, 200, accessToken, func(t *testing.T, a *app, c account) request {
			target := a.provision(t, auth.RoleUser)
			return request{path: "/v1/admin/users/" + target.ID, body: map[string]any{"name": "Changed by admin"},
				check: func(t *testing.T, allowed bool) {
					if changed := a.userRow(t, target.ID).Name == "Changed by admin"; changed != allowed {
						t.Fatalf("target changed = %v, want %v", changed, allowed)
					}
				}}
		}},
		{"DELETE", "/v1/admin/users/:id", admins, 204, accessToken, func(t *testing.T, a *app, c account) request {
			target := a.provision(t, auth.RoleUser)
			return request{path: "/v1/admin/users/" + target.ID, check: func(t *testing.T, allowed bool) {
				if deleted := a.userRow(t, target.ID).Deleted; deleted != allowed {
					t.Fatalf("target deleted = %v, want %v", deleted, allowed)
				}
			}}
		}},
		{"GET", "/v1/items", anyUser, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/items"}
		}},
		{"GET", "/v1/items/:id", anyUser, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/items/" + demoItem}
		}},
		{"POST", "/v1/admin/items", admins, 201, accessToken, func(t *testing.T, a *app, c account) request {
			name := "Matrix " + uuid.NewString()
			return request{path: "/v1/admin/items", headers: key(),
				body: map[string]any{"name": name, "description": "New.", "price": 500, "stock": 1},
				check: func(t *testing.T, allowed bool) {
					var n int
					if err := a.db.Get(&n, `SELECT count(*) FROM items WHERE name = $1`, name); err != nil {
						t.Fatal(err)
					}
					if (n == 1) != allowed {
						t.Fatalf("items created = %d (allowed=%v)", n, allowed)
					}
				}}
		}},
		{"GET", "/v1/admin/items", admins, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/admin/items"}
		}},
		{"GET", "/v1/admin/items/:id", admins, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/admin/items/" + demoItem}
		}},
		{"PATCH", "/v1/admin/items/:id", admins, 200, accessToken, func(t *testing.T, a *app, c account) request {
			it := freshItem(t, a)
			return request{path: "/v1/admin/items/" + it.ID.String(), body: map[string]any{"price": 4242},
				check: func(t *testing.T, allowed bool) {
					if price, _ := itemPrice(t, a, it.ID); (price == 4242) != allowed {
						t.Fatalf("item price = %d (allowed=%v)", price, allowed)
					}
				}}
		}},
		{"DELETE", "/v1/admin/items/:id", admins, 204, accessToken, func(t *testing.T, a *app, c account) request {
			it := freshItem(t, a)
			return request{path: "/v1/admin/items/" + it.ID.String(), check: func(t *testing.T, allowed bool) {
				if _, deleted := itemPrice(t, a, it.ID); deleted != allowed {
					t.Fatalf("item deleted = %v (allowed=%v)", deleted, allowed)
				}
			}}
		}},
	}
}

// TestAuthorizationMatrix calls every route as every role and asserts the exact outcome:
// 401 auth.errors.unauthenticated without a token, 403 auth.errors.forbidden for a role outside
// the route's group, else the route's success status, and that refused calls change nothing.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	authorizationMatrix(t, newApp(t))
}

// TestEveryRouteRunsOnOneConnection: no request holds a database connection while it waits for
// another, so a full pool (DB_MAX_CONNS) makes requests queue, never deadlock. The whole
// matrix, its calls in parallel, runs on a pool of one.
func TestEveryRouteRunsOnOneConnection(t *testing.T) {
	t.Parallel()
	a := newApp(t, "DB_MAX_CONNS", "1")
	if n := a.db.Pool().Stats().MaxOpenConnections; n != 1 {
		t.Fatalf("pool of %d connections", n)
	}
	// A request that needs a second connection waits forever, and so does everything after it
	// on the pool, the test's own queries too.
	testenv.Watchdog(t, 2*time.Minute, "the matrix on a pool of one connection (a request holding a connection while it waits for another)")
	authorizationMatrix(t, a)
}

func authorizationMatrix(t *testing.T, a *app) {
	routes := append(matrixRoutes(), orderMatrixRoutes()...)

	// The matrix covers exactly the routes the engine serves (ops routes aside).
	var served, covered []string
	for _, r := range a.srv.Engine().Routes() {
		if !isOpsRoute(r.Path) {
			served = append(served, r.Method+" "+r.Path)
		}
	}
	for _, r := range routes {
		covered = append(covered, r.method+" "+r.pattern)
	}
	sort.Strings(served)
	sort.Strings(covered)
	if strings.Join(served, "\n") != strings.Join(covered, "\n") {
		t.Fatalf("matrix routes differ from the engine's:\nserved:\n%s\ncovered:\n%s", strings.Join(served, "\n"), strings.Join(covered, "\n"))
	}

	for _, r := range routes {
		for _, role := range matrixRoles {
			t.Run(r.method+" "+r.pattern+"/"+role, func(t *testing.T) {
				t.Parallel()
				var caller account
				if role == "anonymous" {
					// Anonymous callers hold credentials (login is public) but send no token.
					caller = a.provision(t, auth.RoleUser)
					caller.ID, caller.Role = "", "anonymous"
				} else {
					caller = a.provision(t, auth.Role(role))
				}
				req := r.build(t, a, caller)
				c := a.client(t)
				if role != "anonymous" {
					c = c.As(r.token(caller))
				}
				resp := c.Do(r.method, req.path, req.body, req.headers...)
				status, code := r.access.refusal(role)
				if status != 0 {
					expectError(t, resp, status, code, req.path)
				} else {
					resp.Expect(t, r.ok)
				}
				if req.check != nil {
					req.check(t, status == 0)
				}
			})
		}
	}
}

// isOpsRoute tells the routes outside the API proper: probes, metrics, the OpenAPI document
// and the queue UI (behind basic auth, tested apart).
func isOpsRoute(path string) bool {
	return path == "/health" || path == "/ready" || path == "/metrics" || path == "/openapi.json" ||
		strings.HasPrefix(path, "/admin/queues")
}

// TestOpsRoutesArePublic: /health and /ready need no token.
func TestOpsRoutesArePublic(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	a.api.Do("GET", "/health", nil).Expect(t, 200)
	// Ready is a 200 once each dependency answers within a second, which a loaded machine may
	// miss now and then; a token demanded would never give one.
	testenv.Eventually(t, 20*time.Second, "/ready answers 200 without a token", func() bool {
		return a.api.Do("GET", "/ready", nil).Status == 200
	})
	// HEAD, as load balancers probe.
	for _, path := range []string{"/health", "/metrics", "/openapi.json"} {
		if r := a.api.Do("HEAD", path, nil); r.Status != 200 {
			t.Errorf("HEAD %s: %d", path, r.Status)
		}
	}
	testenv.Eventually(t, 20*time.Second, "HEAD /ready answers 200", func() bool {
		return a.api.Do("HEAD", "/ready", nil).Status == 200
	})
}

// TestInvalidTokensAreRefused: anything but a valid, live access token is 401
// auth.errors.invalidToken on a guarded route.
func TestInvalidTokensAreRefused(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	acc := a.provision(t, auth.RoleAdmin)
	uid, _ := uuid.Parse(acc.ID)
	var sid uuid.UUID
	if err := a.db.Get(&sid, `SELECT id FROM sessions WHERE user_id = $1`, uid); err != nil {
		t.Fatal(err)
	}
	sign := func(method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		t.Helper()
		s, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	now := time.Now()
	claims := func(exp time.Time) jwt.MapClaims {
		return jwt.MapClaims{"sub": acc.ID, "jti": sid.String(), "role": "superadmin", "lang": "en",
			"iat": now.Add(-time.Minute).Unix(), "exp": exp.Unix()}
	}
	secret := []byte(a.cfg.JWTAccessSecret)
	// A well-formed token for the live session works (the harness is sound)...
	valid := sign(jwt.SigningMethodHS256, secret, claims(now.Add(time.Minute)))
	a.api.As(valid).Do("GET", "/v1/users/me", nil).Expect(t, 200)

	for name, token := range map[string]string{
		"garbage":              "not.a.jwt",
		"expired":              sign(jwt.SigningMethodHS256, secret, claims(now.Add(-time.Second))),
		"wrong secret":         sign(jwt.SigningMethodHS256, []byte(strings.Repeat("x", 40)), claims(now.Add(time.Minute))),
		"refresh secret":       sign(jwt.SigningMethodHS256, []byte(a.cfg.JWTRefreshSecret), claims(now.Add(time.Minute))),
		"alg none":             sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(now.Add(time.Minute))),
		"HS512":                sign(jwt.SigningMethodHS512, secret, claims(now.Add(time.Minute))),
		"refresh token":        acc.Refresh,
		"unknown session":      sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": acc.ID, "jti": uuid.NewString(), "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}),
		"other user's session": sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": uuid.NewString(), "jti": sid.String(), "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()}),
		"no expiry":            sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": acc.ID, "jti": sid.String(), "iat": now.Unix()}),
	} {
		t.Run(name, func(t *testing.T) {
			expectError(t, a.client(t).As(token).Do("GET", "/v1/admin/users", nil), 401, "auth.errors.invalidToken", "/v1/admin/users")
		})
	}
	for name, header := range map[string]string{"empty bearer": "Bearer ", "basic": "Basic YWRtaW46YWRtaW4=", "no scheme": acc.Access} {
		t.Run(name, func(t *testing.T) {
			resp := a.client(t).Do("GET", "/v1/users/me", nil, "Authorization", header)
			expectError(t, resp, 401, "auth.errors.unauthenticated", "/v1/users/me")
		})
	}
	// The scheme is case-insensitive.
	a.api.Do("GET", "/v1/users/me", nil, "Authorization", "bearer "+acc.Access).Expect(t, 200)
}

// TestRoleIsReadFromTheDatabase: the role claim of a token grants nothing; a role changed in
// the database (even without revoking sessions) applies within a second.
func TestRoleIsReadFromTheDatabase(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	acc := a.provision(t, auth.RoleAdmin)
	c := a.api.As(acc.Access)
	c.Do("GET", "/v1/admin/users", nil).Expect(t, 200)

	if _, err := a.db.Exec(`UPDATE users SET role = 'user' WHERE id = $1`, acc.ID); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, "demoted admin still passes the admin guard", func() bool {
		return c.Do("GET", "/v1/admin/users", nil).Status == http.StatusForbidden
	})
	expectError(t, c.Do("GET", "/v1/admin/users", nil), 403, "auth.errors.forbidden", "/v1/admin/users")

	// Promoted in the database: the same token now passes.
	if _, err := a.db.Exec(`UPDATE users SET role = 'admin' WHERE id = $1`, acc.ID); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, "promoted user still refused", func() bool {
		return c.Do("GET", "/v1/admin/users", nil).Status == http.StatusOK
	})

	// Deleted in the database: the token dies.
	if _, err := a.db.Exec(`UPDATE users SET deleted_at = now() WHERE id = $1`, acc.ID); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, "deleted user still authenticated", func() bool {
		return c.Do("GET", "/v1/users/me", nil).Status == http.StatusUnauthorized
	})
}
