package orderdb

import (
	"slices"
	"testing"

	"github.com/dispatchhq/dispatch/internal/testenv"
)

// The lookups by key keep to their key's index in the plan PostgreSQL keeps once it stops
// planning each call, even when it makes that plan before any table was analyzed: then a
// `deleted_at IS NULL` in the statement made it scan a whole partial list index for one order
// (2,700 orders in, 985 buffers per call), for as long as the connection lived.
func TestLookupsByKeyUseTheKeyBeforeAnyAnalyze(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	const id, intent = `'00000000-0000-0000-0000-000000000000'`, `'pi_none'`
	for _, c := range []struct {
		name, query, arg string
		orders, payments []string
	}{
		{"get", getQuery, id, []string{"orders_pkey"}, []string{"payments_pkey"}},
		{"lock", getQuery + ` FOR UPDATE OF o`, id, []string{"orders_pkey"}, []string{"payments_pkey"}},
		{"get by intent", getByIntentQuery, intent, []string{"orders_pkey"}, []string{"payments_payment_intent_id_key"}},
		{"lock by intent", getByIntentQuery + ` FOR UPDATE OF o`, intent, []string{"orders_pkey"}, []string{"payments_payment_intent_id_key"}},
	} {
		plan := testenv.GenericPlan(t, db, c.query, c.arg)
		if got := testenv.ScansIn(plan, "orders"); !slices.Equal(got, c.orders) {
			t.Errorf("%s reads orders through %v, want %v:\n%s", c.name, got, c.orders, plan)
		}
		if got := testenv.ScansIn(plan, "payments"); !slices.Equal(got, c.payments) {
			t.Errorf("%s reads payments through %v, want %v:\n%s", c.name, got, c.payments, plan)
		}
	}
	args := []string{id, `'PENDING'`, `NULL`, `'PAID'`}
	for range 18 {
		args = append(args, `NULL`)
	}
	plan := testenv.GenericPlan(t, db, saveQueries[0][0], args...)
	if got := testenv.ScansIn(plan, "orders"); !slices.Equal(got, []string{"orders_pkey"}) {
		t.Errorf("save reads orders through %v, want its key:\n%s", got, plan)
	}
}
