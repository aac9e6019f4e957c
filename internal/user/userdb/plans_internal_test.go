package userdb

import (
	"slices"
	"testing"

	"github.com/dispatchhq/dispatch/internal/testenv"
)

// Reading and locking a user by id keep to the primary key in the generic plan, even one made
// before any table was analyzed (see the orders' TestLookupsByKeyUseTheKeyBeforeAnyAnalyze).
func TestLookupsByKeyUseTheKeyBeforeAnyAnalyze(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	for name, query := range map[string]string{"get": getAnyQuery, "lock": lockQuery} {
		plan := testenv.GenericPlan(t, db, query, `'00000000-0000-0000-0000-000000000000'`)
		if got := testenv.ScansIn(plan, "users"); !slices.Equal(got, []string{"users_pkey"}) {
			t.Errorf("%s reads users through %v, want users_pkey:\n%s", name, got, plan)
		}
	}
}
