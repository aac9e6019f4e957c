package user

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/i18n"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

// Store is the persistence the service needs (implemented by userdb).
type Store interface {
	Insert(ctx context.Context, db postgres.Querier, u *User) error
	Get(ctx context.Context, db postgres.Querier, id uuid.UUID) (User, error)
	Lock(ctx context.Context, tx postgres.Querier, id uuid.UUID) (User, error)
	Update(ctx context.Context, tx postgres.Querier, u *User) error
	SoftDelete(ctx context.Context, tx sqlx.ExecerContext, id uuid.UUID) error
	List(ctx context.Context, db postgres.Querier, f Filter, page cursor.Request) ([]User, error)
}

// Service changes users. Every change writes its Stripe Customer sync row to the outbox in the
// same transaction; changes that must end access (role, password, deletion) revoke sessions in
// that transaction too and put them on the denylist after the commit.
type Service struct {
	db    *postgres.DB
	store Store
	auth  *auth.Service
	idem  *idempotency.Store
	wake  *outbox.Waker
	log   *slog.Logger
}

// NewService wires the users service.
func NewService(db *postgres.DB, store Store, a *auth.Service, idem *idempotency.Store, wake *outbox.Waker, log *slog.Logger) *Service {
	return &Service{db: db, store: store, auth: a, idem: idem, wake: wake, log: log}
}

// Idempotency recovery points: the account's insert or update committed. A retry of the
// request after a crash that lost its stored response answers with the account as it is now,
// instead of "email already exists" for the account it created. (A user's own password change
// ends the session that made it, so its retry never gets this far: authentication answers 401.)
const (
	RecoveryUserCreated = "user_created"
	RecoveryUserChanged = "user_changed"
)

// SignUp creates a customer account. claim is the request's idempotency claim (nil without a
// key), as for every change below.
func (s *Service) SignUp(ctx context.Context, in SignUp, claim *idempotency.Claim) (User, error) {
	return s.create(ctx, in, auth.RoleUser, claim)
}

// CreateByAdmin creates an account with a role strictly below the actor's.
func (s *Service) CreateByAdmin(ctx context.Context, actor auth.Principal, in AdminCreate, claim *idempotency.Claim) (User, error) {
	role := auth.RoleUser
	if in.Role != nil {
		var v apperr.Validation
		validateRole(&v, "role", *in.Role)
		if err := v.Err(); err != nil {
			return User{}, err
		}
		role = auth.Role(*in.Role)
	}
	if !actor.Role.Outranks(role) {
		return User{}, ErrRoleNotAllowed.With("role", role)
	}
	return s.create(ctx, in.SignUp, role, claim)
}

// Provision creates an account with any role, without level checks: for trusted callers only
// (demo data, operators' tooling), never reachable from a request.
func (s *Service) Provision(ctx context.Context, in SignUp, role auth.Role) (User, error) {
	return s.create(ctx, in, role, nil)
}

func (s *Service) create(ctx context.Context, in SignUp, role auth.Role, claim *idempotency.Claim) (User, error) {
	if id, ok := claim.Resumed(RecoveryUserCreated); ok {
		return s.store.Get(ctx, s.db, id)
	}
	in.normalize()
	var v apperr.Validation
	in.validate(&v)
	if err := v.Err(); err != nil {
		return User{}, err
	}
	hash, err := s.auth.Hasher.Hash(ctx, in.Password)
	if err != nil {
		return User{}, err
	}
	u := User{ID: uuid.Must(uuid.NewV7()), Name: in.Name, Email: in.Email, PasswordHash: hash, Role: role,
		Language: i18n.English, Address: in.Address}
	if in.Language != nil {
		u.Language = *in.Language
	}
	err = s.wake.InTx(ctx, func(tx *postgres.Tx) error {
		if err := s.store.Insert(ctx, tx, &u); err != nil {
			return err
		}
		if err := s.idem.Checkpoint(ctx, tx, claim, RecoveryUserCreated, u.ID); err != nil {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Message{Type: tasks.CustomerCreate, Payload: tasks.Customer{UserID: u.ID}})
	})
	return u, err
}

