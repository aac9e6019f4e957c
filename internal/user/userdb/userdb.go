// Package userdb holds all SQL of users and addresses.
package userdb

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/user"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

type row struct {
	ID               uuid.UUID  `db:"id"`
	Name             string     `db:"name"`
	Email            string     `db:"email"`
	PasswordHash     string     `db:"password_hash"`
	Role             string     `db:"role"`
	Language         string     `db:"language"`
	StripeCustomerID *string    `db:"stripe_customer_id"`
	CreatedAt        time.Time  `db:"created_at"`
	UpdatedAt        time.Time  `db:"updated_at"`
	DeletedAt        *time.Time `db:"deleted_at"`
	Line1            *string    `db:"line1"`
	Line2            *string    `db:"line2"`
	City             *string    `db:"city"`
	State            *string    `db:"state"`
	PostalCode       *string    `db:"postal_code"`
	Country          *string    `db:"country"`
}

func (r row) user() user.User {
	u := user.User{
		ID: r.ID, Name: r.Name, Email: r.Email, PasswordHash: r.PasswordHash, Role: auth.Role(r.Role),
		Language: r.Language, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, DeletedAt: r.DeletedAt,
	}
	if r.StripeCustomerID != nil {
		u.StripeCustomerID = *r.StripeCustomerID
	}
	if r.Line1 != nil {
		u.Address = &user.Address{Line1: *r.Line1, Line2: r.Line2, City: *r.City, State: *r.State,
			PostalCode: *r.PostalCode, Country: *r.Country}
	}
	return u
}

const columns = `u.id, u.name, u.email, u.password_hash, u.role, u.language, u.stripe_customer_id,
u.created_at, u.updated_at, u.deleted_at, a.line1, a.line2, a.city, a.state, a.postal_code, a.country
FROM users u LEFT JOIN addresses a ON a.user_id = u.id`

// Store is the users table. It is stateless; every method takes the connection or
// transaction to run on.
type Store struct{}

const insertQuery = `INSERT INTO users (id, name, email, password_hash, role, language)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at, updated_at`

// Insert adds u (and its address), filling its timestamps.
func (Store) Insert(ctx context.Context, db postgres.Querier, u *user.User) error {
	var at struct {
		Created time.Time `db:"created_at"`
		Updated time.Time `db:"updated_at"`
	}
	err := db.GetContext(ctx, &at, insertQuery, u.ID, u.Name, u.Email, u.PasswordHash, u.Role, u.Language)
	if err != nil {
		return mapErr("insert", err)
	}
	u.CreatedAt, u.UpdatedAt = at.Created, at.Updated
	return Store{}.PutAddress(ctx, db, u.ID, u.Address)
}

const putAddressQuery = `INSERT INTO addresses (user_id, line1, line2, city, state, postal_code, country)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (user_id) DO UPDATE SET line1 = EXCLUDED.line1, line2 = EXCLUDED.line2, city = EXCLUDED.city,
  state = EXCLUDED.state, postal_code = EXCLUDED.postal_code, country = EXCLUDED.country, updated_at = now()`

// PutAddress stores a user's address (nothing when a is nil).
func (Store) PutAddress(ctx context.Context, db postgres.Querier, userID uuid.UUID, a *user.Address) error {
	if a == nil {
		return nil
	}
	_, err := db.ExecContext(ctx, putAddressQuery, userID, a.Line1, a.Line2, a.City, a.State, a.PostalCode, a.Country)
	return mapErr("put address", err)
}

// The lookups by key leave deleted users out in Go, not in SQL: on tables not analyzed yet, a
// generic plan of `id = $1 AND deleted_at IS NULL` scanned the whole partial list index
// (docs/decisions.md, "Lookups by key").
const getAnyQuery = `SELECT ` + columns + ` WHERE u.id = $1`

// Get returns a live user.
func (Store) Get(ctx context.Context, db postgres.Querier, id uuid.UUID) (user.User, error) {
	return live(Store{}.GetAny(ctx, db, id))
}

// GetAny returns a user, deleted or not (the Stripe sync needs deleted ones).
func (Store) GetAny(ctx context.Context, db postgres.Querier, id uuid.UUID) (user.User, error) {
	var r row
	if err := db.GetContext(ctx, &r, getAnyQuery, id); err != nil {
		return user.User{}, mapErr("get any", err)
	}
	return r.user(), nil
}

var lockQuery = `SELECT ` + postgres.VersionColumns("users", "u") + `,
  ` + columns + ` WHERE u.id = $1 FOR UPDATE OF u`

// Lock reads a live user and locks it for the transaction. The address is not locked (it may
// be absent), and it is written with the user's row (Update): a lock that waited across such a
// write reads the user again (postgres.Versions), or it would write back the address it read
// before the wait.
func (Store) Lock(ctx context.Context, tx postgres.Querier, id uuid.UUID) (user.User, error) {
	var r struct {
		row
		postgres.Versions
	}
	if err := tx.GetContext(ctx, &r, lockQuery, id); err != nil {
		return user.User{}, mapErr("lock", err)
	}
	if r.Stale() {
		return Store{}.Get(ctx, tx, id)
	}
	return live(r.user(), nil)
}

func live(u user.User, err error) (user.User, error) {
	if err == nil && u.DeletedAt != nil {
		return user.User{}, user.ErrNotFound
	}
	return u, err
}

