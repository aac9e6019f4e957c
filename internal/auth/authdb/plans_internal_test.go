package authdb

import (
	"slices"
	"testing"

	"github.com/dispatchhq/dispatch/internal/testenv"
)

// The session lookup of every authenticated request that misses the cache reads the session
// and its user by key in the generic plan, even one made before any table was analyzed.
func TestIdentityLookupUsesTheKeysBeforeAnyAnalyze(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	const id = `'00000000-0000-0000-0000-000000000000'`
	plan := testenv.GenericPlan(t, db, identityQuery, id, id)
	for table, want := range map[string][]string{"sessions": {"sessions_pkey"}, "users": {"users_pkey"}} {
		if got := testenv.ScansIn(plan, table); !slices.Equal(got, want) {
			t.Errorf("the identity lookup reads %s through %v, want %v:\n%s", table, got, want, plan)
		}
	}
}
