// Package authdb holds the SQL of sessions.
package authdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// ErrNotFound means no live session matched.
var ErrNotFound = errors.New("authdb: session not found")

// Session is a row of sessions.
type Session struct {
	ID               uuid.UUID  `db:"id"`
	UserID           uuid.UUID  `db:"user_id"`
	RefreshTokenHash []byte     `db:"refresh_token_hash"`
	ExpiresAt        time.Time  `db:"expires_at"`
	RevokedAt        *time.Time `db:"revoked_at"`
	UserAgent        string     `db:"user_agent"`
	IP               string     `db:"ip"`
	Replay
	// ReplayFresh tells whether the last rotation is within the window Lock was given, by the
	// database's clock, which stamped it.
	ReplayFresh bool `db:"replay_fresh"`
}

// Replay is what the last rotation made with an Idempotency-Key left for a retry of it: the
// hashes of the refresh token it took and of its key, and its answer, sealed.
type Replay struct {
	TokenHash []byte `db:"replay_token_hash"`
	KeyHash   []byte `db:"replay_key_hash"`
	Sealed    []byte `db:"replay_answer"`
}

// Identity is what authorizes a request: the live user behind a live session.
type Identity struct {
	UserID   uuid.UUID `db:"user_id"`
	Role     string    `db:"role"`
	Language string    `db:"language"`
}

// openQuery inserts the session only while its user is live with the password hash and role
// the login checked. FOR SHARE waits for a change of the user in flight and then reads the
// row it left: a change revokes the sessions it finds, and this one would come after it.
const openQuery = `INSERT INTO sessions (id, user_id, refresh_token_hash, expires_at, user_agent, ip)
SELECT $1, u.id, $3, $4, $5, $6 FROM users u
WHERE u.id = $2 AND u.password_hash = $7 AND u.role = $8 AND u.deleted_at IS NULL
FOR SHARE`

// Open inserts a session for a user still as a login found it (same password hash and role,
// not deleted), and reports whether it did.
func Open(ctx context.Context, db postgres.Querier, s Session, passwordHash, role string) (bool, error) {
	res, err := db.ExecContext(ctx, openQuery, s.ID, s.UserID, s.RefreshTokenHash, s.ExpiresAt, s.UserAgent, s.IP,
		passwordHash, role)
	if err != nil {
		return false, wrap("open", err)
	}
	n, err := res.RowsAffected()
	return n == 1, wrap("open", err)
}

const lockQuery = `SELECT id, user_id, refresh_token_hash, expires_at, revoked_at, user_agent, ip,
  replay_token_hash, replay_key_hash, replay_answer,
  COALESCE(refreshed_at > now() - make_interval(secs => $2), false) AS replay_fresh
FROM sessions WHERE id = $1 FOR UPDATE`

// Lock reads a session (revoked or not) and locks it for the transaction; replayWindow is how
// recent its last rotation must be for ReplayFresh.
func Lock(ctx context.Context, tx postgres.Querier, id uuid.UUID, replayWindow time.Duration) (Session, error) {
	var s Session
	err := tx.GetContext(ctx, &s, lockQuery, id, replayWindow.Seconds())
	return s, wrap("lock", err)
}

const rotateQuery = `UPDATE sessions SET refresh_token_hash = $2, expires_at = $3, refreshed_at = now(),
  replay_token_hash = $4, replay_key_hash = $5, replay_answer = $6
WHERE id = $1 AND revoked_at IS NULL`

// Rotate replaces the session's refresh token hash and expiry, and what a retry of this
// rotation may replay (nothing when r is zero).
func Rotate(ctx context.Context, tx postgres.Querier, id uuid.UUID, hash []byte, expiresAt time.Time, r Replay) error {
	return wrapRows("rotate")(tx.ExecContext(ctx, rotateQuery, id, hash, expiresAt, r.TokenHash, r.KeyHash, r.Sealed))
}

// clearReplay drops what a retry of the last rotation could be given: a revoked session gives
// nothing again.
const clearReplay = `replay_token_hash = NULL, replay_key_hash = NULL, replay_answer = NULL`

const revokeQuery = `UPDATE sessions SET revoked_at = now(), revoke_reason = $2, ` + clearReplay + `
WHERE id = $1 AND revoked_at IS NULL`

// Revoke revokes one session. Revoking a revoked session is not an error.
func Revoke(ctx context.Context, db postgres.Querier, id uuid.UUID, reason string) error {
	_, err := db.ExecContext(ctx, revokeQuery, id, reason)
	return wrap("revoke", err)
}

const revokeUserQuery = `UPDATE sessions SET revoked_at = now(), revoke_reason = $2, ` + clearReplay + `
WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now() RETURNING id`

// RevokeUser revokes every live session of a user and returns their ids.
func RevokeUser(ctx context.Context, db postgres.Querier, userID uuid.UUID, reason string) ([]uuid.UUID, error) {
	var ids []uuid.UUID
	err := db.SelectContext(ctx, &ids, revokeUserQuery, userID, reason)
	return ids, wrap("revoke user", err)
}

// identityQuery finds the session and its user by key and tells whether both are live: with
// `revoked_at IS NULL` and `deleted_at IS NULL` among its conditions, the generic plan made
// while the tables were unanalyzed read users through users_keyset_idx, every live user for
// one (docs/decisions.md, "Lookups by key").
const identityQuery = `SELECT u.id AS user_id, u.role, u.language,
  s.revoked_at IS NULL AND s.expires_at > now() AND u.deleted_at IS NULL AS live
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.id = $1 AND s.user_id = $2`

// IdentityOf returns the live user behind a live session.
func IdentityOf(ctx context.Context, db postgres.Querier, sessionID, userID uuid.UUID) (Identity, error) {
	var r struct {
		Identity
		Live bool `db:"live"`
	}
	if err := db.GetContext(ctx, &r, identityQuery, sessionID, userID); err != nil {
		return Identity{}, wrap("identity", err)
	}
	if !r.Live {
		return Identity{}, ErrNotFound
	}
	return r.Identity, nil
}

const deleteExpiredQuery = `DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1`

// DeleteExpired removes sessions that expired or were revoked before cutoff.
func DeleteExpired(ctx context.Context, db sqlx.ExecerContext, cutoff time.Time) (int64, error) {
	res, err := db.ExecContext(ctx, deleteExpiredQuery, cutoff)
	if err != nil {
		return 0, wrap("delete expired", err)
	}
	return res.RowsAffected()
}

func wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case postgres.IsNoRows(err):
		return ErrNotFound
	default:
		return fmt.Errorf("authdb: %s: %w", op, err)
	}
}

// wrapRows maps an UPDATE that touched no row to ErrNotFound.
func wrapRows(op string) func(sql.Result, error) error {
	return func(res sql.Result, err error) error {
		if err != nil {
			return wrap(op, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	}
}
