package postgres_test

import (
	"testing"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// Named connections show in pg_stat_activity under the program's name; a name the URL gives
// wins.
func TestConnectionsCarryTheProgramsName(t *testing.T) {
	_, url := testenv.DB(t)
	for _, c := range []struct{ url, want string }{
		{postgres.Named(url, "dispatch-api"), "dispatch-api"},
		{postgres.Named(postgres.Named(url, "reporting"), "dispatch-api"), "reporting"},
	} {
		db, err := postgres.Open(testenv.Context(t), c.url, 1)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		err = db.GetContext(testenv.Context(t), &got, `SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()`)
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s: application_name %q, want %q", c.url, got, c.want)
		}
	}
	if got := postgres.Named("host=db user=x", "dispatch-api"); got != "host=db user=x" {
		t.Errorf("a key=value DSN was changed: %q", got)
	}
}
