package catalogdb

import (
	"testing"

	"github.com/dispatchhq/dispatch/internal/testenv"
)

// Reading and locking an item by id keep to the primary key in the generic plan, even one made
// before any table was analyzed (see the orders' TestLookupsByKeyUseTheKeyBeforeAnyAnalyze).
func TestLookupsByKeyUseTheKeyBeforeAnyAnalyze(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	const id = `'00000000-0000-0000-0000-000000000000'`
	want := map[string][]string{"items": {"items_pkey"}}
	testenv.PlanReads(t, db, "get", getQuery, []string{id, "false"}, want)
	testenv.PlanReads(t, db, "lock", lockQuery, []string{id}, want)
}
