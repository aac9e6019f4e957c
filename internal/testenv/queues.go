package testenv

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/tasks"
)

// Namespace returns an Asynq queue namespace of the test's own (prefix plus a random part);
// its keys in rdb are deleted when the test ends.
func Namespace(t testing.TB, rdb *redis.Client, prefix string) tasks.Namespace {
	ns := tasks.Namespace(prefix + uuid.NewString()[:8] + ":")
	t.Cleanup(func() {
		ctx := context.Background()
		for _, q := range tasks.Queues {
			name := ns.Queue(q)
			iter := rdb.Scan(ctx, 0, "asynq:{"+name+"}*", 1000).Iterator()
			var keys []string
			for iter.Next(ctx) {
				keys = append(keys, iter.Val())
			}
			if len(keys) > 0 {
				rdb.Del(ctx, keys...)
			}
			rdb.SRem(ctx, "asynq:queues", name)
		}
	})
	return ns
}
