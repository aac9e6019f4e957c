// Package catalogdb holds all SQL of items, including stock reservation and release.
package catalogdb

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

// Store is the items table. It is stateless; every method takes the connection or
// transaction to run on.
type Store struct{}

const columns = `id, name, description, price, currency, stock, price_payment_id, created_at, updated_at, deleted_at`

const insertQuery = `INSERT INTO items (id, name, description, price, currency, stock, price_payment_id)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING created_at, updated_at`

// Insert adds it, filling its timestamps.
func (Store) Insert(ctx context.Context, db postgres.Querier, it *catalog.Item) error {
	return mapErr("insert", db.GetContext(ctx, it, insertQuery,
		it.ID, it.Name, it.Description, it.Price, it.Currency, it.Stock, it.PricePaymentID))
}

const getQuery = `SELECT ` + columns + ` FROM items WHERE id = $1 AND (deleted_at IS NULL OR $2)`

// Get returns an item; a deleted one only when includeDeleted.
func (Store) Get(ctx context.Context, db postgres.Querier, id uuid.UUID, includeDeleted bool) (catalog.Item, error) {
	var it catalog.Item
	err := db.GetContext(ctx, &it, getQuery, id, includeDeleted)
	return it, mapErr("get", err)
}

// lockQuery leaves deleted items out in Go, not in SQL: on tables not analyzed yet, a generic
// plan of `id = $1 AND deleted_at IS NULL` scanned the whole partial list index
// (docs/decisions.md, "Lookups by key").
const lockQuery = `SELECT ` + columns + ` FROM items WHERE id = $1 FOR UPDATE`

// Lock reads a live item and locks it for the transaction.
func (Store) Lock(ctx context.Context, tx postgres.Querier, id uuid.UUID) (catalog.Item, error) {
	var it catalog.Item
	if err := tx.GetContext(ctx, &it, lockQuery, id); err != nil {
		return catalog.Item{}, mapErr("lock", err)
	}
	if it.DeletedAt != nil {
		return catalog.Item{}, catalog.ErrNotFound
	}
	return it, nil
}

const updateQuery = `UPDATE items SET name = $2, description = $3, price = $4, currency = $5, stock = $6,
price_payment_id = $7, updated_at = now() WHERE id = $1 AND deleted_at IS NULL RETURNING updated_at`

// Update saves it.
func (Store) Update(ctx context.Context, tx postgres.Querier, it *catalog.Item) error {
	return mapErr("update", tx.GetContext(ctx, &it.UpdatedAt, updateQuery,
		it.ID, it.Name, it.Description, it.Price, it.Currency, it.Stock, it.PricePaymentID))
}

const softDeleteQuery = `UPDATE items SET deleted_at = now(), updated_at = now() WHERE id = $1 AND deleted_at IS NULL`

// SoftDelete marks a live item deleted.
func (Store) SoftDelete(ctx context.Context, db sqlx.ExecerContext, id uuid.UUID) error {
	res, err := db.ExecContext(ctx, softDeleteQuery, id)
	if err != nil {
		return mapErr("soft delete", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return catalog.ErrNotFound
	}
	return nil
}

// List returns a page of items, newest first.
func (Store) List(ctx context.Context, db postgres.Querier, f catalog.Filter, page cursor.Request) ([]catalog.Item, error) {
	var q postgres.Query
	if !f.IncludeDeleted {
		q.Where("deleted_at IS NULL")
	}
	if f.Name != "" {
		q.Where("name ILIKE " + q.Arg(postgres.Contains(f.Name)))
	}
	if f.Description != "" {
		q.Where("description ILIKE " + q.Arg(postgres.Contains(f.Description)))
	}
	if page.After != nil {
		q.Keyset("created_at", "id", page.After.At, page.After.ID, false)
	}
	query := `SELECT ` + columns + ` FROM items` + q.WhereSQL() + ` ORDER BY created_at DESC, id DESC LIMIT ` + q.Arg(page.Limit+1)
	var items []catalog.Item
	err := db.SelectContext(ctx, &items, query, q.Args...)
	return items, mapErr("list", err)
}

func mapErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case postgres.IsNoRows(err):
		return catalog.ErrNotFound
	default:
		return fmt.Errorf("catalogdb: %s: %w", op, err)
	}
}
