package e2e_test

import (
	"context"
	"testing"
	"time"

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

// invalidationsLost runs f, then puts the item cache's generation counters back as they were
// before it: as if f's changes committed and the process died before invalidating the cache.
func (r *rig) invalidationsLost(f func()) {
	r.t.Helper()
	ctx := context.Background()
	pattern := r.keys.Key("items", "gen") + "*"
	gens := func() map[string]string {
		keys, err := r.rdb.Keys(ctx, pattern).Result() // the test's own prefix: a handful of keys
		if err != nil {
			r.t.Fatal(err)
		}
		out := map[string]string{}
		for _, k := range keys {
			out[k] = r.rdb.Get(ctx, k).Val()
		}
		return out
	}
	before := gens()
	f()
	for k := range gens() {
		if v, ok := before[k]; ok {
			r.rdb.Set(ctx, k, v, time.Hour)
		} else {
			r.rdb.Del(ctx, k)
		}
	}
}

// TestChangesRunAgainAfterACrashInvalidateTheCache: a change whose process died between its
// commit and its cache invalidation leaves the cache serving what it replaced; the change's
// retry (a resumed create, a repeated delete, a task delivered again) finds it made and
// invalidates the cache all the same, so reads see it.
func TestChangesRunAgainAfterACrashInvalidateTheCache(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	app := r.assemble(r.rdb, r.stripe.URL, r.log)
	admin := r.as("admin")
	item := r.item(100, 1000)
	_, c := r.customer()
	path := "/v1/items/" + item.String()
	cachedStock := func() int64 {
		t.Helper()
		var v struct{ Stock int64 }
		c.Do("GET", path, nil).Expect(t, 200).Decode(t, &v)
		return v.Stock
	}
	// rerun checks that the cache serves stock from before the change (the lost invalidation),
	// then that the change's run again brings reads to stock.
	rerun := func(what string, stock int64, again func()) {
		t.Helper()
		if got := cachedStock(); got == stock || r.stock(item) != stock {
			t.Fatalf("%s: read %d with %d stored, want the cache behind", what, got, r.stock(item))
		}
		again()
		if got := cachedStock(); got != stock {
			t.Fatalf("%s run again: read %d, want %d", what, got, stock)
		}
	}

	// An order's create, resumed after a 503 from Stripe.
	cachedStock()
	var (
		body map[string]any
		key  string
	)
	r.invalidationsLost(func() { body, key = r.createdWithoutIntent(c, item, 1) })
	rerun("order create", 99, func() { c.Do("POST", "/v1/orders", body, "Idempotency-Key", key).Expect(t, 201) })

	// The worker's cancel, refund and failed processing, each delivered again.
	r.pauseWorker()
	staff := func(o fullOrder, action string) {
		r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/"+action, nil).Expect(t, 202)
	}
	for _, s := range []struct {
		name    string
		prepare func(o fullOrder)
		run     func(id uuid.UUID) error
	}{
		{"cancel", func(o fullOrder) { staff(o, "cancel") },
			func(id uuid.UUID) error { return app.Orders.Cancel(ctx, id, "worker", "") }},
		{"refund", func(o fullOrder) { r.paid(o); staff(o, "refund") },
			func(id uuid.UUID) error { return app.Orders.Refund(ctx, id, "worker", "") }},
		{"failed processing", func(o fullOrder) { r.paid(o) },
			func(id uuid.UUID) error { _, err := app.Orders.CompensateProcess(ctx, id, "test"); return err }},
	} {
		o := r.place(c, 2, item)
		stock := r.stock(item) + 2
		s.prepare(o)
		cachedStock()
		run := func() {
			if err := s.run(o.ID); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
		}
		r.invalidationsLost(run)
		rerun(s.name, stock, run)
	}

	// An item created, its response lost: the list shows it once the create is retried.
	name := "Cached-" + uuid.NewString()[:8]
	list := func() int { // the first page, newest first (unfiltered lists are the cached ones)
		var page struct{ Items []struct{ Name string } }
		c.Do("GET", "/v1/items", nil).Expect(t, 200).Decode(t, &page)
		n := 0
		for _, it := range page.Items {
			if it.Name == name {
				n++
			}
		}
		return n
	}
	list()
	key = uuid.NewString()
	created := map[string]any{"name": name, "description": "d", "price": 500, "stock": 1}
	r.invalidationsLost(func() { admin.Do("POST", "/v1/admin/items", created, "Idempotency-Key", key).Expect(t, 201) })
	r.crashAfterCommit(key)
	if n := list(); n != 0 {
		t.Fatalf("list before the retry: %d items, want the cache behind", n)
	}
	admin.Do("POST", "/v1/admin/items", created, "Idempotency-Key", key).Expect(t, 201)
	if n := list(); n != 1 {
		t.Fatalf("list after the retried create: %d items, want 1", n)
	}

	// An item deleted, the delete retried: 404, and the item is gone from reads.
	r.invalidationsLost(func() { admin.Do("DELETE", "/v1/admin/items/"+item.String(), nil).Expect(t, 204) })
	c.Do("GET", path, nil).Expect(t, 200)
	admin.Do("DELETE", "/v1/admin/items/"+item.String(), nil).Expect(t, 404)
	c.Do("GET", path, nil).Expect(t, 404)
}
