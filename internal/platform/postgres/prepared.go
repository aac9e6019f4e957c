package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
)

// DB is a connection pool whose queries run as prepared statements: each distinct query text is
// parsed and planned once per connection, then only bound and executed. On the order path,
// planning was close to half of Postgres's time per statement.
//
// DB does not embed *sqlx.DB: every query method it has takes the prepared path and a place in
// the pool's queue (queue.go), and there is no method that skips them to reach by accident.
// Pool returns the bare pool for what needs it.
type DB struct {
	pool    *sqlx.DB
	queue   atomic.Pointer[queue] // admits callers to the pool in order
	waits   atomic.Int64          // in the queue
	waited  atomic.Int64          // nanoseconds, in the queue
	stmts   sync.Map              // query text → *sqlx.Stmt
	priming sync.Map              // query text → struct{}, while a background prepare runs

	// mu guards closed; background prepares are counted in bg so Close waits for them.
	mu     sync.RWMutex
	closed bool
	bg     sync.WaitGroup
}

// Querier runs statements on the pool (DB) or in a transaction (Tx): what the stores take. Its
// reads scan inside the call, so no connection stays taken by rows handed out.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	GetContext(ctx context.Context, dest any, query string, args ...any) error
	SelectContext(ctx context.Context, dest any, query string, args ...any) error
}

// Pool is the underlying sqlx pool, unprepared and outside the queue: for tests' own
// connections and figures, not for queries or sizing (SetMaxConns).
func (db *DB) Pool() *sqlx.DB { return db.pool }

// PingContext checks that the database answers. It does not wait in the pool's queue: a
// readiness check answers whether PostgreSQL does, not how long the line is. It takes a
// connection for one round trip, and a caller admitted meanwhile waits for that in the pool.
// A connection the server closed (a restart) fails its ping and is dropped; the ping then
// tries the next, up to the idle ones and a new one, so that a server that is back is not
// reported down once per connection it closed (lib/pq reports every failed ping so). A dead
// connection that hangs instead (a host gone without a reset) still fails the check.
func (db *DB) PingContext(ctx context.Context) error {
	var err error
	for range db.pool.Stats().Idle + 1 {
		if err = db.pool.PingContext(ctx); !errors.Is(err, driver.ErrBadConn) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

func (db *DB) stmt(ctx context.Context, query string) (*sqlx.Stmt, error) {
	if s, ok := db.stmts.Load(query); ok {
		return s.(*sqlx.Stmt), nil
	}
	s, err := db.pool.PreparexContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := db.stmts.LoadOrStore(query, s); loaded {
		s.Close()
		return prev.(*sqlx.Stmt), nil
	}
	return s, nil
}

// prime prepares query in the background unless a prepare of it runs already or the pool is
// closing. Close waits for the prepares in flight.
func (db *DB) prime(query string) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return
	}
	if _, busy := db.priming.LoadOrStore(query, struct{}{}); busy {
		return
	}
	db.bg.Add(1)
	go func() {
		defer db.bg.Done()
		defer db.priming.Delete(query)
		q, _ := db.enter(context.Background())
		defer q.leave()
		_, _ = db.stmt(context.Background(), query)
	}()
}

// rows is the pool's side that hands rows to its caller, which holds a connection until it has
// read them. It is unexported: only GetContext and SelectContext use it, through sqlx's helpers,
// which scan inside the call, so every connection taken from DB is given back before the method
// that took it returns.
type rows DB

// QueryContext runs query as a prepared statement.
func (r *rows) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	s, err := (*DB)(r).stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return s.QueryContext(ctx, args...)
}

// QueryxContext runs query as a prepared statement.
func (r *rows) QueryxContext(ctx context.Context, query string, args ...any) (*sqlx.Rows, error) {
	s, err := (*DB)(r).stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return s.QueryxContext(ctx, args...)
}

// QueryRowxContext runs query as a prepared statement. A query that cannot be prepared runs
// unprepared, so its error reaches the caller through the row.
func (r *rows) QueryRowxContext(ctx context.Context, query string, args ...any) *sqlx.Row {
	s, err := (*DB)(r).stmt(ctx, query)
	if err != nil {
		return r.pool.QueryRowxContext(ctx, query, args...)
	}
	return s.QueryRowxContext(ctx, args...)
}

// ExecContext runs query as a prepared statement. A query that cannot be prepared (several
// statements in one string, as scripts and tests send) runs unprepared, which also reports
// the error of a query that is wrong.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	q, err := db.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer q.leave()
	s, err := db.stmt(ctx, query)
	if err != nil {
		return db.pool.ExecContext(ctx, query, args...)
	}
	return s.ExecContext(ctx, args...)
}

// Exec is ExecContext without a deadline (scripts and tests).
func (db *DB) Exec(query string, args ...any) (sql.Result, error) {
	return db.ExecContext(context.Background(), query, args...)
}

// Get is GetContext without a deadline (scripts and tests).
func (db *DB) Get(dest any, query string, args ...any) error {
	return db.GetContext(context.Background(), dest, query, args...)
}

// Select is SelectContext without a deadline (scripts and tests).
func (db *DB) Select(dest any, query string, args ...any) error {
	return db.SelectContext(context.Background(), dest, query, args...)
}

// ErrCloseTimedOut is what Close answers when the server did not let it finish in time.
var ErrCloseTimedOut = errors.New("postgres: close gave up waiting for the server")

// closeWait bounds Close.
const closeWait = 5 * time.Second