// Get returns a live user.
func (s *Service) Get(ctx context.Context, id uuid.UUID) (User, error) {
	return s.store.Get(ctx, s.db, id)
}

// List returns a page of live users.
func (s *Service) List(ctx context.Context, f Filter, page cursor.Request) (cursor.Page[User], error) {
	if f.Role != "" {
		var v apperr.Validation
		validateRole(&v, "role", f.Role)
		if err := v.Err(); err != nil {
			return cursor.Page[User]{}, err
		}
	}
	rows, err := s.store.List(ctx, s.db, f, page)
	if err != nil {
		return cursor.Page[User]{}, err
	}
	return cursor.NewPage(rows, page.Limit, func(u User) (t time.Time, id string) { return u.CreatedAt, u.ID.String() }), nil
}

// UpdateSelf applies a user's own changes. A new password needs the current one. Checking the
// current password and hashing the new one happen before the transaction, so no connection or
// row lock is held through argon2id; the transaction then requires the hash it was checked
// against to be the user's still (a password changed meanwhile makes the one given no longer
// current).
func (s *Service) UpdateSelf(ctx context.Context, actor auth.Principal, in Update, claim *idempotency.Claim) (User, error) {
	if id, ok := claim.Resumed(RecoveryUserChanged); ok && id == actor.UserID {
		return s.store.Get(ctx, s.db, id)
	}
	in.normalize()
	kept, err := in.check(nil, s.emailOf(ctx, actor.UserID))
	if err != nil {
		return User{}, err
	}
	var checked, hash string
	if in.Password != nil {
		if in.CurrentPassword == nil {
			return User{}, ErrWrongPassword
		}
		u, err := s.store.Get(ctx, s.db, actor.UserID)
		if err != nil {
			return User{}, err
		}
		ok, err := s.auth.Hasher.Verify(ctx, *in.CurrentPassword, u.PasswordHash)
		if err != nil {
			return User{}, err
		}
		if !ok {
			return User{}, ErrWrongPassword
		}
		if hash, err = s.hash(ctx, in.Password); err != nil {
			return User{}, err
		}
		checked = u.PasswordHash
	}
	return s.update(ctx, actor.UserID, claim, func(u *User) error {
		if in.Password != nil && u.PasswordHash != checked {
			return ErrWrongPassword
		}
		if err := keptEmail(in.Email, kept, u.Email); err != nil {
			return err
		}
		apply(u, in.Name, in.Email, in.Language, hash, in.Address)
		return nil
	})
}

// UpdateByAdmin changes a user whose level is strictly below the actor's; a new role must be
// strictly below the actor's too.
func (s *Service) UpdateByAdmin(ctx context.Context, actor auth.Principal, id uuid.UUID, in AdminUpdate, claim *idempotency.Claim) (User, error) {
	if done, ok := claim.Resumed(RecoveryUserChanged); ok && done == id {
		return s.store.Get(ctx, s.db, id)
	}
	upd := Update{Name: in.Name, Email: in.Email, Language: in.Language, Address: in.Address, Password: in.Password}
	upd.normalize()
	kept, err := upd.check(func(v *apperr.Validation) {
		if in.Role != nil {
			validateRole(v, "role", *in.Role)
		}
	}, s.emailOf(ctx, id))
	if err != nil {
		return User{}, err
	}
	hash, err := s.hash(ctx, upd.Password) // before the transaction, as in UpdateSelf
	if err != nil {
		return User{}, err
	}
	return s.update(ctx, id, claim, func(u *User) error {
		if !actor.Role.Outranks(u.Role) {
			return ErrRankTooLow
		}
		if in.Role != nil {
			role := auth.Role(*in.Role)
			if !actor.Role.Outranks(role) {
				return ErrRoleNotAllowed.With("role", role)
			}
			u.Role = role
		}
		if err := keptEmail(upd.Email, kept, u.Email); err != nil {
			return err
		}
		apply(u, upd.Name, upd.Email, upd.Language, hash, upd.Address)
		return nil
	})
}

