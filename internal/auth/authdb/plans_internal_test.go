package authdb

import (
	"testing"

	"github.com/dispatchhq/dispatch/internal/testenv"
)

// The session lookup of every authenticated request that misses the cache reads the session
// and its user by key in the generic plan, even one made before any table was analyzed.
func TestIdentityLookupUsesTheKeysBeforeAnyAnalyze(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	const id = `'00000000-0000-0000-0000-000000000000'`
	testenv.PlanReads(t, db, "the identity lookup", identityQuery, []string{id, id},
		map[string][]string{"sessions": {"sessions_pkey"}, "users": {"users_pkey"}})
}
