package catalogdb

import (
	"slices"
	"testing"

	"github.com/dispatchhq/dispatch/internal/testenv"
)

// Reading and locking an item by id keep to the primary key in the generic plan, even one made
// before any table was analyzed (see the orders' TestLookupsByKeyUseTheKeyBeforeAnyAnalyze).
func TestLookupsByKeyUseTheKeyBeforeAnyAnalyze(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	for _, c := range []struct{ name, query, args string }{
		{"get", getQuery, "false"},
		{"lock", lockQuery, ""},
	} {
		args := []string{`'00000000-0000-0000-0000-000000000000'`}
		if c.args != "" {
			args = append(args, c.args)
		}
		plan := testenv.GenericPlan(t, db, c.query, args...)
		if got := testenv.ScansIn(plan, "items"); !slices.Equal(got, []string{"items_pkey"}) {
			t.Errorf("%s reads items through %v, want items_pkey:\n%s", c.name, got, plan)
		}
	}
}
