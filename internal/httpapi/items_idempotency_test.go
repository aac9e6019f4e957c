package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

const itemsPath = "/v1/admin/items"

// idemRows counts the stored idempotency records with key k.
func (a *app) idemRows(k string) int {
	a.t.Helper()
	var n int
	if err := a.db.Get(&n, `SELECT count(*) FROM idempotency_keys WHERE key = $1`, k); err != nil {
		a.t.Fatal(err)
	}
	return n
}

func expectReplay(t *testing.T, first, again testenv.Response) {
	t.Helper()
	if again.Status != first.Status || string(again.Body) != string(first.Body) {
		t.Fatalf("replay answered %d %s, want the first response %d %s", again.Status, again.Body, first.Status, first.Body)
	}
	if again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay lacks Idempotent-Replayed: true (headers %v)", again.Header)
	}
}

func TestIdempotencyKeyIsRequiredAndValidated(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	body := newItemBody("Key Check")

	admin.Do("POST", itemsPath, body).ExpectError(t, 400, "common.errors.idempotencyKeyRequired")
	for name, k := range map[string]string{
		"empty":         "",
		"256 chars":     strings.Repeat("k", 256),
		"non-ASCII":     "clé-1",
		"tab inside":    "a\tb",
		"emoji":         "key-🙂",
		"only non-ASCI": "ü",
	} {
		r := admin.Do("POST", itemsPath, body, "Idempotency-Key", k)
		if r.Status != 400 {
			t.Errorf("%s key: status %d", name, r.Status)
			continue
		}
		r.ExpectError(t, 400, "common.errors.idempotencyKeyInvalid")
	}
	// Two keys on one request are ambiguous.
	req, _ := http.NewRequest("POST", admin.Base+itemsPath, strings.NewReader(`{"name":"Key Check","description":"d","price":1,"stock":1}`))
	req.Header.Set("Authorization", "Bearer "+admin.Token)
	req.Header.Add("Idempotency-Key", "one")
	req.Header.Add("Idempotency-Key", "two")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	testenv.Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}.ExpectError(t, 400, "common.errors.idempotencyKeyInvalid")

	if n := a.countItems("Key Check"); n != 0 {
		t.Fatalf("%d items created without a valid key", n)
	}
	// The boundaries: 1 and 255 printable ASCII characters, spaces and symbols included.
	for i, k := range []string{"x", strings.Repeat("k", 255), "order 42 / retry #1 ~!", " ~"} {
		b := newItemBody(fmt.Sprintf("Key Check %d", i))
		admin.Do("POST", itemsPath, b, "Idempotency-Key", k).Expect(t, 201)
	}
	// Keys are not needed on reads and deletes.
	admin.Do("GET", itemsPath, nil).Expect(t, 200)
}

func TestIdempotentCreateReplays(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	k := []string{"Idempotency-Key", "create-" + uuid.NewString()}

	raw := `{"name":"Replay Lamp","description":"Lights up.","price":4200,"stock":3,"currency":"eur"}`
	first := admin.Do("POST", itemsPath, raw, k...).Expect(t, 201)
	if first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatal("the first response is marked replayed")
	}
	again := admin.Do("POST", itemsPath, raw, k...)
	expectReplay(t, first, again)
	if ct := again.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("replay content type %q", ct)
	}

	// Canonical JSON: other key order and whitespace are the same request.
	reordered := "{\n  \"stock\": 3,\n  \"currency\" : \"eur\",\t\"price\":4200, \"description\":\"Lights up.\",\"name\":\"Replay Lamp\"\n}\n"
	expectReplay(t, first, admin.Do("POST", itemsPath, reordered, k...))
	if n := a.countItems("Replay Lamp"); n != 1 {
		t.Fatalf("%d items created by one key, want 1", n)
	}

	// A different body under the same key is refused, and changes nothing.
	for _, other := range []string{
		`{"name":"Replay Lamp","description":"Lights up.","price":4201,"stock":3,"currency":"eur"}`,
		`{"name":"Replay Lamp","description":"Lights up.","price":4200,"stock":3}`,
		`{"name":"Replay Lamp","description":"Lights up.","price":4200.0,"stock":3,"currency":"eur"}`,
	} {
		admin.Do("POST", itemsPath, other, k...).ExpectError(t, 422, "common.errors.idempotencyKeyReused")
	}
	if n := a.countItems("Replay Lamp"); n != 1 {
		t.Fatalf("%d items after a reused key, want 1", n)
	}

	// The replay is the stored first response, not a new read: it survives later changes.
	var it itemView
	first.Decode(t, &it)
	admin.Do("PATCH", "/v1/admin/items/"+it.ID, map[string]any{"stock": 99}).Expect(t, 200)
	admin.Do("DELETE", "/v1/admin/items/"+it.ID, nil).Expect(t, 204)
	expectReplay(t, first, admin.Do("POST", itemsPath, raw, k...))
	if n := a.countItems("Replay Lamp"); n != 1 {
		t.Fatalf("%d items after replays, want 1", n)
	}

	// The same key on another route is another key.
	admin.Do("PATCH", "/v1/admin/items/"+demoItemID(0), map[string]any{"stock": 5}, k...).Expect(t, 200)

	// After the retention period the key is free again.
	a.exec(`UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = $1`, k[1])
	second := admin.Do("POST", itemsPath, `{"name":"Replay Lamp","description":"Second life.","price":1,"stock":1}`, k...).Expect(t, 201)
	if second.Header.Get("Idempotent-Replayed") != "" || a.countItems("Replay Lamp") != 2 {
		t.Fatalf("an expired key was not reusable: %s", second.Body)
	}
}

