package httpapi_test

import (
	"strings"
	"sync"
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

// Login and logout do not honour an Idempotency-Key: a login's answer carries tokens, never
// stored, so two logins under one key are two sessions, neither replayed (a logout's retry is
// answered 401 by authentication). A key no other route would take is refused all the same,
// before any session is opened.
func TestLoginIgnoresTheKeyButEveryAuthRouteRefusesAMalformedOne(t *testing.T) {
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
	a.api.As(refresh).Do("POST", "/v1/auth/refresh", nil).Expect(t, 200) // the refused refresh rotated nothing
}

// A refresh whose answer was lost is retried with the token it rotated away. Under the key it
// was sent with, the retry gets that answer again, marked replayed, and the session lives on;
// without the key, with another, or once anything came after the rotation, it is a reuse that
// revokes the session, as before.
func TestARefreshRetriedUnderItsKeyGetsItsAnswerAgain(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	acc := a.provision(t, auth.RoleUser)
	refresh := func(token string, key ...string) testenv.Response {
		t.Helper()
		if len(key) == 0 {
			return a.api.Do("POST", "/v1/auth/refresh", map[string]string{"refreshToken": token})
		}
		return a.api.Do("POST", "/v1/auth/refresh", map[string]string{"refreshToken": token}, "Idempotency-Key", key[0])
	}
	pairOf := func(r testenv.Response) (access, refresh string) {
		t.Helper()
		var p struct{ AccessToken, RefreshToken string }
		r.Expect(t, 200).Decode(t, &p)
		return p.AccessToken, p.RefreshToken
	}

	// The answer again, as often as asked, and the session goes on with it.
	key := uuid.NewString()
	first := refresh(acc.Refresh, key).Expect(t, 200)
	if first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatal("a first refresh was marked replayed")
	}
	for range 2 {
		again := refresh(acc.Refresh, key).Expect(t, 200)
		if again.Header.Get("Idempotent-Replayed") != "true" || string(again.Body) != string(first.Body) {
			t.Fatalf("retry under the key: %s %q, want the first answer %s", again.Header.Get("Idempotent-Replayed"), again.Body, first.Body)
		}
	}
	access, next := pairOf(first)
	a.api.As(access).Do("GET", "/v1/users/me", nil).Expect(t, 200)
	// The database holds none of the answer's tokens in the clear.
	var stored []byte
	if err := a.db.Get(&stored, `SELECT replay_answer FROM sessions WHERE user_id = $1 AND replay_answer IS NOT NULL`, acc.ID); err != nil {
		t.Fatalf("read the stored answer: %v", err)
	}
	for _, tok := range []string{access, next} {
		if strings.Contains(string(stored), tok) || strings.Contains(string(stored), tok[len(tok)-43:]) {
			t.Fatal("the stored answer holds a token in the clear")
		}
	}

	// Once the session rotated again, the old answer is not given: its token is a reuse.
	access, latest := pairOf(refresh(next, uuid.NewString()))
	refresh(acc.Refresh, key).ExpectError(t, 401, "auth.errors.refreshTokenReused")
	a.api.As(access).Do("GET", "/v1/users/me", nil).ExpectError(t, 401, "auth.errors.invalidToken")
	refresh(latest).ExpectError(t, 401, "auth.errors.invalidToken")

	// The rotated token under another key, or none, is a reuse.
	for _, other := range [][]string{{uuid.NewString()}, nil} {
		_, tok := a.login(t, acc.Email, acc.Password)
		_, next := pairOf(refresh(tok, key))
		refresh(tok, other...).ExpectError(t, 401, "auth.errors.refreshTokenReused")
		refresh(next).ExpectError(t, 401, "auth.errors.invalidToken")
	}

	// A session ended after the rotation gives nothing back, and keeps nothing to give...
	_, tok := a.login(t, acc.Email, acc.Password)
	access, _ = pairOf(refresh(tok, key))
	sessionOf := func(access string) string {
		t.Helper()
		p, err := a.svc.Auth.Authenticate(testenv.Context(t), access)
		if err != nil {
			t.Fatal(err)
		}
		return p.SessionID.String()
	}
	ended := sessionOf(access)
	a.api.As(access).Do("POST", "/v1/auth/logout", nil).Expect(t, 204)
	refresh(tok, key).ExpectError(t, 401, "auth.errors.invalidToken")
	a.expectNoReplayKept(t, ended)
	// ...nor once the rotation is more than a minute old.
	_, tok = a.login(t, acc.Email, acc.Password)
	_, next = pairOf(refresh(tok, key))
	if _, err := a.db.Exec(`UPDATE sessions SET refreshed_at = refreshed_at - interval '61 seconds'
		WHERE user_id = $1 AND replay_answer IS NOT NULL AND revoked_at IS NULL`, acc.ID); err != nil {
		t.Fatal(err)
	}
	refresh(tok, key).ExpectError(t, 401, "auth.errors.refreshTokenReused")
	refresh(next).ExpectError(t, 401, "auth.errors.invalidToken")

	// A rotation without a key leaves nothing to replay, not even the one before it.
	_, tok = a.login(t, acc.Email, acc.Password)
	_, next = pairOf(refresh(tok, key))
	access, last := pairOf(refresh(next))
	a.expectNoReplayKept(t, sessionOf(access))
	refresh(tok, key).ExpectError(t, 401, "auth.errors.refreshTokenReused")
	refresh(last).ExpectError(t, 401, "auth.errors.invalidToken")
	// Nor does one by a program from before replays, which rotates and leaves the columns be.
	_, tok = a.login(t, acc.Email, acc.Password)
	_, next = pairOf(refresh(tok, key))
	if _, err := a.db.Exec(`UPDATE sessions SET refresh_token_hash = sha256(refresh_token_hash)
		WHERE user_id = $1 AND replay_answer IS NOT NULL AND revoked_at IS NULL`, acc.ID); err != nil {
		t.Fatal(err)
	}
	refresh(tok, key).ExpectError(t, 401, "auth.errors.refreshTokenReused")
	refresh(next).ExpectError(t, 401, "auth.errors.invalidToken")
}

