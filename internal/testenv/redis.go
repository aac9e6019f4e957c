package testenv

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/platform/redisx"
)

// Redis returns a client and a key prefix of the test's own. The test's keys are deleted (by
// SCAN on the prefix, never FLUSHDB) when it ends.
func Redis(t testing.TB) (*redis.Client, redisx.Prefix, string) {
	t.Helper()
	_, url, err := serviceURLs()
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := redisx.Open(context.Background(), url)
	if err != nil {
		t.Fatalf("testenv: redis: %v", err)
	}
	prefix := redisx.Prefix("test:" + randomSuffix() + ":")
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, string(prefix)+"*", 500).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		rdb.Close()
	})
	return rdb, prefix, url
}
