// Package notification stores in-app notifications and renders them in the reader's language.
package notification

import "time"

// Timestamp formats a time carried in a notification's data like every timestamp of the API
// (SPEC §1): RFC 3339, UTC, milliseconds.
func Timestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// Notification events (SPEC §3 Notifications).
const (
	EventAuthLogin          = "auth.login"
	EventOrderCreated       = "order.created"
	EventOrderPaid          = "order.paid"
	EventOrderPaymentFailed = "order.paymentFailed"
	EventOrderProcessed     = "order.processed"
	EventOrderShipped       = "order.shipped"
	EventOrderDelivered     = "order.delivered"
	EventOrderCanceled      = "order.canceled"
	EventOrderRefunded      = "order.refunded"
	EventOrderFailed        = "order.failed"
	EventOrderStatusChanged = "order.statusChanged"
)

// Events lists every event.
var Events = []string{
	EventAuthLogin, EventOrderCreated, EventOrderPaid, EventOrderPaymentFailed, EventOrderProcessed,
	EventOrderShipped, EventOrderDelivered, EventOrderCanceled, EventOrderRefunded, EventOrderFailed,
	EventOrderStatusChanged,
}
