package relay_test

// Tasks of silent workers: the relay runs again a task whose Asynq lease its own looks saw
// unrenewed for 20 s, and forgets what it saw when a look is missed. The worker here runs its task behind a frozen proxy, so that its lease changes only
// when the test renews it; the relay's clock is the test's. (End to end: a killed worker's
// tasks, TestWorkerProcessKilledMidTask; a live worker's long task is never copied,
// TestLongTaskOfALiveWorkerIsNotRunAgain; both in internal/e2e.)

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

// silentRig is one task running in a worker cut off from Redis (its heartbeat renews nothing),
// and a relay, on a Redis reached through a proxy of its own, whose clock the test sets.
type silentRig struct {
	t      *testing.T
	e      *env
	relay  *relay.Relay
	proxy  *testenv.TCPProxy // the relay's
	queue  string
	task   string
	lease  float64
	origin time.Time
	clock  time.Time
}

func newSilentRig(t *testing.T) *silentRig {
	t.Helper()
	e := newEnv(t)
	g := &silentRig{t: t, e: e, queue: e.ns.Queue(tasks.QueueNotifications)}
	through := func(p *testenv.TCPProxy) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: p.Addr, DB: e.rdb.Options().DB, MaxRetries: -1})
		t.Cleanup(func() { c.Close() })
		return c
	}

	workerProxy := testenv.NewTCPProxy(t, e.rdb.Options().Addr)
	srv := asynq.NewServerFromRedisClient(through(workerProxy), asynq.Config{Concurrency: 1,
		Queues: map[string]int{g.queue: 1}, Logger: quietAsynq{}, TaskCheckInterval: 10 * time.Millisecond})
	release := make(chan struct{})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	t.Cleanup(workerProxy.Thaw)
	t.Cleanup(func() { close(release) })

	_, _, ids := e.handedOff(1)
	g.task = relay.TaskID(ids[0])
	testenv.Eventually(t, 30*time.Second, "the task runs", func() bool {
		ti, err := e.insp.GetTaskInfo(g.queue, g.task)
		return err == nil && ti.State == asynq.TaskStateActive
	})
	workerProxy.Freeze()

	// The lease as if last renewed at origin, a minute ago; the relay's clock starts now.
	g.origin = time.Now().Truncate(time.Second).Add(-time.Minute)
	g.renew(0)
	g.clock = g.origin.Add(time.Minute)
	g.proxy = testenv.NewTCPProxy(t, e.rdb.Options().Addr)
	g.relay = relay.New(e.db, e.dbURL, through(g.proxy), e.ns, 100, time.Hour, logging.Discard())
	g.relay.SetClock(func() time.Time { return g.clock })
	return g
}

// renew sets the task's lease as a heartbeat at origin+at would.
func (g *silentRig) renew(at time.Duration) {
	g.t.Helper()
	g.lease = float64(g.origin.Add(at + 30*time.Second).Unix())
	if err := g.e.rdb.ZAddXX(context.Background(), tasks.LeaseKey(g.queue), redis.Z{Score: g.lease, Member: g.task}).Err(); err != nil {
		g.t.Fatal(err)
	}
}

// looks runs a look after each step (seconds) and fails the test if one of them ran the task
// again.
func (g *silentRig) looks(steps ...int) {
	g.t.Helper()
	for _, d := range steps {
		if g.look(time.Duration(d) * time.Second) {
			g.t.Fatalf("run again at %v, its lease seen unchanged for less than 20 s", g.clock.Sub(g.origin)-time.Minute)
		}
	}
}

// look moves the relay's clock by d and runs one look; it reports whether the task has a copy.
func (g *silentRig) look(d time.Duration) bool {
	g.t.Helper()
	g.clock = g.clock.Add(d)
	g.relay.RecoverOrphans(context.Background())
	if got, err := g.e.rdb.ZScore(context.Background(), tasks.LeaseKey(g.queue), g.task).Result(); err != nil || got != g.lease {
		g.t.Fatalf("the lease is %v (%v), want %v: the worker is not cut off", got, err, g.lease)
	}
	_, err := g.e.insp.GetTaskInfo(g.queue, g.task+"~")
	return err == nil
}

func TestSilenceIsALeaseSeenUnchanged(t *testing.T) {
	t.Parallel()
	g := newSilentRig(t)
	g.looks(0, 5, 5, 5) // 0–15 s
	g.renew(17 * time.Second)
	g.looks(5, 5, 5, 5) // 20–35 s: the new lease seen for 15 s
	if !g.look(5 * time.Second) {
		t.Fatal("not run again once its lease was seen unchanged for 20 s")
	}
}

func TestAMissedLookForgetsWhatWasSeen(t *testing.T) {
	t.Parallel()
	g := newSilentRig(t)
	g.looks(0, 20, 5, 5) // a look missed (the relay busy) between 0 and 20 s: seen since 20 s
	g.proxy.Cut()
	g.looks(3) // 33 s: Redis away, for the workers too perhaps
	g.proxy.Restore(t)
	g.looks(3, 5, 5, 5) // 36–51 s: seen since 36 s, not since 20 s
	if !g.look(5 * time.Second) {
		t.Fatal("not run again once the relay saw its lease unchanged for 20 s after the outage")
	}
}

// A relay whose batches cannot get through (here the outbox is locked, as a slow PostgreSQL or
// a long backlog would hold them) goes on looking: the silent task is run again all the same.
func TestLooksGoOnWhileTheRelayDrains(t *testing.T) {
	t.Parallel()
	g := newSilentRig(t)
	g.relay.SetClock(time.Now)
	hold, err := g.e.db.Pool().Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback()
	if _, err := hold.Exec(`LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		_ = g.relay.Run(ctx)
	}()
	defer func() { _ = hold.Rollback(); cancel(); <-ran }()
	testenv.Eventually(t, relay.RunAgainWithin+time.Minute, "the silent task is run again", func() bool {
		_, err := g.e.insp.GetTaskInfo(g.queue, g.task+"~")
		return err == nil
	})
}
