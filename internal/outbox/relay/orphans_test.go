package relay_test

// Tasks of silent workers: the relay runs again a task whose Asynq lease has gone unrenewed
// for relay.SilentFor, except right after an outage of Redis it saw, during which no worker
// could renew anything. (A killed worker's tasks are run again end to end in
// internal/e2e, TestWorkerProcessKilledMidTask; a live worker's long task is never copied,
// TestLongTaskOfALiveWorkerIsNotRunAgain.)

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/outbox/relay"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

func TestSilenceCountsFromTheEndOfARedisOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	queue := e.ns.Queue(tasks.QueueNotifications)

	// One task running in a worker that holds it until the test ends.
	release := make(chan struct{})
	e.serve(func(ctx context.Context, _ *asynq.Task) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	t.Cleanup(func() { close(release) }) // before the server's shutdown, which waits for it
	_, _, ids := e.handedOff(1)
	task := relay.TaskID(ids[0])
	testenv.Eventually(t, 30*time.Second, "the task runs", func() bool {
		ti, err := e.insp.GetTaskInfo(queue, task)
		return err == nil && ti.State == asynq.TaskStateActive
	})

	// look dates the task's lease as last renewed SilentFor+5 s ago, then runs one look of r.
	// The worker's heartbeat renews the lease every 5 s: a look it came between is made again.
	look := func(r *relay.Relay) {
		t.Helper()
		key := tasks.LeaseKey(queue)
		stale := float64(time.Now().Add(30*time.Second - relay.SilentFor - 5*time.Second).Unix())
		for range 10 {
			if err := e.rdb.ZAddXX(ctx, key, redis.Z{Score: stale, Member: task}).Err(); err != nil {
				t.Fatal(err)
			}
			r.RecoverOrphans(ctx)
			if score, err := e.rdb.ZScore(ctx, key, task).Result(); err != nil || score == stale {
				return
			}
		}
		t.Fatal("the heartbeat renewed the lease during every look")
	}
	copied := func() bool {
		_, err := e.insp.GetTaskInfo(queue, task+"~")
		return err == nil
	}

	// A relay whose Redis goes through a proxy: it sees an outage, then Redis back.
	proxy := testenv.NewTCPProxy(t, e.rdb.Options().Addr)
	through := redis.NewClient(&redis.Options{Addr: proxy.Addr, DB: e.rdb.Options().DB, MaxRetries: -1})
	t.Cleanup(func() { through.Close() })
	cut := relay.New(e.db, e.dbURL, through, e.ns, 100, time.Hour, logging.Discard())
	proxy.Cut()
	cut.RecoverOrphans(ctx) // finds Redis away
	proxy.Restore(t)
	look(cut)
	if copied() {
		t.Fatal("a task silent only through the outage the relay saw was run again")
	}

	// A relay that saw no outage runs the same silent task again.
	look(e.relay(100, time.Hour))
	if !copied() {
		t.Fatal("the task of a silent worker was not run again")
	}
}
