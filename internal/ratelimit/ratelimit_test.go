package ratelimit_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/ratelimit"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

func TestAllowCountsAWindow(t *testing.T) {
	rdb, keys, _ := testenv.Redis(t)
	l := ratelimit.New(rdb)
	ctx := testenv.Context(t)
	key := keys.Key("rl", "a")
	for i := 1; i <= 3; i++ {
		res, err := l.Allow(ctx, key, 3, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Allowed || res.Limit != 3 || res.Remaining != 3-i || res.Reset <= 0 || res.Reset > time.Minute {
			t.Fatalf("request %d: %+v", i, res)
		}
	}
	res, err := l.Allow(ctx, key, 3, time.Minute)
	if err != nil || res.Allowed || res.Remaining != 0 || res.Reset <= 0 || res.Reset > time.Minute {
		t.Fatalf("4th request: %+v %v", res, err)
	}
	// Another key has its own budget.
	if res, _ := l.Allow(ctx, keys.Key("rl", "b"), 3, time.Minute); !res.Allowed || res.Remaining != 2 {
		t.Fatalf("other key: %+v", res)
	}
	// The key expires with its window: nothing lingers in Redis.
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("window key TTL %v", ttl)
	}
}

func TestWindowResets(t *testing.T) {
	rdb, keys, _ := testenv.Redis(t)
	l := ratelimit.New(rdb)
	ctx := testenv.Context(t)
	key := keys.Key("rl", "reset")
	// Long enough that the requests below fall in one window on a loaded machine.
	window := 2 * time.Second
	for i := 0; i < 2; i++ {
		if _, err := l.Allow(ctx, key, 1, window); err != nil {
			t.Fatal(err)
		}
	}
	if res, _ := l.Allow(ctx, key, 1, window); res.Allowed {
		t.Fatal("over the limit but allowed")
	}
	testenv.Eventually(t, 20*time.Second, "window never reset", func() bool {
		res, err := l.Allow(ctx, key, 1, window)
		return err == nil && res.Allowed && res.Remaining == 0
	})
}

// TestConcurrentRequestsShareOneCount: replicas racing on one key never let more than the limit
// through.
func TestConcurrentRequestsShareOneCount(t *testing.T) {
	rdb, keys, _ := testenv.Redis(t)
	ctx := testenv.Context(t)
	key := keys.Key("rl", "race")
	allowed := atOnce(t, func() (bool, error) {
		res, err := ratelimit.New(rdb).Allow(ctx, key, 10, time.Minute)
		return res.Allowed, err
	})
	if allowed != 10 {
		t.Fatalf("%d requests allowed, want 10", allowed)
	}
}

// atOnce makes 50 calls of try at once and counts those it allowed.
func atOnce(t *testing.T, try func() (bool, error)) int {
	t.Helper()
	var (
		mu      sync.Mutex
		allowed int
		wg      sync.WaitGroup
	)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := try()
			if err != nil {
				t.Error(err)
				return
			}
			if ok {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return allowed
}

// TestRedisDownReportsAnError: the limiter says it could not count (the API then lets the
// request through) and never claims the request was over the limit.
func TestRedisDownReportsAnError(t *testing.T) {
	opts, err := redisx.ParseURL(fmt.Sprintf("redis://127.0.0.1:%d/0", testenv.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	res, err := ratelimit.New(rdb).Allow(testenv.Context(t), "k", 5, time.Minute)
	if err == nil || !res.Allowed || res.Limit != 5 {
		t.Fatalf("Allow with Redis down = %+v, %v", res, err)
	}
}

// TestAttemptsCountFailuresOnly: only failures use the budget; past it every attempt is
// refused, a right one too, for what is left of the window.
func TestAttemptsCountFailuresOnly(t *testing.T) {
	rdb, keys, _ := testenv.Redis(t)
	l := ratelimit.New(rdb)
	ctx := testenv.Context(t)
	key := keys.Key("rl", "attempts")
	try := func(failed bool) (bool, time.Duration) {
		t.Helper()
		ok, left, err := l.Attempt(ctx, key, 3, time.Minute, failed)
		if err != nil {
			t.Fatal(err)
		}
		return ok, left
	}
	for i := 0; i < 10; i++ {
		if ok, _ := try(false); !ok {
			t.Fatalf("attempt %d that did not fail was refused before any failure", i+1)
		}
	}
	for i := 0; i < 3; i++ {
		if ok, _ := try(true); !ok {
			t.Fatalf("failure %d of 3 refused", i+1)
		}
	}
	for _, failed := range []bool{true, false} {
		ok, left := try(failed)
		if ok || left <= 0 || left > time.Minute {
			t.Fatalf("attempt (failed %v) past the limit: allowed %v, %v left", failed, ok, left)
		}
	}
	if n := rdb.Get(ctx, key).Val(); n != "3" {
		t.Fatalf("count %s, want 3: refused attempts are not counted", n)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("window key TTL %v", ttl)
	}
}

// TestParallelFailuresShareOneCount: a burst of failed attempts gets no more than the limit
// answered as failures, however they interleave.
func TestParallelFailuresShareOneCount(t *testing.T) {
	rdb, keys, _ := testenv.Redis(t)
	ctx := testenv.Context(t)
	key := keys.Key("rl", "burst")
	allowed := atOnce(t, func() (bool, error) {
		ok, _, err := ratelimit.New(rdb).Attempt(ctx, key, 5, time.Minute, true)
		return ok, err
	})
	if allowed != 5 {
		t.Fatalf("%d failed attempts answered, want 5", allowed)
	}
}
