package catalog_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// loader counts its calls and returns body (or err).
type loader struct {
	calls atomic.Int64
	body  string
	err   error
}

func (l *loader) load() ([]byte, error) {
	l.calls.Add(1)
	if l.err != nil {
		return nil, l.err
	}
	return []byte(l.body), nil
}

func newCache(t *testing.T, ttl time.Duration) (*catalog.Cache, *redis.Client, redisx.Prefix) {
	t.Helper()
	rdb, keys, _ := testenv.Redis(t)
	return catalog.NewCache(rdb, keys, ttl, quiet), rdb, keys
}

// TestCacheCountsHitsAndMisses reads the process's metrics, so it does not run in parallel.
func TestCacheCountsHitsAndMisses(t *testing.T) {
	c, _, _ := newCache(t, time.Minute)
	ctx := context.Background()
	count := func(kind, result string) float64 {
		return testenv.Metric(t, "dispatch_cache_requests_total", "kind", kind, "result", result)
	}
	itemHits, itemMisses, listHits, listMisses := count("item", "hit"), count("item", "miss"), count("list", "hit"), count("list", "miss")
	l := &loader{body: "v"}
	id := uuid.New()
	for i := 0; i < 4; i++ {
		must(t)(c.Item(ctx, "public", id, l.load))
		must(t)(c.List(ctx, "public", "limit=20", l.load))
	}
	if d := count("item", "miss") - itemMisses; d != 1 {
		t.Fatalf("item misses moved by %v, want 1", d)
	}
	if d := count("item", "hit") - itemHits; d != 3 {
		t.Fatalf("item hits moved by %v, want 3", d)
	}
	if d := count("list", "miss") - listMisses; d != 1 {
		t.Fatalf("list misses moved by %v, want 1", d)
	}
	if d := count("list", "hit") - listHits; d != 3 {
		t.Fatalf("list hits moved by %v, want 3", d)
	}
}

// must returns a checker of a cache read: the body as a string, failing the test on an error.
func must(t *testing.T) func([]byte, error) string {
	return func(body []byte, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return string(body)
	}
}

func TestCacheItemHitAndMiss(t *testing.T) {
	t.Parallel()
	c, _, _ := newCache(t, time.Minute)
	ctx := context.Background()
	id := uuid.New()
	l := &loader{body: `{"name":"v1"}`}

	if got := must(t)(c.Item(ctx, "public", id, l.load)); got != l.body {
		t.Fatalf("miss returned %q", got)
	}
	l.body = `{"name":"v2"}` // the source changes without an invalidation
	for i := 0; i < 3; i++ {
		if got := must(t)(c.Item(ctx, "public", id, l.load)); got != `{"name":"v1"}` {
			t.Fatalf("hit returned %q, want the cached v1", got)
		}
	}
	if l.calls.Load() != 1 {
		t.Fatalf("load ran %d times, want 1", l.calls.Load())
	}

	// Views and items are separate entries.
	if got := must(t)(c.Item(ctx, "admin", id, l.load)); got != `{"name":"v2"}` {
		t.Fatalf("admin view shared the public entry: %q", got)
	}
	if got := must(t)(c.Item(ctx, "public", uuid.New(), l.load)); got != `{"name":"v2"}` {
		t.Fatalf("another item shared the entry: %q", got)
	}
	if l.calls.Load() != 3 {
		t.Fatalf("load ran %d times, want 3", l.calls.Load())
	}
}

