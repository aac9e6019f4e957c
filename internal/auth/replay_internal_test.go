package auth

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/auth/authdb"
)

// A stored answer opens only for the session it was made on, with the token the rotation took
// and the key it came with, and only as it was written.
func TestAStoredRefreshAnswerOpensOnlyForItsRetry(t *testing.T) {
	sid, other := uuid.New(), uuid.New()
	const old, key = "old.refresh.token", "key-1"
	pair := TokenPair{AccessToken: "access", RefreshToken: "next.refresh.token", ExpiresIn: 900, UserID: uuid.New(), Language: "en"}
	r, err := replayFor(key, old, sid, pair)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	session := func(id uuid.UUID, r authdb.Replay) authdb.Session {
		return authdb.Session{ID: id, RefreshTokenHash: HashToken(pair.RefreshToken), RefreshedAt: &now, Replay: r}
	}
	if got, ok := replayed(session(sid, r), key, old, time.Minute); !ok || !got.Replayed || got.RefreshToken != pair.RefreshToken || got.AccessToken != pair.AccessToken {
		t.Fatalf("the retry got %+v, %v; want %+v replayed", got, ok, pair)
	}
	tampered := r
	tampered.Sealed = append([]byte(nil), r.Sealed...)
	tampered.Sealed[len(tampered.Sealed)-1] ^= 1
	for name, c := range map[string]struct {
		s          authdb.Session
		key, token string
	}{
		"another session's row": {session(other, r), key, old},
		"bytes changed":         {session(sid, tampered), key, old},
		"another token":         {session(sid, authdb.Replay{TokenHash: HashToken("x"), KeyHash: r.KeyHash, Sealed: r.Sealed}), key, "x"},
		"another key":           {session(sid, r), "key-2", old},
		"no key":                {session(sid, r), "", old},
		"nothing stored":        {session(sid, authdb.Replay{}), key, old},
		"too short":             {session(sid, authdb.Replay{TokenHash: r.TokenHash, KeyHash: r.KeyHash, Sealed: r.Sealed[:5]}), key, old},
	} {
		if got, ok := replayed(c.s, c.key, c.token, time.Minute); ok {
			t.Errorf("%s: replayed %+v", name, got)
		}
	}
	if r, err := replayFor("", old, sid, pair); err != nil || r.Sealed != nil || r.TokenHash != nil || r.KeyHash != nil {
		t.Fatalf("a rotation without a key left %+v, %v", r, err)
	}
}
