package httpapi_test

// Hostile input: values Go accepts and PostgreSQL refuses, bodies that are not objects, text
// that is not UTF-8, and a sweep sending every route a battery of such values. Nothing a client
// sends may produce a 5xx (SPEC §1); every refusal has the standard error body.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/httpapi"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// TestTimeFiltersTakeEveryRFC3339Offset: offsets up to ±23:59 and the years 0000 and 9999 are
// valid RFC 3339; PostgreSQL stores offsets up to ±15:59 only, so filters are compared in UTC.
func TestTimeFiltersTakeEveryRFC3339Offset(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as("admin@dispatch.local")
	for _, v := range []string{
		"2026-01-01T00:00:00+16:00", "2026-01-01T00:00:00-23:59", "2026-01-01T00:00:00+23:59",
		"0000-01-01T00:00:00Z", "0000-01-01T00:00:00+23:00", "9999-12-31T23:59:59-23:59", "9999-12-31T23:59:59.999999999Z",
		"2026-01-01", "9999-12-31", "2026-01-01T00:00:00", // what clients commonly send: a day, a time without an offset
	} {
		for _, path := range []string{"/v1/orders/me", "/v1/admin/orders"} {
			for _, name := range []string{"from", "to"} {
				admin.Do("GET", path+"?"+name+"="+url.QueryEscape(v), nil).Expect(t, http.StatusOK)
			}
		}
	}
	for _, bad := range []string{"2026-01-01T00:00", "2026-13-01", "10000-01-01T00:00:00Z", "10000-01-01", "now"} {
		resp := admin.Do("GET", "/v1/orders/me?from="+url.QueryEscape(bad), nil)
		expectValidation(t, resp, "/v1/orders/me", "from=validation.timestamp")
	}
}

// TestBodiesMustBeObjects: null, arrays and scalars are refused everywhere, PATCH included,
// and change nothing.
func TestBodiesMustBeObjects(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as("admin@dispatch.local")
	acc := a.provision(t, auth.RoleUser)
	target := a.provision(t, auth.RoleUser)
	routes := []struct {
		method, path string
		c            *testenv.Client
	}{
		{"PATCH", "/v1/users/me", a.api.As(acc.Access)},
		{"PATCH", "/v1/admin/users/" + target.ID, admin},
		{"PATCH", "/v1/admin/items/" + demoItemID(0), admin},
		{"POST", "/v1/orders", admin},
		{"POST", "/v1/auth/login", a.api},
	}
	for _, r := range routes {
		for _, body := range []string{"null", " null ", "[]", `"x"`, "1", "true"} {
			resp := r.c.Do(r.method, r.path, body, key()...)
			expectError(t, resp, 400, "common.errors.malformedJson", strings.Split(r.path, "?")[0])
		}
	}
	if u := a.userRow(t, acc.ID); u.Name != "Test user" {
		t.Fatalf("a refused PATCH changed the user: %+v", u)
	}
	// Where the body is optional, null is none (SPEC §11 reads a null field so): the deliver
	// of an order that does not exist is judged on the order, not refused for its body.
	deliver := "/v1/admin/orders/" + uuid.NewString() + "/deliver"
	expectError(t, admin.Do("PATCH", deliver, "null", key()...), 404, "orders.errors.notFound", deliver)
	expectError(t, admin.Do("PATCH", deliver, "[]", key()...), 400, "common.errors.malformedJson", deliver)
}

// TestBodyTextMustBeValidUnicode: bytes that are not UTF-8 and unpaired surrogate escapes are
// refused (not stored as U+FFFD), NUL escapes too, each naming the field; real non-ASCII text
// and surrogate pairs are stored as sent.
func TestBodyTextMustBeValidUnicode(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	acc := a.provision(t, auth.RoleUser)
	c := a.api.As(acc.Access)
	for body, want := range map[string][2]string{
		"{\"name\":\"\xff\xfeAB\"}":                          {"name", "validation.utf8"},
		"{\"name\":\"Ana \xc3\"}":                            {"name", "validation.utf8"},
		`{"name":"Ana \ud800"}`:                              {"name", "validation.utf8"},
		`{"name":"Ana \udc00\ud800"}`:                        {"name", "validation.utf8"},
		`{"name":"Ana \ud83d"}`:                              {"name", "validation.utf8"},
		`{"name":"Ana\u0000"}`:                               {"name", "validation.nulCharacter"},
		`{"address":{"line1":"x\u0000","city":"c"}}`:         {"address.line1", "validation.nulCharacter"},
		"{\"address\":{\"line1\":\"ok\",\"city\":\"\x80\"}}": {"address.city", "validation.utf8"},
		"{\"na\xffme\":\"Ana\"}":                             {"body", "validation.utf8"},
	} {
		resp := c.Do("PATCH", "/v1/users/me", body)
		expectError(t, resp, 400, "common.errors.validation", "/v1/users/me")
		got := details(t, resp)
		if len(got) != 1 || got[0].Field != want[0] || got[0].Code != want[1] {
			t.Errorf("%q: details %+v, want %s %s", body, got, want[0], want[1])
		}
	}
	if u := a.userRow(t, acc.ID); u.Name != "Test user" {
		t.Fatalf("a refused body changed the user: %+v", u)
	}
	var me struct{ Name string }
	c.Do("PATCH", "/v1/users/me", `{"name":"Zoë \ud83d\ude00 Ñandú"}`).Expect(t, 200).Decode(t, &me)
	if me.Name != "Zoë 😀 Ñandú" {
		t.Fatalf("name stored as %q", me.Name)
	}
}