// expectNoReplayKept fails unless the session keeps nothing a retry could be given.
func (a *app) expectNoReplayKept(t *testing.T, sessionID string) {
	t.Helper()
	var kept bool
	if err := a.db.Get(&kept, `SELECT replay_answer IS NOT NULL OR replay_token_hash IS NOT NULL OR replay_key_hash IS NOT NULL
		FROM sessions WHERE id = $1`, sessionID); err != nil || kept {
		t.Fatalf("session %s keeps a replay (%v)", sessionID, err)
	}
}

// Two sends of one refresh under one key at once (a client's retry racing its first try) get
// one answer: the second waits for the first's rotation and is given its answer.
func TestARefreshAndItsRetryAtOnceGetOneAnswer(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	acc := a.provision(t, auth.RoleUser)
	for round := range 5 {
		_, tok := a.login(t, acc.Email, acc.Password)
		key := uuid.NewString()
		answers := make([]testenv.Response, 4)
		errs := make([]error, len(answers))
		var wg sync.WaitGroup
		for i := range answers {
			wg.Go(func() {
				answers[i], errs[i] = a.api.Send("POST", "/v1/auth/refresh", map[string]string{"refreshToken": tok}, "Idempotency-Key", key)
			})
		}
		wg.Wait()
		replays := 0
		for i, r := range answers {
			if errs[i] != nil || r.Status != 200 || string(r.Body) != string(answers[0].Body) {
				t.Fatalf("round %d, send %d: %v %d %s, want 200 %s", round, i, errs[i], r.Status, r.Body, answers[0].Body)
			}
			if r.Header.Get("Idempotent-Replayed") == "true" {
				replays++
			}
		}
		if replays != len(answers)-1 {
			t.Fatalf("round %d: %d of %d answers replayed, want all but one", round, replays, len(answers))
		}
		var p struct{ AccessToken string }
		answers[0].Decode(t, &p)
		a.api.As(p.AccessToken).Do("GET", "/v1/users/me", nil).Expect(t, 200)
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
