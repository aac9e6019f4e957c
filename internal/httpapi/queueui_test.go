package httpapi_test

// The queue UI (SPEC §3 Operations, §10): asynqmon under /admin/queues behind HTTP basic auth
// from ADMIN_UI_USER / ADMIN_UI_PASSWORD. Wrong user and wrong password are refused alike, with
// the standard error body; in production the UI password has no default.

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// basicGet sends GET path with basic credentials (none when user and pass are both "").
func basicGet(t *testing.T, a *app, path, user, pass string) testenv.Response {
	t.Helper()
	return basicDo(t, a, http.MethodGet, path, user, pass)
}

// basicDo sends a bodiless request with basic credentials and the headers given as name, value
// pairs.
func basicDo(t *testing.T, a *app, method, path, user, pass string, headers ...string) testenv.Response {
	t.Helper()
	req, err := http.NewRequest(method, a.api.Base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" || pass != "" {
		req.SetBasicAuth(user, pass)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return testenv.Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

// ownQueue makes a queue of the test's own with one task in it, removed when the test ends.
func ownQueue(t *testing.T, a *app) string {
	t.Helper()
	queue := "uitest" + uuid.NewString()[:8]
	if _, err := asynq.NewClientFromRedisClient(a.rdb).Enqueue(asynq.NewTask("notify:user", []byte(`{}`)), asynq.Queue(queue)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		iter := a.rdb.Scan(ctx, 0, "asynq:{"+queue+"}*", 100).Iterator()
		for iter.Next(ctx) {
			a.rdb.Del(ctx, iter.Val())
		}
		a.rdb.SRem(ctx, tasks.QueueIndex, queue)
	})
	return queue
}

func TestQueueUIBehindBasicAuth(t *testing.T) {
	t.Parallel()
	a := newApp(t, "ADMIN_UI_USER", "ops", "ADMIN_UI_PASSWORD", "s3cret-queues", "RATE_LIMITS", "login=10")
	if a.cfg.AdminUIUser != "ops" || a.cfg.AdminUIPassword != "s3cret-queues" {
		t.Fatalf("config: user %q password %q", a.cfg.AdminUIUser, a.cfg.AdminUIPassword)
	}
	user, pass := a.cfg.AdminUIUser, a.cfg.AdminUIPassword

	queue := ownQueue(t, a) // for the UI's API to show

	refusals := map[string]testenv.Response{
		"no credentials":         basicGet(t, a, "/admin/queues", "", ""),
		"wrong user":             basicGet(t, a, "/admin/queues", "admin", pass),
		"wrong password":         basicGet(t, a, "/admin/queues", user, "dispatch"),
		"both wrong":             basicGet(t, a, "/admin/queues", "nobody", "nothing"),
		"empty password":         basicGet(t, a, "/admin/queues", user, ""),
		"UI API, wrong password": basicGet(t, a, "/admin/queues/api/queues/"+queue, user, pass+"x"),
	}
	var first map[string]any
	for name, r := range refusals {
		body := r.ExpectError(t, http.StatusUnauthorized, "auth.errors.basicAuth")
		if got := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic realm=") {
			t.Errorf("%s: WWW-Authenticate %q", name, got)
		}
		if strings.Contains(string(r.Body), "asynq") || strings.Contains(string(r.Body), "<html") {
			t.Errorf("%s: the refusal shows the UI: %s", name, r.Body)
		}
		// Nothing tells which part was wrong: the bodies differ only in per-request fields.
		for _, k := range []string{"correlationId", "timestamp", "path"} {
			delete(body, k)
		}
		if first == nil {
			first = body
			continue
		}
		a, _ := json.Marshal(body)
		b, _ := json.Marshal(first)
		if string(a) != string(b) {
			t.Errorf("%s: refusal body %s differs from %s", name, a, b)
		}
	}

	page := basicGet(t, a, "/admin/queues", user, pass).Expect(t, http.StatusOK)
	if ct := page.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || !strings.Contains(strings.ToLower(string(page.Body)), "<html") {
		t.Fatalf("queue UI page: content type %q, body %.200s", ct, page.Body)
	}

	info := basicGet(t, a, "/admin/queues/api/queues/"+queue, user, pass).Expect(t, http.StatusOK)
	// (asynqmon writes its JSON without a content type of its own.)
	var q struct {
		Current struct {
			Queue   string `json:"queue"`
			Size    int    `json:"size"`
			Pending int    `json:"pending"`
		} `json:"current"`
	}
	info.Decode(t, &q)
	if q.Current.Queue != queue || q.Current.Size != 1 || q.Current.Pending != 1 {
		t.Fatalf("queue UI API answered %s, want queue %s with one task", info.Body, queue)
	}
}

