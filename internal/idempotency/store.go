// Package idempotency makes POST and PATCH safe to retry (SPEC §7).
//
// A request carrying an Idempotency-Key claims a record scoped by (caller, method, path, key)
// before it runs. The first request holds a lease while it works; a duplicate meanwhile gets
// 409, a replay after it finished gets the stored response, and the same key with a different
// body gets 422. Handlers that write in several steps (order create) save a recovery point in
// the transaction of each step, so a retry after a 5xx or a crash resumes where the first
// attempt stopped instead of doing the work twice.
package idempotency

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// Retention is how long a key is remembered.
const Retention = 24 * time.Hour

// Lease is how long a request holds its key before a duplicate may take over (after a crash).
const Lease = 30 * time.Second

// Started is the recovery point of a request that has written nothing yet.
const Started = "started"

// Scope identifies a key: the caller (user id or "anonymous"), the method, the concrete path
// and the client's key.
type Scope struct {
	Owner, Method, Path, Key string
}

// Claim is a request's hold on its key. RecoveryPoint and ResourceID tell a resumed request
// how far the previous attempt got. Completed is set when the request's last write stored the
// response in its own statement (Completion): nothing is left to store.
//
// A claim made by Defer holds nothing until the request's first write takes the key in its
// own statement (ClaimSQL) or Take claims it the way Begin does.
type Claim struct {
	Scope         Scope
	RecoveryPoint string
	ResourceID    *uuid.UUID
	Completed     bool

	deferred    bool // the key is not held yet
	fingerprint []byte
}

// Defer is a claim on sc that holds nothing yet. Take claims it the way Begin does; or the
// request's first write takes the key in its own statement (ClaimSQL), one round trip and one
// commit fewer, and Take claims it only when that statement finds the key in use or the request
// ends before writing.
func Defer(sc Scope, fingerprint []byte) *Claim {
	return &Claim{Scope: sc, RecoveryPoint: Started, deferred: true, fingerprint: fingerprint}
}

// Held reports whether the claim holds its key: false for a deferred claim not taken yet.
func (c *Claim) Held() bool { return !c.deferred }

// Take claims a deferred claim's key as Begin would: afterwards the claim holds it, at the
// recovery point an earlier attempt reached, or the error says why not (ErrIdemKeyInFlight,
// ErrIdemKeyReused, or a *Replay of the finished request). A held claim is left as it is.
func (s *Store) Take(ctx context.Context, c *Claim) error {
	if c.Held() {
		return nil
	}
	got, replay, err := s.Begin(ctx, c.Scope, c.fingerprint)
	switch {
	case err != nil:
		return err
	case replay != nil:
		return replay
	}
	*c = *got
	return nil
}

// Replay is the stored outcome of a completed request. As an error, it is what a request
// that turned out to be a duplicate ends with: the answer given before.
type Replay struct {
	Status int
	Body   []byte
}

func (r *Replay) Error() string { return fmt.Sprintf("idempotency: answered before with %d", r.Status) }

// Store keeps idempotency records in Postgres.
type Store struct {
	db  *postgres.DB
	key []byte // the fingerprints' HMAC key
}

// NewStore returns a store on db whose fingerprints are keyed by secret, which every replica
// of the API shares.
func NewStore(db *postgres.DB, secret string) *Store {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("dispatch idempotency fingerprint")) // a key of its own, not the secret itself
	return &Store{db: db, key: m.Sum(nil)}
}

// Fingerprint is an HMAC-SHA256 of a request's method, path and canonical body. Keyed, because
// a body may carry a password: a plain hash of it, kept for a day, would let whoever reads the
// table test guesses at the speed of SHA-256 rather than of argon2id.
func (s *Store) Fingerprint(method, path string, body []byte) []byte {
	h := hmac.New(sha256.New, s.key)
	fmt.Fprintf(h, "%s\n%s\n", method, path)
	h.Write(Canonical(body))
	return h.Sum(nil)
}

