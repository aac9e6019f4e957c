package postgres_test

import (
	"context"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/sql/migrations"
)

var migrationName = regexp.MustCompile(`^(\d{4})_[a-z0-9_]+\.(up|down)\.sql$`)

// latestVersion checks the migration files pair up and are numbered 1..N, and returns N.
func latestVersion(t *testing.T) uint {
	t.Helper()
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	ups, downs := map[int]bool{}, map[int]bool{}
	for _, n := range names {
		m := migrationName.FindStringSubmatch(n)
		if m == nil {
			t.Fatalf("migration file %q is not NNNN_name.up.sql or .down.sql", n)
		}
		v, _ := strconv.Atoi(m[1])
		if m[2] == "up" {
			ups[v] = true
		} else {
			downs[v] = true
		}
	}
	for v := 1; v <= len(ups); v++ {
		if !ups[v] || !downs[v] {
			t.Fatalf("migration %04d lacks its up or down file", v)
		}
	}
	if len(ups) == 0 || len(downs) != len(ups) {
		t.Fatalf("%d up and %d down migrations", len(ups), len(downs))
	}
	return uint(len(ups))
}

// schema describes everything the migrations create in the public schema: columns, constraints,
// indexes, triggers and functions.
func schema(t *testing.T, db *postgres.DB) []string {
	t.Helper()
	var out []string
	err := db.Select(&out, `
SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' null=' || is_nullable || ' default=' || coalesce(column_default, '')
  FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'schema_migrations'
UNION ALL
SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND conrelid <> 'schema_migrations'::regclass
UNION ALL
SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename <> 'schema_migrations'
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
UNION ALL
SELECT 'type ' || typname FROM pg_type WHERE typnamespace = 'public'::regnamespace AND typtype IN ('e', 'd', 'c') AND typrelid = 0
ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// emptyDB returns a migrator of an empty database and a pool on it, both closed with the test.
func emptyDB(t *testing.T) (*postgres.Migrator, *postgres.DB) {
	t.Helper()
	ctx := context.Background()
	url := testenv.EmptyDB(t)
	m, err := postgres.NewMigrator(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	db, err := postgres.Open(ctx, url, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return m, db
}

func TestMigrationsUpDownUp(t *testing.T) {
	t.Parallel()
	m, db := emptyDB(t)
	latest := latestVersion(t)

	version := func(want uint) {
		t.Helper()
		v, dirty, err := m.Version()
		if err != nil || dirty || v != want {
			t.Fatalf("version %d dirty %v (%v), want %d clean", v, dirty, err, want)
		}
	}
	version(0)
	if got := schema(t, db); len(got) != 0 {
		t.Fatalf("the empty database has a schema: %v", got)
	}

	if err := m.Up(); err != nil {
		t.Fatalf("up: %v", err)
	}
	version(latest)
	full := schema(t, db)
	for _, table := range []string{"users", "addresses", "sessions", "items", "idempotency_keys", "outbox"} {
		if !slices.ContainsFunc(full, func(s string) bool { return strings.HasPrefix(s, "column "+table+".") }) {
			t.Errorf("table %s missing after up", table)
		}
	}
	if err := m.Up(); err != nil {
		t.Fatalf("a second up is not a no-op: %v", err)
	}
	version(latest)

	// All the way down leaves nothing but golang-migrate's own table.
	if err := m.Down(0); err != nil {
		t.Fatalf("down all: %v", err)
	}
	version(0)
	if got := schema(t, db); len(got) != 0 {
		t.Fatalf("down all left %v", got)
	}
	var tables []string
	if err := db.Select(&tables, `SELECT tablename FROM pg_tables WHERE schemaname = 'public'`); err != nil {
		t.Fatal(err)
	}
	if len(tables) != 1 || tables[0] != "schema_migrations" {
		t.Fatalf("tables after down all: %v", tables)
	}

	if err := m.Up(); err != nil {
		t.Fatalf("up again: %v", err)
	}
	version(latest)
	if got := schema(t, db); !slices.Equal(got, full) {
		t.Fatalf("up after down differs from the first up:\n%s\n---\n%s", strings.Join(got, "\n"), strings.Join(full, "\n"))
	}

	// Every migration reverts and reapplies cleanly from the top, with data in the tables.
	seed(t, db)
	for steps := 1; steps <= int(latest); steps++ {
		if err := m.Down(steps); err != nil {
			t.Fatalf("down %d: %v", steps, err)
		}
		version(latest - uint(steps))
		if err := m.Up(); err != nil {
			t.Fatalf("up after down %d: %v", steps, err)
		}
		version(latest)
		if got := schema(t, db); !slices.Equal(got, full) {
			t.Fatalf("schema after down %d and up differs", steps)
		}
		seed(t, db)
	}
}

// seed writes a row into each table so that down migrations are tried on non-empty tables.
func seed(t *testing.T, db *postgres.DB) {
	t.Helper()
	uid := uuid.New()
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO users (id, name, email, password_hash, role) VALUES ($1, 'Seed User', $2, 'x', 'user')`, []any{uid, uid.String() + "@example.com"}},
		{`INSERT INTO addresses (user_id, line1, city, state, postal_code, country) VALUES ($1, 'l1', 'c', 's', 'p', 'BR')`, []any{uid}},
		{`INSERT INTO sessions (id, user_id, refresh_token_hash, expires_at) VALUES ($1, $2, '\x00', now())`, []any{uuid.New(), uid}},
		{`INSERT INTO items (id, name, description, price, currency, stock) VALUES ($1, 'Seed Item', 'd', 1, 'usd', 0)`, []any{uuid.New()}},
		{`INSERT INTO idempotency_keys (scope, method, path, key, fingerprint, state, expires_at) VALUES ($1, 'POST', '/p', 'k', '\x00', 'in_flight', now())`, []any{uid.String()}},
		{`INSERT INTO outbox (type, payload) VALUES ('seed', '{}')`, nil},
	} {
		if _, err := db.Exec(q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}
}

