package lock_test

import (
	"bytes"
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
	m := rs.NewMutex(keys.Key("held"), redsync.WithExpiry(300*time.Millisecond), redsync.WithTries(1))
	if err := m.LockContext(ctx); err != nil {
		t.Fatal(err)
	}
	stop := lock.Keep(ctx, m, 100*time.Millisecond, slog.Default())
	time.Sleep(time.Second)
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
	var out bytes.Buffer
	stop := lock.Keep(ctx, m, 50*time.Millisecond, slog.New(slog.NewTextHandler(&out, nil)))
	time.Sleep(300 * time.Millisecond)
	stop()
	if !strings.Contains(out.String(), "lock not extended") {
		t.Fatalf("no warning for a lost lock; log:\n%s", out.String())
	}
}
