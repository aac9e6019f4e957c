package httpapi_test

import (
	"strings"
	"testing"

	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/google/uuid"
)

func TestLoginRefreshLogout(t *testing.T) {
	t.Parallel()
	a := newApp(t)

	var pair map[string]any
	a.api.Do("POST", "/v1/auth/login", map[string]string{"email": "ADMIN@dispatch.local", "password": demo.Password}).
		Expect(t, 200).Decode(t, &pair)
	for _, k := range []string{"accessToken", "refreshToken", "userId", "language"} {
		if s, _ := pair[k].(string); s == "" {
			t.Fatalf("login response lacks %s: %v", k, pair)
		}
	}
	if pair["expiresIn"] != float64(900) {
		t.Fatalf("expiresIn = %v, want 900", pair["expiresIn"])
	}
	access, refresh := pair["accessToken"].(string), pair["refreshToken"].(string)
	a.api.As(access).Do("GET", "/v1/users/me", nil).Expect(t, 200)

	// Refresh rotates: the new pair works, the old refresh token is now a reuse.
	var next map[string]any
	a.api.As(refresh).Do("POST", "/v1/auth/refresh", nil).Expect(t, 200).Decode(t, &next)
	newAccess, newRefresh := next["accessToken"].(string), next["refreshToken"].(string)
	if newRefresh == refresh || newAccess == access {
		t.Fatal("refresh gave back a token of the old pair")
	}
	a.api.As(newAccess).Do("GET", "/v1/users/me", nil).Expect(t, 200)

	// An access token is not a refresh token and vice versa.
	a.api.As(newAccess).Do("POST", "/v1/auth/refresh", nil).ExpectError(t, 401, "auth.errors.invalidToken")
	a.api.As(newRefresh).Do("GET", "/v1/users/me", nil).ExpectError(t, 401, "auth.errors.invalidToken")

	// Reuse of the rotated token revokes the whole session: every token of it dies.
	a.api.As(refresh).Do("POST", "/v1/auth/refresh", nil).ExpectError(t, 401, "auth.errors.refreshTokenReused")
	a.api.As(newRefresh).Do("POST", "/v1/auth/refresh", nil).ExpectError(t, 401, "auth.errors.invalidToken")
	a.api.As(newAccess).Do("GET", "/v1/users/me", nil).ExpectError(t, 401, "auth.errors.invalidToken")
	a.api.As(access).Do("GET", "/v1/users/me", nil).ExpectError(t, 401, "auth.errors.invalidToken")

	// Logout kills both tokens of a fresh session at once.
	access, refresh = a.login(t, "admin@dispatch.local", demo.Password)
	a.api.As(access).Do("POST", "/v1/auth/logout", nil).Expect(t, 204)
	a.api.As(access).Do("GET", "/v1/users/me", nil).ExpectError(t, 401, "auth.errors.invalidToken")
	a.api.As(refresh).Do("POST", "/v1/auth/refresh", nil).ExpectError(t, 401, "auth.errors.invalidToken")

	// The refresh token may also come in the body, where it wins over any Bearer token (a
	// client that sends it there keeps its access token in the header); logout takes it too,
	// and needs it not.
	access, refresh = a.login(t, "admin@dispatch.local", demo.Password)
	a.api.Do("POST", "/v1/auth/refresh", map[string]string{"refreshToken": refresh}).Expect(t, 200).Decode(t, &next)
	refresh = next["refreshToken"].(string)
	a.api.As(access).Do("POST", "/v1/auth/refresh", map[string]string{"refreshToken": refresh}).Expect(t, 200).Decode(t, &next)
	refresh = next["refreshToken"].(string)
	_, other := a.login(t, "admin@dispatch.local", demo.Password)
	a.api.As(refresh).Do("POST", "/v1/auth/refresh", map[string]string{"refreshToken": ""}).ExpectError(t, 401, "auth.errors.unauthenticated")
	a.api.As(refresh).Do("POST", "/v1/auth/refresh", map[string]any{"refreshToken": nil}).Expect(t, 200).Decode(t, &next) // null is absent
	access, refresh = next["accessToken"].(string), next["refreshToken"].(string)
	a.api.As(access).Do("POST", "/v1/auth/logout", map[string]string{"refreshToken": refresh}).Expect(t, 204)
	a.api.Do("POST", "/v1/auth/refresh", map[string]string{"refreshToken": refresh}).ExpectError(t, 401, "auth.errors.invalidToken")
	// The other session was left alone.
	a.api.As(access).Do("POST", "/v1/auth/refresh", map[string]string{"refreshToken": other}).Expect(t, 200)
}

