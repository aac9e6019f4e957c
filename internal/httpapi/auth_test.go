package httpapi_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/testenv"
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

// The auth routes honour an Idempotency-Key as every POST does: a login or a refresh whose
// answer was lost, sent again under its key, gets the same pair instead of a second session or,
// for a refresh, a reuse that revokes the session. The key is bound to the credential the
// request presented (another token under it is 422, never this pair), and the pair is stored
// sealed: the table holds no token. A key no other route would take is refused, before any
// session is opened.
func TestAuthRoutesReplayUnderAKeyAndStoreNoToken(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	acc := a.provision(t, auth.RoleUser)
	creds := map[string]string{"email": acc.Email, "password": acc.Password}
	before := a.liveSessions(t, acc.ID)
	for _, bad := range []string{strings.Repeat("k", 256), "tab\there", ""} {
		a.api.Do("POST", "/v1/auth/login", creds, "Idempotency-Key", bad).ExpectError(t, 400, "common.errors.idempotencyKeyInvalid")
	}

	key := uuid.NewString()
	wrong := map[string]string{"email": acc.Email, "password": "not-the-password"}
	a.api.Do("POST", "/v1/auth/login", wrong, "Idempotency-Key", key).ExpectError(t, 401, "auth.errors.invalidCredentials")
	login := a.api.Do("POST", "/v1/auth/login", creds, "Idempotency-Key", key).Expect(t, 200) // the 401 forgot the key
	expectReplayOf(t, login, a.api.Do("POST", "/v1/auth/login", creds, "Idempotency-Key", key).Expect(t, 200))
	a.api.Do("POST", "/v1/auth/login", wrong, "Idempotency-Key", key).ExpectError(t, 422, "common.errors.idempotencyKeyReused")
	if n := a.liveSessions(t, acc.ID); n != before+1 {
		t.Fatalf("%d live sessions, want %d: one login, replayed", n, before+1)
	}
	var pair struct{ AccessToken, RefreshToken string }
	login.Decode(t, &pair)
	a.expectSealed(t, key, pair.AccessToken, pair.RefreshToken)

	key = uuid.NewString()
	refresh := a.api.As(pair.RefreshToken).Do("POST", "/v1/auth/refresh", nil, "Idempotency-Key", key).Expect(t, 200)
	expectReplayOf(t, refresh, a.api.As(pair.RefreshToken).Do("POST", "/v1/auth/refresh", nil, "Idempotency-Key", key).Expect(t, 200))
	var next struct{ AccessToken, RefreshToken string }
	refresh.Decode(t, &next)
	a.expectSealed(t, key, next.AccessToken, next.RefreshToken)
	a.api.As(next.RefreshToken).Do("POST", "/v1/auth/refresh", nil, "Idempotency-Key", key).ExpectError(t, 422, "common.errors.idempotencyKeyReused")
	a.api.Do("POST", "/v1/auth/refresh", map[string]string{"refreshToken": pair.RefreshToken}, "Idempotency-Key", key).
		ExpectError(t, 422, "common.errors.idempotencyKeyReused")
	a.api.As(next.AccessToken).Do("GET", "/v1/users/me", nil).Expect(t, 200) // the session lives on

	// Without its key, the rotated token is a reuse as ever.
	a.api.As(pair.RefreshToken).Do("POST", "/v1/auth/refresh", nil).ExpectError(t, 401, "auth.errors.refreshTokenReused")
	a.api.As(next.AccessToken).Do("GET", "/v1/users/me", nil).ExpectError(t, 401, "auth.errors.invalidToken")

	access, _ := a.login(t, acc.Email, acc.Password)
	a.api.As(access).Do("POST", "/v1/auth/logout", nil, "Idempotency-Key", uuid.NewString()).Expect(t, 204)
	if n := a.liveSessions(t, acc.ID); n != before {
		t.Fatalf("%d live sessions, want %d", n, before)
	}
}

func expectReplayOf(t *testing.T, first, again testenv.Response) {
	t.Helper()
	if again.Header.Get("Idempotent-Replayed") != "true" || string(again.Body) != string(first.Body) {
		t.Fatalf("sent again under its key, not replayed: %s, then %s", first.Body, again.Body)
	}
}

// expectSealed checks that the answer stored under key holds neither token, nor its JSON.
func (a *app) expectSealed(t *testing.T, key string, tokens ...string) {
	t.Helper()
	var stored []byte
	if err := a.db.Get(&stored, `SELECT response_body FROM idempotency_keys WHERE key = $1`, key); err != nil {
		t.Fatal(err)
	}
	for _, text := range append(tokens, "Token") {
		if len(stored) == 0 || bytes.Contains(stored, []byte(text)) {
			t.Fatalf("stored answer %q holds %q", stored, text)
		}
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
