package httpapi

import (
	"testing"

	"github.com/hibiken/asynq"

	"github.com/dispatchhq/dispatch/internal/platform/redisx"
)

// The queue UI reaches the same Redis as everything else: through the sentinels when
// REDIS_URL names them, with the same credentials and database.
func TestQueueUIFollowsREDIS_URL(t *testing.T) {
	t.Parallel()
	target, err := redisx.Parse("redis-sentinel://:pw@s1:26379,s2/3?master=main&sentinel_password=spw")
	if err != nil {
		t.Fatal(err)
	}
	f, ok := queueConnOpt(target).(asynq.RedisFailoverClientOpt)
	if !ok || f.MasterName != "main" || len(f.SentinelAddrs) != 2 || f.DB != 3 || f.Password != "pw" || f.SentinelPassword != "spw" {
		t.Fatalf("Sentinel target as Asynq option: %#v", queueConnOpt(target))
	}
	target, err = redisx.Parse("rediss://:pw@cache:6380/2")
	if err != nil {
		t.Fatal(err)
	}
	s, ok := queueConnOpt(target).(asynq.RedisClientOpt)
	if !ok || s.Addr != "cache:6380" || s.DB != 2 || s.Password != "pw" || s.TLSConfig == nil {
		t.Fatalf("single server as Asynq option: %#v", queueConnOpt(target))
	}
}
