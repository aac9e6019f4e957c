package deploycheck_test

import (
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/dispatchhq/dispatch/internal/config"
)

// appService is what the compose file must say about one Dispatch program.
type appService struct {
	service  config.Service
	command  []string
	required []string // environment variables that must be set (the defaults do not work in compose)
	port     string   // the port its health check and Prometheus use ("" for migrate)
}

var appServices = map[string]appService{
	"migrate": {service: config.Migrate, command: []string{"/app/migrate", "up"}, required: []string{"DATABASE_URL"}},
	"api": {service: config.API, command: []string{"/app/api"}, port: "8080", required: []string{
		"APP_ENV", "DATABASE_URL", "REDIS_URL", "HTTP_ADDR", "JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET",
		"STRIPE_API_BASE", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "ADMIN_UI_USER", "ADMIN_UI_PASSWORD",
		"SEED_DEMO_DATA", "LOG_FORMAT", "LOKI_URL"}},
	"outbox-relay": {service: config.Relay, command: []string{"/app/outbox-relay"}, port: "9102", required: []string{
		"APP_ENV", "DATABASE_URL", "REDIS_URL", "OPS_ADDR", "LOG_FORMAT", "LOKI_URL"}},
	"worker": {service: config.Worker, command: []string{"/app/worker"}, port: "9101", required: []string{
		"APP_ENV", "DATABASE_URL", "REDIS_URL", "OPS_ADDR", "STRIPE_API_BASE", "STRIPE_SECRET_KEY", "LOG_FORMAT", "LOKI_URL"}},
}

// The backing and observability services and the images they must run.
var otherServices = map[string]string{
	"postgres":    "postgres:16-alpine",
	"redis":       "redis:7-alpine",
	"stripe-mock": "stripe/stripe-mock:v0.203.0",
	"prometheus":  "prom/prometheus:",
	"loki":        "grafana/loki:",
	"promtail":    "grafana/promtail:",
	"grafana":     "grafana/grafana:",
}

// pushLabel marks the containers whose programs push their logs to Loki themselves.
const pushLabelKey, pushLabelValue = "dispatch.logs", "loki-push"

// loadCompose parses docker-compose.yml as docker compose does: interpolation (from no
// environment at all, so the file's own defaults apply), normalization, consistency checks
// and the compose-spec schema.
func loadCompose(t testing.TB) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{path("docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithEnv(nil), cli.WithConsistency(true))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return p
}

// composeEnv returns the environment a compose service sets (keys without a value are left out).
func composeEnv(svc types.ServiceConfig) map[string]string {
	env := map[string]string{}
	for k, v := range svc.Environment {
		if v != nil {
			env[k] = *v
		}
	}
	return env
}

func TestComposeServices(t *testing.T) {
	p := loadCompose(t)
	if p.Name != "dispatch" {
		t.Errorf("project name %q, want dispatch (promtail keeps the logs of project dispatch only)", p.Name)
	}
	var want []string
	for name := range appServices {
		want = append(want, name)
	}
	for name := range otherServices {
		want = append(want, name)
	}
	sort.Strings(want)
	got := p.ServiceNames()
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Fatalf("services %v, want %v", got, want)
	}
	for name, image := range otherServices {
		if img := p.Services[name].Image; !strings.HasPrefix(img, image) || strings.HasSuffix(img, ":latest") || !strings.Contains(img, ":") {
			t.Errorf("%s runs image %q, want a pinned %s…", name, img, image)
		}
	}
}

