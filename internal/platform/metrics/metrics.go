// Package metrics holds the Prometheus collectors of every program (the only package-level
// state the module keeps). Labels take bounded values only: route templates, statuses, task
// types, outcomes — never ids, emails or raw paths.
package metrics

import (
	"database/sql"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const ns = "dispatch"

var latency = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// HTTP.
var (
	httpRequests = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "http_requests_total", Help: "HTTP requests by method, route template and status.",
	}, []string{"method", "route", "status"})
	httpDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: ns, Name: "http_request_duration_seconds", Help: "HTTP request latency by method, route template and status.",
		Buckets: latency,
	}, []string{"method", "route", "status"})
)

// ObserveHTTP counts a request; route is gin's route template ("unmatched" for none).
func ObserveHTTP(method, route string, status int, d time.Duration) {
	method = Method(method)
	s := strconv.Itoa(status)
	httpRequests.WithLabelValues(method, route, s).Inc()
	httpDuration.WithLabelValues(method, route, s).Observe(d.Seconds())
}

// Method is an HTTP method as a label: one of HTTP's own, or "other". net/http takes any token
// (up to the request line's limit) as a method, and a series per made-up one would grow the
// process and every scrape without bound.
func Method(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// Orders.
var (
	OrdersCreated = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Name: "orders_created_total", Help: "Orders created.",
	})
	transitions = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "order_transitions_total", Help: "Order status transitions by from and to status.",
	}, []string{"from", "to"})
)

// Transition counts an order status change.
func Transition(from, to string) { transitions.WithLabelValues(from, to).Inc() }

// Outbox and relay.
var (
	OutboxBacklog = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: ns, Name: "outbox_backlog", Help: "Outbox rows waiting for their first hand-off to the queues.",
	})
	OutboxOldestAge = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: ns, Name: "outbox_oldest_age_seconds", Help: "Age of the oldest outbox row waiting for its first hand-off (0 when none).",
	})
	OutboxInFlight = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: ns, Name: "outbox_in_flight", Help: "Outbox rows handed off whose task has not finished yet.",
	})
	OutboxOldestInFlightAge = promauto.NewGauge(prometheus.GaugeOpts{
		Namespace: ns, Name: "outbox_oldest_in_flight_age_seconds", Help: "Age of the oldest outbox row whose task has not finished (0 when none).",
	})
	// OutboxBacklogReadFailures counts backlog readings that failed: the backlog gauges keep
	// their last good value meanwhile, so a rising count says they are stale.
	OutboxBacklogReadFailures = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Name: "outbox_backlog_read_failures_total", Help: "Outbox backlog readings that failed (the backlog gauges are stale meanwhile).",
	})
	relayRedelivered = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "relay_redelivered_total",
		Help: "Outbox rows due again, by task type and what became of their task (lost, completed, abandoned, replaced).",
	}, []string{"type", "verdict"})
	relayBatch = promauto.NewHistogram(prometheus.HistogramOpts{
		Namespace: ns, Name: "relay_batch_size", Help: "Rows per relayed batch.",
		Buckets: []float64{1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500},
	})
	relayEnqueue = promauto.NewHistogram(prometheus.HistogramOpts{
		Namespace: ns, Name: "relay_enqueue_duration_seconds", Help: "Time to enqueue one batch into Redis.",
		Buckets: latency,
	})
	relayRows = promauto.NewCounter(prometheus.CounterOpts{
		Namespace: ns, Name: "relay_rows_total", Help: "Outbox rows relayed.",
	})
)

// RelayBatch records a relayed batch.
func RelayBatch(n int, enqueue time.Duration) {
	relayBatch.Observe(float64(n))
	relayEnqueue.Observe(enqueue.Seconds())
	relayRows.Add(float64(n))
}

// Redelivered counts an outbox row handed off again.
func Redelivered(taskType, verdict string) { relayRedelivered.WithLabelValues(taskType, verdict).Inc() }