// beginQuery claims a new key, takes over an expired record, or resumes an in-flight record
// whose lease ran out (a crash) or was released (a 5xx). It returns no row when another request
// holds the key, when it completed, or when the body differs.
//
// Its commit does not wait for the disk (postgres.Relaxed): whatever the request then writes
// commits durably, which flushes the claim first, and a claim lost with nothing after it cost
// nothing.
const beginQuery = `WITH ` + postgres.Relaxed + `
INSERT INTO idempotency_keys (scope, method, path, key, fingerprint, state, locked_until, expires_at)
SELECT $1, $2, $3, $4, $5, 'in_flight', now() + $6 * interval '1 millisecond', now() + $7 * interval '1 millisecond'
FROM relaxed
ON CONFLICT (scope, method, path, key) DO UPDATE SET
    fingerprint     = EXCLUDED.fingerprint,
    state           = 'in_flight',
    locked_until    = EXCLUDED.locked_until,
    recovery_point  = CASE WHEN idempotency_keys.expires_at < now() THEN 'started' ELSE idempotency_keys.recovery_point END,
    resource_id     = CASE WHEN idempotency_keys.expires_at < now() THEN NULL ELSE idempotency_keys.resource_id END,
    expires_at      = CASE WHEN idempotency_keys.expires_at < now() THEN EXCLUDED.expires_at ELSE idempotency_keys.expires_at END,
    response_status = NULL,
    response_body   = NULL,
    updated_at      = now()
WHERE idempotency_keys.expires_at < now()
   OR (idempotency_keys.state = 'in_flight' AND idempotency_keys.fingerprint = EXCLUDED.fingerprint
       AND idempotency_keys.locked_until <= now())
RETURNING recovery_point, resource_id`

const peekQuery = `SELECT fingerprint, state, response_status, response_body, locked_until
FROM idempotency_keys WHERE scope = $1 AND method = $2 AND path = $3 AND key = $4`

// Begin claims the key for a request with the given fingerprint. It returns a claim to run
// the request, or a replay of the finished one, or ErrIdemKeyInFlight / ErrIdemKeyReused.
func (s *Store) Begin(ctx context.Context, sc Scope, fingerprint []byte) (*Claim, *Replay, error) {
	for attempt := 0; attempt < 3; attempt++ {
		var got struct {
			RecoveryPoint string     `db:"recovery_point"`
			ResourceID    *uuid.UUID `db:"resource_id"`
		}
		err := s.db.GetContext(ctx, &got, beginQuery, sc.Owner, sc.Method, sc.Path, sc.Key, fingerprint,
			Lease.Milliseconds(), Retention.Milliseconds())
		if err == nil {
			return &Claim{Scope: sc, RecoveryPoint: got.RecoveryPoint, ResourceID: got.ResourceID}, nil, nil
		}
		if !postgres.IsNoRows(err) {
			return nil, nil, fmt.Errorf("idempotency: begin: %w", err)
		}
		var rec struct {
			Fingerprint []byte     `db:"fingerprint"`
			State       string     `db:"state"`
			Status      *int       `db:"response_status"`
			Body        []byte     `db:"response_body"`
			LockedUntil *time.Time `db:"locked_until"`
		}
		err = s.db.GetContext(ctx, &rec, peekQuery, sc.Owner, sc.Method, sc.Path, sc.Key)
		if postgres.IsNoRows(err) {
			continue // abandoned meanwhile: try to claim again
		}
		if err != nil {
			return nil, nil, fmt.Errorf("idempotency: peek: %w", err)
		}
		switch {
		case string(rec.Fingerprint) != string(fingerprint):
			return nil, nil, apperr.ErrIdemKeyReused
		case rec.State == "completed" && rec.Status != nil:
			return nil, &Replay{Status: *rec.Status, Body: rec.Body}, nil
		default:
			wait := time.Second
			if rec.LockedUntil != nil {
				wait = max(time.Until(*rec.LockedUntil), time.Second)
			}
			return nil, nil, apperr.ErrIdemKeyInFlight.WithRetryAfter(wait)
		}
	}
	// Other requests with the key kept claiming and releasing it (each refused, say): one of
	// them holds it, in effect, and this one may try again in a moment.
	return nil, nil, apperr.ErrIdemKeyInFlight.WithRetryAfter(time.Second)
}

// CheckpointSQL is the UPDATE that records a recovery point, run only when the condition cond
// (SQL) holds: a statement that writes a step records its checkpoint in the same round trip,
// only if the step was written. Point.Args are its parameters $n to $n+5 for a held claim.
func CheckpointSQL(n int, cond string) string {
	return fmt.Sprintf(`UPDATE idempotency_keys SET recovery_point = $%d, resource_id = $%d, updated_at = now()
WHERE scope = $%d AND method = $%d AND path = $%d AND key = $%d AND %s`, n+4, n+5, n, n+1, n+2, n+3, cond)
}