// The UI's actions cannot be sent by another site's page through the operator's browser (which
// adds the basic credentials by itself): a cross-site POST is refused and changes nothing, the
// UI's own and a non-browser client's go through.
func TestQueueUIRefusesCrossSiteActions(t *testing.T) {
	t.Parallel()
	a := newApp(t, "ADMIN_UI_USER", "ops", "ADMIN_UI_PASSWORD", "s3cret-queues")
	queue := ownQueue(t, a)
	inspector := asynq.NewInspectorFromRedisClient(a.rdb)
	paused := func() bool {
		info, err := inspector.GetQueueInfo(queue)
		if err != nil {
			t.Fatal(err)
		}
		return info.Paused
	}
	pause := func(headers ...string) testenv.Response {
		return basicDo(t, a, http.MethodPost, "/admin/queues/api/queues/"+queue+":pause", "ops", "s3cret-queues", headers...)
	}
	pause("Sec-Fetch-Site", "cross-site").ExpectError(t, http.StatusForbidden, "auth.errors.forbidden")
	pause("Origin", "https://elsewhere.example").ExpectError(t, http.StatusForbidden, "auth.errors.forbidden")
	if paused() {
		t.Fatal("a cross-site request paused the queue")
	}
	pause("Sec-Fetch-Site", "same-origin").Expect(t, http.StatusNoContent)
	if !paused() {
		t.Fatal("the UI's own request did not pause the queue")
	}
	// Reading stays open to a link from elsewhere.
	basicGet(t, a, "/admin/queues/api/queues/"+queue, "ops", "s3cret-queues").Expect(t, http.StatusOK)
}

// TestQueueUIFailedAttemptsAreLimited: past the login limit of wrong credentials in a minute,
// an IP is refused (429, even with the right password) until the window ends; other IPs are not.
func TestQueueUIFailedAttemptsAreLimited(t *testing.T) {
	t.Parallel()
	a := newApp(t, "ADMIN_UI_USER", "ops", "ADMIN_UI_PASSWORD", "s3cret-queues", "RATE_LIMITS", "login=3",
		"TRUSTED_PROXIES", "127.0.0.1/8,::1/128")
	// Requests without credentials (a browser's first) are not attempts.
	for i := 0; i < 5; i++ {
		basicGet(t, a, "/admin/queues", "", "").ExpectError(t, http.StatusUnauthorized, "auth.errors.basicAuth")
	}
	for i := 0; i < 3; i++ {
		basicGet(t, a, "/admin/queues", "ops", "guess-"+strconv.Itoa(i)).ExpectError(t, http.StatusUnauthorized, "auth.errors.basicAuth")
	}
	for _, pass := range []string{"guess-4", "s3cret-queues"} {
		r := basicGet(t, a, "/admin/queues", "ops", pass)
		r.ExpectError(t, http.StatusTooManyRequests, "common.errors.rateLimited")
		if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
			t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
		}
	}
	// Another client IP (through the trusted loopback proxy) is not locked out.
	req, _ := http.NewRequest(http.MethodGet, a.api.Base+"/admin/queues", nil)
	req.SetBasicAuth("ops", "s3cret-queues")
	req.Header.Set("X-Forwarded-For", "203.0.113.77")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("another IP with the right password: %d", resp.StatusCode)
	}
}

