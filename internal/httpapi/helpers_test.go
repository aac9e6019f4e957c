package httpapi_test

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/internal/user"
)

// Helpers shared by the API tests (authorization, users, outbox, rate limits, i18n, bad input).
// Unlike app's own helpers they take the *testing.T of the (sub)test that calls them, so they
// are safe in parallel subtests.

const testPassword = "password123"

// tsPattern is the timestamp format of SPEC §1: RFC 3339 UTC with millisecond precision.
var tsPattern = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)

// client returns a client of the app's API bound to t.
func (a *app) client(t *testing.T) *testenv.Client {
	t.Helper()
	return testenv.NewClient(t, a.api.Base)
}

// uniqueEmail returns an email address nobody has used yet.
func uniqueEmail(tag string) string {
	return fmt.Sprintf("%s-%s@example.com", tag, strings.ReplaceAll(uuid.NewString()[:13], "-", ""))
}

// account is a user the test created, with a session of its own.
type account struct {
	ID       string
	Email    string
	Password string
	Role     string
	Access   string
	Refresh  string
}

// provision creates a user with any role directly through the users service (no level
// checks: the test is the operator) and logs it in over HTTP.
func (a *app) provision(t *testing.T, role auth.Role) account {
	t.Helper()
	email := uniqueEmail(string(role))
	u, err := a.svc.Users.Provision(testenv.Context(t), user.SignUp{Name: "Test " + string(role), Email: email, Password: testPassword}, role)
	if err != nil {
		t.Fatalf("provision %s: %v", role, err)
	}
	acc := account{ID: u.ID.String(), Email: email, Password: testPassword, Role: string(role)}
	acc.Access, acc.Refresh = a.login(t, email, testPassword)
	return acc
}

// login logs in and returns the access and refresh tokens.
func (a *app) login(t *testing.T, email, password string) (access, refresh string) {
	t.Helper()
	var pair struct{ AccessToken, RefreshToken string }
	a.client(t).Do("POST", "/v1/auth/login", map[string]string{"email": email, "password": password}).
		Expect(t, 200).Decode(t, &pair)
	if pair.AccessToken == "" || pair.RefreshToken == "" {
		t.Fatalf("login of %s returned no tokens", email)
	}
	return pair.AccessToken, pair.RefreshToken
}

// demoAccount logs a demo user in (a fresh session per call).
func (a *app) demoAccount(t *testing.T, email string) account {
	t.Helper()
	var id string
	if err := a.db.Get(&id, `SELECT id FROM users WHERE email = $1 AND deleted_at IS NULL`, email); err != nil {
		t.Fatalf("demo user %s: %v", email, err)
	}
	acc := account{ID: id, Email: email, Password: demo.Password}
	acc.Access, acc.Refresh = a.login(t, email, demo.Password)
	return acc
}

// signUpAccount signs a customer up over HTTP with the given extra fields and logs it in.
func (a *app) signUpAccount(t *testing.T, extra map[string]any) account {
	t.Helper()
	email := uniqueEmail("customer")
	body := map[string]any{"name": "Customer", "email": email, "password": testPassword}
	for k, v := range extra {
		body[k] = v
	}
	var u struct{ ID, Email string }
	a.client(t).Do("POST", "/v1/users", body, key()...).Expect(t, 201).Decode(t, &u)
	acc := account{ID: u.ID, Email: u.Email, Password: testPassword, Role: "user"}
	acc.Access, acc.Refresh = a.login(t, u.Email, testPassword)
	return acc
}

// expectError checks the whole standard error body of SPEC §1 (beyond testenv's ExpectError):
// the path, the correlation id echoed in the header, and the timestamp format.
func expectError(t *testing.T, r testenv.Response, status int, code, path string) map[string]any {
	t.Helper()
	m := r.ExpectError(t, status, code)
	if m["path"] != path {
		t.Fatalf("error path = %v, want %s", m["path"], path)
	}
	if cid := r.Header.Get("X-Correlation-Id"); cid == "" || m["correlationId"] != cid {
		t.Fatalf("correlationId %v does not match the X-Correlation-Id header %q", m["correlationId"], cid)
	}
	if ts, _ := m["timestamp"].(string); !tsPattern.MatchString(ts) {
		t.Fatalf("timestamp %q is not RFC 3339 UTC with milliseconds", ts)
	}
	if m["error"] != httpStatusText(status) {
		t.Fatalf("error = %v, want %q", m["error"], httpStatusText(status))
	}
	return m
}

func httpStatusText(status int) string {
	return map[int]string{
		400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
		409: "Conflict", 413: "Request Entity Too Large", 422: "Unprocessable Entity", 429: "Too Many Requests",
		499: "Client Closed Request", 500: "Internal Server Error", 503: "Service Unavailable",
	}[status]
}

