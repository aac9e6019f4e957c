package notificationdb_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/notification/notificationdb"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/internal/user"
	"github.com/dispatchhq/dispatch/internal/user/userdb"
)

// setup is a store on a fresh database with one user to notify.
func setup(t *testing.T) (context.Context, *postgres.DB, *notificationdb.Store, uuid.UUID) {
	t.Helper()
	db, _ := testenv.DB(t)
	return testenv.Context(t), db, notificationdb.New(db), newUser(t, db)
}

func newUser(t *testing.T, db *postgres.DB) uuid.UUID {
	t.Helper()
	u := user.User{ID: uuid.New(), Name: "Notified", Email: uuid.NewString() + "@example.com", PasswordHash: "x", Role: auth.RoleUser, Language: "en"}
	if err := (userdb.Store{}).Insert(context.Background(), db, &u); err != nil {
		t.Fatal(err)
	}
	return u.ID
}

type result struct {
	inserted bool
	err      error
}

// TestDeliveriesWaitingShareOneCommit holds the first delivery's insert on a lock and queues
// more behind it, then lets go: the queued deliveries are written together in one transaction,
// no delivery returns before its row is committed, and one delivered again stores nothing.
// Then one queued delivery for a user that does not exist fails the batch's statement: the
// others are stored all the same, and it stores nothing, without an error (nobody to notify).
func TestDeliveriesWaitingShareOneCommit(t *testing.T) {
	t.Parallel()
	ctx, db, store, uid := setup(t)
	deliver := func(outboxID int64, who uuid.UUID) <-chan result {
		out := make(chan result, 1)
		go func() {
			ok, err := store.Deliver(ctx, outboxID, time.Time{}, who, "order.created", map[string]any{"n": outboxID})
			out <- result{ok, err}
		}()
		return out
	}
	// behind runs first on a locked table and then the others behind it, and returns their
	// results once the lock is gone.
	behind := func(first int64, others map[int64]uuid.UUID) (result, map[int64]result) {
		t.Helper()
		hold, err := db.Pool().BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hold.ExecContext(ctx, `LOCK TABLE notifications IN SHARE MODE`); err != nil {
			t.Fatal(err)
		}
		lead := deliver(first, uid)
		waitFor(t, db, "the first insert to wait for the lock",
			`SELECT count(*) = 1 FROM pg_locks WHERE relation = 'notifications'::regclass AND NOT granted`)
		queued := map[int64]<-chan result{}
		for id, who := range others {
			queued[id] = deliver(id, who)
		}
		for deadline := time.Now().Add(10 * time.Second); store.Queued() < len(others); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d deliveries queued, want %d", store.Queued(), len(others))
			}
		}
		select {
		case r := <-lead:
			t.Fatalf("first delivery returned %+v while its insert waited", r)
		default:
		}
		if err := hold.Rollback(); err != nil {
			t.Fatal(err)
		}
		got := map[int64]result{}
		for id, ch := range queued {
			got[id] = <-ch
		}
		return <-lead, got
	}
	stored := func() map[int64]string {
		t.Helper()
		var rows []struct {
			OutboxID int64  `db:"outbox_id"`
			Xmin     string `db:"xmin"`
		}
		if err := db.SelectContext(ctx, &rows, `SELECT outbox_id, xmin::text AS xmin FROM notifications`); err != nil {
			t.Fatal(err)
		}
		out := map[int64]string{}
		for _, r := range rows {
			if _, twice := out[r.OutboxID]; twice {
				t.Fatalf("outbox row %d stored twice", r.OutboxID)
			}
			out[r.OutboxID] = r.Xmin
		}
		return out
	}

	lead, queued := behind(1, map[int64]uuid.UUID{2: uid, 3: uid, 4: uid})
	again := <-deliver(4, uid)
	if !lead.inserted || lead.err != nil || again.inserted || again.err != nil {
		t.Fatalf("first delivery %+v, a repeated one %+v", lead, again)
	}
	for id, r := range queued {
		if !r.inserted || r.err != nil {
			t.Fatalf("queued delivery %d: %+v", id, r)
		}
	}
	rows := stored()
	if len(rows) != 4 || rows[2] != rows[3] || rows[3] != rows[4] || rows[1] == rows[2] {
		t.Fatalf("transactions by outbox row %v: the queued rows should share one, apart from the first's", rows)
	}

	lead, queued = behind(5, map[int64]uuid.UUID{6: uid, 7: uuid.New(), 8: uid})
	if !lead.inserted || lead.err != nil {
		t.Fatalf("first delivery: %+v", lead)
	}
	for id, r := range queued {
		if r.err != nil || r.inserted == (id == 7) {
			t.Fatalf("queued delivery %d: %+v", id, r)
		}
	}
	if rows := stored(); len(rows) != 7 {
		t.Fatalf("stored outbox rows %v, want 1 to 6 and 8", rows)
	}
}

// TestConcurrentDeliveriesStoreEachOnce: many deliveries at once, each outbox row sent twice,
// give one row per outbox row and report exactly one insert for each.
func TestConcurrentDeliveriesStoreEachOnce(t *testing.T) {
	t.Parallel()
	ctx, db, store, uid := setup(t)
	const n = 300
	var wg sync.WaitGroup
	inserted := make([]int, n+1)
	var mu sync.Mutex
	for i := 1; i <= 2*n; i++ {
		wg.Add(1)
		go func(id int64) {
			defer wg.Done()
			ok, err := store.Deliver(ctx, id, time.Time{}, uid, "order.paid", nil)
			if err != nil {
				t.Errorf("delivery %d: %v", id, err)
			}
			if ok {
				mu.Lock()
				inserted[id]++
				mu.Unlock()
			}
		}(int64((i-1)%n + 1))
	}
	wg.Wait()
	for id := 1; id <= n; id++ {
		if inserted[id] != 1 {
			t.Fatalf("outbox row %d reported inserted %d times", id, inserted[id])
		}
	}
	var rows int
	if err := db.GetContext(ctx, &rows, `SELECT count(*) FROM notifications WHERE user_id = $1`, uid); err != nil || rows != n {
		t.Fatalf("%d rows stored (%v), want %d", rows, err, n)
	}
}

func waitFor(t *testing.T, db *postgres.DB, what, query string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ok bool
		if err := db.GetContext(context.Background(), &ok, query); err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