// TestAMigrationCommitsWithItsVersion: a migration that stops halfway (here it fails; a killed
// migrate or a PostgreSQL restart stops it the same way) leaves the version before it, clean,
// and the next up runs it. golang-migrate alone marked the version dirty in a commit of its
// own, and every later up refused to run until a version was forced by hand.
func TestAMigrationCommitsWithItsVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testenv.EmptyDB(t)
	files := fstest.MapFS{
		"0001_a.up.sql":   {Data: []byte(`CREATE TABLE a (id int);`)},
		"0001_a.down.sql": {Data: []byte(`DROP TABLE a;`)},
		"0002_b.up.sql":   {Data: []byte(`CREATE TABLE b (id int); SELECT 1 / 0;`)},
		"0002_b.down.sql": {Data: []byte(`DROP TABLE b;`)},
	}
	migrator := func() *postgres.Migrator {
		m, err := postgres.NewMigratorFrom(ctx, url, files)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	db, err := postgres.Open(ctx, url, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	state := func(want uint, tables ...string) {
		t.Helper()
		v, dirty, err := migrator().Version()
		if err != nil || dirty || v != want {
			t.Fatalf("version %d dirty %v (%v), want %d clean", v, dirty, err, want)
		}
		var have []string
		if err := db.Select(&have, `SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations' ORDER BY 1`); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(have, tables) {
			t.Fatalf("tables %v at version %d, want %v", have, want, tables)
		}
	}

	if err := migrator().Up(); err == nil {
		t.Fatal("up ran a migration that fails")
	}
	state(1, "a")
	files["0002_b.up.sql"] = &fstest.MapFile{Data: []byte(`CREATE TABLE b (id int);`)}
	if err := migrator().Up(); err != nil {
		t.Fatalf("up after the failed migration was mended: %v", err)
	}
	state(2, "a", "b")
	if err := migrator().Down(1); err != nil {
		t.Fatal(err)
	}
	state(1, "a")
	if err := migrator().Force(2); err != nil {
		t.Fatal(err)
	}
	state(2, "a")
}

func TestSchemaConstraints(t *testing.T) {
	t.Parallel()
	db, _ := testenv.DB(t)
	insertItem := func(price, stock int64, currency, name string) error {
		_, err := db.Exec(`INSERT INTO items (id, name, description, price, currency, stock) VALUES ($1, $2, 'd', $3, $4, $5)`,
			uuid.New(), name, price, currency, stock)
		return err
	}
	if err := insertItem(1, 0, "usd", "Fine"); err != nil {
		t.Fatalf("a valid item is refused: %v", err)
	}
	for _, tc := range []struct {
		price, stock     int64
		currency, name   string
		constraintPrefix string
	}{
		{1, -1, "usd", "Negative stock", "items_stock"},
		{0, 1, "usd", "Free item", "positive_amount"},
		{-100, 1, "usd", "Negative price", "positive_amount"},
		{1, 1, "gbp", "Pound item", "currency_code"},
		{1, 1, "usd", "x", "item_name"},
	} {
		err := insertItem(tc.price, tc.stock, tc.currency, tc.name)
		if !postgres.IsCode(err, postgres.CheckViolation) || !strings.HasPrefix(postgres.Constraint(err), tc.constraintPrefix) {
			t.Errorf("%s: error %v (constraint %q), want a check violation of %s", tc.name, err, postgres.Constraint(err), tc.constraintPrefix)
		}
	}
	// The stock check also guards updates: a decrement past zero fails, nothing changes.
	id := uuid.New()
	if _, err := db.Exec(`INSERT INTO items (id, name, description, price, currency, stock) VALUES ($1, 'Three Left', 'd', 1, 'usd', 3)`, id); err != nil {
		t.Fatal(err)
	}
	_, err := db.Exec(`UPDATE items SET stock = stock - 4 WHERE id = $1`, id)
	if !postgres.IsCode(err, postgres.CheckViolation) {
		t.Fatalf("overselling update: %v, want a check violation", err)
	}
	var stock int
	if err := db.Get(&stock, `SELECT stock FROM items WHERE id = $1`, id); err != nil || stock != 3 {
		t.Fatalf("stock %d (%v) after a refused decrement, want 3", stock, err)
	}
	if _, err := db.Exec(`UPDATE items SET price = 0 WHERE id = $1`, id); !postgres.IsCode(err, postgres.CheckViolation) {
		t.Fatalf("price update to 0: %v, want a check violation", err)
	}

	// The orders' value rules (domains since migration 0009) hold on insert and on update.
	buyer := uuid.New()
	if _, err := db.Exec(`INSERT INTO users (id, name, email, password_hash, role) VALUES ($1, 'Buyer', $2, 'x', 'user')`,
		buyer, buyer.String()+"@example.com"); err != nil {
		t.Fatal(err)
	}
	order := uuid.New()
	if _, err := db.Exec(`INSERT INTO orders (id, user_id, status, total, currency) VALUES ($1, $2, 'PENDING', 300, 'usd')`, order, buyer); err != nil {
		t.Fatalf("a valid order is refused: %v", err)
	}
	if _, err := db.Exec(`INSERT INTO payments (order_id, status) VALUES ($1, 'pending')`, order); err != nil {
		t.Fatalf("a valid payment is refused: %v", err)
	}
	if _, err := db.Exec(`INSERT INTO order_lines (id, order_id, position, item_id, name, unit_price, quantity, subtotal)
		VALUES ($1, $2, 1, $3, 'Three Left', 100, 3, 300)`, uuid.New(), order, id); err != nil {
		t.Fatalf("a valid line is refused: %v", err)
	}
	for _, tc := range []struct {
		sql        string
		arg        uuid.UUID
		constraint string
	}{
		{`INSERT INTO orders (id, user_id, status, total, currency) VALUES (gen_random_uuid(), $1, 'LOST', 1, 'usd')`, buyer, "order_status_check"},
		{`INSERT INTO orders (id, user_id, status, total, currency) VALUES (gen_random_uuid(), $1, 'PENDING', 0, 'usd')`, buyer, "positive_amount_check"},
		{`UPDATE orders SET status = 'LOST' WHERE id = $1`, order, "order_status_check"},
		{`UPDATE orders SET pending_action = 'ship' WHERE id = $1`, order, "order_action_check"},
		{`UPDATE orders SET currency = 'gbp' WHERE id = $1`, order, "currency_code_check"},
		{`UPDATE orders SET status = 'SHIPPED' WHERE id = $1`, order, "orders_check"},
		{`UPDATE payments SET status = 'paid' WHERE order_id = $1`, order, "payment_status_check"},
		{`UPDATE order_lines SET quantity = 1001, subtotal = 100100 WHERE order_id = $1`, order, "line_quantity_check"},
		{`UPDATE order_lines SET subtotal = 1 WHERE order_id = $1`, order, "order_lines_check"},
		{`INSERT INTO idempotency_keys (scope, method, path, key, fingerprint, state, expires_at)
		  VALUES ($1::text, 'POST', '/p', 'k', '\x00', 'done', now())`, buyer, "idempotency_state_check"},
	} {
		_, err := db.Exec(tc.sql, tc.arg)
		if !postgres.IsCode(err, postgres.CheckViolation) || postgres.Constraint(err) != tc.constraint {
			t.Errorf("%s: %v (constraint %q), want a check violation of %s", tc.sql, err, postgres.Constraint(err), tc.constraint)
		}
	}

	// Email: unique case-insensitively among live users; deleted users free their email.
	insertUser := func(email string) (uuid.UUID, error) {
		id := uuid.New()
		_, err := db.Exec(`INSERT INTO users (id, name, email, password_hash, role) VALUES ($1, 'Someone', $2, 'x', 'user')`, id, email)
		return id, err
	}
	first, err := insertUser("Ann@Example.com")
	if err != nil {
		t.Fatal(err)
	}
	for _, dup := range []string{"ann@example.com", "ANN@EXAMPLE.COM", "Ann@Example.com"} {
		_, err := insertUser(dup)
		if !postgres.IsCode(err, postgres.UniqueViolation) || postgres.Constraint(err) != "users_email_live_key" {
			t.Fatalf("duplicate %s: %v (constraint %q), want a unique violation of users_email_live_key", dup, err, postgres.Constraint(err))
		}
	}
	if _, err := db.Exec(`UPDATE users SET deleted_at = now() WHERE id = $1`, first); err != nil {
		t.Fatal(err)
	}
	second, err := insertUser("ann@example.com")
	if err != nil {
		t.Fatalf("the email of a deleted user cannot be registered again: %v", err)
	}
	if _, err := db.Exec(`UPDATE users SET deleted_at = now() WHERE id = $1`, second); err != nil {
		t.Fatalf("two deleted users cannot share an email: %v", err)
	}
	if _, err := insertUser("ANN@example.com"); err != nil {
		t.Fatalf("third registration after two deletions: %v", err)
	}
	// Undeleting a user whose email is taken again is refused.
	if _, err := db.Exec(`UPDATE users SET deleted_at = NULL WHERE id = $1`, first); !postgres.IsCode(err, postgres.UniqueViolation) {
		t.Fatalf("reviving a user with a taken email: %v", err)
	}

	// The keyset lists have their indexes.
	var defs []string
	if err := db.Select(&defs, `SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename IN ('items', 'users')`); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ON public.items USING btree (created_at DESC, id DESC) WHERE (deleted_at IS NULL)",
		"ON public.items USING btree (created_at DESC, id DESC)",
		"ON public.users USING btree (lower(email)) WHERE (deleted_at IS NULL)",
	} {
		if !slices.ContainsFunc(defs, func(d string) bool { return strings.HasSuffix(d, want) }) {
			t.Errorf("no index %q among %v", want, defs)
		}
	}
}

