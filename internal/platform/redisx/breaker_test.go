package redisx_test

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/platform/outage"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// TestAStalledRedisIsSkippedUntilItAnswers: Redis behind a proxy that stops forwarding (its
// connections kept open, as a stopped process or a network that drops packets leaves them).
// The first calls wait for the client's timeout; once three have failed, commands, pipelines
// and scripts fail at once with ErrSkipped; when Redis answers again the breaker's probe (a PING
// the breaker lets through) closes it.
func TestAStalledRedisIsSkippedUntilItAnswers(t *testing.T) {
	t.Parallel()
	_, keys, base := testenv.Redis(t)
	proxied, proxy := testenv.BehindProxy(t, base)
	opts, err := redisx.ParseURL(proxied)
	if err != nil {
		t.Fatal(err)
	}
	opts.ReadTimeout, opts.WriteTimeout = 200*time.Millisecond, 200*time.Millisecond // the test's time, not the breaker's
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { proxy.Thaw(); rdb.Close() })
	const cooldown = 100 * time.Millisecond
	b := redisx.FailFastWith(rdb, 3, cooldown, slog.New(slog.DiscardHandler))
	ctx := testenv.Context(t)
	key := keys.Key("breaker")
	if err := rdb.Set(ctx, key, "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}

	proxy.Freeze()
	for i := 0; i < 3; i++ {
		err := rdb.Get(ctx, key).Err()
		if !outage.Is(err) || errors.Is(err, outage.ErrSkipped) {
			t.Fatalf("call %d on a stalled Redis: %v, want a timeout", i+1, err)
		}
	}
	if !b.Open() {
		t.Fatal("the breaker is not open after three timeouts")
	}
	script := redis.NewScript(`return 1`)
	calls := map[string]func() error{
		"command": func() error { return rdb.Get(ctx, key).Err() },
		"pipeline": func() error {
			_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error { p.Incr(ctx, key); return nil })
			return err
		},
		"script": func() error { return script.Run(ctx, rdb, []string{key}).Err() },
	}
	for name, call := range calls {
		for i := 0; i < 3; i++ {
			if err := call(); !errors.Is(err, outage.ErrSkipped) {
				t.Fatalf("%s while the breaker is open: %v, want %v", name, err, outage.ErrSkipped)
			}
		}
	}

	proxy.Thaw()
	testenv.Eventually(t, 10*time.Second, "the probe finds Redis answering again", func() bool { return !b.Open() })
	if v, err := rdb.Get(ctx, key).Result(); err != nil || v != "v" {
		t.Fatalf("after the stall: %q, %v", v, err)
	}
}
