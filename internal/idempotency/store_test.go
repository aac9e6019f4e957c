package idempotency_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

type fixture struct {
	t     *testing.T
	db    *postgres.DB
	store *idempotency.Store
	ctx   context.Context
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	db, _ := testenv.DB(t)
	return &fixture{t: t, db: db, store: idempotency.NewStore(db, "test"), ctx: testenv.Context(t)}
}

func scope(key string) idempotency.Scope {
	return idempotency.Scope{Owner: uuid.NewString(), Method: "POST", Path: "/v1/orders", Key: key}
}

var (
	fpA = idempotency.NewStore(nil, "test").Fingerprint("POST", "/v1/orders", []byte(`{"a":1}`))
	fpB = idempotency.NewStore(nil, "test").Fingerprint("POST", "/v1/orders", []byte(`{"a":2}`))
)

func (f *fixture) begin(sc idempotency.Scope, fp []byte) *idempotency.Claim {
	f.t.Helper()
	c, r, err := f.store.Begin(f.ctx, sc, fp)
	if err != nil || c == nil || r != nil {
		f.t.Fatalf("Begin: claim %v, replay %v, err %v; want a claim", c, r, err)
	}
	return c
}

func (f *fixture) expectErr(sc idempotency.Scope, fp []byte, want *apperr.Error) *apperr.Error {
	f.t.Helper()
	c, r, err := f.store.Begin(f.ctx, sc, fp)
	if !errors.Is(err, want) || c != nil || r != nil {
		f.t.Fatalf("Begin: claim %v, replay %v, err %v; want %v", c, r, err, want)
	}
	var e *apperr.Error
	errors.As(err, &e)
	return e
}

func (f *fixture) expireLease(sc idempotency.Scope) {
	f.t.Helper()
	f.exec(`UPDATE idempotency_keys SET locked_until = now() - interval '1 second' WHERE scope = $1 AND key = $2`, sc.Owner, sc.Key)
}

func (f *fixture) exec(q string, args ...any) {
	f.t.Helper()
	if _, err := f.db.ExecContext(f.ctx, q, args...); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) rows(sc idempotency.Scope) int {
	f.t.Helper()
	var n int
	if err := f.db.GetContext(f.ctx, &n, `SELECT count(*) FROM idempotency_keys WHERE scope = $1 AND key = $2`, sc.Owner, sc.Key); err != nil {
		f.t.Fatal(err)
	}
	return n
}

func TestStoreClaimReplayAndConflicts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sc := scope("k1")

	c := f.begin(sc, fpA)
	if c.RecoveryPoint != idempotency.Started || c.ResourceID != nil || c.Scope != sc {
		t.Fatalf("fresh claim %+v", c)
	}
	// While it runs: the same request waits, another request under the key is refused.
	e := f.expectErr(sc, fpA, apperr.ErrIdemKeyInFlight)
	if e.RetryAfter < time.Second || e.RetryAfter > idempotency.Lease {
		t.Fatalf("RetryAfter %s, want 1s..%s", e.RetryAfter, idempotency.Lease)
	}
	f.expectErr(sc, fpB, apperr.ErrIdemKeyReused)

	if err := f.store.Complete(f.ctx, c, 201, []byte(`{"id":"x"}`)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		cl, r, err := f.store.Begin(f.ctx, sc, fpA)
		if err != nil || cl != nil || r == nil || r.Status != 201 || string(r.Body) != `{"id":"x"}` {
			t.Fatalf("after Complete: claim %v, replay %+v, err %v", cl, r, err)
		}
	}
	f.expectErr(sc, fpB, apperr.ErrIdemKeyReused)
	// A completed record is not taken over when its lease time passes.
	f.expireLease(sc)
	if _, r, err := f.store.Begin(f.ctx, sc, fpA); err != nil || r == nil {
		t.Fatalf("completed record after lease time: replay %v err %v", r, err)
	}

	// Each part of the scope separates keys.
	for _, other := range []idempotency.Scope{
		{Owner: "anonymous", Method: sc.Method, Path: sc.Path, Key: sc.Key},
		{Owner: sc.Owner, Method: "PATCH", Path: sc.Path, Key: sc.Key},
		{Owner: sc.Owner, Method: sc.Method, Path: "/v1/users", Key: sc.Key},
		{Owner: sc.Owner, Method: sc.Method, Path: sc.Path, Key: "K1"},
	} {
		f.begin(other, fpB)
	}
}

