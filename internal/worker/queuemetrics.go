package worker

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/tasks"
)

// QueueCollector exports the depth of each queue by task state, read from Asynq when
// Prometheus scrapes.
type QueueCollector struct {
	rdb       redis.UniversalClient
	inspector *asynq.Inspector
	ns        tasks.Namespace
	depth     *prometheus.Desc
	latency   *prometheus.Desc
	failures  *prometheus.Desc
	failed    atomic.Uint64
}

// NewQueueCollector returns a collector of the namespaced queues.
func NewQueueCollector(rdb redis.UniversalClient, ns tasks.Namespace) *QueueCollector {
	return &QueueCollector{
		rdb:       rdb,
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		ns:        ns,
		depth: prometheus.NewDesc("dispatch_queue_depth", "Tasks in each queue by state.",
			[]string{"queue", "state"}, nil),
		latency: prometheus.NewDesc("dispatch_queue_latency_seconds", "Age of the oldest pending task of each queue.",
			[]string{"queue"}, nil),
		failures: prometheus.NewDesc("dispatch_queue_read_failures_total",
			"Queue reads that failed (Redis away): the queue's gauges were left out of that scrape.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.depth
	ch <- c.latency
	ch <- c.failures
}

// Collect implements prometheus.Collector. A queue never used yet reports zeros; a queue that
// cannot be read (Redis away) reports nothing, not zeros, which would show a queue piling up
// as empty, and counts a failure.
//
// It indexes the queues first (tasks.QueueIndex): after a Redis restart that kept no data the
// index can miss queues that hold tasks, and Asynq's inspector (these gauges, the queue UI)
// would show them empty during the very incident one looks at them for.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	queues := make([]any, 0, len(tasks.Queues()))
	for _, q := range tasks.Queues() {
		queues = append(queues, c.ns.Queue(q))
	}
	_ = c.rdb.SAdd(ctx, tasks.QueueIndex, queues...).Err() // on failure the reads below fail too
	for _, q := range tasks.Queues() {
		info, err := c.inspector.GetQueueInfo(c.ns.Queue(q))
		if err != nil {
			c.failed.Add(1)
			continue
		}
		for state, n := range map[string]int{
			"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
			"retry": info.Retry, "archived": info.Archived, "completed": info.Completed,
		} {
			ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(n), q, state)
		}
		ch <- prometheus.MustNewConstMetric(c.latency, prometheus.GaugeValue, info.Latency.Seconds(), q)
	}
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(c.failed.Load()))
}