var checkpointQuery = CheckpointSQL(1, "true")

// ClaimSQL is the INSERT that takes a deferred claim's key in the statement of the request's
// first write, at the recovery point when the condition cond (SQL) holds (the step was
// written) and at Started otherwise (the write was refused; the 4xx then forgets the key). A
// key in use is left alone and the INSERT returns no row: the statement must condition every
// write of its own on the row it returns. Point.Args are its parameters $n to $n+8 for a
// deferred claim (Point.Takes).
func ClaimSQL(n int, cond string) string {
	return fmt.Sprintf(`INSERT INTO idempotency_keys (scope, method, path, key, fingerprint, state, locked_until, expires_at, recovery_point, resource_id)
SELECT $%[1]d, $%[2]d, $%[3]d, $%[4]d, $%[5]d, 'in_flight', now() + $%[6]d * interval '1 millisecond', now() + $%[7]d * interval '1 millisecond',
    CASE WHEN %[10]s THEN $%[8]d ELSE '`+Started+`' END, CASE WHEN %[10]s THEN $%[9]d::uuid END
ON CONFLICT (scope, method, path, key) DO NOTHING
RETURNING true AS taken`, n, n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8, cond)
}

// Point is a recovery point a claim is to reach in a step's statement (CheckpointSQL).
type Point struct {
	claim *Claim
	name  string
	id    uuid.UUID
}

// At is the recovery point name with the resource id; on a nil claim (a request without a key)
// it is a point whose checkpoint updates nothing.
func (c *Claim) At(name string, resourceID uuid.UUID) Point {
	return Point{claim: c, name: name, id: resourceID}
}

// Takes reports whether the point's statement must take the key (ClaimSQL) rather than record
// a checkpoint (CheckpointSQL): the claim is deferred.
func (p Point) Takes() bool { return p.claim != nil && p.claim.deferred }

// Args are the parameters of the point's statement: the nine of ClaimSQL when it Takes, else
// the six of CheckpointSQL. A nil claim's scope is NULL, which no key matches.
func (p Point) Args() []any {
	switch {
	case p.claim == nil:
		return []any{nil, nil, nil, nil, p.name, p.id}
	case p.Takes():
		sc := p.claim.Scope
		return []any{sc.Owner, sc.Method, sc.Path, sc.Key, p.claim.fingerprint,
			Lease.Milliseconds(), Retention.Milliseconds(), p.name, p.id}
	}
	sc := p.claim.Scope
	return []any{sc.Owner, sc.Method, sc.Path, sc.Key, p.name, p.id}
}

// Took tells a deferred claim its statement took the key; it stays at Started until Reached.
func (p Point) Took() {
	if p.claim != nil {
		p.claim.deferred = false
	}
}

// Reached tells the claim its step committed (and, if deferred, took the key).
func (p Point) Reached() {
	if p.claim != nil {
		p.Took()
		p.claim.RecoveryPoint, p.claim.ResourceID = p.name, &p.id
	}
}

// Resumed reports whether an earlier attempt of the claim's request committed its change at
// point, and the resource it changed: the retry answers from that resource as it is now rather
// than change it again. A nil claim (a request without a key) resumes nothing.
func (c *Claim) Resumed(point string) (uuid.UUID, bool) {
	if c == nil || c.RecoveryPoint != point || c.ResourceID == nil {
		return uuid.Nil, false
	}
	return *c.ResourceID, true
}

// Checkpoint records how far the request got, in the transaction that got it there. A request
// without a key (nil claim) records nothing.
func (s *Store) Checkpoint(ctx context.Context, tx sqlx.ExecerContext, c *Claim, point string, resourceID uuid.UUID) error {
	if c == nil {
		return nil
	}
	p := c.At(point, resourceID)
	if _, err := tx.ExecContext(ctx, checkpointQuery, p.Args()...); err != nil {
		return fmt.Errorf("idempotency: checkpoint: %w", err)
	}
	p.Reached()
	return nil
}

