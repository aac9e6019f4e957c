package idempotency_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/idempotency"
)

// A sealed answer is stored encrypted and opens only for the request that stored it, sent
// again; another credential under the key is refused as another body is, and a stored answer
// altered in the table is an error, never a replay.
func TestASealedAnswerOpensOnlyForItsOwnRequest(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sc := idempotency.Scope{Owner: "anonymous", Method: "POST", Path: "/v1/auth/refresh", Key: uuid.NewString()}
	body, credential := []byte(`{"refreshToken":"r1"}`), "Bearer a1"
	answer := []byte(`{"accessToken":"a2","refreshToken":"r2"}`)

	c := f.store.DeferSealed(sc, body, credential)
	if err := f.store.Take(f.ctx, c); err != nil || !c.Held() {
		t.Fatalf("Take: %v, held %v", err, c.Held())
	}
	if err := f.store.Complete(f.ctx, c, 200, answer); err != nil {
		t.Fatal(err)
	}
	stored := f.storedBody(sc)
	if bytes.Contains(stored, []byte("a2")) || bytes.Contains(stored, []byte("r2")) || len(stored) <= len(answer) {
		t.Fatalf("stored %q for %q: not sealed", stored, answer)
	}

	again := f.store.DeferSealed(sc, []byte(`{ "refreshToken" : "r1" }`), credential)
	var replay *idempotency.Replay
	if err := f.store.Take(f.ctx, again); !errors.As(err, &replay) || replay.Status != 200 || !bytes.Equal(replay.Body, answer) {
		t.Fatalf("the same request again: %v, want the answer replayed", err)
	}
	for name, other := range map[string]*idempotency.Claim{
		"credential": f.store.DeferSealed(sc, body, "Bearer a2"),
		"body":       f.store.DeferSealed(sc, []byte(`{"refreshToken":"r2"}`), credential),
		"secret":     idempotency.NewStore(f.db, "another secret").DeferSealed(sc, body, credential),
		"unsealed":   idempotency.Defer(sc, f.store.Fingerprint(sc.Method, sc.Path, body)),
	} {
		if err := f.store.Take(f.ctx, other); !errors.Is(err, apperr.ErrIdemKeyReused) {
			t.Errorf("another %s under the key: %v, want %v", name, err, apperr.ErrIdemKeyReused)
		}
	}

	stored[len(stored)-1] ^= 1
	f.exec(`UPDATE idempotency_keys SET response_body = $1 WHERE scope = $2 AND key = $3`, stored, sc.Owner, sc.Key)
	err := f.store.Take(f.ctx, f.store.DeferSealed(sc, body, credential))
	if err == nil || errors.As(err, &replay) {
		t.Fatalf("an altered sealed answer: %v, want an error", err)
	}
}

func (f *fixture) storedBody(sc idempotency.Scope) []byte {
	f.t.Helper()
	var b []byte
	if err := f.db.GetContext(f.ctx, &b, `SELECT response_body FROM idempotency_keys WHERE scope = $1 AND key = $2`, sc.Owner, sc.Key); err != nil {
		f.t.Fatal(err)
	}
	return b
}
