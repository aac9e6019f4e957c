package httpapi_test

import (
	"testing"

	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// A demo account staff deleted is not seeded again when the API restarts (SPEC §11: seeding
// never changes a user that exists): its known password no longer opens the deployment. The
// others are left as they are, and the seed hashes no password for them.
func TestDeletedDemoAccountsStayDeleted(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	shipper := a.demoAccount(t, "shipper@dispatch.local")
	a.as(demo.AdminEmail).Do("DELETE", "/v1/admin/users/"+shipper.ID, nil, key()...).Expect(t, 204)

	var before []userRow
	for _, email := range []string{demo.AdminEmail, "financial@dispatch.local"} {
		before = append(before, a.userRow(t, a.demoAccount(t, email).ID))
	}
	if err := demo.Seed(testenv.Context(t), a.db, a.svc.Users, a.svc.Catalog, logging.New("seed", a.cfg.LogLevel, "json", &testenv.Buffer{})); err != nil {
		t.Fatal(err)
	}
	if n := a.usersWithEmail(t, shipper.Email, false); n != 1 {
		t.Fatalf("%d users with the shipper's email after a reseed, want the deleted one alone", n)
	}
	a.client(t).Do("POST", "/v1/auth/login", map[string]string{"email": shipper.Email, "password": demo.Password}).
		ExpectError(t, 401, "auth.errors.invalidCredentials")
	for i, email := range []string{demo.AdminEmail, "financial@dispatch.local"} {
		if got := a.userRow(t, a.demoAccount(t, email).ID); got != before[i] {
			t.Fatalf("%s changed by a reseed: %+v → %+v", email, before[i], got)
		}
	}
}
