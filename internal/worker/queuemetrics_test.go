package worker_test

import (
	"context"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/internal/worker"
)

// After a Redis restart without its data, a running client enqueues into a queue without
// indexing it again; the queue gauges must still count its tasks.
func TestQueueGaugesCountAQueueMissingFromAsynqsIndex(t *testing.T) {
	t.Parallel()
	rdb, _, _ := testenv.Redis(t)
	ns := testenv.Namespace(t, rdb, "qm")
	client := asynq.NewClientFromRedisClient(rdb)
	queue := ns.Queue(tasks.QueueNotifications)
	for range 3 {
		if _, err := client.Enqueue(asynq.NewTask(tasks.NotifyUser, []byte(`{}`)), asynq.Queue(queue)); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.SRem(context.Background(), tasks.QueueIndex, queue).Err(); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(worker.NewQueueCollector(rdb, ns))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	pending := -1.0
	for _, mf := range families {
		if mf.GetName() != "dispatch_queue_depth" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["queue"] == tasks.QueueNotifications && labels["state"] == "pending" {
				pending = m.GetGauge().GetValue()
			}
		}
	}
	if pending != 3 {
		t.Fatalf("pending tasks of the unindexed queue = %v, want 3", pending)
	}
}

// While Redis cannot be read the queue gauges are left out, not reported as zeros (a queue
// piling up would look empty during the outage), and the failed reads are counted.
func TestQueueGaugesWithoutRedis(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedisServer(t, "queuemetrics")
	rdb := srv.Client()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(worker.NewQueueCollector(rdb, ""))
	srv.Kill()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	failures := -1.0
	for _, mf := range families {
		switch mf.GetName() {
		case "dispatch_queue_depth", "dispatch_queue_latency_seconds":
			t.Errorf("%s reported without Redis: %v", mf.GetName(), mf.GetMetric())
		case "dispatch_queue_read_failures_total":
			failures = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if want := float64(len(tasks.Queues())); failures != want {
		t.Fatalf("dispatch_queue_read_failures_total = %v, want %v (one per queue)", failures, want)
	}
}
