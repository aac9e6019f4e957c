package httpapi_test

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

// scanCount counts the test's Redis keys matching pattern (after the test's prefix).
func (a *app) scanCount(pattern string) int {
	a.t.Helper()
	ctx := context.Background()
	n := 0
	iter := a.rdb.Scan(ctx, 0, string(a.keys)+pattern, 100).Iterator()
	for iter.Next(ctx) {
		n++
	}
	if err := iter.Err(); err != nil {
		a.t.Fatal(err)
	}
	return n
}

func TestItemReadsAreServedFromCache(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	_, customer := a.signUp("cache-reader@example.com")
	it := createItem(t, admin, map[string]any{"name": "Cached Clock", "description": "Ticks.", "price": 3000, "stock": 5})

	if got := getItem(t, customer, "items", it.ID); got.Name != "Cached Clock" {
		t.Fatalf("first read: %+v", got)
	}
	if n := a.scanCount("items:public:" + it.ID); n != 1 {
		t.Fatalf("%d public cache entries for the item after a read, want 1", n)
	}
	if n := a.scanCount("items:admin:" + it.ID); n != 0 {
		t.Fatalf("a public read wrote %d admin entries", n)
	}

	// Change the row behind the API's back: no invalidation happens, so the cached public
	// view keeps answering, to every caller.
	a.exec(`UPDATE items SET name = 'Changed Behind The Cache', stock = 99 WHERE id = $1`, it.ID)
	for _, c := range []*testenv.Client{customer, admin} {
		if got := getItem(t, c, "items", it.ID); got.Name != "Cached Clock" || got.Stock != 5 {
			t.Fatalf("second public read was not a cache hit: %+v", got)
		}
	}

	// The admin view has an entry of its own: its first read loads the current row.
	if got := getItem(t, admin, "admin/items", it.ID); got.Name != "Changed Behind The Cache" || got.Stock != 99 {
		t.Fatalf("admin view shares the public entry: %+v", got)
	}
	if n := a.scanCount("items:admin:" + it.ID); n != 1 {
		t.Fatalf("%d admin cache entries, want 1", n)
	}
	a.exec(`UPDATE items SET name = 'Second Sneaky Change' WHERE id = $1`, it.ID)
	if got := getItem(t, admin, "admin/items", it.ID); got.Name != "Changed Behind The Cache" {
		t.Fatalf("second admin read was not a cache hit: %+v", got)
	}

	// A change through the API invalidates both views before it answers.
	admin.Do("PATCH", "/v1/admin/items/"+it.ID, map[string]any{"price": 777}).Expect(t, 200)
	for _, view := range []string{"items", "admin/items"} {
		if got := getItem(t, admin, view, it.ID); got.Price != 777 || got.Name != "Second Sneaky Change" || got.Stock != 99 {
			t.Fatalf("%s right after PATCH: %+v", view, got)
		}
	}
	if got := getItem(t, customer, "items", it.ID); got.Price != 777 {
		t.Fatalf("customer read right after PATCH: %+v", got)
	}
}