func TestIdempotencyKeysAreScopedPerUser(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin, super := a.as(adminEmail), a.as(superadminEmail)
	k := []string{"Idempotency-Key", "shared-key"}

	ra := admin.Do("POST", itemsPath, newItemBody("Admin's Item"), k...).Expect(t, 201)
	rs := super.Do("POST", itemsPath, newItemBody("Superadmin's Item"), k...).Expect(t, 201)
	if rs.Header.Get("Idempotent-Replayed") != "" {
		t.Fatal("another user's key was replayed")
	}
	expectReplay(t, ra, admin.Do("POST", itemsPath, newItemBody("Admin's Item"), k...))
	expectReplay(t, rs, super.Do("POST", itemsPath, newItemBody("Superadmin's Item"), k...))
	// Same body, same key, other user: still a separate request.
	rs2 := super.Do("POST", itemsPath, newItemBody("Admin's Item"), "Idempotency-Key", "shared-key-2")
	rs2.Expect(t, 201)
	ra2 := admin.Do("POST", itemsPath, newItemBody("Admin's Item"), "Idempotency-Key", "shared-key-2").Expect(t, 201)
	if ra2.Header.Get("Idempotent-Replayed") != "" || string(ra2.Body) == string(rs2.Body) {
		t.Fatal("the same key and body of two users collided")
	}
	if a.countItems("Admin's Item") != 3 || a.countItems("Superadmin's Item") != 1 {
		t.Fatalf("items: %d admin's, %d superadmin's", a.countItems("Admin's Item"), a.countItems("Superadmin's Item"))
	}
	var owners []string
	if err := a.db.Select(&owners, `SELECT scope FROM idempotency_keys WHERE key = 'shared-key' ORDER BY scope`); err != nil {
		t.Fatal(err)
	}
	if len(owners) != 2 || owners[0] == owners[1] {
		t.Fatalf("records of the shared key are scoped %v", owners)
	}
}

