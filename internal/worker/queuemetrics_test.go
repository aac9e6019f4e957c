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
