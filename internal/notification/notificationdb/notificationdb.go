// Package notificationdb is the PostgreSQL store of notifications.
package notificationdb

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

// Store holds notifications in Postgres.
type Store struct {
	db *postgres.DB

	mu      sync.Mutex
	queue   []*delivery // deliveries waiting for the insert in flight to return
	writing bool        // an insert is in flight
}

// New returns the notifications store on db.
func New(db *postgres.DB) *Store { return &Store{db: db} }

const columns = `id, user_id, event, data, read_at, created_at`

// List returns a page of a user's notifications, newest first.
func (s *Store) List(ctx context.Context, userID uuid.UUID, unreadOnly bool, page cursor.Request) (cursor.Page[notification.Notification], error) {
	var q postgres.Query
	q.Where("user_id = " + q.Arg(userID))
	if unreadOnly {
		q.Where("read_at IS NULL")
	}
	if page.After != nil {
		q.Keyset("created_at", "id", page.After.At, page.After.ID, false)
	}
	query := `SELECT ` + columns + ` FROM notifications` + q.WhereSQL() + ` ORDER BY created_at DESC, id DESC LIMIT ` + q.Arg(page.Limit+1)
	var rows []notification.Notification
	if err := s.db.SelectContext(ctx, &rows, query, q.Args...); err != nil {
		return cursor.Page[notification.Notification]{}, fmt.Errorf("notification: list: %w", err)
	}
	for i := range rows {
		if err := decode(&rows[i]); err != nil {
			return cursor.Page[notification.Notification]{}, err
		}
	}
	return cursor.NewPage(rows, page.Limit, func(n notification.Notification) (time.Time, string) { return n.CreatedAt, n.ID.String() }), nil
}

// decode reads the notification's data from its stored JSON.
func decode(n *notification.Notification) error {
	if err := json.Unmarshal(n.RawData, &n.Data); err != nil {
		return fmt.Errorf("notification: decode data: %w", err)
	}
	return nil
}

const unreadQuery = `SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL`

// UnreadCount counts a user's unread notifications.
func (s *Store) UnreadCount(ctx context.Context, userID uuid.UUID) (int, error) {
	var n int
	err := s.db.GetContext(ctx, &n, unreadQuery, userID)
	return n, err
}

const hasNewQuery = `SELECT EXISTS (SELECT 1 FROM notifications WHERE user_id = $1 AND read_at IS NULL)`

// HasNew reports whether a user has at least one unread notification.
func (s *Store) HasNew(ctx context.Context, userID uuid.UUID) (bool, error) {
	var b bool
	err := s.db.GetContext(ctx, &b, hasNewQuery, userID)
	return b, err
}

const markReadQuery = `UPDATE notifications SET read_at = COALESCE(read_at, now())
WHERE id = $1 AND user_id = $2 RETURNING ` + columns

// MarkRead marks one of the user's notifications read (reading it again keeps the first time).
func (s *Store) MarkRead(ctx context.Context, userID, id uuid.UUID) (notification.Notification, error) {
	var n notification.Notification
	err := s.db.GetContext(ctx, &n, markReadQuery, id, userID)
	if postgres.IsNoRows(err) {
		return n, notification.ErrNotFound
	}
	if err != nil {
		return n, fmt.Errorf("notification: mark read: %w", err)
	}
	return n, decode(&n)
}

const readAllQuery = `UPDATE notifications SET read_at = now() WHERE user_id = $1 AND read_at IS NULL`

// ReadAll marks every unread notification of the user read and returns how many.
func (s *Store) ReadAll(ctx context.Context, userID uuid.UUID) (int64, error) {
	res, err := s.db.ExecContext(ctx, readAllQuery, userID)
	if err != nil {
		return 0, fmt.Errorf("notification: read all: %w", err)
	}
	return res.RowsAffected()
}
