package testenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// A cluster of the test's own survives a crash (immediate stop) and a fast stop with its data,
// and its database holds the migrated schema.
func TestPGServerRestarts(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPGServer(t)
	db, err := postgres.Open(context.Background(), pg.URL("dispatch"), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO outbox (type, payload) VALUES ('notify:user', '{}')`); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []testenv.PGStopMode{testenv.StopImmediate, testenv.StopFast} {
		pg.Restart(mode)
		var n int
		// The pool's connections died with the server; database/sql opens new ones.
		testenv.Eventually(t, 10*time.Second, "query after a "+mode.String()+" restart", func() bool {
			return db.Get(&n, `SELECT count(*) FROM outbox`) == nil
		})
		if n != 1 {
			t.Fatalf("after a %s restart: %d outbox rows, want 1", mode, n)
		}
	}
}
