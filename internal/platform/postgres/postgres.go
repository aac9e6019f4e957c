// Package postgres opens the sqlx pool, runs transactions and classifies driver errors.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Open connects to url and checks the connection.
//
// Unless the URL says otherwise, lib/pq runs with binary_parameters=yes: a query with
// parameters then costs one round trip (parse, bind and execute sent together) instead of two.
// Byte-slice parameters travel in binary, so only bytea columns may receive []byte.
func Open(ctx context.Context, dsn string, maxConns int) (*DB, error) {
	pool, err := sqlx.Open("postgres", withBinaryParameters(dsn))
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	pool.SetConnMaxIdleTime(5 * time.Minute)
	db := &DB{pool: pool}
	db.SetMaxConns(maxConns)
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("postgres: ping: %w", err)
	}
	return db, nil
}

func withBinaryParameters(dsn string) string { return withDefault(dsn, "binary_parameters", "yes") }

// Named gives a URL's connections the application_name name (as pg_stat_activity shows them),
// unless the URL names one.
func Named(dsn, name string) string { return withDefault(dsn, "application_name", name) }

// IdleTxLimit has the server end a transaction of the URL's connections that sat idle for d
// (idle_in_transaction_session_timeout), unless the URL sets a limit: a program stopped or cut
// off mid-transaction must not hold its row locks, and everyone waiting behind them, until TCP
// gives up on it. The programs' transactions make no call outside PostgreSQL but the relay's
// batch, which sets a limit of its own, so one left idle that long is never waiting on purpose.
func IdleTxLimit(dsn string, d time.Duration) string {
	return withDefault(dsn, "idle_in_transaction_session_timeout", strconv.FormatInt(d.Milliseconds(), 10))
}

// withDefault sets the URL's query parameter key to value unless it is set. A DSN that is not a
// postgres URL is returned as it is.
func withDefault(dsn, key, value string) string {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return dsn
	}
	q := u.Query()
	if q.Get(key) == "" {
		q.Set(key, value)
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// Relaxed is a WITH item, named relaxed and of one row, that turns synchronous commit off for
// its statement's transaction alone: for bookkeeping whose loss in a server crash costs only a
// repeat (a later durable commit flushes the WAL before it, or a retry redoes it). It runs
// only where the statement reads it (FROM relaxed); money and stock changes never use it.
const Relaxed = `relaxed AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true))`

// WithTx runs fn in a transaction, committing when fn returns nil and rolling back otherwise.
// The commit error is returned: a failed commit means nothing was written. fn must not commit
// or roll back tx itself.
func WithTx(ctx context.Context, db *DB, fn func(tx *Tx) error) (err error) {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
	}()
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		if errors.Is(err, sql.ErrTxDone) && ctx.Err() != nil {
			// ctx ended after fn: database/sql rolled the transaction back itself, and the
			// caller must learn why (a client gone is no server error).
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return fmt.Errorf("postgres: commit: %w", err)
	}
	return nil
}

// EnsureDatabase creates the database named in url when it does not exist. It connects to
// that database first, and to the server's "postgres" database only to create it: a role may
// own its database and have no right to connect to any other.
func EnsureDatabase(ctx context.Context, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("postgres: parse url: %w", err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	if name == "" {
		return errors.New("postgres: the url names no database")
	}
	target, err := Open(ctx, rawURL, 1)
	if err == nil {
		target.Close()
		return nil
	}
	if !IsCode(err, invalidCatalogName) {
		return err
	}
	admin := *u
	admin.Path = "/postgres"
	db, err := Open(ctx, admin.String(), 1)
	if err != nil {
		return fmt.Errorf("postgres: database %s does not exist, and it cannot be created: %w", name, err)
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name))
	// Created meanwhile by another process: 42P04 if it committed first, a unique violation
	// on the catalog if both got past the check at once.
	if IsCode(err, "42P04") || IsCode(err, UniqueViolation) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("postgres: create database %s: %w", name, err)
	}
	return nil
}

// invalidCatalogName is the SQLSTATE of a connection to a database that does not exist.
const invalidCatalogName = "3D000"

// SQLSTATE codes the stores map to domain errors.
const (
	UniqueViolation     = "23505"
	CheckViolation      = "23514"
	ForeignKeyViolation = "23503"
	QueryCanceled       = "57014" // also what a statement canceled with its context ends with
)

// IsCode reports whether err is a PostgreSQL error with SQLSTATE code.
func IsCode(err error, code string) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && string(pqErr.Code) == code
}

// Constraint returns the name of the constraint a PostgreSQL error names, or "".
func Constraint(err error) string {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return pqErr.Constraint
	}
	return ""
}

// IsNoRows reports whether err means a query found no row.
func IsNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
