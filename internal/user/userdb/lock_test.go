package userdb_test

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/internal/user"
	"github.com/dispatchhq/dispatch/internal/user/userdb"
)

// A lock that waited for another change of the user reads the address that change wrote: two
// overlapping changes of one account (the user's name, an admin's role, a new address) keep
// each other's fields. Before, the waiter read the address from before the wait and wrote it
// back over the new one.
func TestALockTakenAfterWaitingReadsTheAddressCommittedMeanwhile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := testenv.DB(t)
	store := userdb.Store{}
	u := user.User{ID: uuid.New(), Name: "Lock", Email: "lock@example.com", PasswordHash: "x", Role: auth.RoleUser, Language: "en",
		Address: &user.Address{Line1: "1 Old Road", City: "Lisbon", State: "LX", PostalCode: "1000-001", Country: "PT"}}
	if err := store.Insert(ctx, db, &u); err != nil {
		t.Fatal(err)
	}

	holder, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback()
	moved, err := store.Lock(ctx, holder, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	var renamed user.User
	waited := testenv.Blocked(t, db, func(tx *postgres.Tx) error {
		got, err := store.Lock(ctx, tx, u.ID)
		if err != nil {
			return err
		}
		got.Name = "Renamed"
		if err := store.Update(ctx, tx, &got); err != nil {
			return err
		}
		renamed = got
		return tx.Commit()
	})
	moved.Address = &user.Address{Line1: "2 New Street", City: "Porto", State: "PO", PostalCode: "4000-001", Country: "PT"}
	if err := store.Update(ctx, holder, &moved); err != nil {
		t.Fatal(err)
	}
	if err := holder.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := waited(); err != nil {
		t.Fatal(err)
	}
	if renamed.Address == nil || renamed.Address.Line1 != "2 New Street" {
		t.Fatalf("the waiter read address %+v, want the one committed while it waited", renamed.Address)
	}
	got, err := store.Get(ctx, db, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "Renamed" || got.Address == nil || got.Address.Line1 != "2 New Street" {
		t.Fatalf("after both changes: %s at %+v, want Renamed at 2 New Street", got.Name, got.Address)
	}
}