func TestItemListsAreCachedAndInvalidated(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	_, customer := a.signUp("cache-lists@example.com")
	first := createItem(t, admin, map[string]any{"name": "Cache Probe One", "description": "d", "price": 100, "stock": 1})

	pub := listItems(t, customer, "items", "")
	n := len(pub.Items) // the demo items and first
	if n < 2 || pub.Items[0].ID != first.ID {
		t.Fatalf("public list: %+v", pub)
	}
	if n := a.scanCount("items:list:public:*"); n != 1 {
		t.Fatalf("%d public list entries after one list read, want 1", n)
	}

	// Behind the API's back: the cached public list does not change...
	a.exec(`UPDATE items SET stock = 42 WHERE id = $1`, first.ID)
	a.exec(`INSERT INTO items (id, name, description, price, currency, stock) VALUES (gen_random_uuid(), 'Cache Probe Sneaky', 'd', 1, 'usd', 1)`)
	if got := listItems(t, customer, "items", ""); len(got.Items) != n || got.Items[0].Stock != 1 {
		t.Fatalf("public list was not served from the cache: %+v", got)
	}
	// ...while the admin list, a separate entry, loads the current rows.
	if got := listItems(t, admin, "admin/items", ""); len(got.Items) != n+1 {
		t.Fatalf("admin list shares the public entry: %+v", got)
	}
	if n := a.scanCount("items:list:admin:*"); n != 1 {
		t.Fatalf("%d admin list entries, want 1", n)
	}
	// A filtered list is read as it is, and stored nowhere: its filter is the client's to
	// choose, and an entry per filter would let anyone fill Redis, which the queues share.
	for _, q := range []string{"name=sneaky", "name=SNEAKY", "name=probe&limit=7", "name=e&limit=100"} {
		if got := listItems(t, customer, "items", q); len(got.Items) == 0 {
			t.Fatalf("%s: %+v", q, got)
		}
	}
	if got := listItems(t, customer, "items", "name=probe"); len(got.Items) != 2 {
		t.Fatalf("filtered list: %+v, want first and the sneaky item", got)
	}
	if n := a.scanCount("items:list:*"); n != 2 {
		t.Fatalf("%d list entries after filtered reads, want 2 (the unfiltered lists)", n)
	}

	// Create invalidates every list.
	second := createItem(t, admin, map[string]any{"name": "Cache Probe Two", "description": "d", "price": 200, "stock": 2})
	got := listItems(t, customer, "items", "")
	if len(got.Items) != n+2 || got.Items[0].ID != second.ID {
		t.Fatalf("public list right after create: %+v", got)
	}
	if p, _ := findItem(got.Items, first.ID); p.Stock != 42 {
		t.Fatalf("public list right after create still holds stale rows: %+v", p)
	}
	if got := listItems(t, admin, "admin/items", ""); len(got.Items) != n+2 {
		t.Fatalf("admin list right after create: %+v", got)
	}

	// Update invalidates every list.
	admin.Do("PATCH", "/v1/admin/items/"+first.ID, map[string]any{"stock": 555}).Expect(t, 200)
	if p, _ := findItem(listItems(t, customer, "items", "").Items, first.ID); p.Stock != 555 {
		t.Fatalf("public list right after PATCH: %+v", p)
	}
	if p, _ := findItem(listItems(t, admin, "admin/items", "").Items, first.ID); p.Stock != 555 {
		t.Fatalf("admin list right after PATCH: %+v", p)
	}

	// Delete invalidates every list.
	admin.Do("DELETE", "/v1/admin/items/"+second.ID, nil).Expect(t, 204)
	if _, ok := findItem(listItems(t, customer, "items", "").Items, second.ID); ok {
		t.Fatal("public list right after DELETE still shows the item")
	}
	if p, ok := findItem(listItems(t, admin, "admin/items", "").Items, second.ID); !ok || p.DeletedAt == nil {
		t.Fatalf("admin list right after DELETE: %+v (found %v)", p, ok)
	}
}

