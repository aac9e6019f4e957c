package postgres

import (
	"context"
	"database/sql"
	"time"
)

// queue admits callers to the pool, as many at once as the pool has connections, the longest
// waiting first. database/sql hands a freed connection to a waiter picked at random, so once
// the pool is full a request can be passed over again and again: the tail of the latency
// (docs/performance.md, fourteenth and fifteenth passes). Blocked senders on a channel are
// served in the order they came. Every method of DB that takes a connection takes a place
// first and gives it back when the connection is back in the pool; a Tx holds its place until
// Commit or Rollback. So the pool itself has no waiter but, for a round trip, one admitted
// while a readiness check (PingContext) holds a connection.
type queue struct{ places chan struct{} }

func newQueue(n int) *queue { return &queue{places: make(chan struct{}, n)} }

func (q *queue) leave() { <-q.places }

// enter takes a place in the pool's queue, waiting in line while every place is taken, or gives
// up with ctx; the queue returned is the one to leave. Waits are counted as database/sql counts
// its own: each as it starts, its time as it ends, whether with a place or with ctx.
func (db *DB) enter(ctx context.Context) (*queue, error) {
	q := db.queue.Load()
	select {
	case q.places <- struct{}{}:
		return q, nil
	default:
	}
	db.waits.Add(1)
	start := time.Now()
	defer func() { db.waited.Add(int64(time.Since(start))) }()
	select {
	case q.places <- struct{}{}:
		return q, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// SetMaxConns sets how many connections the pool opens and how many callers it admits at once.
// Callers already admitted leave the queue they entered.
func (db *DB) SetMaxConns(n int) {
	db.pool.SetMaxOpenConns(n)
	db.pool.SetMaxIdleConns(n)
	db.queue.Store(newQueue(n))
}

// Stats is the pool's figures with the queue's waits in them: WaitCount and WaitDuration count
// a caller's wait for a connection, in the queue or (for what bypasses it) in the pool.
func (db *DB) Stats() sql.DBStats {
	s := db.pool.Stats()
	s.WaitCount += db.waits.Load()
	s.WaitDuration += time.Duration(db.waited.Load())
	return s
}
