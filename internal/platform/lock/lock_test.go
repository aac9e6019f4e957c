package lock_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"

	"github.com/dispatchhq/dispatch/internal/platform/lock"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

func TestKeepHoldsTheLockPastItsExpiry(t *testing.T) {
	rdb, keys, _ := testenv.Redis(t)
	rs := redsync.New(goredis.NewPool(rdb))
	ctx := context.Background()
	// Kept for longer than its expiry; the margins let a loaded machine stall the keeper for
	// seconds, and the acquire its own share of the expiry (redsync's timeout factor).
	const expiry = 3 * time.Second
	m := rs.NewMutex(keys.Key("held"), redsync.WithExpiry(expiry), redsync.WithTries(1), redsync.WithTimeoutFactor(0.5))
	if err := m.LockContext(ctx); err != nil {
		t.Fatal(err)
	}
	stop := lock.Keep(ctx, m, 200*time.Millisecond, slog.Default())
	time.Sleep(expiry + time.Second)
	other := rs.NewMutex(keys.Key("held"), redsync.WithTries(1))
	if err := other.LockContext(ctx); err == nil {
		t.Fatal("another holder took a lock that was being kept")
	}
	stop()
	if ok, err := m.UnlockContext(ctx); !ok || err != nil {
		t.Fatalf("unlock after Keep: %v, %v", ok, err)
	}
}

func TestKeepLogsALockItCouldNotExtend(t *testing.T) {
	rdb, keys, _ := testenv.Redis(t)
	rs := redsync.New(goredis.NewPool(rdb))
	ctx := context.Background()
	m := rs.NewMutex(keys.Key("lost"), redsync.WithExpiry(time.Minute), redsync.WithTries(1))
	if err := m.LockContext(ctx); err != nil {
		t.Fatal(err)
	}
	rdb.Del(ctx, keys.Key("lost")) // the lock vanished, as when Redis forgets
	out := &testenv.Buffer{}
	stop := lock.Keep(ctx, m, 50*time.Millisecond, slog.New(slog.NewTextHandler(out, nil)))
	defer stop()
	testenv.Eventually(t, 10*time.Second, "a warning for a lost lock", func() bool {
		return strings.Contains(out.String(), "lock not extended")
	})
}
