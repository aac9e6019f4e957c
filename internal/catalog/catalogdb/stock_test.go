package catalogdb_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/catalog/catalogdb"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// TestReleaseStampsTheDatabasesTime: stock given back stamps updatedAt with the database's clock,
// as every other write of an item does; a replica's clock running behind made it go backwards.
func TestReleaseStampsTheDatabasesTime(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	ctx := testenv.Context(t)
	id := uuid.New()
	if _, err := db.ExecContext(ctx, `INSERT INTO items (id, name, description, price, currency, stock) VALUES ($1, 'Released', 'd', 100, 'usd', 1)`, id); err != nil {
		t.Fatal(err)
	}
	var same bool
	err := postgres.WithTx(ctx, db, func(tx *postgres.Tx) error {
		if err := (catalogdb.Store{}).Release(ctx, tx, []catalog.Reservation{{ItemID: id, Quantity: 2}}); err != nil {
			return err
		}
		return tx.GetContext(ctx, &same, `SELECT updated_at = now() FROM items WHERE id = $1`, id)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !same {
		t.Fatal("the release stamped updatedAt with another clock than the database's")
	}
	var stock int
	if err := db.GetContext(ctx, &stock, `SELECT stock FROM items WHERE id = $1`, id); err != nil || stock != 3 {
		t.Fatalf("stock %d (%v), want 3", stock, err)
	}
}
