// Package notification is the in-app notifications of users: what one is, how it reads in
// the reader's language, and the store that keeps them (notificationdb implements it).
package notification

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/i18n"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

// ErrNotFound is answered for a missing notification and for another user's.
var ErrNotFound = apperr.New(apperr.NotFound, "notifications.errors.notFound")

// Notification is an in-app message to a user. Its text is rendered when read, in the
// reader's language, from Event and Data.
type Notification struct {
	ID        uuid.UUID      `db:"id"`
	UserID    uuid.UUID      `db:"user_id"`
	Event     string         `db:"event"`
	Data      map[string]any `db:"-"`
	RawData   []byte         `db:"data"`
	ReadAt    *time.Time     `db:"read_at"`
	CreatedAt time.Time      `db:"created_at"`
}

// Kinds group events for clients (icon, colour).
var kinds = map[string]string{
	EventAuthLogin: "info", EventOrderCreated: "info", EventOrderShipped: "info", EventOrderStatusChanged: "info",
	EventOrderPaid: "success", EventOrderProcessed: "success", EventOrderDelivered: "success", EventOrderRefunded: "success",
	EventOrderPaymentFailed: "warning", EventOrderCanceled: "warning",
	EventOrderFailed: "error",
}

// Kind returns the event's kind: info, success, warning or error.
func (n Notification) Kind() string {
	if k, ok := kinds[n.Event]; ok {
		return k
	}
	return "info"
}

// Render returns the title and message in lang with the notification's values.
func (n Notification) Render(lang string) (title, message string) {
	params := make(map[string]any, len(n.Data)+3)
	for k, v := range n.Data {
		params[k] = v
	}
	currency, _ := n.Data["currency"].(string)
	for _, k := range []string{"total", "refundAmount"} {
		if f, ok := n.Data[k].(float64); ok {
			params[k] = i18n.Money(lang, int64(f), currency)
		}
	}
	if f, ok := n.Data["number"].(float64); ok {
		params["number"] = fmt.Sprintf("%d", int64(f))
	}
	if st, ok := n.Data["status"].(string); ok {
		params["status"] = i18n.T(lang, "orders.status."+st, nil)
	}
	if at, ok := n.Data["at"].(string); ok {
		if t, err := time.Parse(time.RFC3339, at); err == nil {
			params["at"] = i18n.DateTime(lang, t)
		}
	}
	key := "notifications." + n.Event
	if n.Event == EventOrderRefunded && n.Data["latePayment"] == true {
		key = "notifications.order.lateRefund"
	}
	return i18n.T(lang, key+".title", params), i18n.T(lang, key+".message", params)
}

// Store keeps notifications (implemented by notificationdb).
type Store interface {
	// Deliver stores a notification asked for by outbox row outboxID, dated at (now when
	// zero). A second delivery of the same row stores nothing. It reports whether a row was
	// inserted.
	Deliver(ctx context.Context, outboxID int64, at time.Time, userID uuid.UUID, event string, data map[string]any) (bool, error)
	// List returns a page of a user's notifications, newest first.
	List(ctx context.Context, userID uuid.UUID, unreadOnly bool, page cursor.Request) (cursor.Page[Notification], error)
	// UnreadCount counts a user's unread notifications.
	UnreadCount(ctx context.Context, userID uuid.UUID) (int, error)
	// HasNew reports whether a user has at least one unread notification.
	HasNew(ctx context.Context, userID uuid.UUID) (bool, error)
	// MarkRead marks one of the user's notifications read (reading it again keeps the first
	// time); another user's answers ErrNotFound.
	MarkRead(ctx context.Context, userID, id uuid.UUID) (Notification, error)
	// ReadAll marks every unread notification of the user read and returns how many.
	ReadAll(ctx context.Context, userID uuid.UUID) (int64, error)
}
