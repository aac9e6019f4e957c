package e2e_test

import (
	"testing"

	"github.com/google/uuid"
)

// crashAfterCommit leaves key's idempotency record as a crash right after its request's commit
// does: in flight, no response, the dead process's lease over.
func (r *rig) crashAfterCommit(key string) {
	r.t.Helper()
	if n := r.count(`WITH u AS (UPDATE idempotency_keys SET state = 'in_flight', response_status = NULL, response_body = NULL,
		locked_until = now() - interval '1 second' WHERE key = $1 RETURNING 1) SELECT count(*) FROM u`, key); n != 1 {
		r.t.Fatalf("idempotency record %s not found", key)
	}
}

// TestItemAndUserWritesResumeAfterACrashLostTheirResponse: an item or account created or
// changed, then the API dies before storing the response; the client's retry takes the key
// over and answers with what was written, as it is now: no second item, no "email already
// exists" for the account it made, no stock set again over what an order took since, no change
// applied again over a later one.
func TestItemAndUserWritesResumeAfterACrashLostTheirResponse(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	admin := r.as("admin")
	type view struct {
		ID    uuid.UUID
		Name  string
		Stock int64
	}
	var first, again view

	// An item created: one item, the same answer.
	name := "Resumed " + uuid.NewString()[:8]
	key := uuid.NewString()
	item := map[string]any{"name": name, "description": "made once", "price": 500, "stock": 10}
	admin.Do("POST", "/v1/admin/items", item, "Idempotency-Key", key).Expect(t, 201).Decode(t, &first)
	r.crashAfterCommit(key)
	admin.Do("POST", "/v1/admin/items", item, "Idempotency-Key", key).Expect(t, 201).Decode(t, &again)
	if again.ID != first.ID || r.count(`SELECT count(*) FROM items WHERE name = $1`, name) != 1 {
		t.Fatalf("item create retried after a crash: %+v then %+v, %d items", first, again, r.count(`SELECT count(*) FROM items WHERE name = $1`, name))
	}

	// Its stock set to 50, then an order takes 2: the retry does not set 50 again.
	key = uuid.NewString()
	path := "/v1/admin/items/" + first.ID.String()
	admin.Do("PATCH", path, map[string]any{"stock": 50}, "Idempotency-Key", key).Expect(t, 200)
	r.crashAfterCommit(key)
	_, c := r.customer()
	r.place(c, 2, first.ID)
	admin.Do("PATCH", path, map[string]any{"stock": 50}, "Idempotency-Key", key).Expect(t, 200).Decode(t, &again)
	if again.Stock != 48 || r.stock(first.ID) != 48 {
		t.Fatalf("stock after the retried update: answered %d, stored %d; want 48", again.Stock, r.stock(first.ID))
	}

	// A sign-up: the account it made, not 409 emailAlreadyExists.
	key = uuid.NewString()
	email := "resumed-" + uuid.NewString()[:8] + "@example.com"
	signUp := map[string]any{"name": "Resumed", "email": email, "password": "password123"}
	r.api.Do("POST", "/v1/users", signUp, "Idempotency-Key", key).Expect(t, 201).Decode(t, &first)
	r.crashAfterCommit(key)
	r.api.Do("POST", "/v1/users", signUp, "Idempotency-Key", key).Expect(t, 201).Decode(t, &again)
	if again.ID != first.ID {
		t.Fatalf("sign-up retried after a crash answered %s, want %s", again.ID, first.ID)
	}

	// An account created by an admin, then renamed by the admin: the rename's retry does not
	// rename it back over a later change.
	key = uuid.NewString()
	staff := map[string]any{"name": "Staff", "email": "staff-" + uuid.NewString()[:8] + "@example.com", "password": "password123", "role": "shipper"}
	admin.Do("POST", "/v1/admin/users", staff, "Idempotency-Key", key).Expect(t, 201).Decode(t, &first)
	r.crashAfterCommit(key)
	admin.Do("POST", "/v1/admin/users", staff, "Idempotency-Key", key).Expect(t, 201).Decode(t, &again)
	if again.ID != first.ID {
		t.Fatalf("admin create retried after a crash answered %s, want %s", again.ID, first.ID)
	}
	key = uuid.NewString()
	path = "/v1/admin/users/" + first.ID.String()
	admin.Do("PATCH", path, map[string]any{"name": "First Name"}, "Idempotency-Key", key).Expect(t, 200)
	r.crashAfterCommit(key)
	admin.Do("PATCH", path, map[string]any{"name": "Later Name"}).Expect(t, 200)
	admin.Do("PATCH", path, map[string]any{"name": "First Name"}, "Idempotency-Key", key).Expect(t, 200).Decode(t, &again)
	if again.Name != "Later Name" {
		t.Fatalf("admin update retried after a crash: name %q, want the later change kept", again.Name)
	}

	// The same for a user's own change.
	_, me := r.customer()
	key = uuid.NewString()
	me.Do("PATCH", "/v1/users/me", map[string]any{"name": "Mine First"}, "Idempotency-Key", key).Expect(t, 200)
	r.crashAfterCommit(key)
	me.Do("PATCH", "/v1/users/me", map[string]any{"name": "Mine Later"}).Expect(t, 200)
	me.Do("PATCH", "/v1/users/me", map[string]any{"name": "Mine First"}, "Idempotency-Key", key).Expect(t, 200).Decode(t, &again)
	if again.Name != "Mine Later" {
		t.Fatalf("own update retried after a crash: name %q, want the later change kept", again.Name)
	}
}
