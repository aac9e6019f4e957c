package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/sql/migrations"
)

// DB returns a connection pool to a fresh, fully migrated database of its own, dropped when the
// test ends, and the database's URL (for programs started by the test).
func DB(t testing.TB) (*postgres.DB, string) {
	t.Helper()
	base, _, err := serviceURLs()
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := template(base)
	if err != nil {
		t.Fatalf("testenv: template database: %v", err)
	}
	name := "dispatch_test_" + randomSuffix()
	admin, err := adminDB(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := createFromTemplate(admin, name, tmpl); err != nil {
		t.Fatalf("testenv: create database: %v", err)
	}
	dbURL := withDatabase(base, name)
	db, err := postgres.Open(context.Background(), dbURL, 20)
	if err != nil {
		t.Fatalf("testenv: open %s: %v", name, err)
	}
	t.Cleanup(func() {
		db.Close()
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + pq.QuoteIdentifier(name) + " WITH (FORCE)"); err != nil {
			t.Logf("testenv: drop %s: %v", name, err)
		}
	})
	return db, dbURL
}

// EmptyDB returns the URL of a fresh database with no schema (for migration tests).
func EmptyDB(t testing.TB) string {
	t.Helper()
	base, _, err := serviceURLs()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := adminDB(base)
	if err != nil {
		t.Fatal(err)
	}
	name := "dispatch_test_" + randomSuffix()
	if _, err := admin.Exec("CREATE DATABASE " + pq.QuoteIdentifier(name)); err != nil {
		t.Fatalf("testenv: create database: %v", err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + pq.QuoteIdentifier(name) + " WITH (FORCE)"); err != nil {
			t.Logf("testenv: drop %s: %v", name, err)
		}
	})
	return withDatabase(base, name)
}

var (
	adminOnce sync.Once
	adminPool *postgres.DB
	adminErr  error
)

// adminDB is a small pool on the server's maintenance database, shared by the process.
func adminDB(base string) (*postgres.DB, error) {
	adminOnce.Do(func() {
		adminPool, adminErr = postgres.Open(context.Background(), withDatabase(base, "postgres"), 4)
	})
	return adminPool, adminErr
}

var (
	tmplOnce sync.Once
	tmplName string
	tmplErr  error
)

// template returns the name of a database migrated with the current migrations. Its name holds
// a hash of the migration files, so a changed migration gets a new template; an advisory lock
// makes parallel test processes build it once.
func template(base string) (string, error) {
	tmplOnce.Do(func() {
		tmplName, tmplErr = buildTemplate(base)
	})
	return tmplName, tmplErr
}