// detail is one entry of an error body's details.
type detail struct{ Field, Code, Message string }

// details returns the details of an error body.
func details(t *testing.T, r testenv.Response) []detail {
	t.Helper()
	var body struct{ Details []detail }
	r.Decode(t, &body)
	return body.Details
}

// expectValidation checks a 400 common.errors.validation naming exactly the given field/code
// pairs (in any order).
func expectValidation(t *testing.T, r testenv.Response, path string, want ...string) {
	t.Helper()
	expectError(t, r, 400, "common.errors.validation", path)
	var got []string
	for _, d := range details(t, r) {
		if d.Message == "" || d.Message == d.Code {
			t.Errorf("detail %s/%s has no translated message: %q", d.Field, d.Code, d.Message)
		}
		got = append(got, d.Field+"="+d.Code)
	}
	sort.Strings(got)
	want = slices.Clone(want)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("validation details = %v, want %v\n%s", got, want, r.Body)
	}
}

// keysOf returns the sorted keys of a JSON object.
func keysOf(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// expectKeys fails unless the object has exactly the keys want.
func expectKeys(t *testing.T, m map[string]any, want ...string) {
	t.Helper()
	want = slices.Clone(want)
	sort.Strings(want)
	if got := keysOf(m); !slices.Equal(got, want) {
		t.Fatalf("keys = %v, want %v", got, want)
	}
}

// outboxRow is one row of the outbox table.
type outboxRow struct {
	Type          string `db:"type"`
	Payload       string `db:"payload"`
	CorrelationID string `db:"correlation_id"`
}

// outboxFor returns the outbox rows written under a correlation id, oldest first.
func (a *app) outboxFor(t *testing.T, cid string) []outboxRow {
	t.Helper()
	var rows []outboxRow
	if err := a.db.Select(&rows, `SELECT type, payload::text AS payload, correlation_id FROM outbox WHERE correlation_id = $1 ORDER BY id`, cid); err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	return rows
}

// outboxCount counts every outbox row.
func (a *app) outboxCount(t *testing.T) int {
	t.Helper()
	var n int
	if err := a.db.Get(&n, `SELECT count(*) FROM outbox`); err != nil {
		t.Fatalf("count outbox: %v", err)
	}
	return n
}

// usersWithEmail counts users (live or deleted) with an email, case-insensitively.
func (a *app) usersWithEmail(t *testing.T, email string, liveOnly bool) int {
	t.Helper()
	q := `SELECT count(*) FROM users WHERE lower(email) = lower($1)`
	if liveOnly {
		q += ` AND deleted_at IS NULL`
	}
	var n int
	if err := a.db.Get(&n, q, strings.TrimSpace(email)); err != nil {
		t.Fatalf("count users: %v", err)
	}
	return n
}

// userRow reads a user's stored fields.
type userRow struct {
	Name     string `db:"name"`
	Email    string `db:"email"`
	Role     string `db:"role"`
	Language string `db:"language"`
	Hash     string `db:"password_hash"`
	Deleted  bool   `db:"deleted"`
}

func (a *app) userRow(t *testing.T, id string) userRow {
	t.Helper()
	var r userRow
	if err := a.db.Get(&r, `SELECT name, email, role, language, password_hash, deleted_at IS NOT NULL AS deleted FROM users WHERE id = $1`, id); err != nil {
		t.Fatalf("read user %s: %v", id, err)
	}
	return r
}

// rowLockWaiters counts the app's backends waiting for a row lock. Only those: a NOTIFY
// committing waits on the cluster-wide notify lock ('object'), which is no row of a test's.
func (a *app) rowLockWaiters(t *testing.T) int {
	t.Helper()
	var n int
	if err := a.db.Get(&n, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock'
		AND wait_event IN ('tuple', 'transactionid')`); err != nil {
		t.Fatal(err)
	}
	return n
}

// liveSessions counts the user's sessions that are not revoked.
func (a *app) liveSessions(t *testing.T, userID string) int {
	t.Helper()
	var n int
	if err := a.db.Get(&n, `SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL`, userID); err != nil {
		t.Fatalf("count sessions: %v", err)
	}
	return n
}

// listIDs returns the ids of a list response.
func listIDs(t *testing.T, r testenv.Response) []string {
	t.Helper()
	var page struct {
		Items []struct{ ID string }
	}
	r.Decode(t, &page)
	ids := make([]string, len(page.Items))
	for i, it := range page.Items {
		ids[i] = it.ID
	}
	return ids
}
