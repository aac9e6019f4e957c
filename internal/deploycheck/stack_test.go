//go:build compose

package deploycheck_test

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// The app services of docker-compose.yml: everything but the observability services, whose
// images a machine may not have.
var composeApp = []string{"postgres", "redis", "stripe-mock", "migrate", "api", "worker", "outbox-relay"}

// TestComposeStack builds the image from the Dockerfile and runs the app services of
// docker-compose.yml on a Docker engine: one order placed and paid through the published port
// goes to PROCESSED; then with --scale worker=3 every replica takes work; then down -v leaves
// no container, volume or network. It logs how long each step took.
//
// It needs Docker, Compose and the images (or their stand-ins), so it is built only with the
// compose tag (make compose-check). The project name is of its own and the API is
// published on a free port of 127.0.0.1 (COMPOSE_API_PORT to choose it), so a running
// `docker compose up` or local stack is not disturbed.
func TestComposeStack(t *testing.T) {
	c := newComposeRun(t)
	c.step("image build", func() { c.buildImage() })
	c.step("up (app services healthy)", func() {
		c.compose(append([]string{"up", "-d", "--wait", "--wait-timeout", "600"}, composeApp...)...)
	})
	if got := strings.TrimSpace(c.compose("port", "api", "8080")); got != "127.0.0.1:"+c.apiPort {
		t.Fatalf("api published on %q, want 127.0.0.1:%s only", got, c.apiPort)
	}

	api := testenv.NewClient(t, "http://127.0.0.1:"+c.apiPort)
	d := newDriver(t, api.Base, nil, composeEnv(loadCompose(t).Services["api"])["STRIPE_WEBHOOK_SECRET"])
	customer := d.customer()
	c.step("first order placed, paid and processed", func() {
		o := d.order(customer, demo.Items()[0].ID.String(), "")
		d.pay(o, o.Total, "")
		waitOrderStatus(t, customer, o.ID, "PROCESSED")
	})

	c.step("scale to 3 workers (healthy)", func() {
		c.compose("up", "-d", "--wait", "--wait-timeout", "300", "--no-recreate", "--scale", "worker=3", "worker")
	})
	before := c.workerTasks(3)
	var after []float64
	orders := 0
	c.step("orders until every worker has taken work", func() {
		for orders < 30 {
			o := d.order(customer, demo.Items()[1].ID.String(), "")
			d.pay(o, o.Total, "")
			waitOrderStatus(t, customer, o.ID, "PROCESSED")
			orders++
			if after = c.workerTasks(3); allGrew(before, after) {
				return
			}
		}
		t.Fatalf("after %d orders, tasks done per worker went from %v to %v: not every replica took work", orders, before, after)
	})
	t.Logf("%d orders; successful tasks per worker replica: %v before, %v after", orders, before, after)
}

// composeRun is one project of docker-compose.yml, taken down with its volumes when the test
// ends.
type composeRun struct {
	t       *testing.T
	project string
	apiPort string
	env     []string
	timings []string
}

func newComposeRun(t *testing.T) *composeRun {
	port := os.Getenv("COMPOSE_API_PORT")
	if port == "" {
		port = strconv.Itoa(testenv.FreePort(t))
	}
	c := &composeRun{t: t, project: "dispatch-check-" + strconv.Itoa(os.Getpid()), apiPort: port}
	// RATE_LIMIT_ENABLED=false: the scaling step places orders faster than the per-IP limits.
	c.env = append(os.Environ(), "API_PORT="+port, "RATE_LIMIT_ENABLED=false")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("compose logs:\n%s", c.run("logs", "--no-color", "--tail", "40"))
		}
		c.step("down -v", func() { c.compose("down", "-v", "--remove-orphans") })
		for _, what := range [][]string{{"ps", "-aq"}, {"volume", "ls", "-q"}, {"network", "ls", "-q"}} {
			args := append(what, "--filter", "label=com.docker.compose.project="+c.project)
			if out, err := exec.Command("docker", args...).Output(); err != nil || strings.TrimSpace(string(out)) != "" {
				t.Errorf("after down -v, docker %s: %q %v", strings.Join(args, " "), out, err)
			}
		}
		t.Logf("timings (project %s):\n%s", c.project, strings.Join(c.timings, "\n"))
	})
	return c
}

// step runs f and records how long it took.
func (c *composeRun) step(name string, f func()) {
	start := time.Now()
	defer func() {
		c.timings = append(c.timings, fmt.Sprintf("  %-42s %6.1f s", name, time.Since(start).Seconds()))
	}()
	f()
}

// run runs docker compose on the project and returns its output, failing the test on error.
func (c *composeRun) compose(args ...string) string {
	c.t.Helper()
	out, err := c.exec(args...)
	if err != nil {
		c.t.Fatalf("docker compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// run is compose without failing the test.
func (c *composeRun) run(args ...string) string {
	out, _ := c.exec(args...)
	return out
}

func (c *composeRun) exec(args ...string) (string, error) {
	cmd := exec.Command("docker", append([]string{"compose", "-p", c.project, "-f", path("docker-compose.yml")}, args...)...)
	cmd.Dir, cmd.Env = root, c.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// buildImage builds the image the app services run (dispatch:local) from the Dockerfile, as
// make image does: with BuildKit, whichever way this machine's Docker offers it.
func (c *composeRun) buildImage() {
	c.t.Helper()
	cmd := exec.Command(path("scripts/build-image.sh"), "dispatch:local")
	cmd.Env = c.env
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("scripts/build-image.sh: %v\n%s", err, out)
	}
}

// workerTasks returns the successful task attempts each of n worker replicas has counted.
func (c *composeRun) workerTasks(n int) []float64 {
	c.t.Helper()
	out := make([]float64, n)
	for i := range out {
		text := c.compose("exec", "-T", "--index", strconv.Itoa(i+1), "worker", "wget", "-q", "-O", "-", "http://127.0.0.1:9101/metrics")
		tp := expfmt.NewTextParser(model.UTF8Validation)
		families, err := tp.TextToMetricFamilies(strings.NewReader(text))
		if err != nil {
			c.t.Fatalf("worker %d metrics: %v", i+1, err)
		}
		for _, m := range families["dispatch_tasks_total"].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == "success" {
					out[i] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

func allGrew(before, after []float64) bool {
	for i := range before {
		if after[i] <= before[i] {
			return false
		}
	}
	return true
}

// waitOrderStatus polls the API until the order has status want and no pending action.
func waitOrderStatus(t *testing.T, c *testenv.Client, id, want string) {
	t.Helper()
	testenv.Eventually(t, 2*time.Minute, "order "+id+" reaches "+want, func() bool {
		var o struct {
			Status        string
			PendingAction *string
		}
		c.Do("GET", "/v1/orders/"+id, nil).Expect(t, 200).Decode(t, &o)
		return o.Status == want && o.PendingAction == nil
	})
}