// TestHostileValuesNeverAnswer5xx sends every route a battery of hostile path ids, query
// values, headers and bodies, as the most privileged user so that guards let them through to
// the handlers, and checks that no answer is a 5xx and every error has the standard body.
func TestHostileValuesNeverAnswer5xx(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	super := a.as("superadmin@dispatch.local")
	var (
		sent   atomic.Int64
		mu     sync.Mutex
		broken []string
		work   = make(chan hostileRequest)
		wg     sync.WaitGroup
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				status, body, err := r.send(super)
				sent.Add(1)
				if problem := judge(r.method, status, body, err); problem != "" {
					mu.Lock()
					broken = append(broken, fmt.Sprintf("%s %s %.300q: %.300s", r.method, r.path, r.body, problem))
					mu.Unlock()
				}
			}
		}()
	}
	for _, rt := range a.srv.Engine().Routes() {
		if sweepSkips[rt.Method+" "+rt.Path] || strings.HasPrefix(rt.Path, httpapi.QueueUIPath) && rt.Method != http.MethodGet {
			continue // the queue UI answers every method alike
		}
		for _, r := range hostileRequests(rt.Method, rt.Path) {
			work <- r
		}
	}
	close(work)
	wg.Wait()
	t.Logf("%d hostile requests sent", sent.Load())
	if len(broken) > 0 {
		t.Fatalf("%d answers broke the contract:\n%s", len(broken), strings.Join(broken[:min(len(broken), 40)], "\n"))
	}
}

// sweepSkips are routes the sweep leaves out: they end the sweep's own session or account.
var sweepSkips = map[string]bool{"POST /v1/auth/logout": true, "DELETE /v1/users/me": true}

// Hostile values.
var (
	hostileIDs = []string{"not-a-uuid", "\x00", "\xff\xfe", randomText(4000), // long and incompressible
		"00000000-0000-0000-0000-000000000000", uuid.NewString(), "{" + uuid.NewString() + "}", "urn:uuid:" + uuid.NewString()}
	hostileQuery = []string{"-1", "101", "9223372036854775808", "\x00", "\xff\xfe", "2026-01-01T00:00:00+16:00",
		"0000-01-01T00:00:00+23:00", "9999-12-31T23:59:59-23:59", strings.Repeat("é", 300), "%_\\"}
	queryNames = []string{"limit", "cursor", "from", "to", "status", "name", "email", "description", "role", "userId",
		"unread", "lang"}
	hostileValues = []string{`null`, `[]`, `{}`, `-1`, `1.5`, `1e309`, `9223372036854775808`, `1e18`, `true`, `" "`,
		`"\u0000"`, `"\ud800"`, "\"\xff\xfe\"", `"` + randomText(10000) + `"`, `"2026-01-01T00:00:00+23:59"`,
		`{"line1":"\u0000","city":[]}`, `[{"itemId":"\u0000","quantity":1e18}]`, `[{"itemId":null,"quantity":null}]`}
	bodyFields = []string{"name", "email", "password", "currentPassword", "language", "address", "role", "price",
		"stock", "currency", "description", "pricePaymentId", "items", "trackingNumber", "carrier", "reason", "status"}
	hostileBodies = []string{"null", "[]", `"x"`, "42", "{}", `{"":1}`, `{"name":"a","name":"b"}`, "{\"\x00\":1}"}
)

type hostileRequest struct {
	method, path, body string
	headers            []string
}

func hostileRequests(method, template string) []hostileRequest {
	var out []hostileRequest
	add := func(path, body string, headers ...string) {
		out = append(out, hostileRequest{method, path, body, append([]string{"Idempotency-Key", uuid.NewString()}, headers...)})
	}
	concrete := strings.NewReplacer(":id", uuid.NewString(), "*path", "api/queues").Replace(template)
	if strings.Contains(template, ":id") {
		for _, id := range hostileIDs {
			add(strings.Replace(template, ":id", url.PathEscape(id), 1), "{}")
		}
	}
	for _, name := range queryNames {
		for _, v := range hostileQuery {
			if method == http.MethodGet { // filters are read by the GET routes
				add(concrete+"?"+url.Values{name: {v}}.Encode(), "{}")
			}
		}
	}
	for _, h := range [][]string{
		{"Idempotency-Key", strings.Repeat("k", 300)}, {"Idempotency-Key", "ké"}, {"Accept-Language", strings.Repeat("pt-BR;q=0.", 500)},
		{"X-Correlation-Id", strings.Repeat("c", 500)}, {"Authorization", "Bearer a.b.c"}, {"Authorization", "Basic Zm9vOmJhcg=="},
		{"Content-Type", "text/plain"},
	} {
		add(concrete, "{}", h...)
	}
	if method == http.MethodGet {
		return out
	}
	for _, b := range hostileBodies {
		add(concrete, b)
	}
	for _, f := range bodyFields {
		for _, v := range hostileValues {
			add(concrete, `{"`+f+`":`+v+`}`)
		}
	}
	return out
}