func TestIdempotencyInFlight(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	store := a.svc.Idempotency
	ctx := context.Background()
	raw := `{"name":"Racing Item","description":"d","price":10,"stock":1}`
	k := "in-flight-" + uuid.NewString()

	// Another request (another replica) holds the key.
	sc := idempotency.Scope{Owner: a.userID(adminEmail), Method: "POST", Path: itemsPath, Key: k}
	claim, replay, err := store.Begin(ctx, sc, store.Fingerprint("POST", itemsPath, []byte(raw)))
	if err != nil || claim == nil || replay != nil {
		t.Fatalf("Begin: %v %v %v", claim, replay, err)
	}
	r := admin.Do("POST", itemsPath, raw, "Idempotency-Key", k)
	r.ExpectError(t, 409, "common.errors.idempotencyKeyInFlight")
	secs, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || secs < 1 || secs > int(idempotency.Lease.Seconds()) {
		t.Fatalf("Retry-After %q, want whole seconds within the lease", r.Header.Get("Retry-After"))
	}
	// A different body under the held key is a reuse, not a wait.
	admin.Do("POST", itemsPath, newItemBody("Other Body"), "Idempotency-Key", k).ExpectError(t, 422, "common.errors.idempotencyKeyReused")
	// The same key of another user is not held.
	a.as(superadminEmail).Do("POST", itemsPath, raw, "Idempotency-Key", k).Expect(t, 201)
	if n := a.countItems("Racing Item"); n != 1 {
		t.Fatalf("%d items while the admin's key is held, want only the superadmin's", n)
	}

	// The holder gives up (a 5xx): the next attempt runs the request.
	if err := store.Release(ctx, claim); err != nil {
		t.Fatal(err)
	}
	first := admin.Do("POST", itemsPath, raw, "Idempotency-Key", k).Expect(t, 201)
	if first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatal("the takeover was answered as a replay")
	}
	expectReplay(t, first, admin.Do("POST", itemsPath, raw, "Idempotency-Key", k))
	if n := a.countItems("Racing Item"); n != 2 {
		t.Fatalf("%d items, want the superadmin's and one of the admin's", n)
	}

	// A holder that completed: its stored response is what later requests get.
	k2 := "completed-elsewhere-" + uuid.NewString()
	sc.Key = k2
	claim, _, err = store.Begin(ctx, sc, store.Fingerprint("POST", itemsPath, []byte(raw)))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Complete(ctx, claim, 201, []byte(`{"id":"from-the-other-replica"}`)); err != nil {
		t.Fatal(err)
	}
	got := admin.Do("POST", itemsPath, raw, "Idempotency-Key", k2)
	expectReplay(t, testenv.Response{Status: 201, Body: []byte(`{"id":"from-the-other-replica"}`)}, got)
	if n := a.countItems("Racing Item"); n != 2 {
		t.Fatalf("a completed key ran the request again: %d items", n)
	}
}

func TestIdempotencyDoesNotStoreRefusedRequests(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	k := []string{"Idempotency-Key", "fix-and-retry-" + uuid.NewString()}

	expectValidation(t, admin.Do("POST", itemsPath, map[string]any{"name": "Fixable", "description": "d", "price": 0, "stock": 1}, k...), itemsPath, "price=validation.range")
	if n := a.idemRows(k[1]); n != 0 {
		t.Fatalf("a 400 left %d idempotency records", n)
	}
	admin.Do("POST", itemsPath, `{"name":"Fixable"`, k...).ExpectError(t, 400, "common.errors.malformedJson")
	admin.Do("POST", itemsPath, map[string]any{"name": "Fixable", "description": "d", "price": 1, "stock": 1, "colour": "red"}, k...).
		ExpectError(t, 400, "common.errors.validation")
	if n := a.idemRows(k[1]); n != 0 {
		t.Fatalf("refused requests left %d idempotency records", n)
	}
	// The fixed request reuses the key and runs.
	fixed := admin.Do("POST", itemsPath, map[string]any{"name": "Fixable", "description": "d", "price": 1, "stock": 1}, k...).Expect(t, 201)
	if fixed.Header.Get("Idempotent-Replayed") != "" || a.countItems("Fixable") != 1 || a.idemRows(k[1]) != 1 {
		t.Fatal("the fixed request did not run once and get stored")
	}
	// Not found is a 4xx too.
	k2 := []string{"Idempotency-Key", "patch-missing-" + uuid.NewString()}
	admin.Do("PATCH", "/v1/admin/items/0193a000-0000-7000-8000-00000000ffff", map[string]any{"stock": 1}, k2...).ExpectError(t, 404, "items.errors.notFound")
	if n := a.idemRows(k2[1]); n != 0 {
		t.Fatalf("a 404 left %d idempotency records", n)
	}
}

func TestIdempotencyAfterServerError(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	k := []string{"Idempotency-Key", "five-hundred-" + uuid.NewString()}
	body := newItemBody("Survivor")

	// Break the items table: the create fails with a 500 that leaks nothing.
	a.exec(`ALTER TABLE items RENAME TO items_broken`)
	r := admin.Do("POST", itemsPath, body, k...)
	r.ExpectError(t, 500, "common.errors.internal")
	for _, leak := range []string{"items_broken", "does not exist", "pq:", "SQLSTATE", "catalogdb"} {
		if strings.Contains(string(r.Body), leak) {
			t.Fatalf("500 body leaks %q: %s", leak, r.Body)
		}
	}
	// The record stays, released at its recovery point: a retry may run at once.
	var rec struct {
		State         string `db:"state"`
		RecoveryPoint string `db:"recovery_point"`
		Released      bool   `db:"released"`
	}
	if err := a.db.Get(&rec, `SELECT state, recovery_point, locked_until <= now() AS released FROM idempotency_keys WHERE key = $1`, k[1]); err != nil {
		t.Fatalf("no idempotency record after a 500: %v", err)
	}
	if rec.State != "in_flight" || rec.RecoveryPoint != idempotency.Started || !rec.Released {
		t.Fatalf("record after a 500: %+v", rec)
	}
	admin.Do("POST", itemsPath, body, k...).ExpectError(t, 500, "common.errors.internal")

	a.exec(`ALTER TABLE items_broken RENAME TO items`)
	ok := admin.Do("POST", itemsPath, body, k...).Expect(t, 201)
	if ok.Header.Get("Idempotent-Replayed") != "" {
		t.Fatal("the retry after a 500 was a replay")
	}
	expectReplay(t, ok, admin.Do("POST", itemsPath, body, k...))
	if n := a.countItems("Survivor"); n != 1 {
		t.Fatalf("%d items, want 1", n)
	}
}

