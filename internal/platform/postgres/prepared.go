package postgres

import (
	"context"
	"database/sql"
	"sync"

	"github.com/jmoiron/sqlx"
)

// DB is a connection pool whose queries run as prepared statements: each distinct query text is
// parsed and planned once per connection, then only bound and executed. On the order path,
// planning was close to half of Postgres's time per statement.
//
// The sqlx helpers (sqlx.GetContext, SelectContext…) go through the methods below, so stores
// taking sqlx interfaces get prepared statements without knowing it. Methods reached through
// the embedded *sqlx.DB (db.Get, db.Exec…) run unprepared.
type DB struct {
	*sqlx.DB
	stmts   sync.Map // query text → *sqlx.Stmt
	priming sync.Map // query text → struct{}, while a background prepare runs
}

func (db *DB) stmt(ctx context.Context, query string) (*sqlx.Stmt, error) {
	if s, ok := db.stmts.Load(query); ok {
		return s.(*sqlx.Stmt), nil
	}
	s, err := db.DB.PreparexContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := db.stmts.LoadOrStore(query, s); loaded {
		s.Close()
		return prev.(*sqlx.Stmt), nil
	}
	return s, nil
}

// QueryContext runs query as a prepared statement.
func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	s, err := db.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return s.QueryContext(ctx, args...)
}

// QueryxContext runs query as a prepared statement.
func (db *DB) QueryxContext(ctx context.Context, query string, args ...any) (*sqlx.Rows, error) {
	s, err := db.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return s.QueryxContext(ctx, args...)
}

// QueryRowxContext runs query as a prepared statement. A query that cannot be prepared runs
// unprepared, so its error reaches the caller through the row.
func (db *DB) QueryRowxContext(ctx context.Context, query string, args ...any) *sqlx.Row {
	s, err := db.stmt(ctx, query)
	if err != nil {
		return db.DB.QueryRowxContext(ctx, query, args...)
	}
	return s.QueryRowxContext(ctx, args...)
}

// ExecContext runs query as a prepared statement.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	s, err := db.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return s.ExecContext(ctx, args...)
}

// Close closes the prepared statements and the pool.
func (db *DB) Close() error {
	db.stmts.Range(func(_, s any) bool {
		s.(*sqlx.Stmt).Close()
		return true
	})
	return db.DB.Close()
}

// BeginTxx starts a transaction whose queries use the pool's prepared statements.
func (db *DB) BeginTxx(ctx context.Context, opts *sql.TxOptions) (*Tx, error) {
	tx, err := db.DB.BeginTxx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &Tx{Tx: tx, db: db}, nil
}

// Tx is a transaction running the pool's prepared statements on its connection.
type Tx struct {
	*sqlx.Tx
	db *DB
}

// stmt returns the transaction's handle on query's prepared statement, or nil when the pool
// has none yet. Preparing on the pool needs a second connection, and a transaction waiting for
// one while every connection is held by other transactions would never get it; so the first
// use runs unprepared and the statement is prepared in the background for the next.
func (tx *Tx) stmt(ctx context.Context, query string) *sqlx.Stmt {
	if s, ok := tx.db.stmts.Load(query); ok {
		return tx.Tx.StmtxContext(ctx, s.(*sqlx.Stmt))
	}
	if _, busy := tx.db.priming.LoadOrStore(query, struct{}{}); !busy {
		go func() {
			defer tx.db.priming.Delete(query)
			_, _ = tx.db.stmt(context.Background(), query)
		}()
	}
	return nil
}

// QueryContext runs query as a prepared statement in the transaction.
func (tx *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if s := tx.stmt(ctx, query); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return tx.Tx.QueryContext(ctx, query, args...)
}

// QueryxContext runs query as a prepared statement in the transaction.
func (tx *Tx) QueryxContext(ctx context.Context, query string, args ...any) (*sqlx.Rows, error) {
	if s := tx.stmt(ctx, query); s != nil {
		return s.QueryxContext(ctx, args...)
	}
	return tx.Tx.QueryxContext(ctx, query, args...)
}

// QueryRowxContext runs query as a prepared statement in the transaction.
func (tx *Tx) QueryRowxContext(ctx context.Context, query string, args ...any) *sqlx.Row {
	if s := tx.stmt(ctx, query); s != nil {
		return s.QueryRowxContext(ctx, args...)
	}
	return tx.Tx.QueryRowxContext(ctx, query, args...)
}

// ExecContext runs query as a prepared statement in the transaction.
func (tx *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s := tx.stmt(ctx, query); s != nil {
		return s.ExecContext(ctx, args...)
	}
	return tx.Tx.ExecContext(ctx, query, args...)
}

// SelectContext and GetContext keep sqlx's helpers on the prepared path.
func (tx *Tx) SelectContext(ctx context.Context, dest any, query string, args ...any) error {
	return sqlx.SelectContext(ctx, tx, dest, query, args...)
}

// GetContext is sqlx.GetContext on the prepared path.
func (tx *Tx) GetContext(ctx context.Context, dest any, query string, args ...any) error {
	return sqlx.GetContext(ctx, tx, dest, query, args...)
}

// SelectContext is sqlx.SelectContext on the prepared path.
func (db *DB) SelectContext(ctx context.Context, dest any, query string, args ...any) error {
	return sqlx.SelectContext(ctx, db, dest, query, args...)
}

// GetContext is sqlx.GetContext on the prepared path.
func (db *DB) GetContext(ctx context.Context, dest any, query string, args ...any) error {
	return sqlx.GetContext(ctx, db, dest, query, args...)
}
