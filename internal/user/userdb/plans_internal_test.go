package userdb

import (
	"testing"

	"github.com/dispatchhq/dispatch/internal/testenv"
)

// Reading and locking a user by id keep to the primary key in the generic plan, even one made
// before any table was analyzed (see the orders' TestLookupsByKeyUseTheKeyBeforeAnyAnalyze).
func TestLookupsByKeyUseTheKeyBeforeAnyAnalyze(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	id, want := []string{`'00000000-0000-0000-0000-000000000000'`}, map[string][]string{"users": {"users_pkey"}}
	testenv.PlanReads(t, db, "get", getAnyQuery, id, want)
	// A lock reads the user's row a second time, as its snapshot holds it (postgres.Versions).
	testenv.PlanReads(t, db, "lock", lockQuery, id, map[string][]string{"users": {"users_pkey", "users_pkey"}})
}