func TestCacheInvalidateRetiresItemAndLists(t *testing.T) {
	t.Parallel()
	c, _, _ := newCache(t, time.Minute)
	ctx := context.Background()
	a, b := uuid.New(), uuid.New()
	la, lb, list, other := &loader{body: "a1"}, &loader{body: "b1"}, &loader{body: "list1"}, &loader{body: "other1"}

	warm := func() {
		must(t)(c.Item(ctx, "public", a, la.load))
		must(t)(c.Item(ctx, "admin", a, la.load))
		must(t)(c.Item(ctx, "public", b, lb.load))
		must(t)(c.List(ctx, "public", "name=x&limit=20", list.load))
		must(t)(c.List(ctx, "admin", "limit=5", other.load))
	}
	warm()
	la.body, lb.body, list.body, other.body = "a2", "b2", "list2", "other2"
	warm()
	if la.calls.Load() != 2 || lb.calls.Load() != 1 || list.calls.Load() != 1 || other.calls.Load() != 1 {
		t.Fatal("second warm-up was not served from the cache")
	}

	c.Invalidate(ctx, a)
	if got := must(t)(c.Item(ctx, "public", a, la.load)); got != "a2" {
		t.Fatalf("public entry of the invalidated item: %q", got)
	}
	if got := must(t)(c.Item(ctx, "admin", a, la.load)); got != "a2" {
		t.Fatalf("admin entry of the invalidated item: %q", got)
	}
	if got := must(t)(c.Item(ctx, "public", b, lb.load)); got != "b1" {
		t.Fatalf("another item's entry was retired too: %q", got)
	}
	if got := must(t)(c.List(ctx, "public", "name=x&limit=20", list.load)); got != "list2" {
		t.Fatalf("public list survived an item invalidation: %q", got)
	}
	if got := must(t)(c.List(ctx, "admin", "limit=5", other.load)); got != "other2" {
		t.Fatalf("admin list survived an item invalidation: %q", got)
	}

	// Invalidating no item at all still retires every list.
	list.body = "list3"
	c.Invalidate(ctx)
	if got := must(t)(c.List(ctx, "public", "name=x&limit=20", list.load)); got != "list3" {
		t.Fatalf("Invalidate() kept a list: %q", got)
	}
	if got := must(t)(c.Item(ctx, "public", b, lb.load)); got != "b1" {
		t.Fatalf("Invalidate() retired an item: %q", got)
	}
	// Several items in one call.
	la.body, lb.body = "a3", "b3"
	c.Invalidate(ctx, a, b)
	if must(t)(c.Item(ctx, "public", a, la.load)) != "a3" || must(t)(c.Item(ctx, "public", b, lb.load)) != "b3" {
		t.Fatal("Invalidate(a, b) did not retire both")
	}
}

