package auth

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// Two APIs on one Redis: what one denies, the other refuses, whether it follows the list or not;
// a follower answers from its copy, which holds what was denied before it started and what is
// announced after; entries lapse at their time.
func TestDenylistIsSharedAndFollowed(t *testing.T) {
	t.Parallel()
	rdb, prefix, url := testenv.Redis(t)
	ctx := testenv.Context(t)
	list := func(c *redis.Client) *denylist {
		return newDenylist(c, prefix.Key("denylist"), prefix.Key("denylist", "added"))
	}
	other, err := redisx.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	a, b := list(rdb), list(other)
	later := time.Now().Add(time.Hour)

	before := uuid.New()
	if err := a.add(ctx, later, before); err != nil {
		t.Fatal(err)
	}
	expectDenied(t, a, before, true)
	expectDenied(t, b, before, true) // not following: asks Redis
	expectDenied(t, b, uuid.New(), false)

	followCtx, stop := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		b.follow(followCtx, slog.New(slog.DiscardHandler))
	}()
	testenv.Eventually(t, 10*time.Second, "the follower's copy is complete", b.live.Load)
	// The copy answers alone: with the set gone from Redis, what was loaded is still refused.
	if err := rdb.Del(ctx, prefix.Key("denylist")).Err(); err != nil {
		t.Fatal(err)
	}
	expectDenied(t, b, before, true)

	announced := uuid.New()
	if err := a.add(ctx, later, announced); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the follower learns of a session denied elsewhere", func() bool {
		denied, err := b.has(ctx, announced, time.Now())
		return err == nil && denied
	})
	expectDenied(t, b, uuid.New(), false)

	// An entry lapses at its time, read at times given rather than waited for.
	short := uuid.New()
	until := time.Now().Add(time.Minute)
	if err := a.add(ctx, until, short); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the follower learns of the short entry", func() bool {
		denied, _ := b.has(ctx, short, until.Add(-time.Millisecond))
		return denied
	})
	expectDeniedAt(t, b, short, until, false)           // from the copy
	expectDeniedAt(t, list(other), short, until, false) // from Redis
	expectDeniedAt(t, list(other), short, until.Add(-time.Millisecond), true)

	// Stopping does not wait for a message or a ping to end the read in progress (a server's
	// Close waits for it).
	stop()
	select {
	case <-stopped:
	case <-time.After(followPing / 2):
		t.Fatal("the follower did not stop while its subscription was quiet")
	}
	if b.live.Load() {
		t.Fatal("a stopped follower still trusts its copy")
	}
}

// A follower whose subscription is cut, or whose Redis restarts empty, asks Redis until it has
// subscribed and loaded the list again, so a session denied meanwhile is not let through by a
// stale copy.
func TestDenylistFollowerRecovers(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedisServer(t, "denylist-redis")
	ctx := testenv.Context(t)
	admin := srv.Client()
	list := func() *denylist {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr(), DialTimeout: 200 * time.Millisecond})
		t.Cleanup(func() { c.Close() })
		return newDenylist(c, "denylist", "denylist:added")
	}
	a, b := list(), list()
	go b.follow(ctx, slog.New(slog.DiscardHandler))
	testenv.Eventually(t, 10*time.Second, "the follower's copy is complete", b.live.Load)

	loads := b.loads.Load()
	if err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	missed := uuid.New() // announced while nobody listens
	if err := a.add(ctx, time.Now().Add(time.Hour), missed); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the follower loads the list again", func() bool { return b.loads.Load() > loads })
	expectDenied(t, b, missed, true)

	srv.Kill()
	testenv.Eventually(t, 10*time.Second, "the follower stops trusting its copy", func() bool { return !b.live.Load() })
	if _, err := b.has(ctx, missed, time.Now()); err == nil {
		t.Fatal("with Redis down and no complete copy, has answered without an error")
	}
	srv.Start() // empty: nothing was saved
	testenv.Eventually(t, 20*time.Second, "the follower follows the restarted Redis", b.live.Load)
	again := uuid.New()
	if err := a.add(ctx, time.Now().Add(time.Hour), again); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the follower learns of a session denied after the restart", func() bool {
		denied, _ := b.has(ctx, again, time.Now())
		return denied
	})
}

func expectDenied(t *testing.T, d *denylist, sid uuid.UUID, want bool) {
	t.Helper()
	expectDeniedAt(t, d, sid, time.Now(), want)
}

func expectDeniedAt(t *testing.T, d *denylist, sid uuid.UUID, at time.Time, want bool) {
	t.Helper()
	got, err := d.has(context.Background(), sid, at)
	if err != nil || got != want {
		t.Fatalf("has(%s) at %s = %v, %v; want %v", sid, at.Format(time.RFC3339Nano), got, err, want)
	}
}

// A revocation that has committed reaches the denylist even when its request is gone: the
// client hanging up right after the commit does not cut the announcement to the other APIs.
func TestDenyOutlivesItsRequest(t *testing.T) {
	t.Parallel()
	rdb, prefix, _ := testenv.Redis(t)
	s := NewService(nil, rdb, prefix, nil, &Tokens{AccessTTL: time.Minute}, nil, nil, slog.New(slog.DiscardHandler))
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	sid := uuid.New()
	s.Deny(gone, sid)
	expectDenied(t, newDenylist(rdb, prefix.Key("denylist"), prefix.Key("denylist", "added")), sid, true)
}
