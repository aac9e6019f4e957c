package boot_test

import (
	"errors"
	"io"
	"testing"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/platform/boot"
	"github.com/dispatchhq/dispatch/internal/platform/outage"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// TestOnlyTheAPIsRedisFailsFast: the API's Redis client skips Redis once three calls in a row
// have timed out on a stalled Redis (every use the API makes of it has a fallback); the
// worker's keeps trying, its calls have none. Both programs' PostgreSQL sessions end a
// transaction left idle for 10 s.
func TestOnlyTheAPIsRedisFailsFast(t *testing.T) {
	t.Parallel()
	_, dbURL := testenv.DB(t)
	_, keys, redisURL := testenv.Redis(t)
	for service, skips := range map[config.Service]bool{config.API: true, config.Worker: false} {
		t.Run(string(service), func(t *testing.T) {
			t.Parallel()
			proxied, proxy := testenv.BehindProxy(t, redisURL)
			env := map[string]string{"APP_ENV": "test", "DATABASE_URL": dbURL, "REDIS_URL": proxied, "LOG_LEVEL": "error"}
			p, _, err := boot.Start(testenv.Context(t), service, func(k string) string { return env[k] }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { proxy.Thaw(); p.Close() })
			ctx := testenv.Context(t)
			var idle string
			if err := p.DB.GetContext(ctx, &idle, `SHOW idle_in_transaction_session_timeout`); err != nil || idle != "10s" {
				t.Fatalf("%s's sessions: idle_in_transaction_session_timeout %q (%v), want 10s", service, idle, err)
			}
			key := keys.Key("boot", string(service))
			proxy.Freeze()
			for i := 0; i < 3; i++ {
				if err := p.Redis.Get(ctx, key).Err(); !outage.Is(err) || errors.Is(err, outage.ErrSkipped) {
					t.Fatalf("call %d on a stalled Redis: %v, want a timeout", i+1, err)
				}
			}
			err = p.Redis.Get(ctx, key).Err()
			if errors.Is(err, outage.ErrSkipped) != skips || !outage.Is(err) {
				t.Fatalf("%s's fourth call on a stalled Redis: %v; skipped: want %v", service, err, skips)
			}
		})
	}
}