// beforeMigration brings an empty database to the version before migration n, every migration
// run up and the later ones down again, with a customer for the rows the test writes; undo
// takes the database back there once the test has run n up.
func beforeMigration(t *testing.T, n int) (m *postgres.Migrator, db *postgres.DB, buyer uuid.UUID, undo func()) {
	t.Helper()
	m, db = emptyDB(t)
	if err := m.Up(); err != nil {
		t.Fatal(err)
	}
	undo = func() {
		t.Helper()
		if err := m.Down(int(latestVersion(t)) - (n - 1)); err != nil {
			t.Fatal(err)
		}
	}
	undo()
	buyer = uuid.New()
	if _, err := db.Exec(`INSERT INTO users (id, name, email, password_hash, role) VALUES ($1, 'Buyer', $2, 'x', 'user')`,
		buyer, buyer.String()+"@example.com"); err != nil {
		t.Fatal(err)
	}
	return m, db, buyer, undo
}

// TestMigration12RecordsRefusedLatePayments: a late payment whose refund Stripe refused left no
// refund behind before migration 12; the migration records one as failed, as the worker now
// does, and leaves every other order alone. Its down removes those records.
func TestMigration12RecordsRefusedLatePayments(t *testing.T) {
	t.Parallel()
	m, db, buyer, undo := beforeMigration(t, 12)
	order := func(status, action, payment string, refunded bool) uuid.UUID {
		t.Helper()
		id := uuid.New()
		if _, err := db.Exec(`INSERT INTO orders (id, user_id, status, pending_action, total, currency) VALUES ($1, $2, $3, NULLIF($4, ''), 1500, 'usd')`,
			id, buyer, status, action); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`INSERT INTO payments (order_id, status, amount_received, received_currency) VALUES ($1, $2, 1500, 'USD')`, id, payment); err != nil {
			t.Fatal(err)
		}
		if refunded {
			if _, err := db.Exec(`INSERT INTO refunds (id, order_id, kind, refund_id, amount, currency, status) VALUES ($1, $2, 'late_payment', $3, 1500, 'usd', 'succeeded')`,
				uuid.New(), id, "re_"+id.String()); err != nil {
				t.Fatal(err)
			}
		}
		return id
	}
	refused := order("CANCELED", "", "succeeded", false)
	others := []uuid.UUID{
		order("CANCELED", "refund", "succeeded", false), // its refund still under way
		order("CANCELED", "", "succeeded", true),        // refunded
		order("CANCELED", "", "canceled", false),        // never paid
		order("PROCESSED", "", "succeeded", false),
	}

	if err := m.Up(); err != nil {
		t.Fatal(err)
	}
	type refund struct {
		OrderID  uuid.UUID `db:"order_id"`
		Kind     string
		RefundID string `db:"refund_id"`
		Amount   int64
		Currency string
		Status   string
	}
	var got []refund
	if err := db.Select(&got, `SELECT order_id, kind, refund_id, amount, currency, status FROM refunds WHERE refund_id LIKE 'refused\_%'`); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].OrderID != refused || got[0].Kind != "late_payment" || got[0].Amount != 1500 ||
		got[0].Currency != "usd" || got[0].Status != "failed" {
		t.Fatalf("refused refunds %+v, want one failed of 1500 usd for %s alone (others %v)", got, refused, others)
	}
	undo()
	var left int
	if err := db.Get(&left, `SELECT count(*) FROM refunds`); err != nil || left != 1 {
		t.Fatalf("refunds after down: %d (%v), want the one that went through", left, err)
	}
}