func TestIdempotencyConcurrentDuplicates(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	k := []string{"Idempotency-Key", "stampede-" + uuid.NewString()}
	body := newItemBody("Stampede Item")

	const n = 20
	var (
		wg        sync.WaitGroup
		start     = make(chan struct{})
		responses = make([]testenv.Response, n)
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := admin.Send("POST", itemsPath, body, k...)
			if err != nil {
				t.Error(err)
			}
			responses[i] = r
		}()
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	var fresh, replays, inFlight int
	var created string
	for _, r := range responses {
		switch {
		case r.Status == 201 && r.Header.Get("Idempotent-Replayed") == "":
			fresh++
			created = string(r.Body)
		case r.Status == 201:
			replays++
		case r.Status == 409:
			r.ExpectError(t, 409, "common.errors.idempotencyKeyInFlight")
			if r.Header.Get("Retry-After") == "" {
				t.Fatal("409 without Retry-After")
			}
			inFlight++
		default:
			t.Fatalf("unexpected answer %d %s", r.Status, r.Body)
		}
	}
	if fresh != 1 || fresh+replays+inFlight != n {
		t.Fatalf("%d fresh, %d replays, %d in flight: want exactly one fresh", fresh, replays, inFlight)
	}
	for _, r := range responses {
		if r.Status == 201 && string(r.Body) != created {
			t.Fatalf("a replay differs from the created response:\n%s\n%s", r.Body, created)
		}
	}
	if c := a.countItems("Stampede Item"); c != 1 {
		t.Fatalf("%d items created by %d duplicates, want 1", c, n)
	}
	// Once settled, every duplicate is a replay.
	r := admin.Do("POST", itemsPath, body, k...)
	if string(r.Body) != created || r.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("settled duplicate: %d %s", r.Status, r.Body)
	}
}

func TestIdempotencyOptionalOnPatch(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	it := createItem(t, admin, newItemBody("Patched Twice"))
	path := "/v1/admin/items/" + it.ID
	k := []string{"Idempotency-Key", "patch-" + uuid.NewString()}

	// Without a key a PATCH simply runs.
	admin.Do("PATCH", path, map[string]any{"stock": 1}).Expect(t, 200)
	first := admin.Do("PATCH", path, map[string]any{"stock": 5}, k...).Expect(t, 200)
	if first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatal("first keyed PATCH marked replayed")
	}
	admin.Do("PATCH", path, map[string]any{"stock": 9}).Expect(t, 200)

	// Replaying the keyed PATCH returns its first answer and does not run it again.
	expectReplay(t, first, admin.Do("PATCH", path, `{ "stock" : 5 }`, k...))
	if got := getItem(t, admin, "admin/items", it.ID); got.Stock != 9 {
		t.Fatalf("the replay ran the PATCH again: stock %d, want 9", got.Stock)
	}
	admin.Do("PATCH", path, map[string]any{"stock": 6}, k...).ExpectError(t, 422, "common.errors.idempotencyKeyReused")
	admin.Do("PATCH", path, map[string]any{"stock": 6}, "Idempotency-Key", strings.Repeat("x", 256)).
		ExpectError(t, 400, "common.errors.idempotencyKeyInvalid")
	// The same key on another item's path is another key.
	other := createItem(t, admin, newItemBody("Patched Other"))
	admin.Do("PATCH", "/v1/admin/items/"+other.ID, map[string]any{"stock": 5}, k...).Expect(t, 200)
	if got := getItem(t, admin, "admin/items", other.ID); got.Stock != 5 {
		t.Fatalf("keyed PATCH on another path did not run: %+v", got)
	}
}