// TestQueueUIParallelGuessesAreLimited: a burst of wrong credentials sent at once gets no more
// than the limit of them answered 401; the rest are refused, and so is the right password.
func TestQueueUIParallelGuessesAreLimited(t *testing.T) {
	t.Parallel()
	a := newApp(t, "ADMIN_UI_USER", "ops", "ADMIN_UI_PASSWORD", "s3cret-queues", "RATE_LIMITS", "login=3")
	const burst = 30
	statuses := make(chan int, burst)
	var wg sync.WaitGroup
	for i := 0; i < burst; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, a.api.Base+"/admin/queues", nil)
			req.SetBasicAuth("ops", "guess-"+strconv.Itoa(i))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	seen := map[int]int{}
	for s := range statuses {
		seen[s]++
	}
	if seen[http.StatusUnauthorized] != 3 || seen[http.StatusTooManyRequests] != burst-3 {
		t.Fatalf("answers to %d parallel guesses %v, want 3 × 401 and the rest 429", burst, seen)
	}
	basicGet(t, a, "/admin/queues", "ops", "s3cret-queues").ExpectError(t, http.StatusTooManyRequests, "common.errors.rateLimited")
}

func TestQueueUIPasswordRequiredInProduction(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"APP_ENV": "production", "JWT_ACCESS_SECRET": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		"JWT_REFRESH_SECRET": "Vq3xT8kLm2Rz7Yp4Wn6Bd1Hs9Gf5Jc0Ea8Ku3Ot7Ni2",
		"STRIPE_SECRET_KEY":  "sk_live_51Hx8sQ2eZvKYlo2C0aB3dE4fG5hI6jK7lM8nO9pQ", "STRIPE_WEBHOOK_SECRET": "whsec_Xk29vLp0QmZr8TbN4cYw7HdJ1sFg6EaU",
	}
	getenv := func(k string) string { return env[k] }
	_, err := config.Load(config.API, getenv)
	if err == nil || !strings.Contains(err.Error(), "ADMIN_UI_PASSWORD") {
		t.Fatalf("production without ADMIN_UI_PASSWORD: %v, want an error naming it", err)
	}
	env["ADMIN_UI_PASSWORD"] = config.DefaultAdminUIPassword
	if _, err := config.Load(config.API, getenv); err == nil || !strings.Contains(err.Error(), "ADMIN_UI_PASSWORD") {
		t.Fatalf("production with the default UI password: %v, want an error naming it", err)
	}
	env["ADMIN_UI_PASSWORD"] = "queues"
	if _, err := config.Load(config.API, getenv); err == nil || !strings.Contains(err.Error(), "ADMIN_UI_PASSWORD") {
		t.Fatalf("production with a weak UI password: %v, want an error naming it", err)
	}
	env["ADMIN_UI_PASSWORD"] = "tidy-otter-7-glacier-lamp"
	cfg, err := config.Load(config.API, getenv)
	if err != nil {
		t.Fatalf("production with every secret set: %v", err)
	}
	if cfg.AdminUIPassword != "tidy-otter-7-glacier-lamp" {
		t.Fatalf("UI password %q", cfg.AdminUIPassword)
	}
}

// TestQueueUIWithoutRedis: while Redis cannot count attempts the UI is refused, right password
// or not (503, not an uncounted guess); when the UI's own Redis calls fail, it answers 503 with
// the JSON error body, not asynqmon's plain-text 500 naming the connection.
func TestQueueUIWithoutRedis(t *testing.T) {
	t.Parallel()
	creds := []string{"ADMIN_UI_USER", "ops", "ADMIN_UI_PASSWORD", "s3cret-queues"}
	down := newAppRedisDown(t, creds...)
	for _, pass := range []string{"s3cret-queues", "guess"} {
		for _, path := range []string{"/admin/queues", "/admin/queues/api/queues"} {
			r := basicGet(t, down, path, "ops", pass)
			r.ExpectError(t, http.StatusServiceUnavailable, "common.errors.unavailable")
		}
	}

	// Attempts counted, the UI's own Redis unreachable.
	dead := "redis://127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) + "/0"
	a := newApp(t, append(creds, "REDIS_URL", dead)...)
	r := basicGet(t, a, "/admin/queues/api/queues", "ops", "s3cret-queues")
	r.ExpectError(t, http.StatusServiceUnavailable, "common.errors.unavailable")
	if strings.Contains(string(r.Body), "127.0.0.1") || r.Header.Get("Retry-After") == "" {
		t.Fatalf("answer: %v %s", r.Header, r.Body)
	}
}