// Only first pages are cached: cursors are written by clients, and an entry per cursor would let
// anyone fill Redis (which the queues share) with copies of one page under made-up cursors.
func TestItemListPagesPastTheFirstAreNotCached(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	_, customer := a.signUp("cache-cursors@example.com")
	for i := 0; i < 3; i++ {
		createItem(t, admin, map[string]any{"name": "Cursor Probe " + strconv.Itoa(i), "description": "d", "price": 100, "stock": 1})
	}
	first := listItems(t, customer, "items", "limit=1")
	if first.NextCursor == nil || a.scanCount("items:list:public:*") != 1 {
		t.Fatalf("first page: %+v, %d entries", first, a.scanCount("items:list:public:*"))
	}
	second := listItems(t, customer, "items", "limit=1&cursor="+url.QueryEscape(*first.NextCursor))
	if len(second.Items) != 1 || second.Items[0].ID == first.Items[0].ID {
		t.Fatalf("second page: %+v", second)
	}
	for i := 0; i < 20; i++ {
		forged := cursor.Cursor{At: time.Now().Add(time.Hour), ID: uuid.NewString(), Limit: 100}.Encode()
		if got := listItems(t, customer, "items", "cursor="+forged); len(got.Items) == 0 {
			t.Fatal("a cursor past every item answered an empty page")
		}
	}
	if n := a.scanCount("items:list:*"); n != 1 {
		t.Fatalf("%d list entries after a walk and 20 made-up cursors, want 1 (the first page)", n)
	}
	// A page past the first is read as it is now.
	a.exec(`UPDATE items SET stock = 77 WHERE id = $1`, second.Items[0].ID)
	if got := listItems(t, customer, "items", "limit=1&cursor="+url.QueryEscape(*first.NextCursor)); got.Items[0].Stock != 77 {
		t.Fatalf("second page: %+v", got.Items)
	}
}

func TestItemCacheEntriesExpire(t *testing.T) {
	t.Parallel()
	// Long enough for a few requests on a loaded machine, short enough to wait out.
	const cacheTTL = 5 * time.Second
	a := newApp(t, "CACHE_TTL", cacheTTL.String())
	admin := a.as(adminEmail)
	it := createItem(t, admin, map[string]any{"name": "Short Lived", "description": "d", "price": 100, "stock": 1})
	filled := time.Now()
	getItem(t, admin, "items", it.ID)
	ttl, err := a.rdb.PTTL(context.Background(), string(a.keys)+"items:public:"+it.ID).Result()
	if err != nil {
		t.Fatal(err)
	}
	// -1 is a key without expiry; -2 a missing one, wrong unless it may have expired already.
	if ttl == -1 || ttl > cacheTTL || ttl <= 0 && time.Since(filled) < cacheTTL {
		t.Fatalf("entry TTL %s, want CACHE_TTL=%s", ttl, cacheTTL)
	}
	listItems(t, admin, "items", "")
	// A read within the TTL is a hit: it answers the stock the entry was filled with, not the
	// one written behind the cache's back. A read later than the TTL (a stalled run) tells
	// nothing, but it filled a new entry: the next round reads that one.
	stock := int64(1)
	for round := 1; ; round++ {
		a.exec(`UPDATE items SET stock = $2 WHERE id = $1`, it.ID, stock+1)
		read := time.Now()
		got := getItem(t, admin, "items", it.ID)
		if got.Stock == stock {
			break
		}
		if time.Since(filled) < cacheTTL {
			t.Fatalf("read within the TTL was not a hit: %+v", got)
		}
		if round == 3 {
			t.Fatalf("%d reads in a row came after the %s TTL; cannot tell a hit", round, cacheTTL)
		}
		filled, stock = read, stock+1
	}
	testenv.Eventually(t, 20*time.Second, "the item entry expires", func() bool {
		return getItem(t, admin, "items", it.ID).Stock == stock+1
	})
	testenv.Eventually(t, 20*time.Second, "the list entry expires", func() bool {
		p, _ := findItem(listItems(t, admin, "items", "").Items, it.ID)
		return p.Stock == stock+1
	})
}

