package catalog

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

// Store is the persistence the service needs (implemented by catalogdb).
type Store interface {
	Insert(ctx context.Context, db postgres.Querier, it *Item) error
	Get(ctx context.Context, db postgres.Querier, id uuid.UUID, includeDeleted bool) (Item, error)
	Lock(ctx context.Context, tx postgres.Querier, id uuid.UUID) (Item, error)
	Update(ctx context.Context, tx postgres.Querier, it *Item) error
	SoftDelete(ctx context.Context, db sqlx.ExecerContext, id uuid.UUID) error
	List(ctx context.Context, db postgres.Querier, f Filter, page cursor.Request) ([]Item, error)
}

// Service changes and reads items; every change invalidates the cache after its commit.
type Service struct {
	db    *postgres.DB
	store Store
	idem  *idempotency.Store
	Cache *Cache
}

// NewService wires the catalog service.
func NewService(db *postgres.DB, store Store, cache *Cache, idem *idempotency.Store) *Service {
	return &Service{db: db, store: store, idem: idem, Cache: cache}
}

// Idempotency recovery points: the item's insert or update committed. A retry of the request
// after a crash that lost its stored response answers with the item as it is now, instead of
// a second item, or stock set again over what orders took since.
const (
	RecoveryItemCreated = "item_created"
	RecoveryItemChanged = "item_changed"
)

// Create adds an item. claim is the request's idempotency claim (nil without a key).
func (s *Service) Create(ctx context.Context, in Create, claim *idempotency.Claim) (Item, error) {
	if id, ok := claim.Resumed(RecoveryItemCreated); ok {
		s.Cache.Invalidate(ctx, id) // the crash may have come before the first attempt's
		return s.Get(ctx, id, true)
	}
	it, err := in.item()
	if err != nil {
		return Item{}, err
	}
	it.ID = uuid.Must(uuid.NewV7())
	err = postgres.WithTx(ctx, s.db, func(tx *postgres.Tx) error {
		if err := s.store.Insert(ctx, tx, &it); err != nil {
			return err
		}
		return s.idem.Checkpoint(ctx, tx, claim, RecoveryItemCreated, it.ID)
	})
	if err != nil {
		return Item{}, err
	}
	s.Cache.Invalidate(ctx, it.ID)
	return it, nil
}

// Update applies a partial update to a live item. claim is as for Create.
func (s *Service) Update(ctx context.Context, id uuid.UUID, in Update, claim *idempotency.Claim) (Item, error) {
	if done, ok := claim.Resumed(RecoveryItemChanged); ok && done == id {
		s.Cache.Invalidate(ctx, id) // the crash may have come before the first attempt's
		return s.Get(ctx, id, true)
	}
	var it Item
	err := postgres.WithTx(ctx, s.db, func(tx *postgres.Tx) error {
		var err error
		if it, err = s.store.Lock(ctx, tx, id); err != nil {
			return err
		}
		if err := in.apply(&it); err != nil {
			return err
		}
		if err := s.store.Update(ctx, tx, &it); err != nil {
			return err
		}
		return s.idem.Checkpoint(ctx, tx, claim, RecoveryItemChanged, id)
	})
	if err != nil {
		return Item{}, err
	}
	s.Cache.Invalidate(ctx, id)
	return it, nil
}

// Delete soft-deletes a live item. Orders keep their lines' snapshots.
func (s *Service) Delete(ctx context.Context, id uuid.UUID) error {
	err := s.store.SoftDelete(ctx, s.db, id)
	if errors.Is(err, ErrNotFound) {
		// Deleted already, maybe by a try that died before its invalidation: sent again.
		if _, gerr := s.store.Get(ctx, s.db, id, true); gerr == nil {
			s.Cache.Invalidate(ctx, id)
		}
		return err
	}
	if err == nil {
		s.Cache.Invalidate(ctx, id)
	}
	return err
}

// Get returns an item; a deleted one only for the admin view.
func (s *Service) Get(ctx context.Context, id uuid.UUID, includeDeleted bool) (Item, error) {
	return s.store.Get(ctx, s.db, id, includeDeleted)
}

// List returns a page of items.
func (s *Service) List(ctx context.Context, f Filter, page cursor.Request) (cursor.Page[Item], error) {
	items, err := s.store.List(ctx, s.db, f, page)
	if err != nil {
		return cursor.Page[Item]{}, err
	}
	return cursor.NewPage(items, page.Limit, func(it Item) (time.Time, string) { return it.CreatedAt, it.ID.String() }), nil
}
