// Package notification stores in-app notifications and renders them in the reader's language.
package notification

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
