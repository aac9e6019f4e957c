package user

import (
	"context"
	"errors"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// CustomerStore is what the Stripe Customer sync reads and writes (implemented by userdb).
type CustomerStore interface {
	GetAny(ctx context.Context, db postgres.Querier, id uuid.UUID) (User, error)
	SetStripeCustomer(ctx context.Context, db sqlx.ExecerContext, id uuid.UUID, customerID string) (bool, error)
	StripeCustomerID(ctx context.Context, db postgres.Querier, id uuid.UUID) (string, error)
}

// CustomerSync keeps each user's Stripe Customer in step with the account: the payments-queue
// tasks written by sign-up, update and deletion call it. Every method may run twice, in any
// order relative to the others, and still leaves one customer per user.
type CustomerSync struct {
	db      *postgres.DB
	store   CustomerStore
	gateway payment.Gateway
}

// NewCustomerSync returns the sync.
func NewCustomerSync(db *postgres.DB, store CustomerStore, gateway payment.Gateway) *CustomerSync {
	return &CustomerSync{db: db, store: store, gateway: gateway}
}

// Create makes the user's Stripe Customer unless it exists (or the user is gone), and gives it
// the account's details.
func (c *CustomerSync) Create(ctx context.Context, id uuid.UUID) error {
	u, err := c.store.GetAny(ctx, c.db, id)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return err
	case u.DeletedAt != nil: // an earlier try may have made the customer and died before storing it
		return c.Delete(ctx, id)
	case u.StripeCustomerID != "": // made by a try that may have failed before its update
		return c.gateway.UpdateCustomer(ctx, u.StripeCustomerID, params(u))
	}
	cid, err := c.create(ctx, u.ID)
	if err != nil {
		return err
	}
	// The user may have been deleted during the Stripe call, and the delete task, finding no
	// customer then, done: the customer and its personal data would stay at Stripe. A deletion
	// that commits after this read is the delete task's, which then finds the id.
	if u, err = c.store.GetAny(ctx, c.db, id); err != nil {
		return err
	}
	if u.DeletedAt != nil {
		return c.Delete(ctx, id)
	}
	return c.gateway.UpdateCustomer(ctx, cid, params(u))
}

// Update copies the account to its Stripe Customer, creating it if the create has not run yet.
func (c *CustomerSync) Update(ctx context.Context, id uuid.UUID) error {
	u, err := c.store.GetAny(ctx, c.db, id)
	if errors.Is(err, ErrNotFound) || (err == nil && u.DeletedAt != nil) {
		return nil
	}
	if err != nil {
		return err
	}
	if u.StripeCustomerID == "" {
		return c.Create(ctx, id)
	}
	return c.gateway.UpdateCustomer(ctx, u.StripeCustomerID, params(u))
}

// create makes the user's Stripe Customer, or gets back the one made before: one idempotency
// key per user, so a concurrent create (from an update that ran first) or a retry gets the same
// customer from Stripe. Stripe refuses a key sent again with other parameters, so the create
// sends only what never changes (the user id); the account's details follow in an update. The
// id is stored, unless one is already.
func (c *CustomerSync) create(ctx context.Context, id uuid.UUID) (string, error) {
	cid, err := c.gateway.CreateCustomer(ctx, payment.CustomerParams{UserID: id.String()}, "user-"+id.String()+"-customer")
	if err != nil {
		return "", err
	}
	_, err = c.store.SetStripeCustomer(ctx, c.db, id, cid)
	return cid, err
}

// Delete removes the Stripe Customer of a deleted user. A user live again by the time it runs
// (restored in SQL, docs/decisions.md) keeps theirs. With no customer stored, a create may have
// made one at Stripe and died before storing it: the create is sent again under its key, which
// gets that customer back (or makes one, with no personal data), and it goes too.
func (c *CustomerSync) Delete(ctx context.Context, id uuid.UUID) error {
	u, err := c.store.GetAny(ctx, c.db, id)
	if errors.Is(err, ErrNotFound) || (err == nil && u.DeletedAt == nil) {
		return nil
	}
	if err != nil {
		return err
	}
	cid := u.StripeCustomerID
	if cid == "" {
		cid, err = c.create(ctx, id)
		if errors.Is(err, payment.ErrRejected) {
			return nil // refused for good: there is no customer to delete
		}
		if err != nil {
			return err
		}
	}
	if err := c.gateway.DeleteCustomer(ctx, cid); err != nil && !errors.Is(err, payment.ErrNotFound) {
		return err
	}
	return nil
}

// StripeCustomerID returns the user's Stripe Customer id, "" while none is known.
func (c *CustomerSync) StripeCustomerID(ctx context.Context, id uuid.UUID) (string, error) {
	return c.store.StripeCustomerID(ctx, c.db, id)
}

func params(u User) payment.CustomerParams {
	p := payment.CustomerParams{UserID: u.ID.String(), Name: u.Name, Email: u.Email}
	if a := u.Address; a != nil {
		p.Address = &payment.Address{Line1: a.Line1, City: a.City, State: a.State, PostalCode: a.PostalCode, Country: a.Country}
		if a.Line2 != nil {
			p.Address.Line2 = *a.Line2
		}
	}
	return p
}
