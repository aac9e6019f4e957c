package e2e_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/idempotency"
)

// TestCreateTakesItsKeyInTheOrdersTransaction: POST /v1/orders writes its idempotency record in
// the order's own statement (SPEC §3 step 2), not in a transaction before it, and a key used
// before still gets the answers of SPEC §7 — the replay, 422 for another body (valid or not),
// 409 while another request holds it — whether the request would be written or refused.
func TestCreateTakesItsKeyInTheOrdersTransaction(t *testing.T) {
	t.Parallel()
	s := newStack(t, noRelay, noWorker)
	item := s.item(5, 700)
	uid, c := s.customer()
	body := func(qty int) map[string]any {
		return map[string]any{"items": []map[string]any{{"itemId": item, "quantity": qty}}}
	}
	orders := func() int { return s.count(`SELECT count(*) FROM orders WHERE user_id = $1`, uid) }
	key := "in-write-" + uuid.NewString()

	first := c.Do("POST", "/v1/orders", body(2), "Idempotency-Key", key).Expect(t, 201)
	var o orderView
	first.Decode(t, &o)
	// now() is the transaction's start: the record and the order share it only when they were
	// written by one transaction.
	var rec struct {
		State      string    `db:"state"`
		ResourceID uuid.UUID `db:"resource_id"`
		Together   bool      `db:"together"`
	}
	if err := s.db.Get(&rec, `SELECT k.state, k.resource_id, k.created_at = o.created_at AS together
		FROM idempotency_keys k JOIN orders o ON o.id = k.resource_id WHERE k.key = $1`, key); err != nil {
		t.Fatalf("no record pointing at the order: %v", err)
	}
	if rec.State != "completed" || rec.ResourceID != o.ID || !rec.Together {
		t.Fatalf("record %+v for order %s; want completed, pointing at it, written with it", rec, o.ID)
	}

	replay := c.Do("POST", "/v1/orders", body(2), "Idempotency-Key", key).Expect(t, 201)
	if replay.Header.Get("Idempotent-Replayed") != "true" || string(replay.Body) != string(first.Body) {
		t.Fatalf("replay: %q %s", replay.Header.Get("Idempotent-Replayed"), replay.Body)
	}
	// Another body under the key: refused as a reuse, whether it would be placed, refused for
	// stock (3 left, 4 asked), or refused before any write (no lines, malformed JSON).
	for _, other := range []any{body(1), body(4), map[string]any{"items": []any{}}, `{"items":`} {
		c.Do("POST", "/v1/orders", other, "Idempotency-Key", key).ExpectError(t, 422, "common.errors.idempotencyKeyReused")
	}
	if n := orders(); n != 1 || s.stock(item) != 3 {
		t.Fatalf("%d orders, stock %d after replays and reuses; want 1 and 3", n, s.stock(item))
	}

	// Past its retention the key is another request's: a new order, not a replay.
	if _, err := s.db.Exec(`UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = $1`, key); err != nil {
		t.Fatal(err)
	}
	again := c.Do("POST", "/v1/orders", body(1), "Idempotency-Key", key).Expect(t, 201)
	var second orderView
	again.Decode(t, &second)
	if again.Header.Get("Idempotent-Replayed") != "" || second.ID == o.ID || orders() != 2 || s.stock(item) != 2 {
		t.Fatalf("expired key: replayed %q, order %s (first %s), %d orders, stock %d",
			again.Header.Get("Idempotent-Replayed"), second.ID, o.ID, orders(), s.stock(item))
	}

	// Refused for stock under a new key: nothing is kept, and the key runs the fixed request.
	fresh := "refused-" + uuid.NewString()
	c.Do("POST", "/v1/orders", body(3), "Idempotency-Key", fresh).ExpectError(t, 409, "items.errors.insufficientStock")
	c.Do("POST", "/v1/orders", map[string]any{"items": []any{}}, "Idempotency-Key", fresh).ExpectError(t, 400, "common.errors.validation")
	if n := s.count(`SELECT count(*) FROM idempotency_keys WHERE key = $1`, fresh); n != 0 {
		t.Fatalf("refused requests left %d records", n)
	}
	c.Do("POST", "/v1/orders", body(2), "Idempotency-Key", fresh).Expect(t, 201)
	if s.stock(item) != 0 {
		t.Fatalf("stock %d, want 0", s.stock(item))
	}

	// Another request holds the key (another replica, mid-request): 409, with nothing written
	// even by a request that could be placed.
	held := "held-" + uuid.NewString()
	other := s.item(5, 700)
	raw := []byte(`{"items":[{"itemId":"` + other.String() + `","quantity":1}]}`)
	sc := idempotency.Scope{Owner: uid.String(), Method: "POST", Path: "/v1/orders", Key: held}
	store := idempotency.NewStore(s.db, s.cfg.JWTRefreshSecret) // the API's key
	claim, _, err := store.Begin(context.Background(), sc, store.Fingerprint("POST", "/v1/orders", raw))
	if err != nil || claim == nil {
		t.Fatalf("Begin: %v %v", claim, err)
	}
	c.Do("POST", "/v1/orders", raw, "Idempotency-Key", held).ExpectError(t, 409, "common.errors.idempotencyKeyInFlight")
	if n := orders(); n != 3 || s.stock(other) != 5 {
		t.Fatalf("%d orders, stock %d while the key was held; want 3 and 5", n, s.stock(other))
	}
	// The holder failed (a 5xx) before writing: the next attempt takes the key over and runs.
	if err := store.Release(context.Background(), claim); err != nil {
		t.Fatal(err)
	}
	r := c.Do("POST", "/v1/orders", raw, "Idempotency-Key", held).Expect(t, 201)
	if r.Header.Get("Idempotent-Replayed") != "" || orders() != 4 || s.stock(other) != 4 {
		t.Fatalf("takeover: replayed %q, %d orders, stock %d", r.Header.Get("Idempotent-Replayed"), orders(), s.stock(other))
	}
}