func TestStoreLeaseExpiryTakeover(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sc := scope("crash")
	c := f.begin(sc, fpA)
	resource := uuid.New()
	err := postgres.WithTx(f.ctx, f.db, func(tx *postgres.Tx) error {
		return f.store.Checkpoint(f.ctx, tx, c, "payment", resource)
	})
	if err != nil {
		t.Fatal(err)
	}
	// The holder crashed: nobody releases. Within the lease a duplicate waits...
	f.expectErr(sc, fpA, apperr.ErrIdemKeyInFlight)
	// ...and after it the duplicate takes over where the holder stopped.
	f.expireLease(sc)
	f.expectErr(sc, fpB, apperr.ErrIdemKeyReused) // not for another body
	taken := f.begin(sc, fpA)
	if taken.RecoveryPoint != "payment" || taken.ResourceID == nil || *taken.ResourceID != resource {
		t.Fatalf("takeover claim %+v, want recovery point payment and resource %s", taken, resource)
	}
	// The new holder has a fresh lease.
	f.expectErr(sc, fpA, apperr.ErrIdemKeyInFlight)
	var lease time.Duration
	if err := f.db.GetContext(f.ctx, &lease, `SELECT (extract(epoch FROM locked_until - now()) * 1e9)::bigint FROM idempotency_keys WHERE scope = $1`, sc.Owner); err != nil {
		t.Fatal(err)
	}
	if lease <= 0 || lease > idempotency.Lease {
		t.Fatalf("lease after takeover %s, want up to %s", lease, idempotency.Lease)
	}
}

func TestStoreReleaseKeepsRecoveryPoint(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sc := scope("release")
	c := f.begin(sc, fpA)
	resource := uuid.New()
	if err := postgres.WithTx(f.ctx, f.db, func(tx *postgres.Tx) error {
		return f.store.Checkpoint(f.ctx, tx, c, "order_created", resource)
	}); err != nil {
		t.Fatal(err)
	}
	if c.RecoveryPoint != "order_created" || *c.ResourceID != resource {
		t.Fatalf("Checkpoint did not update the claim: %+v", c)
	}
	if err := f.store.Release(f.ctx, c); err != nil {
		t.Fatal(err)
	}
	// A retry resumes at once (no lease to wait for), at the recovery point.
	again := f.begin(sc, fpA)
	if again.RecoveryPoint != "order_created" || again.ResourceID == nil || *again.ResourceID != resource {
		t.Fatalf("resumed claim %+v", again)
	}
	// Another body still may not use the key.
	if err := f.store.Release(f.ctx, again); err != nil {
		t.Fatal(err)
	}
	f.expectErr(sc, fpB, apperr.ErrIdemKeyReused)
	// Release does not reopen a completed record.
	c3 := f.begin(sc, fpA)
	if err := f.store.Complete(f.ctx, c3, 200, []byte("done")); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Release(f.ctx, c3); err != nil {
		t.Fatal(err)
	}
	if _, r, err := f.store.Begin(f.ctx, sc, fpA); err != nil || r == nil || string(r.Body) != "done" {
		t.Fatalf("Release after Complete: replay %v err %v", r, err)
	}
}