func TestComposeAppEnvironment(t *testing.T) {
	p := loadCompose(t)
	known := map[string]bool{}
	for _, v := range config.Vars() {
		known[v] = true
	}
	dbURLs := map[string]bool{}
	for name, want := range appServices {
		svc := p.Services[name]
		env := composeEnv(svc)
		for k, v := range svc.Environment {
			if !known[k] {
				t.Errorf("%s: environment %s is not read by internal/config", name, k)
			}
			if v == nil {
				t.Errorf("%s: environment %s has no value", name, k)
			}
		}
		for _, k := range want.required {
			if strings.TrimSpace(env[k]) == "" {
				t.Errorf("%s: environment %s must be set", name, k)
			}
		}
		// The values must load: the same parser as the program's start-up.
		cfg, err := config.Load(want.service, func(k string) string { return env[k] })
		if err != nil {
			t.Errorf("%s: its environment does not load: %v", name, err)
			continue
		}
		// …and point at the compose services, not at the local defaults.
		dbURLs[cfg.DatabaseURL] = true
		checkHost(t, name, "DATABASE_URL", cfg.DatabaseURL, "postgres:5432")
		if name == "migrate" {
			continue
		}
		checkHost(t, name, "REDIS_URL", cfg.RedisURL, "redis:6379")
		if cfg.LokiURL != "http://loki:3100" {
			t.Errorf("%s: LOKI_URL = %q, want http://loki:3100", name, cfg.LokiURL)
		}
		if cfg.LogFormat != "json" {
			t.Errorf("%s: LOG_FORMAT = %q, want json (promtail and Loki queries parse JSON)", name, cfg.LogFormat)
		}
		if name == "api" || name == "worker" {
			checkHost(t, name, "STRIPE_API_BASE", cfg.StripeAPIBase, "stripe-mock:12111")
		}
		addr := cfg.OpsAddr
		if name == "api" {
			addr = cfg.HTTPAddr
		}
		if _, port, _ := net.SplitHostPort(addr); port != want.port {
			t.Errorf("%s: listens on %q, want port %s (health check and Prometheus use it)", name, addr, want.port)
		}
	}
	if len(dbURLs) != 1 {
		t.Errorf("the programs use different databases: %v", dbURLs)
	}
	api, worker := composeEnv(p.Services["api"]), composeEnv(p.Services["worker"])
	if api["STRIPE_SECRET_KEY"] != worker["STRIPE_SECRET_KEY"] || api["STRIPE_API_BASE"] != worker["STRIPE_API_BASE"] {
		t.Errorf("api and worker talk to different Stripes")
	}
}

func checkHost(t *testing.T, service, name, raw, want string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.Host != want {
		t.Errorf("%s: %s = %q, want host %s", service, name, raw, want)
	}
}

func TestComposeCommandsAndScaling(t *testing.T) {
	p := loadCompose(t)
	programs := cmdPrograms(t)
	for name, want := range appServices {
		svc := p.Services[name]
		if !slices.Equal([]string(svc.Command), want.command) {
			t.Errorf("%s: command %q, want %q", name, svc.Command, want.command)
		}
		if bin := strings.TrimPrefix(svc.Command[0], "/app/"); !programs[bin] {
			t.Errorf("%s: runs %s, which is not a program of ./cmd", name, svc.Command[0])
		}
		if svc.Build == nil || svc.Build.Dockerfile != "Dockerfile" || filepath.Clean(svc.Build.Context) != root {
			t.Errorf("%s: must build the repository's Dockerfile, got %+v", name, svc.Build)
		}
		if svc.Image != p.Services["api"].Image {
			t.Errorf("%s: image %q, want the one image of every program (%q)", name, svc.Image, p.Services["api"].Image)
		}
		pushes := svc.Labels[pushLabelKey] == pushLabelValue
		if pushes != (name != "migrate") {
			t.Errorf("%s: label %s=%s is %t; it marks exactly the programs that push to Loki (not migrate)", name, pushLabelKey, pushLabelValue, pushes)
		}
	}
	for name := range otherServices {
		if p.Services[name].Labels[pushLabelKey] != "" {
			t.Errorf("%s carries %s: promtail would drop its logs", name, pushLabelKey)
		}
	}
	w := p.Services["worker"]
	if w.ContainerName != "" || w.Hostname != "" {
		t.Errorf("worker: container_name %q / hostname %q stop --scale worker=3", w.ContainerName, w.Hostname)
	}
	if len(w.Ports) != 0 {
		t.Errorf("worker publishes ports %+v: a second replica could not bind them", w.Ports)
	}
	// Docker's default 10 s would kill a program still finishing its requests, batch or tasks.
	for _, name := range []string{"api", "outbox-relay", "worker"} {
		grace := p.Services[name].StopGracePeriod
		if grace == nil || time.Duration(*grace) <= 15*time.Second {
			t.Errorf("%s: stop_grace_period %v, want more than SHUTDOWN_TIMEOUT's 15 s", name, grace)
		}
	}
	if p.Services["migrate"].Restart != "no" {
		t.Errorf("migrate: restart %q, want \"no\" (one-shot)", p.Services["migrate"].Restart)
	}
	published := map[string]uint32{"api": 8080, "grafana": 3000}
	for name, port := range published {
		found := false
		for _, pc := range p.Services[name].Ports {
			found = found || (pc.Target == port && pc.Published == strconv.FormatUint(uint64(port), 10))
		}
		if !found {
			t.Errorf("%s: port %d is not published", name, port)
		}
	}
	// Every container in a network namespace of its own, reachable from this host only.
	for name, svc := range p.Services {
		if svc.NetworkMode != "" {
			t.Errorf("%s: network_mode %q, want the project's network", name, svc.NetworkMode)
		}
		for _, pc := range svc.Ports {
			if pc.HostIP != "127.0.0.1" {
				t.Errorf("%s: port %d published on %q, want 127.0.0.1 only", name, pc.Target, pc.HostIP)
			}
		}
	}
	// Bind mounts name files of the repository that exist.
	for name, svc := range p.Services {
		for _, v := range svc.Volumes {
			if v.Type != types.VolumeTypeBind || v.Source == "/var/run/docker.sock" {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s: bind mount %s: %v", name, v.Source, err)
			}
			if !strings.HasPrefix(v.Source, root) {
				t.Errorf("%s: bind mount %s is outside the repository", name, v.Source)
			}
		}
	}
}

