package worker_test

// The cleanup task (SPEC §5, §7): idempotency records past their 24 h and sessions expired or
// revoked more than a day ago are deleted; everything younger stays. Real PostgreSQL.

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/assembly"
	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/internal/worker"
)

func TestCleanupDeletesOnlyWhatIsPastRetention(t *testing.T) {
	t.Parallel()
	db, dbURL := testenv.DB(t)
	rdb, prefix, redisURL := testenv.Redis(t)
	var out bytes.Buffer
	log := logging.New("worker", slog.LevelInfo, "json", &out)
	a := assembly.New(testenv.Config(t, config.Worker, dbURL, redisURL), assembly.Infra{DB: db, Redis: rdb, Keys: prefix, Log: log})
	if idempotency.Retention.Hours() != 24 {
		t.Fatalf("idempotency retention %s, want 24h", idempotency.Retention)
	}
	user := uuid.New()
	if _, err := db.Exec(`INSERT INTO users (id, name, email, password_hash, role) VALUES ($1, 'Cleanup user', $2, 'x', 'user')`,
		user, user.String()+"@example.com"); err != nil {
		t.Fatal(err)
	}

	// Idempotency records: created at the given age, expiring 24 h after.
	keys := map[string]bool{ // key → survives
		"created-25h-ago": false,
		"created-48h-ago": false,
		"created-23h-ago": true,
		"created-1m-ago":  true,
	}
	for key, ages := range map[string]string{
		"created-25h-ago": "25 hours", "created-48h-ago": "48 hours", "created-23h-ago": "23 hours", "created-1m-ago": "1 minute",
	} {
		if _, err := db.Exec(`INSERT INTO idempotency_keys (scope, method, path, key, fingerprint, state, created_at, expires_at)
			VALUES ('anonymous', 'POST', '/v1/orders', $1, '\x00', 'completed', now() - $2::interval, now() - $2::interval + interval '24 hours')`,
			key, ages); err != nil {
			t.Fatal(err)
		}
	}
	// An in-flight record abandoned past retention goes too.
	if _, err := db.Exec(`INSERT INTO idempotency_keys (scope, method, path, key, fingerprint, state, locked_until, created_at, expires_at)
		VALUES ($1, 'POST', '/v1/orders', 'in-flight-25h-ago', '\x00', 'in_flight', now() - interval '25 hours', now() - interval '25 hours', now() - interval '1 hour')`,
		user.String()); err != nil {
		t.Fatal(err)
	}
	keys["in-flight-25h-ago"] = false

	sessions := map[string]struct {
		expires, revoked string // SQL expressions
		survives         bool
	}{
		"live":                {"now() + interval '6 days'", "NULL", true},
		"expired 2 days ago":  {"now() - interval '2 days'", "NULL", false},
		"expired 1 hour ago":  {"now() - interval '1 hour'", "NULL", true}, // within the day of retention
		"revoked 2 days ago":  {"now() + interval '5 days'", "now() - interval '2 days'", false},
		"revoked 1 hour ago":  {"now() + interval '5 days'", "now() - interval '1 hour'", true},
		"expired and revoked": {"now() - interval '3 days'", "now() - interval '4 days'", false},
	}
	ids := map[string]uuid.UUID{}
	for name, s := range sessions {
		ids[name] = uuid.New()
		if _, err := db.Exec(`INSERT INTO sessions (id, user_id, refresh_token_hash, expires_at, revoked_at)
			VALUES ($1, $2, $3, `+s.expires+`, `+s.revoked+`)`, ids[name], user, []byte(name)); err != nil {
			t.Fatal(err)
		}
	}

	cleanup := worker.Cleanup(a.Idempotency, a.Auth, log)
	if err := cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	for key, survives := range keys {
		var n int
		if err := db.Get(&n, `SELECT count(*) FROM idempotency_keys WHERE key = $1`, key); err != nil {
			t.Fatal(err)
		}
		if (n == 1) != survives {
			t.Errorf("idempotency record %s: present %v, want %v", key, n == 1, survives)
		}
	}
	for name, s := range sessions {
		var n int
		if err := db.Get(&n, `SELECT count(*) FROM sessions WHERE id = $1`, ids[name]); err != nil {
			t.Fatal(err)
		}
		if (n == 1) != s.survives {
			t.Errorf("session %s: present %v, want %v", name, n == 1, s.survives)
		}
	}
	// The run reports what it deleted.
	var line struct {
		Msg             string `json:"msg"`
		IdempotencyKeys int    `json:"idempotencyKeys"`
		Sessions        int    `json:"sessions"`
	}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if json.Unmarshal([]byte(l), &line) == nil && line.Msg == "cleanup done" {
			break
		}
	}
	if line.Msg != "cleanup done" || line.IdempotencyKeys != 3 || line.Sessions != 3 {
		t.Errorf("cleanup log %+v, want 3 idempotency records and 3 sessions deleted\n%s", line, out.String())
	}
	if t.Failed() {
		t.FailNow()
	}

	// A second run finds nothing more.
	out.Reset()
	if err := cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	var left struct {
		Keys     int `db:"keys"`
		Sessions int `db:"sessions"`
	}
	if err := db.Get(&left, `SELECT (SELECT count(*) FROM idempotency_keys) AS keys, (SELECT count(*) FROM sessions) AS sessions`); err != nil {
		t.Fatal(err)
	}
	if left.Keys != 2 || left.Sessions != 3 {
		t.Fatalf("after a second run: %+v, want 2 records and 3 sessions", left)
	}
}