// TestCacheEntryFromAnOldGenerationIsNotServed is the race the generation counter exists for:
// a reader loads the old row, a writer commits and invalidates, then the reader stores what it
// loaded. That entry must never be served.
func TestCacheEntryFromAnOldGenerationIsNotServed(t *testing.T) {
	t.Parallel()
	c, rdb, keys := newCache(t, time.Minute)
	ctx := context.Background()
	id := uuid.New()

	stale := func() ([]byte, error) {
		c.Invalidate(ctx, id) // the writer commits while this reader is loading
		return []byte("old"), nil
	}
	if got := must(t)(c.Item(ctx, "public", id, stale)); got != "old" {
		t.Fatalf("the loading reader gets what it loaded, got %q", got)
	}
	fresh := &loader{body: "new"}
	if got := must(t)(c.Item(ctx, "public", id, fresh.load)); got != "new" {
		t.Fatalf("an entry stored under an old generation was served: %q", got)
	}
	if got := must(t)(c.Item(ctx, "public", id, fresh.load)); got != "new" || fresh.calls.Load() != 1 {
		t.Fatalf("the fresh entry is not cached: %q after %d loads", got, fresh.calls.Load())
	}

	// The same race on a list.
	staleList := func() ([]byte, error) {
		c.Invalidate(ctx, uuid.New())
		return []byte("old list"), nil
	}
	must(t)(c.List(ctx, "public", "q", staleList))
	if got := must(t)(c.List(ctx, "public", "q", (&loader{body: "new list"}).load)); got != "new list" {
		t.Fatalf("a list entry stored under an old generation was served: %q", got)
	}

	// An entry written by hand under any generation but the current one is ignored, including
	// one with no generation at all.
	entryKey := keys.Key("items", "public", id.String())
	for _, raw := range []string{"0|forged", "999|forged", "forged", "|forged"} {
		if err := rdb.Set(ctx, entryKey, raw, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		l := &loader{body: "from db"}
		if got := must(t)(c.Item(ctx, "public", id, l.load)); got != "from db" || l.calls.Load() != 1 {
			t.Fatalf("entry %q was served: %q", raw, got)
		}
	}
}

// TestAnExpiredGenerationDoesNotRevive: an item left unchanged for the week its counter is
// kept loses the counter (so does every item when Redis loses its data), while an entry a read
// stored just before may still be alive. The next change must retire that entry all the same:
// the counter must not start over at a value it had. The second round loses a counter that had
// already started over once.
func TestAnExpiredGenerationDoesNotRevive(t *testing.T) {
	t.Parallel()
	c, rdb, keys := newCache(t, time.Minute)
	ctx := context.Background()
	id := uuid.New()
	gens := []string{keys.Key("items", "gen", id.String()), keys.Key("items", "gen")}
	for round := 1; round <= 2; round++ {
		c.Invalidate(ctx, id)
		must(t)(c.Item(ctx, "public", id, (&loader{body: "old"}).load))
		must(t)(c.List(ctx, "public", "q", (&loader{body: "old list"}).load))
		if err := rdb.Del(ctx, gens...).Err(); err != nil { // the counters are gone, the entries not
			t.Fatal(err)
		}
		c.Invalidate(ctx, id) // the change
		if got := must(t)(c.Item(ctx, "public", id, (&loader{body: "new"}).load)); got != "new" {
			t.Fatalf("round %d: the entry from before the change was served: %q", round, got)
		}
		if got := must(t)(c.List(ctx, "public", "q", (&loader{body: "new list"}).load)); got != "new list" {
			t.Fatalf("round %d: the list from before the change was served: %q", round, got)
		}
		for _, k := range gens {
			if ttl, err := rdb.PTTL(ctx, k).Result(); err != nil || ttl <= 0 {
				t.Fatalf("generation key %s started over with TTL %s (%v): it must expire on its own", k, ttl, err)
			}
		}
		c.Invalidate(ctx, id) // a started-over counter moves on as before
		if got := must(t)(c.Item(ctx, "public", id, (&loader{body: "newer"}).load)); got != "newer" {
			t.Fatalf("round %d: a second change was not seen: %q", round, got)
		}
	}
}

func TestCacheBodiesRoundTripExactly(t *testing.T) {
	t.Parallel()
	c, _, _ := newCache(t, time.Minute)
	ctx := context.Background()
	for i, body := range []string{"", "|", "a|b|c", "12|34", "\x00\xff binary", `{"k":"v|w"}`} {
		id := uuid.New()
		l := &loader{body: body}
		must(t)(c.Item(ctx, "public", id, l.load))
		if got := must(t)(c.Item(ctx, "public", id, l.load)); got != body {
			t.Fatalf("case %d: cached %q came back as %q", i, body, got)
		}
		if l.calls.Load() != 1 {
			t.Fatalf("case %d: body %q was not cached", i, body)
		}
	}
}

func TestCacheLoadErrorsAreNotCached(t *testing.T) {
	t.Parallel()
	c, _, _ := newCache(t, time.Minute)
	ctx := context.Background()
	id := uuid.New()
	boom := errors.New("boom")
	l := &loader{err: boom}
	if _, err := c.Item(ctx, "public", id, l.load); !errors.Is(err, boom) {
		t.Fatalf("error %v, want the load error", err)
	}
	if _, err := c.List(ctx, "public", "q", l.load); !errors.Is(err, boom) {
		t.Fatalf("list error %v, want the load error", err)
	}
	l.err, l.body = nil, "ok"
	if got := must(t)(c.Item(ctx, "public", id, l.load)); got != "ok" {
		t.Fatalf("a failed load was cached: %q", got)
	}
	if got := must(t)(c.List(ctx, "public", "q", l.load)); got != "ok" {
		t.Fatalf("a failed list load was cached: %q", got)
	}
}

func TestCacheKeysAndTTLs(t *testing.T) {
	t.Parallel()
	const ttl = 30 * time.Second // the entries must outlive the test's steps on a loaded machine
	c, rdb, keys := newCache(t, ttl)
	ctx := context.Background()
	id := uuid.New()
	must(t)(c.Item(ctx, "public", id, (&loader{body: "x"}).load))
	must(t)(c.List(ctx, "public", "q", (&loader{body: "y"}).load))
	for _, k := range []string{keys.Key("items", "public", id.String())} {
		left, err := rdb.PTTL(ctx, k).Result()
		if err != nil || left <= 0 || left > ttl {
			t.Fatalf("entry %s TTL %s (%v), want ≤ the configured %s", k, left, err, ttl)
		}
	}
	c.Invalidate(ctx, id)
	for _, k := range []string{keys.Key("items", "gen", id.String()), keys.Key("items", "gen")} {
		ttl, err := rdb.PTTL(ctx, k).Result()
		if err != nil || ttl <= 0 {
			t.Fatalf("generation key %s has TTL %s (%v): it must expire on its own", k, ttl, err)
		}
	}
	// Nothing is written outside the prefix: a second cache with another prefix sees nothing.
	rdb2, keys2, _ := testenv.Redis(t)
	other := catalog.NewCache(rdb2, keys2, time.Minute, quiet)
	l := &loader{body: "other"}
	if got := must(t)(other.Item(ctx, "public", id, l.load)); got != "other" || l.calls.Load() != 1 {
		t.Fatal("caches with different prefixes share entries")
	}
	var n int
	iter := rdb.Scan(ctx, 0, string(keys)+"*", 100).Iterator()
	for iter.Next(ctx) {
		n++
	}
	if n != 4 { // one item entry, one list entry, two generation counters
		t.Fatalf("%d keys under the prefix, want 4", n)
	}
}

func TestCacheConcurrentReadersAndWriters(t *testing.T) {
	t.Parallel()
	c, _, _ := newCache(t, time.Minute)
	ctx := context.Background()
	id := uuid.New()
	var version atomic.Int64 // the "database"
	load := func() ([]byte, error) { return []byte(fmt.Sprint(version.Load())), nil }

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := 0; r < 8; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Item(ctx, "public", id, load); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for v := int64(1); v <= 100; v++ {
		version.Store(v) // commit
		c.Invalidate(ctx, id)
		if got := must(t)(c.Item(ctx, "public", id, load)); got != fmt.Sprint(v) {
			close(stop)
			wg.Wait()
			t.Fatalf("read after write %d answered %s", v, got)
		}
	}
	close(stop)
	wg.Wait()
}

func TestCacheDegradesWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	opts, err := redisx.ParseURL(fmt.Sprintf("redis://127.0.0.1:%d/0", testenv.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	c := catalog.NewCache(rdb, "test:down:", time.Minute, quiet)
	ctx := context.Background()
	id := uuid.New()
	l := &loader{body: "db"}
	for i := 0; i < 2; i++ {
		if got := must(t)(c.Item(ctx, "public", id, l.load)); got != "db" {
			t.Fatalf("item read during the outage: %q", got)
		}
		if got := must(t)(c.List(ctx, "admin", "q", l.load)); got != "db" {
			t.Fatalf("list read during the outage: %q", got)
		}
	}
	if l.calls.Load() != 4 {
		t.Fatalf("every read must go to the database: %d loads", l.calls.Load())
	}
	c.Invalidate(ctx, id) // logged, not fatal
	boom := errors.New("db down too")
	if _, err := c.Item(ctx, "public", id, (&loader{err: boom}).load); !errors.Is(err, boom) {
		t.Fatalf("load error during the outage: %v", err)
	}
}

// An invalidation that Redis missed (it was down, or full) is sent again until Redis takes it:
// once Redis is back with its data, another replica's reads stop serving the entry from before
// the change within seconds, not after the entry's TTL; the replica that made the change reads
// past the cache meanwhile.
func TestCacheInvalidationMissedDuringAnOutageIsSentAgain(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedisServer(t, "cache", "appendonly yes", "appendfsync always")
	replica := func() *catalog.Cache {
		opts, err := redisx.ParseURL(srv.URL())
		if err != nil {
			t.Fatal(err)
		}
		opts.MaxRetries = -1
		rdb := redis.NewClient(opts)
		t.Cleanup(func() { rdb.Close() })
		return catalog.NewCache(rdb, "test:missed:", time.Hour, quiet)
	}
	writer, other := replica(), replica()
	ctx := context.Background()
	id := uuid.New()
	before, after := &loader{body: "before"}, &loader{body: "after"}
	if got := must(t)(writer.Item(ctx, "public", id, before.load)); got != "before" {
		t.Fatalf("first read: %q", got)
	}
	if got := must(t)(other.Item(ctx, "public", id, after.load)); got != "before" {
		t.Fatalf("the other replica's first read: %q, want the cached entry", got)
	}

	srv.Kill()
	writer.Invalidate(ctx, id) // the change committed; Redis is gone
	srv.Start()                // back with its data, the entry from before the change included

	if got := must(t)(writer.Item(ctx, "public", id, after.load)); got != "after" {
		t.Fatalf("the writer read %q right after its change", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := must(t)(other.Item(ctx, "public", id, after.load))
		if got == "after" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other replica still reads %q 10 s after Redis came back", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