// emailOf reads the user's email, for an update's check of an email the rules refuse.
func (s *Service) emailOf(ctx context.Context, id uuid.UUID) func() (string, error) {
	return func() (string, error) {
		u, err := s.store.Get(ctx, s.db, id)
		return u.Email, err
	}
}

// hash returns the hash of a new password, or "" when there is none.
func (s *Service) hash(ctx context.Context, password *string) (string, error) {
	if password == nil {
		return "", nil
	}
	return s.auth.Hasher.Hash(ctx, *password)
}

// apply sets the given fields on u, and the password hash when not "".
func apply(u *User, name, email, lang *string, hash string, addr *Address) {
	if name != nil {
		u.Name = *name
	}
	if email != nil {
		u.Email = *email
	}
	if lang != nil {
		u.Language = *lang
	}
	if addr != nil {
		u.Address = addr
	}
	if hash != "" {
		u.PasswordHash = hash
	}
}

// update locks the user, lets change mutate it, saves it with its outbox row and the request's
// recovery point, and revokes the user's sessions when the role or the password changed. A new
// language reaches the user's next request at once (auth.Service.Forget).
func (s *Service) update(ctx context.Context, id uuid.UUID, claim *idempotency.Claim, change func(*User) error) (User, error) {
	var (
		u           User
		revoked     []uuid.UUID
		newLanguage bool
	)
	err := s.wake.InTx(ctx, func(tx *postgres.Tx) error {
		var err error
		if u, err = s.store.Lock(ctx, tx, id); err != nil {
			return err
		}
		before := u
		if err := change(&u); err != nil {
			return err
		}
		if err := s.store.Update(ctx, tx, &u); err != nil {
			return err
		}
		if err := s.idem.Checkpoint(ctx, tx, claim, RecoveryUserChanged, u.ID); err != nil {
			return err
		}
		newLanguage = u.Language != before.Language
		if u.Role != before.Role || u.PasswordHash != before.PasswordHash {
			if revoked, err = s.auth.RevokeUser(ctx, tx, u.ID, "credentials changed"); err != nil {
				return err
			}
		}
		return outbox.Write(ctx, tx, outbox.Message{Type: tasks.CustomerUpdate, Payload: tasks.Customer{UserID: u.ID}})
	})
	if err != nil {
		return User{}, err
	}
	s.auth.Deny(ctx, revoked...)
	if newLanguage {
		s.auth.Forget(u.ID)
	}
	return u, nil
}

// DeleteSelf soft-deletes the caller's account.
func (s *Service) DeleteSelf(ctx context.Context, actor auth.Principal) error {
	return s.delete(ctx, actor.UserID, nil)
}

// DeleteByAdmin soft-deletes a user whose level is strictly below the actor's.
func (s *Service) DeleteByAdmin(ctx context.Context, actor auth.Principal, id uuid.UUID) error {
	return s.delete(ctx, id, func(u User) error {
		if !actor.Role.Outranks(u.Role) {
			return ErrRankTooLow
		}
		return nil
	})
}

func (s *Service) delete(ctx context.Context, id uuid.UUID, allowed func(User) error) error {
	var revoked []uuid.UUID
	err := s.wake.InTx(ctx, func(tx *postgres.Tx) error {
		u, err := s.store.Lock(ctx, tx, id)
		if err != nil {
			return err
		}
		if allowed != nil {
			if err := allowed(u); err != nil {
				return err
			}
		}
		if err := s.store.SoftDelete(ctx, tx, id); err != nil {
			return err
		}
		if revoked, err = s.auth.RevokeUser(ctx, tx, id, "user deleted"); err != nil {
			return err
		}
		return outbox.Write(ctx, tx, outbox.Message{Type: tasks.CustomerDelete, Payload: tasks.Customer{UserID: id}})
	})
	if errors.Is(err, ErrNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	s.auth.Deny(ctx, revoked...)
	return nil
}
