package idempotency

import (
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// TestOnlyResumableBookkeepingSkipsTheDisk runs each statement of the store on an in-flight
// claim, in a transaction it rolls back, and reads the commit mode the statement left there:
// the claim, the release and the abandon do not wait for the disk, nor does storing a response
// past a recovery point; storing one with nothing to resume from does, and so does every
// transaction after them.
func TestOnlyResumableBookkeepingSkipsTheDisk(t *testing.T) {
	t.Parallel()
	ctx := testenv.Context(t)
	db, _ := testenv.DB(t)
	sc := Scope{Owner: uuid.NewString(), Method: "POST", Path: "/v1/orders", Key: "relaxed"}
	if _, _, err := NewStore(db, "test").Begin(ctx, sc, []byte("fp")); err != nil {
		t.Fatal(err)
	}
	keyArgs := []any{sc.Owner, sc.Method, sc.Path, sc.Key}
	fresh := []any{sc.Owner, sc.Method, sc.Path, "another"}
	id := uuid.New()
	cases := []struct {
		name  string
		query string
		args  []any
		want  string
	}{
		{"begin", beginQuery, append(fresh, []byte("fp"), Lease.Milliseconds(), Retention.Milliseconds()), "off"},
		{"complete at started", (&Claim{RecoveryPoint: Started}).completeQuery(), append(keyArgs, 201, []byte(`{}`)), "on"},
		{"complete past a recovery point", (&Claim{RecoveryPoint: "order_created", ResourceID: &id}).completeQuery(),
			append(keyArgs, 201, []byte(`{}`)), "off"},
		{"release", releaseQuery, keyArgs, "off"},
		{"abandon", abandonQuery, keyArgs, "off"},
	}
	errRollBack := errors.New("roll back")
	for _, c := range cases {
		var got string
		err := postgres.WithTx(ctx, db, func(tx *postgres.Tx) error {
			res, err := tx.ExecContext(ctx, c.query, c.args...)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n != 1 {
				t.Errorf("%s: %d rows written, want 1", c.name, n)
			}
			if err := tx.GetContext(ctx, &got, `SELECT current_setting('synchronous_commit')`); err != nil {
				return err
			}
			return errRollBack
		})
		if !errors.Is(err, errRollBack) {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: synchronous_commit = %q in its transaction, want %q", c.name, got, c.want)
		}
	}
	var after string
	if err := db.GetContext(ctx, &after, `SELECT current_setting('synchronous_commit')`); err != nil {
		t.Fatal(err)
	}
	if after != "on" {
		t.Fatalf("synchronous_commit after the statements' transactions = %q, want on", after)
	}
}