// Close waits for the background prepares, closes the prepared statements and the pool. Each
// statement's close is a round trip (database/sql closes them on every connection), so against
// a server that stopped answering without closing its connections (frozen, cut off) it would
// wait for TCP to give up, many minutes, and a program's shutdown with it: Close gives up after
// closeWait and leaves the connections to the process's exit.
func (db *DB) Close() error {
	db.mu.Lock()
	db.closed = true
	db.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		db.bg.Wait()
		db.stmts.Range(func(_, s any) bool {
			s.(*sqlx.Stmt).Close()
			return true
		})
		done <- db.pool.Close()
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(closeWait):
		return ErrCloseTimedOut
	}
}

// BeginTxx starts a transaction whose queries use the pool's prepared statements. It holds its
// place in the pool's queue until Commit or Rollback, one of which must be called.
func (db *DB) BeginTxx(ctx context.Context, opts *sql.TxOptions) (*Tx, error) {
	q, err := db.enter(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := db.pool.BeginTxx(ctx, opts)
	if err != nil {
		q.leave()
		return nil, err
	}
	t := &Tx{tx: tx, db: db, place: q}
	t.held.Store(true)
	return t, nil
}

// Tx is a transaction running the pool's prepared statements on its connection. Like DB, it
// does not embed its sqlx type, so no query method of it skips the prepared path.
type Tx struct {
	tx        *sqlx.Tx
	db        *DB
	place     *queue
	held      atomic.Bool // until the first Commit or Rollback
	committed []func()    // AfterCommit's, run by a Commit that succeeded
}

// Commit commits the transaction, then runs what AfterCommit deferred to it.
func (tx *Tx) Commit() error {
	defer tx.leave()
	if err := tx.tx.Commit(); err != nil {
		return err
	}
	for _, fn := range tx.committed {
		fn()
	}
	return nil
}

// AfterCommit runs fn once q's work has committed: after the commit of q's transaction, never
// if it rolls back or its commit fails; at once when q is not a transaction (a statement on
// its own has committed when it returns). For what must count only what was written, such as
// metrics. It must not be called concurrently with q's Commit.
func AfterCommit(q Querier, fn func()) {
	if tx, ok := q.(*Tx); ok {
		tx.committed = append(tx.committed, fn)
		return
	}
	fn()
}

// Rollback aborts the transaction; after Commit it does nothing (sql.ErrTxDone).
func (tx *Tx) Rollback() error {
	defer tx.leave()
	return tx.tx.Rollback()
}

func (tx *Tx) leave() {
	if tx.held.Swap(false) {
		tx.place.leave()
	}
}

// stmt returns the transaction's handle on query's prepared statement, or nil when the pool
// has none yet. Preparing on the pool needs a second connection, and a transaction waiting for
// one while every connection is held by other transactions would never get it; so the first
// use runs unprepared and the statement is prepared in the background for the next.
func (tx *Tx) stmt(ctx context.Context, query string) *sqlx.Stmt {
	if s, ok := tx.db.stmts.Load(query); ok {
		return tx.tx.StmtxContext(ctx, s.(*sqlx.Stmt))
	}
	tx.db.prime(query)
	return nil
}

// QueryContext runs query as a prepared statement in the transaction.
func (tx *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if s := tx.stmt(ctx, query); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return tx.tx.QueryContext(ctx, query, args...)
}

// QueryxContext runs query as a prepared statement in the transaction.
func (tx *Tx) QueryxContext(ctx context.Context, query string, args ...any) (*sqlx.Rows, error) {
	if s := tx.stmt(ctx, query); s != nil {
		return s.QueryxContext(ctx, args...)
	}
	return tx.tx.QueryxContext(ctx, query, args...)
}

// QueryRowxContext runs query as a prepared statement in the transaction.
func (tx *Tx) QueryRowxContext(ctx context.Context, query string, args ...any) *sqlx.Row {
	if s := tx.stmt(ctx, query); s != nil {
		return s.QueryRowxContext(ctx, args...)
	}
	return tx.tx.QueryRowxContext(ctx, query, args...)
}

// ExecContext runs query as a prepared statement in the transaction.
func (tx *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s := tx.stmt(ctx, query); s != nil {
		return s.ExecContext(ctx, args...)
	}
	return tx.tx.ExecContext(ctx, query, args...)
}

// SelectContext is sqlx.SelectContext on the prepared path.
func (tx *Tx) SelectContext(ctx context.Context, dest any, query string, args ...any) error {
	return sqlx.SelectContext(ctx, tx, dest, query, args...)
}

// GetContext is sqlx.GetContext on the prepared path.
func (tx *Tx) GetContext(ctx context.Context, dest any, query string, args ...any) error {
	return sqlx.GetContext(ctx, tx, dest, query, args...)
}

// SelectContext is sqlx.SelectContext on the prepared path.
func (db *DB) SelectContext(ctx context.Context, dest any, query string, args ...any) error {
	q, err := db.enter(ctx)
	if err != nil {
		return err
	}
	defer q.leave()
	return sqlx.SelectContext(ctx, (*rows)(db), dest, query, args...)
}

// GetContext is sqlx.GetContext on the prepared path.
func (db *DB) GetContext(ctx context.Context, dest any, query string, args ...any) error {
	q, err := db.enter(ctx)
	if err != nil {
		return err
	}
	defer q.leave()
	return sqlx.GetContext(ctx, (*rows)(db), dest, query, args...)
}

// Exec is ExecContext without a deadline (scripts and tests).
func (tx *Tx) Exec(query string, args ...any) (sql.Result, error) {
	return tx.ExecContext(context.Background(), query, args...)
}

// Get is GetContext without a deadline (scripts and tests).
func (tx *Tx) Get(dest any, query string, args ...any) error {
	return tx.GetContext(context.Background(), dest, query, args...)
}

// Select is SelectContext without a deadline (scripts and tests).
func (tx *Tx) Select(dest any, query string, args ...any) error {
	return tx.SelectContext(context.Background(), dest, query, args...)
}
