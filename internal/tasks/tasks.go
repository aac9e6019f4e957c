// Package tasks names the asynchronous task types, their queues and payloads, shared by the
// producers (outbox writers) and the consumers (worker strategies).
package tasks

import (
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// Task types (SPEC §5). Handlers are registered under these exact names.
const (
	OrderProcess      = "order:process"
	OrderCancel       = "order:cancel"
	OrderRefund       = "order:refund"
	CustomerCreate    = "payment:customer:create"
	CustomerUpdate    = "payment:customer:update"
	CustomerDelete    = "payment:customer:delete"
	NotifyUser        = "notify:user"
	ReconcilePayments = "reconcile:payments"
	CleanupExpired    = "cleanup:expired"
)

// Queue names.
const (
	QueueOrders        = "orders"
	QueuePayments      = "payments"
	QueueNotifications = "notifications"
	QueueMaintenance   = "maintenance"
)

// Queues lists every queue (a copy: the list is the package's).
func Queues() []string {
	return []string{QueueOrders, QueuePayments, QueueNotifications, QueueMaintenance}
}

var queueOf = map[string]string{
	OrderProcess: QueueOrders, OrderCancel: QueueOrders, OrderRefund: QueueOrders,
	CustomerCreate: QueuePayments, CustomerUpdate: QueuePayments, CustomerDelete: QueuePayments,
	NotifyUser:        QueueNotifications,
	ReconcilePayments: QueueMaintenance, CleanupExpired: QueueMaintenance,
}

// Types lists every task type.
func Types() []string {
	out := make([]string, 0, len(queueOf))
	for t := range queueOf {
		out = append(out, t)
	}
	return out
}

// QueueOf returns the queue of a task type and whether the type is known.
func QueueOf(taskType string) (string, bool) {
	q, ok := queueOf[taskType]
	return q, ok
}

// Namespace prefixes queue names so that several deployments (or tests) share one Redis.
// The empty namespace is the production one.
type Namespace string

// Queue returns the namespaced name of queue q.
func (n Namespace) Queue(q string) string { return string(n) + q }

// Markers returns the Redis keys the relays keep while Redis holds the queues, one among each
// queue's own keys: a Redis that restarted without its data, was flushed, or had a queue's
// keys deleted has lost that queue's marker with its tasks.
func (n Namespace) Markers() []string {
	out := make([]string, 0, len(Queues()))
	for _, q := range Queues() {
		out = append(out, "asynq:{"+n.Queue(q)+"}:dispatch-kept")
	}
	return out
}

// QueueIndex is the Redis set in which Asynq lists its queues (its inspector and UI see only
// those). Asynq's clients add a queue to it the first time they enqueue into it, and never
// again: after a Redis restart that kept no data, a queue holding tasks can be missing from it.
const QueueIndex = "asynq:queues"

// LeaseKey is the Redis sorted set in which Asynq keeps the lease of each running task of
// queue (a namespaced name): the task id, scored by the Unix second its lease ends. A worker's
// heartbeat renews the leases of its tasks every 5 s to 30 s from then (asynq v0.26).
func LeaseKey(queue string) string { return "asynq:{" + queue + "}:lease" }

// Unfinished starts the last error of a task archived because PostgreSQL or Redis was away
// on its last attempt: not the task's failure, so its failure policy did not run and the relay
// delivers it again.
const Unfinished = "unfinished: a backing service was unavailable"

// Envelope is every task's payload: the producer's data plus what every consumer needs to log
// and deduplicate.
type Envelope struct {
	CorrelationID string          `json:"correlationId,omitempty"`
	OutboxID      int64           `json:"outboxId,omitempty"`
	CreatedAt     time.Time       `json:"createdAt,omitzero"` // when the change that asked for the task committed
	Data          json.RawMessage `json:"data,omitempty"`
}

// Order is the payload of the order strategies.
type Order struct {
	OrderID uuid.UUID `json:"orderId"`
	Actor   string    `json:"actor,omitempty"`
	Reason  string    `json:"reason,omitempty"`
}

// Customer is the payload of the Stripe Customer sync tasks.
type Customer struct {
	UserID uuid.UUID `json:"userId"`
}

// Notify asks the worker to store a notification for a user. Data carries the values the text
// is rendered from (orderId, status, total, currency…); rendering happens when the reader reads,
// in the reader's language.
type Notify struct {
	UserID uuid.UUID      `json:"userId"`
	Event  string         `json:"event"`
	Data   map[string]any `json:"data,omitempty"`
}
