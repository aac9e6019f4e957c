package server_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/platform/server"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// A readiness check answers even when PostgreSQL stops answering without closing its
// connections (a frozen server, a cut network): the ping on an open connection outlives its
// context there (the driver's cancel request gets no answer either), and readiness used to wait
// for it, so /ready hung instead of answering 503.
func TestCheckAnswersWhileTheDatabaseHangs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, proxy := testenv.DBBehindProxy(t, 2)
	checks := map[string]func(context.Context) error{
		"postgres": db.PingContext,
		"other":    func(context.Context) error { return nil },
	}
	// Each check has a second; a loaded machine may need more than one try to answer in it.
	testenv.Eventually(t, 30*time.Second, "the checks pass before the freeze", func() bool {
		return len(server.Check(ctx, checks)) == 0
	})

	proxy.Freeze() // thawed when the test ends, which lets the hung ping end
	answered := make(chan []string, 1)
	go func() { answered <- server.Check(ctx, checks) }()
	select {
	case failed := <-answered:
		if !slices.Equal(failed, []string{"postgres"}) {
			t.Fatalf("failed checks %v, want [postgres]", failed)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Check still waits for a database that stopped answering")
	}
}