// The auth routes do not honour an Idempotency-Key (their answers carry tokens, never stored):
// two logins under one key are two sessions, neither replayed. A key no other route would take
// is refused all the same, before any session is opened.
func TestAuthRoutesIgnoreTheKeyButRefuseAMalformedOne(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	acc := a.provision(t, auth.RoleUser)
	creds := map[string]string{"email": acc.Email, "password": acc.Password}
	before := a.liveSessions(t, acc.ID)
	key := uuid.NewString()
	first := a.api.Do("POST", "/v1/auth/login", creds, "Idempotency-Key", key).Expect(t, 200)
	second := a.api.Do("POST", "/v1/auth/login", creds, "Idempotency-Key", key).Expect(t, 200)
	if second.Header.Get("Idempotent-Replayed") != "" || string(first.Body) == string(second.Body) {
		t.Fatalf("the second login under one key was replayed: %s", second.Body)
	}
	for _, bad := range []string{strings.Repeat("k", 256), "tab\there", ""} {
		a.api.Do("POST", "/v1/auth/login", creds, "Idempotency-Key", bad).ExpectError(t, 400, "common.errors.idempotencyKeyInvalid")
	}
	access, refresh := a.login(t, acc.Email, acc.Password)
	a.api.As(refresh).Do("POST", "/v1/auth/refresh", nil, "Idempotency-Key", strings.Repeat("k", 256)).
		ExpectError(t, 400, "common.errors.idempotencyKeyInvalid")
	a.api.As(access).Do("POST", "/v1/auth/logout", nil, "Idempotency-Key", strings.Repeat("k", 256)).
		ExpectError(t, 400, "common.errors.idempotencyKeyInvalid")
	if n := a.liveSessions(t, acc.ID); n != before+3 {
		t.Fatalf("%d live sessions, want %d: the two logins and the last, the refused requests none", n, before+3)
	}
}

func TestLoginFailuresLookAlike(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	wrongPw := a.api.Do("POST", "/v1/auth/login", map[string]string{"email": "admin@dispatch.local", "password": "nope-nope"}).
		ExpectError(t, 401, "auth.errors.invalidCredentials")
	noUser := a.api.Do("POST", "/v1/auth/login", map[string]string{"email": "ghost@dispatch.local", "password": "nope-nope"}).
		ExpectError(t, 401, "auth.errors.invalidCredentials")
	if wrongPw["message"] != noUser["message"] {
		t.Fatalf("messages differ: %q vs %q", wrongPw["message"], noUser["message"])
	}
	// Longer than any account's email or password: as wrong as any other.
	for _, body := range []map[string]string{
		{"email": "admin@dispatch.local", "password": strings.Repeat("p", 129)},
		{"email": strings.Repeat("a", 250) + "@b.co", "password": "nope-nope"},
	} {
		if long := a.api.Do("POST", "/v1/auth/login", body).ExpectError(t, 401, "auth.errors.invalidCredentials"); long["message"] != wrongPw["message"] {
			t.Fatalf("over-long credentials: %v", long)
		}
	}
	a.api.Do("POST", "/v1/auth/login", map[string]string{"email": "admin@dispatch.local"}).ExpectError(t, 400, "common.errors.validation")
	a.api.Do("POST", "/v1/auth/login", `{"email":"a@b.co","password":"x","extra":1}`).ExpectError(t, 400, "common.errors.validation")
	a.api.Do("POST", "/v1/auth/refresh", nil).ExpectError(t, 401, "auth.errors.unauthenticated")
	a.api.As("garbage").Do("POST", "/v1/auth/refresh", nil).ExpectError(t, 401, "auth.errors.invalidToken")
	a.api.Do("POST", "/v1/auth/logout", nil).ExpectError(t, 401, "auth.errors.unauthenticated")
}
