package httpapi_test

// The queue UI (SPEC §3 Operations, §10): asynqmon under /admin/queues behind HTTP basic auth
// from ADMIN_UI_USER / ADMIN_UI_PASSWORD. Wrong user and wrong password are refused alike, with
// the standard error body; in production the UI password has no default.

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// basicGet sends GET path with basic credentials (none when user and pass are both "").
func basicGet(t *testing.T, a *app, path, user, pass string) testenv.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, a.api.Base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" || pass != "" {
		req.SetBasicAuth(user, pass)
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

func TestQueueUIBehindBasicAuth(t *testing.T) {
	t.Parallel()
	a := newApp(t, "ADMIN_UI_USER", "ops", "ADMIN_UI_PASSWORD", "s3cret-queues")
	if a.cfg.AdminUIUser != "ops" || a.cfg.AdminUIPassword != "s3cret-queues" {
		t.Fatalf("config: user %q password %q", a.cfg.AdminUIUser, a.cfg.AdminUIPassword)
	}
	user, pass := a.cfg.AdminUIUser, a.cfg.AdminUIPassword

	// A queue of the test's own, with one task, for the UI's API to show.
	queue := "uitest" + uuid.NewString()[:8]
	client := asynq.NewClientFromRedisClient(a.rdb)
	if _, err := client.Enqueue(asynq.NewTask("notify:user", []byte(`{}`)), asynq.Queue(queue), asynq.TaskID("ui-task")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		iter := a.rdb.Scan(ctx, 0, "asynq:{"+queue+"}*", 100).Iterator()
		for iter.Next(ctx) {
			a.rdb.Del(ctx, iter.Val())
		}
		a.rdb.SRem(ctx, "asynq:queues", queue)
	})

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

func TestQueueUIPasswordRequiredInProduction(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"APP_ENV": "production", "JWT_ACCESS_SECRET": strings.Repeat("a", 40), "JWT_REFRESH_SECRET": strings.Repeat("b", 40),
		"STRIPE_SECRET_KEY": "sk_live_real", "STRIPE_WEBHOOK_SECRET": "whsec_real",
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
	env["ADMIN_UI_PASSWORD"] = "a-real-password"
	cfg, err := config.Load(config.API, getenv)
	if err != nil {
		t.Fatalf("production with every secret set: %v", err)
	}
	if cfg.AdminUIPassword != "a-real-password" {
		t.Fatalf("UI password %q", cfg.AdminUIPassword)
	}
}