const updateQuery = `UPDATE users SET name = $2, email = $3, password_hash = $4, role = $5, language = $6,
updated_at = now() WHERE id = $1 AND deleted_at IS NULL RETURNING updated_at`

// Update saves u's fields (and its address when set).
func (Store) Update(ctx context.Context, tx postgres.Querier, u *user.User) error {
	if err := tx.GetContext(ctx, &u.UpdatedAt, updateQuery, u.ID, u.Name, u.Email, u.PasswordHash, u.Role, u.Language); err != nil {
		return mapErr("update", err)
	}
	return Store{}.PutAddress(ctx, tx, u.ID, u.Address)
}

const softDeleteQuery = `UPDATE users SET deleted_at = now(), updated_at = now() WHERE id = $1 AND deleted_at IS NULL`

// SoftDelete marks a live user deleted.
func (Store) SoftDelete(ctx context.Context, tx sqlx.ExecerContext, id uuid.UUID) error {
	res, err := tx.ExecContext(ctx, softDeleteQuery, id)
	if err != nil {
		return mapErr("soft delete", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return user.ErrNotFound
	}
	return nil
}

const setCustomerQuery = `UPDATE users SET stripe_customer_id = $2 WHERE id = $1 AND stripe_customer_id IS NULL`

// SetStripeCustomer records the user's Stripe Customer id unless one is set already; it reports
// whether it did.
func (Store) SetStripeCustomer(ctx context.Context, db sqlx.ExecerContext, id uuid.UUID, customerID string) (bool, error) {
	res, err := db.ExecContext(ctx, setCustomerQuery, id, customerID)
	if err != nil {
		return false, mapErr("set stripe customer", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

const customerQuery = `SELECT COALESCE(stripe_customer_id, '') FROM users WHERE id = $1`

// StripeCustomerID returns the user's Stripe Customer id, "" when none is known.
func (Store) StripeCustomerID(ctx context.Context, db postgres.Querier, id uuid.UUID) (string, error) {
	var cid string
	err := db.GetContext(ctx, &cid, customerQuery, id)
	return cid, mapErr("stripe customer", err)
}

// List returns a page of live users, newest first.
func (Store) List(ctx context.Context, db postgres.Querier, f user.Filter, page cursor.Request) ([]user.User, error) {
	var q postgres.Query
	q.Where("u.deleted_at IS NULL")
	if f.Name != "" {
		q.Where("u.name ILIKE " + q.Arg(postgres.Contains(f.Name)))
	}
	if f.Email != "" {
		q.Where("u.email ILIKE " + q.Arg(postgres.Contains(f.Email)))
	}
	if f.Role != "" {
		q.Where("u.role = " + q.Arg(f.Role))
	}
	if page.After != nil {
		q.Keyset("u.created_at", "u.id", page.After.At, page.After.ID, false)
	}
	query := `SELECT ` + columns + q.WhereSQL() + ` ORDER BY u.created_at DESC, u.id DESC LIMIT ` + q.Arg(page.Limit+1)
	var rows []row
	if err := db.SelectContext(ctx, &rows, query, q.Args...); err != nil {
		return nil, mapErr("list", err)
	}
	out := make([]user.User, len(rows))
	for i, r := range rows {
		out[i] = r.user()
	}
	return out, nil
}

const registeredQuery = `SELECT EXISTS (SELECT FROM users WHERE lower(email) = lower($1))`

// Registered reports whether an account was ever made with email, deleted ones included. It
// reads every user (the email index holds live ones only): for the demo seed, not for requests.
func (Store) Registered(ctx context.Context, db postgres.Querier, email string) (bool, error) {
	var ok bool
	err := db.GetContext(ctx, &ok, registeredQuery, email)
	return ok, mapErr("registered", err)
}

const credentialsQuery = `SELECT id, password_hash, role, language FROM users
WHERE lower(email) = lower($1) AND deleted_at IS NULL`

// CredentialsByEmail implements auth.CredentialStore.
func (Store) CredentialsByEmail(ctx context.Context, db postgres.Querier, email string) (auth.Credentials, bool, error) {
	var r struct {
		ID       uuid.UUID `db:"id"`
		Hash     string    `db:"password_hash"`
		Role     string    `db:"role"`
		Language string    `db:"language"`
	}
	err := db.GetContext(ctx, &r, credentialsQuery, email)
	if postgres.IsNoRows(err) {
		return auth.Credentials{}, false, nil
	}
	if err != nil {
		return auth.Credentials{}, false, mapErr("credentials", err)
	}
	return auth.Credentials{UserID: r.ID, PasswordHash: r.Hash, Role: auth.Role(r.Role), Language: r.Language}, true, nil
}

// Credentials adapts the store to auth.CredentialStore over one pool.
type Credentials struct{ DB *postgres.DB }

// CredentialsByEmail implements auth.CredentialStore.
func (c Credentials) CredentialsByEmail(ctx context.Context, email string) (auth.Credentials, bool, error) {
	return Store{}.CredentialsByEmail(ctx, c.DB, email)
}

func mapErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case postgres.IsNoRows(err):
		return user.ErrNotFound
	case postgres.IsCode(err, postgres.UniqueViolation) && postgres.Constraint(err) == "users_email_live_key":
		return user.ErrEmailTaken
	default:
		return fmt.Errorf("userdb: %s: %w", op, err)
	}
}