// send sends the request as c would, with its raw body bytes.
func (r hostileRequest) send(c *testenv.Client) (int, []byte, error) {
	req, err := http.NewRequest(r.method, c.Base+r.path, bytes.NewReader([]byte(r.body)))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(r.headers); i += 2 {
		req.Header.Set(r.headers[i], r.headers[i+1])
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// judge returns what is wrong with an answer, or "".
func judge(method string, status int, body []byte, err error) string {
	switch {
	case err != nil:
		return err.Error()
	case status >= 500:
		return fmt.Sprintf("status %d: %s", status, body)
	case status < 400, method == http.MethodHead:
		return ""
	}
	var e struct {
		Success    *bool
		StatusCode int
		Code       string
	}
	if json.Unmarshal(body, &e) != nil || e.Success == nil || *e.Success || e.StatusCode != status || e.Code == "" {
		return fmt.Sprintf("status %d without the error body: %.200s", status, body)
	}
	return ""
}

// randomText is n characters that do not compress (an index entry cannot shrink below its size).
func randomText(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[rand.IntN(36)]
	}
	return string(b)
}

// TestRequestHoldingAKeyEndsBeforeItsLease: a request holding an Idempotency-Key that runs past
// its deadline (here, waiting for a row lock; in production, the key's lease less 5 s) stops,
// answers 503 with Retry-After and writes nothing, so that no retry taking the key over after the
// lease can do the work beside it; the retry does it once.
func TestRequestHoldingAKeyEndsBeforeItsLease(t *testing.T) {
	t.Parallel()
	rdb, keys, redisURL := testenv.Redis(t)
	a := startAppWith(t, httpapi.Options{Deadline: 2 * time.Second}, rdb, keys, redisURL)
	acc := a.signUpAccount(t, nil)
	tx := a.holdUser(t, acc.ID)
	c := a.api.As(acc.Access)
	key := uuid.NewString()
	resp := c.Do("PATCH", "/v1/users/me", map[string]any{"name": "Slow Change"}, "Idempotency-Key", key)
	expectError(t, resp, 503, "common.errors.unavailable", "/v1/users/me")
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if a.userRow(t, acc.ID).Name == "Slow Change" {
		t.Fatal("the change past its deadline was made")
	}
	// The retry has the same short deadline: on a loaded machine it may run out again, and so
	// answer 503 again, with nothing written.
	testenv.Eventually(t, 30*time.Second, "the retry answered 200", func() bool {
		r := c.Do("PATCH", "/v1/users/me", map[string]any{"name": "Slow Change"}, "Idempotency-Key", key)
		if r.Status != 200 {
			expectError(t, r, 503, "common.errors.unavailable", "/v1/users/me")
		}
		return r.Status == 200
	})
	if a.userRow(t, acc.ID).Name != "Slow Change" {
		t.Fatal("the retry did not make the change")
	}
}

// holdUser locks the user's row in a transaction of the test's (rolled back when the test ends),
// so that a request changing the user waits.
func (a *app) holdUser(t *testing.T, id string) *postgres.Tx {
	t.Helper()
	tx, err := a.db.BeginTxx(testenv.Context(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	if _, err := tx.ExecContext(testenv.Context(t), `SELECT FROM users WHERE id = $1 FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}
	return tx
}

// TestClientThatLeavesIsNotAServerError: a client that closes its side of the connection while
// its request waits (here for the user's row) makes the request's next database call fail with
// the request's context. That is the client's doing: 499 with the error body to a client still
// reading, logged without an error, not a 500.
func TestClientThatLeavesIsNotAServerError(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	acc := a.signUpAccount(t, nil)
	a.holdUser(t, acc.ID)

	conn, err := net.Dial("tcp", strings.TrimPrefix(a.api.Base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"name":"Gone Client"}`
	fmt.Fprintf(conn, "PATCH /v1/users/me HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		acc.Access, len(body), body)
	testenv.Eventually(t, 10*time.Second, "the change waiting for the user's row", func() bool {
		var n int
		if err := a.db.Get(&n, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	expectError(t, testenv.Response{Status: resp.StatusCode, Header: resp.Header, Body: got}, 499, "common.errors.clientClosedRequest", "/v1/users/me")
	if logs := a.logs.String(); strings.Contains(logs, `"level":"ERROR"`) {
		t.Fatalf("a client that left was logged as an error:\n%s", logs)
	}
	if a.userRow(t, acc.ID).Name == "Gone Client" {
		t.Fatal("the abandoned change was made")
	}
}