func TestComposeDependenciesAndHealthChecks(t *testing.T) {
	p := loadCompose(t)
	wantDeps := map[string]map[string]string{
		"migrate":  {"postgres": types.ServiceConditionHealthy},
		"promtail": {"loki": types.ServiceConditionHealthy},
		"grafana":  {"prometheus": types.ServiceConditionHealthy, "loki": types.ServiceConditionHealthy},
	}
	for _, name := range []string{"api", "outbox-relay", "worker"} {
		wantDeps[name] = map[string]string{
			"migrate":     types.ServiceConditionCompletedSuccessfully,
			"postgres":    types.ServiceConditionHealthy,
			"redis":       types.ServiceConditionHealthy,
			"stripe-mock": types.ServiceConditionHealthy,
		}
	}
	for name, deps := range wantDeps {
		got := p.Services[name].DependsOn
		for dep, cond := range deps {
			if got[dep].Condition != cond {
				t.Errorf("%s depends on %s with condition %q, want %q", name, dep, got[dep].Condition, cond)
			}
		}
	}
	// The app services start without the observability images: nothing they need, however
	// indirectly, is Prometheus, Loki, promtail or Grafana.
	for _, name := range []string{"api", "outbox-relay", "worker"} {
		for _, dep := range dependencies(p, name) {
			if _, app := appServices[dep]; !app && !slices.Contains([]string{"postgres", "redis", "stripe-mock"}, dep) {
				t.Errorf("%s depends on %s: docker compose up %s would need its image", name, dep, name)
			}
		}
	}
	for name, svc := range p.Services {
		hc := svc.HealthCheck
		if name == "migrate" {
			if hc != nil && !hc.Disable {
				t.Errorf("migrate is a one-shot; a health check makes no sense there")
			}
			continue
		}
		if hc == nil || hc.Disable || len(hc.Test) < 2 || (hc.Test[0] != "CMD" && hc.Test[0] != "CMD-SHELL") {
			t.Errorf("%s: no health check (%+v)", name, hc)
			continue
		}
		if app, ok := appServices[name]; ok {
			want := "http://127.0.0.1:" + app.port + "/ready"
			if !slices.Equal([]string(hc.Test), []string{"CMD", "wget", "-q", "-O", "/dev/null", want}) {
				t.Errorf("%s: health check %q, want busybox wget of %s", name, hc.Test, want)
			}
		}
	}
}

// dependencies returns every service name depends on, directly or not.
func dependencies(p *types.Project, name string) []string {
	seen := map[string]bool{}
	var walk func(string)
	walk = func(n string) {
		for dep := range p.Services[n].DependsOn {
			if !seen[dep] {
				seen[dep] = true
				walk(dep)
			}
		}
	}
	walk(name)
	out := make([]string, 0, len(seen))
	for dep := range seen {
		out = append(out, dep)
	}
	sort.Strings(out)
	return out
}

// TestDockerComposeConfig asks the docker CLI's compose plugin to validate the file, when the
// plugin is installed (it needs no engine).
func TestDockerComposeConfig(t *testing.T) {
	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Log("docker CLI absent: docker compose config not run (compose-go checked the file)")
		return
	}
	if out, err := exec.Command(docker, "compose", "version").CombinedOutput(); err != nil {
		t.Logf("docker compose plugin absent (%s): docker compose config not run (compose-go checked the file)", strings.TrimSpace(string(out)))
		return
	}
	cmd := exec.Command(docker, "compose", "-f", path("docker-compose.yml"), "config", "-q")
	cmd.Dir = root
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker compose config: %v\n%s", err, out)
	}
}