// TestItemReadAfterWriteUnderLoad checks SPEC §11 "Cache freshness" while concurrent readers
// keep refilling the cache: a read that starts after a PATCH answered always sees it, even
// though readers that loaded the old row may store their entries after the invalidation.
func TestItemReadAfterWriteUnderLoad(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	it := createItem(t, admin, map[string]any{"name": "Contended Item", "description": "d", "price": 100, "stock": 0})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads atomic.Int64
	for r := 0; r < 6; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				path := []string{"/v1/items/" + it.ID, "/v1/admin/items/" + it.ID, "/v1/items?name=contended"}[reads.Add(1)%3]
				r, err := admin.Send("GET", path, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if r.Status != 200 {
					t.Errorf("GET %s: %d", path, r.Status)
					return
				}
			}
		}()
	}
	for i := int64(1); i <= 25; i++ {
		admin.Do("PATCH", "/v1/admin/items/"+it.ID, map[string]any{"stock": i}).Expect(t, 200)
		for _, view := range []string{"items", "admin/items"} {
			if got := getItem(t, admin, view, it.ID); got.Stock != i {
				close(stop)
				wg.Wait()
				t.Fatalf("%s after PATCH stock=%d answered stock %d", view, i, got.Stock)
			}
		}
		if p := listItems(t, admin, "items", "name=contended"); len(p.Items) != 1 || p.Items[0].Stock != i {
			close(stop)
			wg.Wait()
			t.Fatalf("list after PATCH stock=%d answered %+v", i, p.Items)
		}
	}
	close(stop)
	wg.Wait()
	if reads.Load() < 25 {
		t.Fatalf("only %d concurrent reads ran", reads.Load())
	}
}

func TestItemsWorkWithoutRedis(t *testing.T) {
	t.Parallel()
	a := newAppRedisDown(t)
	admin := a.as(adminEmail)
	_, customer := a.signUp("no-redis@example.com")

	it := createItem(t, admin, map[string]any{"name": "Outage Lamp", "description": "Still sold.", "price": 1500, "stock": 3})
	for i := 0; i < 2; i++ {
		if got := getItem(t, customer, "items", it.ID); got.Name != "Outage Lamp" {
			t.Fatalf("public read: %+v", got)
		}
		if got := getItem(t, admin, "admin/items", it.ID); got.Name != "Outage Lamp" {
			t.Fatalf("admin read: %+v", got)
		}
	}
	if p := listItems(t, customer, "items", "name=outage"); len(p.Items) != 1 {
		t.Fatalf("public list: %+v", p)
	}
	first := listItems(t, admin, "admin/items", "limit=2")
	if !first.HasMore || first.NextCursor == nil {
		t.Fatalf("admin list page 1: %+v", first)
	}
	listItems(t, admin, "admin/items", "cursor="+url.QueryEscape(*first.NextCursor))

	// Reads come from the database: a change behind the API is visible at once.
	a.exec(`UPDATE items SET stock = 11 WHERE id = $1`, it.ID)
	if got := getItem(t, customer, "items", it.ID); got.Stock != 11 {
		t.Fatalf("read during the outage is not from the database: %+v", got)
	}

	admin.Do("PATCH", "/v1/admin/items/"+it.ID, map[string]any{"price": 1600}).Expect(t, 200)
	if got := getItem(t, customer, "items", it.ID); got.Price != 1600 {
		t.Fatalf("read after PATCH: %+v", got)
	}
	admin.Do("DELETE", "/v1/admin/items/"+it.ID, nil).Expect(t, 204)
	customer.Do("GET", "/v1/items/"+it.ID, nil).ExpectError(t, 404, "items.errors.notFound")
	if got := getItem(t, admin, "admin/items", it.ID); got.DeletedAt == nil {
		t.Fatalf("admin read after DELETE: %+v", got)
	}
	if _, ok := findItem(listItems(t, customer, "items", "").Items, it.ID); ok {
		t.Fatal("public list shows the deleted item")
	}

	// Idempotency lives in Postgres and keeps working.
	k := []string{"Idempotency-Key", fmt.Sprintf("outage-%d", time.Now().UnixNano())}
	body := map[string]any{"name": "Outage Replay", "description": "d", "price": 1, "stock": 1}
	r1 := admin.Do("POST", "/v1/admin/items", body, k...).Expect(t, 201)
	r2 := admin.Do("POST", "/v1/admin/items", body, k...).Expect(t, 201)
	if string(r1.Body) != string(r2.Body) || r2.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay during the outage: %s / %s", r1.Body, r2.Body)
	}
}
