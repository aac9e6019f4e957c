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
	t.Cleanup(func() { ForgetQueues(rdb, ns) })
	return ns
}

// ForgetQueues deletes everything Asynq keeps of ns's queues, as a Redis that restarts without
// persistence forgets it.
func ForgetQueues(rdb *redis.Client, ns tasks.Namespace) {
	ctx := context.Background()
	for _, q := range tasks.Queues() {
		name := ns.Queue(q)
		iter := rdb.Scan(ctx, 0, "asynq:{"+name+"}*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		rdb.SRem(ctx, tasks.QueueIndex, name)
	}
}