func buildTemplate(base string) (string, error) {
	sum, err := migrationsHash()
	if err != nil {
		return "", err
	}
	name := "dispatch_tmpl_" + sum[:16]
	admin, err := adminDB(base)
	if err != nil {
		return "", err
	}
	ctx := context.Background()
	conn, err := admin.Pool().Connx(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(727274)`); err != nil {
		return "", err
	}
	defer conn.ExecContext(ctx, `SELECT pg_advisory_unlock(727274)`) //nolint:errcheck

	var exists bool
	if err := conn.GetContext(ctx, &exists, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	building := name + "_wip"
	if _, err := conn.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(building)+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := conn.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(building)); err != nil {
		return "", err
	}
	m, err := postgres.NewMigrator(ctx, withDatabase(base, building))
	if err != nil {
		return "", err
	}
	err = m.Up()
	m.Close()
	if err != nil {
		return "", fmt.Errorf("migrate template: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "ALTER DATABASE "+pq.QuoteIdentifier(building)+" RENAME TO "+pq.QuoteIdentifier(name)); err != nil {
		return "", err
	}
	return name, nil
}

// createFromTemplate copies the template, retrying while another session briefly holds it.
func createFromTemplate(admin *postgres.DB, name, tmpl string) error {
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		_, err = admin.Exec("CREATE DATABASE " + pq.QuoteIdentifier(name) + " TEMPLATE " + pq.QuoteIdentifier(tmpl))
		if err == nil || !postgres.IsCode(err, "55006") { // object_in_use
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func migrationsHash() (string, error) {
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		return "", err
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		b, err := fs.ReadFile(migrations.FS, n)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\n%d\n", n, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func withDatabase(base, name string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	u.Path = "/" + name
	return u.String()
}

// Scans are the sequential and index scans of a table counted in tx's transaction, plus those
// its connection has not reported yet: compare two readings taken in the same transaction.
type Scans struct {
	Seq   int64 `db:"seq_scan"`
	Index int64 `db:"idx_scan"`
}

// ScansOf reads the scans of table counted so far in tx's transaction (pg_stat_xact_user_tables).
func ScansOf(t testing.TB, tx *postgres.Tx, table string) Scans {
	t.Helper()
	var s Scans
	if err := tx.GetContext(context.Background(), &s,
		`SELECT seq_scan, COALESCE(idx_scan, 0) AS idx_scan FROM pg_stat_xact_user_tables WHERE relname = $1`, table); err != nil {
		t.Fatal(err)
	}
	return s
}

// GenericPlan returns the plan PostgreSQL keeps for query once it stops planning each call for
// its values (EXPLAIN, costs off), args being SQL literals for its parameters. On a database
// from DB no table was ever analyzed: the state in which a generic plan may take an index that
// merely matches the statement's predicate, and keep it for the connection's life.
func GenericPlan(t testing.TB, db *postgres.DB, query string, args ...string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Pool().Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	name := "generic_" + randomSuffix()
	for _, stmt := range []string{`SET plan_cache_mode = force_generic_plan`, `PREPARE ` + name + ` AS ` + query} {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	defer func() {
		_, _ = conn.ExecContext(ctx, `DEALLOCATE `+name+`; RESET plan_cache_mode`)
	}()
	var lines []string
	if err := conn.SelectContext(ctx, &lines, `EXPLAIN (COSTS OFF) EXECUTE `+name+`(`+strings.Join(args, ", ")+`)`); err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// PlanReads checks that the generic plan of query (GenericPlan, args being SQL literals) reads
// each table of want through the indexes named there, in order, and shows the plan otherwise.
func PlanReads(t testing.TB, db *postgres.DB, name, query string, args []string, want map[string][]string) {
	t.Helper()
	plan := GenericPlan(t, db, query, args...)
	for table, indexes := range want {
		if got := scansIn(plan, table); !slices.Equal(got, indexes) {
			t.Errorf("%s reads %s through %v, want %v:\n%s", name, table, got, indexes, plan)
		}
	}
}

// scansIn returns how plan reads table, in order: the name of each index it scans the table
// through, "seq" for each sequential scan. A bitmap scan is counted by its index's name when that
// starts with the table's.
func scansIn(plan, table string) []string {
	var out []string
	for _, m := range planScan.FindAllStringSubmatch(plan, -1) {
		switch {
		case m[1] != "" && m[2] == table:
			out = append(out, m[1])
		case m[3] == table:
			out = append(out, "seq")
		case strings.HasPrefix(m[4], table+"_"):
			out = append(out, m[4])
		}
	}
	return out
}

var planScan = regexp.MustCompile(`Index (?:Only )?Scan(?: Backward)? using (\S+) on (\S+)|Seq Scan on (\S+)|Bitmap Index Scan on (\S+)`)

// PoolWait makes one query on db, a pool of one connection, wait at least d for it: a
// transaction holds the connection until the pool counts the query as waiting, then d longer.
// It returns when the query has run.
func PoolWait(t testing.TB, db *postgres.DB, d time.Duration) {
	t.Helper()
	ctx := context.Background()
	waits := db.Stats().WaitCount
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() }) // after a failure; a no-op once rolled back below
	done := make(chan error, 1)
	go func() {
		var one int
		done <- db.GetContext(ctx, &one, `SELECT 1`)
	}()
	AwaitPoolWait(t, db, waits)
	time.Sleep(d)
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// AwaitPoolWait returns once db counts more waits for a connection than waits, failing the test
// when none starts within ten seconds.
func AwaitPoolWait(t testing.TB, db *postgres.DB, waits int64) {
	t.Helper()
	Eventually(t, 10*time.Second, "a wait for a connection", func() bool { return db.Stats().WaitCount > waits })
}

// Blocked runs read in a transaction of its own and returns once that transaction waits for a
// lock (failing the test if read ends first, or no wait starts within ten seconds). The
// function it returns waits for read to end and gives its error; the transaction is rolled back
// when the test ends.
func Blocked(t testing.TB, db *postgres.DB, read func(tx *postgres.Tx) error) (wait func() error) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	var pid int
	if err := tx.GetContext(ctx, &pid, `SELECT pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- read(tx) }()
	Eventually(t, 10*time.Second, "a wait for a lock", func() bool {
		select {
		case err := <-done:
			t.Fatalf("the read ended without waiting for a lock: %v", err)
		default:
		}
		var waits bool
		if err := db.GetContext(ctx, &waits, `SELECT COALESCE(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1`, pid); err != nil {
			t.Fatal(err)
		}
		return waits
	})
	return func() error {
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("testenv: the blocked read never ended")
		}
	}
}