// Tasks.
var (
	tasksDone = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "tasks_total", Help: "Task attempts by type and outcome (success, retry, waited, failed).",
	}, []string{"type", "outcome"})
	taskDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: ns, Name: "task_duration_seconds", Help: "Task attempt duration by type and outcome.",
		Buckets: latency,
	}, []string{"type", "outcome"})
	retries = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "task_retries_total", Help: "Task attempts that failed and will be retried, by type.",
	}, []string{"type"})
	compensations = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "compensations_total", Help: "Compensations that changed an order, by task type.",
	}, []string{"type"})
)

// How a task attempt ended (the outcome label of the task metrics). An attempt that waited
// gave way without counting against the task's retries: its order was busy, or PostgreSQL,
// Redis (or, for a task with no compensation, Stripe) was away. It is not a retry: an outage
// does not read as tasks failing.
const (
	TaskSuccess = "success"
	TaskRetry   = "retry"
	TaskWaited  = "waited"
	TaskFailed  = "failed"
)

// TaskDone records a task attempt.
func TaskDone(taskType, outcome string, d time.Duration) {
	tasksDone.WithLabelValues(taskType, outcome).Inc()
	taskDuration.WithLabelValues(taskType, outcome).Observe(d.Seconds())
	if outcome == TaskRetry {
		retries.WithLabelValues(taskType).Inc()
	}
}

// Compensated counts a compensation.
func Compensated(taskType string) { compensations.WithLabelValues(taskType).Inc() }

// Webhooks.
var webhookEvents = promauto.NewCounterVec(prometheus.CounterOpts{
	Namespace: ns, Name: "webhook_events_total", Help: "Stripe webhook events by type and outcome.",
}, []string{"type", "outcome"})

var knownEvents = map[string]bool{
	"payment_intent.succeeded": true, "payment_intent.payment_failed": true, "payment_intent.canceled": true,
	"charge.refunded": true, "refund.updated": true, "unknown": true,
}

// Webhook counts a webhook event; types Dispatch does not handle count as "other".
func Webhook(eventType, outcome string) {
	if !knownEvents[eventType] {
		eventType = "other"
	}
	webhookEvents.WithLabelValues(eventType, outcome).Inc()
}

// Refund statuses recorded.
var refundUpdates = promauto.NewCounterVec(prometheus.CounterOpts{
	Namespace: ns, Name: "refund_updates_total",
	Help: "Refund statuses recorded from Stripe (webhook, reconciler, or a compensation's refund Stripe refused: failed), by status; failed and canceled leave a payment owed back.",
}, []string{"status"})

var refundStatuses = map[string]bool{"pending": true, "requires_action": true, "succeeded": true, "failed": true, "canceled": true}

// RefundUpdated counts a refund status recorded; statuses Stripe does not document count as
// "other".
func RefundUpdated(status string) {
	if !refundStatuses[status] {
		status = "other"
	}
	refundUpdates.WithLabelValues(status).Inc()
}

// Reconciler.
var reconcilerResults = promauto.NewCounterVec(prometheus.CounterOpts{
	Namespace: ns, Name: "reconciler_results_total",
	Help: "What the reconciler's runs did, by result: orders checked, paid, canceled, skipped (unknown to Stripe), stuck orders requeued, refunds settled, failed (an order or a refund lookup).",
}, []string{"result"})

// Reconciled adds a reconciler run's counts, by result; every result is served, zeros included.
func Reconciled(counts map[string]int) {
	for result, n := range counts {
		reconcilerResults.WithLabelValues(result).Add(float64(n))
	}
}

// Stripe calls.
var (
	stripeCalls = promauto.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "stripe_requests_total", Help: "Stripe API calls by operation and outcome (ok, rejected, transient, not_found, key_reused).",
	}, []string{"operation", "outcome"})
	stripeDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: ns, Name: "stripe_request_duration_seconds", Help: "Stripe API call latency by operation.",
		Buckets: latency,
	}, []string{"operation"})
)

// Stripe records a Stripe call; outcome is "ok" or the error class.
func Stripe(op, outcome string, d time.Duration) {
	stripeCalls.WithLabelValues(op, outcome).Inc()
	stripeDuration.WithLabelValues(op).Observe(d.Seconds())
}

