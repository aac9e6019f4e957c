package notificationdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// Deliveries are written by group commit: a delivery that finds no insert in flight writes at
// once; those that arrive while one is in flight wait for it and then go together, up to
// maxBatch, in one statement and one commit. A quiet worker writes each notification as it
// comes; a busy one writes fewer, larger transactions. Each delivery returns only once its row
// is committed, so a task is never acknowledged before its notification is on disk.
const (
	maxBatch     = 256
	writeTimeout = 10 * time.Second
)

type delivery struct {
	id       uuid.UUID
	userID   uuid.UUID
	event    string
	data     string
	outboxID sql.NullInt64
	at       sql.NullTime

	inserted bool
	err      error
	done     chan struct{}
}

// insertQuery stores deliveries; a row whose outbox row was delivered before is skipped.
const insertQuery = `INSERT INTO notifications (id, user_id, event, data, outbox_id, created_at)
SELECT id, user_id, event, data, outbox_id, COALESCE(at, now())
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::bigint[], $6::timestamptz[])
     AS n(id, user_id, event, data, outbox_id, at)
ON CONFLICT (outbox_id) DO NOTHING
RETURNING id`

// Deliver stores a notification asked for by outbox row outboxID, dated at (when the event
// happened, so the list follows the events; now when zero). A second delivery of the same row
// stores nothing. It reports whether a row was inserted.
func (s *Store) Deliver(ctx context.Context, outboxID int64, at time.Time, userID uuid.UUID, event string, data map[string]any) (bool, error) {
	raw := []byte("{}")
	if data != nil {
		var err error
		if raw, err = json.Marshal(data); err != nil {
			return false, err
		}
	}
	d := &delivery{id: uuid.Must(uuid.NewV7()), userID: userID, event: event, data: string(raw),
		outboxID: sql.NullInt64{Int64: outboxID, Valid: outboxID > 0}, at: sql.NullTime{Time: at, Valid: !at.IsZero()},
		done: make(chan struct{})}
	s.mu.Lock()
	s.queue = append(s.queue, d)
	lead := !s.writing
	s.writing = true
	s.mu.Unlock()
	if lead {
		s.flush()
	}
	select {
	case <-d.done:
		return d.inserted, d.err
	case <-ctx.Done():
		// The row may still be written; its task's retry then finds it and stores nothing.
		return false, ctx.Err()
	}
}

// flush writes one batch from the queue, then hands the rest to a new flush, so that the
// delivery that led returns with its own batch.
func (s *Store) flush() {
	s.mu.Lock()
	n := min(len(s.queue), maxBatch)
	batch := s.queue[:n:n]
	s.queue = s.queue[n:]
	s.mu.Unlock()

	s.write(batch)

	s.mu.Lock()
	s.writing = len(s.queue) > 0
	more := s.writing
	s.mu.Unlock()
	if more {
		go s.flush()
	}
}

// write inserts a batch in one statement. When the statement fails and holds more than one
// row, each row is tried on its own, so that one row (its user deleted meanwhile) cannot fail
// the others.
func (s *Store) write(batch []*delivery) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := s.insert(ctx, batch); err != nil {
		for _, d := range batch {
			d.err = err
			if len(batch) > 1 {
				d.err = s.insert(ctx, []*delivery{d})
			}
		}
	}
	for _, d := range batch {
		close(d.done)
	}
}

func (s *Store) insert(ctx context.Context, batch []*delivery) error {
	n := len(batch)
	ids, users, events, data := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	outboxIDs, ats := make([]sql.NullInt64, n), make([]sql.NullTime, n)
	for i, d := range batch {
		ids[i], users[i], events[i], data[i], outboxIDs[i], ats[i] = d.id.String(), d.userID.String(), d.event, d.data, d.outboxID, d.at
	}
	var inserted []uuid.UUID
	err := s.db.SelectContext(ctx, &inserted, insertQuery, pq.Array(ids), pq.Array(users), pq.Array(events),
		pq.Array(data), pq.Array(outboxIDs), pq.Array(ats))
	if n == 1 && postgres.IsCode(err, postgres.ForeignKeyViolation) {
		return nil // the user is gone: nobody to notify
	}
	if err != nil {
		return fmt.Errorf("notification: insert: %w", err)
	}
	done := make(map[uuid.UUID]bool, len(inserted))
	for _, id := range inserted {
		done[id] = true
	}
	for _, d := range batch {
		d.inserted = done[d.id]
	}
	return nil
}
