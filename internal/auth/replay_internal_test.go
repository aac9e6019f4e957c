package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/auth/authdb"
)

// A stored answer opens only for the session it was made on, on a server with the refresh
// secret it was made with, with the token the rotation took and the key it came with, within
// the window, and only as it was written.
func TestAStoredRefreshAnswerOpensOnlyForItsRetry(t *testing.T) {
	tk := NewTokens(strings.Repeat("a", 32), strings.Repeat("b", 32), time.Minute, time.Hour)
	elsewhere := NewTokens(strings.Repeat("a", 32), strings.Repeat("c", 32), time.Minute, time.Hour)
	sid, other := uuid.New(), uuid.New()
	const old, key = "old.refresh.token", "key-1"
	pair := TokenPair{AccessToken: "access", RefreshToken: "next.refresh.token", ExpiresIn: 900, UserID: uuid.New(), Language: "en"}
	r, err := tk.replayFor(key, old, sid, pair)
	if err != nil {
		t.Fatal(err)
	}
	session := func(id uuid.UUID, r authdb.Replay) authdb.Session {
		return authdb.Session{ID: id, RefreshTokenHash: HashToken(pair.RefreshToken), ReplayFresh: true, Replay: r}
	}
	if got, ok := tk.replayed(session(sid, r), key, old); !ok || !got.Replayed || got.RefreshToken != pair.RefreshToken || got.AccessToken != pair.AccessToken {
		t.Fatalf("the retry got %+v, %v; want %+v replayed", got, ok, pair)
	}
	tampered := r
	tampered.Sealed = append([]byte(nil), r.Sealed...)
	tampered.Sealed[len(tampered.Sealed)-1] ^= 1
	stale := session(sid, r)
	stale.ReplayFresh = false
	for name, c := range map[string]struct {
		tk         *Tokens
		s          authdb.Session
		key, token string
	}{
		"another session's row":  {tk, session(other, r), key, old},
		"another refresh secret": {elsewhere, session(sid, r), key, old},
		"past the window":        {tk, stale, key, old},
		"bytes changed":          {tk, session(sid, tampered), key, old},
		"another token":          {tk, session(sid, authdb.Replay{TokenHash: HashToken("x"), KeyHash: r.KeyHash, Sealed: r.Sealed}), key, "x"},
		"another key":            {tk, session(sid, r), "key-2", old},
		"no key":                 {tk, session(sid, r), "", old},
		"nothing stored":         {tk, session(sid, authdb.Replay{}), key, old},
		"too short":              {tk, session(sid, authdb.Replay{TokenHash: r.TokenHash, KeyHash: r.KeyHash, Sealed: r.Sealed[:5]}), key, old},
	} {
		if got, ok := c.tk.replayed(c.s, c.key, c.token); ok {
			t.Errorf("%s: replayed %+v", name, got)
		}
	}
	if r, err := tk.replayFor("", old, sid, pair); err != nil || r.Sealed != nil || r.TokenHash != nil || r.KeyHash != nil {
		t.Fatalf("a rotation without a key left %+v, %v", r, err)
	}
}