// Cache.
var cacheRequests = promauto.NewCounterVec(prometheus.CounterOpts{
	Namespace: ns, Name: "cache_requests_total", Help: "Item cache lookups by kind (item, list) and result (hit, miss).",
}, []string{"kind", "result"})

// Cache records a cache lookup.
func Cache(kind string, hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	cacheRequests.WithLabelValues(kind, result).Inc()
}

// Logs.
var LogsDropped = promauto.NewCounter(prometheus.CounterOpts{
	Namespace: ns, Name: "logs_dropped_total", Help: "Log lines not shipped to Loki because its buffer was full.",
})

// Handler serves the metrics of the process.
func Handler() http.Handler { return promhttp.Handler() }

// WatchPool exports the figures of a program's PostgreSQL pool under db_name=name, with the
// names of Prometheus's Go collector: go_sql_max_open_connections, go_sql_in_use_connections,
// go_sql_wait_count_total, go_sql_wait_duration_seconds_total and the rest. A request that finds
// every connection taken waits for one (docs/decisions.md, DB_MAX_CONNS); the wait figures say
// how often and how long, taken from pool.Stats, which counts the waits in the program's queue
// in front of the pool. Watching another pool under the same name replaces the first.
func WatchPool(name string, pool interface{ Stats() sql.DBStats }) {
	c := poolCollector{stats: pool.Stats}
	for _, f := range poolFigures {
		c.descs = append(c.descs, prometheus.NewDesc("go_sql_"+f.name, f.help, nil, prometheus.Labels{"db_name": name}))
	}
	err := prometheus.Register(c)
	var dup prometheus.AlreadyRegisteredError
	if errors.As(err, &dup) {
		prometheus.Unregister(dup.ExistingCollector)
		err = prometheus.Register(c)
	}
	if err != nil {
		panic(err) // a collector clashing with another is a programming error
	}
}

var poolFigures = []struct {
	name, help string
	kind       prometheus.ValueType
	value      func(sql.DBStats) float64
}{
	{"max_open_connections", "Most connections the pool opens.", prometheus.GaugeValue,
		func(s sql.DBStats) float64 { return float64(s.MaxOpenConnections) }},
	{"open_connections", "Connections open, in use or idle.", prometheus.GaugeValue,
		func(s sql.DBStats) float64 { return float64(s.OpenConnections) }},
	{"in_use_connections", "Connections in use.", prometheus.GaugeValue,
		func(s sql.DBStats) float64 { return float64(s.InUse) }},
	{"idle_connections", "Idle connections.", prometheus.GaugeValue,
		func(s sql.DBStats) float64 { return float64(s.Idle) }},
	{"wait_count_total", "Waits for a connection.", prometheus.CounterValue,
		func(s sql.DBStats) float64 { return float64(s.WaitCount) }},
	{"wait_duration_seconds_total", "Time spent waiting for a connection.", prometheus.CounterValue,
		func(s sql.DBStats) float64 { return s.WaitDuration.Seconds() }},
	{"max_idle_closed_total", "Connections closed because the pool had enough idle ones.", prometheus.CounterValue,
		func(s sql.DBStats) float64 { return float64(s.MaxIdleClosed) }},
	{"max_idle_time_closed_total", "Connections closed after idling too long.", prometheus.CounterValue,
		func(s sql.DBStats) float64 { return float64(s.MaxIdleTimeClosed) }},
	{"max_lifetime_closed_total", "Connections closed at the end of their lifetime.", prometheus.CounterValue,
		func(s sql.DBStats) float64 { return float64(s.MaxLifetimeClosed) }},
}

// poolCollector reads a pool's figures when Prometheus scrapes; nothing on the request path.
type poolCollector struct {
	stats func() sql.DBStats
	descs []*prometheus.Desc // poolFigures' in order
}

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	for i, f := range poolFigures {
		ch <- prometheus.MustNewConstMetric(c.descs[i], f.kind, f.value(s))
	}
}