// CompleteSQL is the statement part that stores a request's response, for the request's last
// write to run in its own statement (a WITH item): the response then commits with the write.
// Completion.Args are its parameters $n to $n+5. A non-empty from ("FROM item ") joins another
// WITH item: the response is stored only if that item returned a row.
func CompleteSQL(n int, from string) string {
	return fmt.Sprintf(`UPDATE idempotency_keys SET state = 'completed', response_status = $%d, response_body = $%d,
locked_until = NULL, updated_at = now() %sWHERE scope = $%d AND method = $%d AND path = $%d AND key = $%d`,
		n+4, n+5, from, n, n+1, n+2, n+3)
}

var (
	completeQuery        = CompleteSQL(1, "")
	completeRelaxedQuery = `WITH ` + postgres.Relaxed + "\n" + CompleteSQL(1, "FROM relaxed ")
)

// Completion is a response that a claim is to store in a write's statement (CompleteSQL).
type Completion struct {
	claim  *Claim
	status int
	body   []byte
}

// Completion is the response status and body to store; on a nil claim (a request without a
// key) it is a completion that stores nothing.
func (c *Claim) Completion(status int, body []byte) Completion {
	return Completion{claim: c, status: status, body: body}
}

// Args are the six parameters of CompleteSQL. A nil claim's scope is NULL, which no key matches.
func (c Completion) Args() []any {
	if c.claim == nil {
		return []any{nil, nil, nil, nil, nil, nil}
	}
	sc := c.claim.Scope
	return []any{sc.Owner, sc.Method, sc.Path, sc.Key, c.status, c.body}
}

// Stored tells the claim its response committed.
func (c Completion) Stored() {
	if c.claim != nil {
		c.claim.Completed = true
	}
}

// Complete stores the response; later duplicates replay it. A request past a recovery point
// stores it without waiting for the disk: its writes committed durably with the checkpoint,
// and should a server crash lose the response, a retry resumes there and answers from what
// was written. A request without one (nothing to resume from) waits for the disk.
func (s *Store) Complete(ctx context.Context, c *Claim, status int, body []byte) error {
	sc := c.Scope
	_, err := s.db.ExecContext(ctx, c.completeQuery(), sc.Owner, sc.Method, sc.Path, sc.Key, status, body)
	return wrap("complete", err)
}

func (c *Claim) completeQuery() string {
	if c.RecoveryPoint == Started {
		return completeQuery
	}
	return completeRelaxedQuery
}

// releaseQuery and abandonQuery end a lease early; losing either in a crash only leaves the
// lease to run out, so they do not wait for the disk.
const releaseQuery = `WITH ` + postgres.Relaxed + `
UPDATE idempotency_keys SET locked_until = now(), updated_at = now() FROM relaxed
WHERE scope = $1 AND method = $2 AND path = $3 AND key = $4 AND state = 'in_flight'`

// Release ends the lease but keeps the recovery point, so a retry resumes at once.
func (s *Store) Release(ctx context.Context, c *Claim) error {
	sc := c.Scope
	_, err := s.db.ExecContext(ctx, releaseQuery, sc.Owner, sc.Method, sc.Path, sc.Key)
	return wrap("release", err)
}

const abandonQuery = `WITH ` + postgres.Relaxed + `
DELETE FROM idempotency_keys USING relaxed
WHERE scope = $1 AND method = $2 AND path = $3 AND key = $4 AND state = 'in_flight' AND recovery_point = 'started'`

// Abandon forgets a request that wrote nothing (a 4xx): the key may be used again.
func (s *Store) Abandon(ctx context.Context, c *Claim) error {
	sc := c.Scope
	res, err := s.db.ExecContext(ctx, abandonQuery, sc.Owner, sc.Method, sc.Path, sc.Key)
	if err != nil {
		return wrap("abandon", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return s.Release(ctx, c) // it got past a recovery point: keep it for a retry
	}
	return nil
}

const deleteExpiredQuery = `DELETE FROM idempotency_keys WHERE expires_at < $1`

// DeleteExpired removes records past retention.
func (s *Store) DeleteExpired(ctx context.Context, now time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, deleteExpiredQuery, now)
	if err != nil {
		return 0, wrap("delete expired", err)
	}
	return res.RowsAffected()
}

func wrap(op string, err error) error {
	if err != nil {
		return fmt.Errorf("idempotency: %s: %w", op, err)
	}
	return nil
}