// TestMigration13NamesTheOpenPaymentAsStripeDoes: a payment waiting for its customer, stored as
// requires_payment before migration 13, reads requires_payment_method after it, and back after
// its down; other statuses are left alone, and the old name is still taken after it.
func TestMigration13NamesTheOpenPaymentAsStripeDoes(t *testing.T) {
	t.Parallel()
	m, db, buyer, undo := beforeMigration(t, 13)
	ids := map[string]uuid.UUID{}
	for _, st := range []string{"requires_payment", "pending", "succeeded"} {
		id := uuid.New()
		ids[st] = id
		if _, err := db.Exec(`INSERT INTO orders (id, user_id, status, total, currency) VALUES ($1, $2, 'PENDING', 1500, 'usd')`, id, buyer); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`INSERT INTO payments (order_id, status) VALUES ($1, $2)`, id, st); err != nil {
			t.Fatal(err)
		}
	}
	statuses := func() map[string]string {
		out := map[string]string{}
		for was, id := range ids {
			var st string
			if err := db.Get(&st, `SELECT status FROM payments WHERE order_id = $1`, id); err != nil {
				t.Fatal(err)
			}
			out[was] = st
		}
		return out
	}
	if err := m.Up(); err != nil {
		t.Fatal(err)
	}
	if got := statuses(); got["requires_payment"] != "requires_payment_method" || got["pending"] != "pending" || got["succeeded"] != "succeeded" {
		t.Fatalf("after up: %v", got)
	}
	// Programs from before the migration may still write the old name while a deploy rolls.
	if _, err := db.Exec(`UPDATE payments SET status = 'requires_payment' WHERE order_id = $1`, ids["pending"]); err != nil {
		t.Fatalf("the old name refused after up: %v", err)
	}
	undo()
	if got := statuses(); got["requires_payment"] != "requires_payment" || got["pending"] != "requires_payment" || got["succeeded"] != "succeeded" {
		t.Fatalf("after down: %v", got)
	}
}

// TestASecondMigratorWaitsForTheFirst: two migrators started at once on one database (two
// deploy jobs) take turns: the second waits while the first runs a migration longer than
// golang-migrate's default wait of 15 s, then finds nothing left to do.
func TestASecondMigratorWaitsForTheFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testenv.EmptyDB(t)
	files := fstest.MapFS{
		"0001_slow.up.sql":   {Data: []byte(`CREATE TABLE slow (id int); SELECT pg_sleep(16);`)},
		"0001_slow.down.sql": {Data: []byte(`DROP TABLE slow;`)},
	}
	var both []*postgres.Migrator // both ready before either starts
	for range 2 {
		m, err := postgres.NewMigratorFrom(ctx, url, files)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		both = append(both, m)
	}
	errs := make(chan error, 2)
	for _, m := range both {
		go func() { errs <- m.Up() }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("a migrator failed while the other ran: %v", err)
		}
	}
	m, err := postgres.NewMigratorFrom(ctx, url, files)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if v, dirty, err := m.Version(); err != nil || dirty || v != 1 {
		t.Fatalf("version %d dirty %v (%v), want 1 clean", v, dirty, err)
	}
}