// TestOneKeyForEverySpellingOfAPath: a key is scoped to the route and resource, not to how the
// path was spelled: percent-encoded letters and an uppercase id reach the same record, so a
// retry spelled otherwise is a replay, not a second order or a refusal.
func TestOneKeyForEverySpellingOfAPath(t *testing.T) {
	t.Parallel()
	s := newStack(t, noRelay, noWorker)
	item := s.item(5, 700)
	uid, c := s.customer()
	body := map[string]any{"items": []map[string]any{{"itemId": item, "quantity": 1}}}
	key := uuid.NewString()
	first := c.Do("POST", "/v1/orders", body, "Idempotency-Key", key).Expect(t, 201)
	again := c.Do("POST", "/v1/%6Frders", body, "Idempotency-Key", key).Expect(t, 201)
	if again.Header.Get("Idempotent-Replayed") != "true" || string(again.Body) != string(first.Body) {
		t.Fatalf("the same create spelled otherwise: replayed %q, %s", again.Header.Get("Idempotent-Replayed"), again.Body)
	}
	if n := s.count(`SELECT count(*) FROM orders WHERE user_id = $1`, uid); n != 1 || s.stock(item) != 4 {
		t.Fatalf("%d orders, stock %d; want 1 and 4", n, s.stock(item))
	}

	var o orderView
	first.Decode(t, &o)
	staff, cancelKey := s.staff("financial"), uuid.NewString()
	accepted := staff.Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", nil, "Idempotency-Key", cancelKey).Expect(t, 202)
	upper := staff.Do("PATCH", "/v1/admin/orders/"+strings.ToUpper(o.ID.String())+"/cancel", nil, "Idempotency-Key", cancelKey).Expect(t, 202)
	if upper.Header.Get("Idempotent-Replayed") != "true" || string(upper.Body) != string(accepted.Body) {
		t.Fatalf("the cancel with the id in uppercase: replayed %q, %s", upper.Header.Get("Idempotent-Replayed"), upper.Body)
	}
}