func TestStoreAbandon(t *testing.T) {
	t.Parallel()
	f := newFixture(t)

	// Nothing written yet: the key is forgotten and may carry another body.
	sc := scope("abandon")
	c := f.begin(sc, fpA)
	if err := f.store.Abandon(f.ctx, c); err != nil {
		t.Fatal(err)
	}
	if n := f.rows(sc); n != 0 {
		t.Fatalf("Abandon left %d rows", n)
	}
	f.begin(sc, fpB)

	// Past a recovery point something was written: Abandon keeps the record, released.
	sc2 := scope("abandon-late")
	c2 := f.begin(sc2, fpA)
	if err := postgres.WithTx(f.ctx, f.db, func(tx *postgres.Tx) error {
		return f.store.Checkpoint(f.ctx, tx, c2, "reserved", uuid.New())
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Abandon(f.ctx, c2); err != nil {
		t.Fatal(err)
	}
	if n := f.rows(sc2); n != 1 {
		t.Fatalf("Abandon past a recovery point removed the record (%d rows)", n)
	}
	f.expectErr(sc2, fpB, apperr.ErrIdemKeyReused)
	if resumed := f.begin(sc2, fpA); resumed.RecoveryPoint != "reserved" {
		t.Fatalf("resumed at %q", resumed.RecoveryPoint)
	}

	// A completed record is never abandoned.
	sc3 := scope("abandon-done")
	c3 := f.begin(sc3, fpA)
	if err := f.store.Complete(f.ctx, c3, 201, []byte("ok")); err != nil {
		t.Fatal(err)
	}
	if err := f.store.Abandon(f.ctx, c3); err != nil {
		t.Fatal(err)
	}
	if _, r, err := f.store.Begin(f.ctx, sc3, fpA); err != nil || r == nil {
		t.Fatalf("Abandon removed a completed record: %v %v", r, err)
	}
}

func TestStoreCheckpointBelongsToItsTransaction(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sc := scope("tx")
	c := f.begin(sc, fpA)
	point := func() (string, *uuid.UUID) {
		var rec struct {
			Point string     `db:"recovery_point"`
			ID    *uuid.UUID `db:"resource_id"`
		}
		if err := f.db.GetContext(f.ctx, &rec, `SELECT recovery_point, resource_id FROM idempotency_keys WHERE scope = $1`, sc.Owner); err != nil {
			t.Fatal(err)
		}
		return rec.Point, rec.ID
	}

	// Rolled back with the work it marked.
	rollback := errors.New("rollback")
	err := postgres.WithTx(f.ctx, f.db, func(tx *postgres.Tx) error {
		if err := f.store.Checkpoint(f.ctx, tx, c, "step1", uuid.New()); err != nil {
			return err
		}
		// Not visible outside the transaction before commit.
		if p, _ := point(); p != idempotency.Started {
			t.Errorf("checkpoint visible before commit: %q", p)
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	if p, id := point(); p != idempotency.Started || id != nil {
		t.Fatalf("a rolled-back checkpoint persisted: %q %v", p, id)
	}

	// Committed with it.
	id := uuid.New()
	if err := postgres.WithTx(f.ctx, f.db, func(tx *postgres.Tx) error {
		return f.store.Checkpoint(f.ctx, tx, c, "step1", id)
	}); err != nil {
		t.Fatal(err)
	}
	if p, got := point(); p != "step1" || got == nil || *got != id {
		t.Fatalf("committed checkpoint: %q %v", p, got)
	}
	// Also on a plain connection (no transaction).
	id2 := uuid.New()
	if err := f.store.Checkpoint(f.ctx, f.db, c, "step2", id2); err != nil {
		t.Fatal(err)
	}
	if p, got := point(); p != "step2" || *got != id2 {
		t.Fatalf("checkpoint on the pool: %q %v", p, got)
	}
}

func TestStoreExpiry(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	old, live, running := scope("old"), scope("live"), scope("running")
	c := f.begin(old, fpA)
	if err := f.store.Complete(f.ctx, c, 201, []byte("old")); err != nil {
		t.Fatal(err)
	}
	c = f.begin(live, fpA)
	if err := f.store.Complete(f.ctx, c, 201, []byte("live")); err != nil {
		t.Fatal(err)
	}
	f.begin(running, fpA)

	// Records are kept for the retention period.
	var retention time.Duration
	if err := f.db.GetContext(f.ctx, &retention, `SELECT (extract(epoch FROM expires_at - created_at) * 1e9)::bigint FROM idempotency_keys WHERE scope = $1`, live.Owner); err != nil {
		t.Fatal(err)
	}
	if d := retention - idempotency.Retention; d < -time.Second || d > time.Second {
		t.Fatalf("retention %s, want %s", retention, idempotency.Retention)
	}

	f.exec(`UPDATE idempotency_keys SET expires_at = now() - interval '1 minute' WHERE scope = $1`, old.Owner)
	// An expired record is a new key: another body may claim it, from the start.
	cl := f.begin(old, fpB)
	if cl.RecoveryPoint != idempotency.Started || cl.ResourceID != nil {
		t.Fatalf("claim of an expired key %+v", cl)
	}
	f.exec(`UPDATE idempotency_keys SET expires_at = now() - interval '1 minute' WHERE scope = $1`, old.Owner)

	n, err := f.store.DeleteExpired(f.ctx, time.Now())
	if err != nil || n != 1 {
		t.Fatalf("DeleteExpired removed %d (%v), want 1", n, err)
	}
	if f.rows(old) != 0 || f.rows(live) != 1 || f.rows(running) != 1 {
		t.Fatal("DeleteExpired removed the wrong records")
	}
	if n, err := f.store.DeleteExpired(f.ctx, time.Now()); err != nil || n != 0 {
		t.Fatalf("second DeleteExpired removed %d (%v)", n, err)
	}
	if n, err := f.store.DeleteExpired(f.ctx, time.Now().Add(idempotency.Retention+time.Minute)); err != nil || n != 2 {
		t.Fatalf("DeleteExpired after retention removed %d (%v), want 2", n, err)
	}
}

func TestStoreConcurrentBegin(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sc := scope("race")
	const n = 20
	var (
		wg               sync.WaitGroup
		mu               sync.Mutex
		claims, inFlight int
		unexpected       []error
		start            = make(chan struct{})
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c, _, err := f.store.Begin(f.ctx, sc, fpA)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && c != nil:
				claims++
			case errors.Is(err, apperr.ErrIdemKeyInFlight):
				inFlight++
			default:
				unexpected = append(unexpected, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if claims != 1 || inFlight != n-1 || len(unexpected) > 0 {
		t.Fatalf("%d claims, %d in flight, unexpected %v: want exactly one claim", claims, inFlight, unexpected)
	}
}

// TestStoreBeginWhileOthersClaimAndAbandon: requests with one key that are each refused (a 4xx
// abandons its claim) make the key come and go under a new one's feet; every Begin still ends in
// a claim or "in flight", never an error of its own.
func TestStoreBeginWhileOthersClaimAndAbandon(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	sc := scope("churn")
	const workers, rounds = 8, 150
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		unexpected []error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				c, _, err := f.store.Begin(f.ctx, sc, fpA)
				switch {
				case err == nil && c != nil:
					if err := f.store.Abandon(f.ctx, c); err != nil {
						t.Error(err)
						return
					}
				case errors.Is(err, apperr.ErrIdemKeyInFlight):
				default:
					mu.Lock()
					unexpected = append(unexpected, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(unexpected) > 0 {
		t.Fatalf("%d Begins ended in an error of their own, e.g. %v", len(unexpected), unexpected[0])
	}
}
