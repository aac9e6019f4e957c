//go:build observability

package deploycheck_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.yaml.in/yaml/v3"

	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// TestObservability runs deploy/prometheus and deploy/loki for real, against the real
// programs: Prometheus (PROMETHEUS_BIN, else prometheus on PATH: Debian 12's package is 2.42)
// and Loki (LOKI_BIN, else loki on PATH: make observability-check builds the version
// docker-compose.yml runs) as local processes on free ports, with the flags of their compose
// services and the repository's config files, moved to this machine (see localPrometheusConfig
// and localLokiConfig; nothing else is changed). api, outbox-relay and two workers run with
// the compose environment and push their logs to that Loki. After an order went through them
// with a correlation id, it checks that Prometheus has every program's target up with dispatch_
// series, that the dashboard's queries evaluate, and that Loki returns the programs' lines by
// service and by correlationId, the way the dashboard's logs panel asks.
//
// It is built only with the observability tag (make observability-check).
func TestObservability(t *testing.T) {
	dir := t.TempDir()
	loki := startLoki(t, binary(t, "LOKI_BIN", "loki"), dir)
	sys := startSystem(t, loki, 2)
	prom := startPrometheus(t, binary(t, "PROMETHEUS_BIN", "prometheus"), dir, sys)

	// Paid a cent short, the order fails in the worker and is refunded by its compensation,
	// which logs (a task that succeeds logs nothing): the correlation id ends up in lines of
	// the api and of the worker.
	d := sys.driver
	cid := "obscheck-" + uuid.NewString()
	o := d.order(d.customer(), demo.Items()[0].ID.String(), cid)
	d.pay(o, o.Total-1, cid)
	d.waitStatus(o.ID, "REFUNDED")

	programs := map[string][]string{"api": {sys.api}, "outbox-relay": {sys.relay}, "worker": sys.workers}
	checkTargets(t, prom, programs)
	checkDispatchSeries(t, prom, programs)
	queries := dashboardQueries(t)
	for _, q := range queries {
		if _, err := queryPrometheus(prom, grafanaVars.Replace(q.expr)); err != nil {
			t.Errorf("panel %q: Prometheus refuses %s: %v", q.panel, q.expr, err)
		}
	}
	var build struct{ Version string }
	if err := getJSON(prom+"/api/v1/status/buildinfo", &build); err != nil {
		t.Fatal(err)
	}
	t.Logf("Prometheus %s evaluated the dashboard's %d queries", build.Version, len(queries))
	checkLokiQueries(t, loki, cid)
}

// binary returns the program named by the environment variable env, else name on PATH.
func binary(t *testing.T, env, name string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("no %s: set %s or put it on PATH (make observability-check installs it)", name, env)
	}
	return p
}

// composeCommand returns a compose service's command with the flags in replace (name → value)
// set to other values, plus extra flags.
func composeCommand(t *testing.T, service string, replace map[string]string, extra ...string) []string {
	t.Helper()
	var out []string
	for _, arg := range loadCompose(t).Services[service].Command {
		name, _, _ := strings.Cut(arg, "=")
		if v, ok := replace[name]; ok {
			arg = name + "=" + v
			delete(replace, name)
		}
		out = append(out, arg)
	}
	if len(replace) > 0 {
		t.Fatalf("%s's command has no flags %v", service, replace)
	}
	return append(out, extra...)
}

// startLoki runs Loki with deploy/loki/loki.yml and returns its base URL once ready.
func startLoki(t *testing.T, bin, dir string) string {
	t.Helper()
	httpAddr, grpcAddr := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(dir, "loki.yml")
	writeYAML(t, cfg, localLokiConfig(t, filepath.Join(dir, "loki"), httpAddr, grpcAddr))
	args := composeCommand(t, "loki", map[string]string{"-config.file": cfg})
	p := testenv.StartProgram(t, "loki", bin, []string{"PATH=" + os.Getenv("PATH")}, args...)
	waitHTTP(t, p, "http://"+httpAddr+"/ready")
	var build struct{ Version string }
	if resp, err := http.Get("http://" + httpAddr + "/loki/api/v1/status/buildinfo"); err == nil {
		_ = json.NewDecoder(resp.Body).Decode(&build)
		resp.Body.Close()
	}
	t.Logf("Loki %s ready on %s", build.Version, httpAddr)
	return "http://" + httpAddr
}

// localLokiConfig is deploy/loki/loki.yml with its ports and its /loki directory moved.
func localLokiConfig(t *testing.T, dataDir, httpAddr, grpcAddr string) *yaml.Node {
	t.Helper()
	cfg := readYAMLNode(t, "deploy/loki/loki.yml")
	server := mapValue(t, cfg, "server")
	host, port := splitAddr(t, httpAddr)
	setValue(t, server, "http_listen_address", host)
	setValue(t, server, "http_listen_port", port)
	host, port = splitAddr(t, grpcAddr)
	setValue(t, server, "grpc_listen_address", host)
	setValue(t, server, "grpc_listen_port", port)
	walkScalars(cfg, func(n *yaml.Node) {
		if n.Tag == "!!str" && (n.Value == "/loki" || strings.HasPrefix(n.Value, "/loki/")) {
			n.Value = dataDir + strings.TrimPrefix(n.Value, "/loki")
		}
	})
	return cfg
}

// startPrometheus runs Prometheus with deploy/prometheus/prometheus.yml pointed at sys and
// returns its base URL once ready.
func startPrometheus(t *testing.T, bin, dir string, sys *system) string {
	t.Helper()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "prometheus.yml")
	writeYAML(t, cfg, localPrometheusConfig(t, sys, addr))
	// The file as shipped and as moved here.
	promtool := filepath.Join(filepath.Dir(bin), "promtool")
	for _, f := range []string{path("deploy/prometheus/prometheus.yml"), cfg} {
		if out, err := exec.Command(promtool, "check", "config", f).CombinedOutput(); err != nil {
			t.Fatalf("promtool check config %s: %v\n%s", f, err, out)
		}
	}
	args := composeCommand(t, "prometheus", map[string]string{
		"--config.file": cfg, "--storage.tsdb.path": filepath.Join(dir, "prometheus"),
	}, "--web.listen-address="+addr)
	p := testenv.StartProgram(t, "prometheus", bin, []string{"PATH=" + os.Getenv("PATH")}, args...)
	waitHTTP(t, p, "http://"+addr+"/-/ready")
	return "http://" + addr
}

// localPrometheusConfig is deploy/prometheus/prometheus.yml with each job's targets moved to
// this machine: the compose service names become the local programs' addresses, and the
// worker job's DNS discovery (Docker's embedded DNS has one A record per replica) a static
// list of the local workers.
func localPrometheusConfig(t *testing.T, sys *system, self string) *yaml.Node {
	t.Helper()
	cfg := readYAMLNode(t, "deploy/prometheus/prometheus.yml")
	targets := map[string][]string{"api": {sys.api}, "outbox-relay": {sys.relay}, "worker": sys.workers, "prometheus": {self}}
	for _, job := range mapValue(t, cfg, "scrape_configs").Content {
		name := mapValue(t, job, "job_name").Value
		local, ok := targets[name]
		if !ok {
			t.Fatalf("prometheus.yml job %s: no local target for it", name)
		}
		deleteKey(job, "dns_sd_configs")
		setValue(t, job, "static_configs", []map[string][]string{{"targets": local}})
	}
	return cfg
}

func splitAddr(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	var n int
	if _, err := fmt.Sscan(port, &n); err != nil {
		t.Fatal(err)
	}
	return host, n
}

// readYAMLNode returns the top mapping of a YAML file of the repository as nodes, so that what
// a check does not change is written back as it was.
func readYAMLNode(t *testing.T, rel string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(readFile(t, rel), &doc); err != nil || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		t.Fatalf("%s: not a YAML mapping: %v", rel, err)
	}
	return doc.Content[0]
}

// mapValue returns the value of key in mapping m.
func mapValue(t *testing.T, m *yaml.Node, key string) *yaml.Node {
	t.Helper()
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	t.Fatalf("no key %s (line %d)", key, m.Line)
	return nil
}

// setValue sets key of mapping m to v, adding the key if needed.
func setValue(t *testing.T, m *yaml.Node, key string, v any) {
	t.Helper()
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = &n
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, &n)
}

func deleteKey(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

// walkScalars calls f on every scalar value below n (not on mapping keys).
func walkScalars(n *yaml.Node, f func(*yaml.Node)) {
	switch n.Kind {
	case yaml.ScalarNode:
		f(n)
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			walkScalars(n.Content[i], f)
		}
	default:
		for _, c := range n.Content {
			walkScalars(c, f)
		}
	}
}

func writeYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitHTTP waits until url answers 200, failing if the program exits first.
func waitHTTP(t *testing.T, p *testenv.Program, url string) {
	t.Helper()
	poll(t, 3*time.Minute, url+" answers 200", func() bool {
		if !p.Running() {
			t.Fatalf("exited before %s answered: %v\n%s", url, p.Err(), p.Output(4000))
		}
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// poll checks cond every half second until it holds or timeout passes: the servers asked here
// are not worth asking more often.
func poll(t *testing.T, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", timeout, msg)
		}
	}
}

// getJSON decodes the data of a Prometheus or Loki API answer.
func getJSON(rawURL string, data any) error {
	resp, err := http.Get(rawURL)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: status %d: %w", rawURL, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s", body.Status, body.Error)
	}
	return json.Unmarshal(body.Data, data)
}

// queryPrometheus evaluates an instant query and returns its vector.
func queryPrometheus(prom, q string) ([]struct{ Metric map[string]string }, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := getJSON(prom+"/api/v1/query?query="+url.QueryEscape(q), &data); err != nil {
		return nil, err
	}
	var vector []struct{ Metric map[string]string }
	if data.ResultType == "vector" {
		err := json.Unmarshal(data.Result, &vector)
		return vector, err
	}
	return nil, nil
}

// checkTargets waits until Prometheus scrapes every program address of programs (job →
// addresses) with health up, and nothing else is down.
func checkTargets(t *testing.T, prom string, programs map[string][]string) {
	t.Helper()
	var state []string
	poll(t, 2*time.Minute, "every target up", func() bool {
		var data struct {
			ActiveTargets []struct {
				Labels    map[string]string `json:"labels"`
				Health    string            `json:"health"`
				LastError string            `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := getJSON(prom+"/api/v1/targets?state=active", &data); err != nil {
			t.Fatal(err)
		}
		up := map[string]bool{}
		state = nil
		for _, tg := range data.ActiveTargets {
			up[tg.Labels["job"]+" "+tg.Labels["instance"]] = tg.Health == "up"
			state = append(state, fmt.Sprintf("%s %s: %s %s", tg.Labels["job"], tg.Labels["instance"], tg.Health, tg.LastError))
		}
		for job, addrs := range programs {
			for _, a := range addrs {
				if !up[job+" "+a] {
					return false
				}
			}
		}
		return !slices.Contains(slices.Collect(maps.Values(up)), false)
	})
	sort.Strings(state)
	t.Logf("Prometheus targets:\n  %s", strings.Join(state, "\n  "))
}

// checkDispatchSeries waits until Prometheus holds dispatch_ series from every program
// address.
func checkDispatchSeries(t *testing.T, prom string, programs map[string][]string) {
	t.Helper()
	q := `count by (job, instance) ({__name__=~"dispatch_.+"})`
	var got []string
	poll(t, time.Minute, "dispatch_ series from every program", func() bool {
		vector, err := queryPrometheus(prom, q)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		got = nil
		for _, s := range vector {
			seen[s.Metric["job"]+" "+s.Metric["instance"]] = true
			got = append(got, s.Metric["job"]+" "+s.Metric["instance"])
		}
		for job, addrs := range programs {
			for _, a := range addrs {
				if !seen[job+" "+a] {
					return false
				}
			}
		}
		return true
	})
	sort.Strings(got)
	t.Logf("%s: %v", q, got)
}

// lokiStream is one stream of a Loki query's answer.
type lokiStream struct {
	Stream map[string]string `json:"stream"`
	Values [][2]string       `json:"values"`
}

func lokiQuery(loki, q string) ([]lokiStream, error) {
	v := url.Values{"query": {q}, "limit": {"1000"},
		"start": {fmt.Sprint(time.Now().Add(-time.Hour).UnixNano())}, "end": {fmt.Sprint(time.Now().Add(time.Minute).UnixNano())}}
	var data struct {
		Result []lokiStream `json:"result"`
	}
	err := getJSON(loki+"/loki/api/v1/query_range?"+v.Encode(), &data)
	return data.Result, err
}

// checkLokiQueries asks Loki for the order's lines as the dashboard's logs panel does (a line
// filter on the correlation id over every service), by service, and by the correlationId field
// of the JSON lines, and checks the streams' labels.
func checkLokiQueries(t *testing.T, loki, cid string) {
	t.Helper()
	var panel string
	for _, p := range loadDashboard(t).allPanels() {
		if p.Datasource != nil && p.Datasource.Type == "loki" && len(p.Targets) > 0 {
			panel = strings.ReplaceAll(p.Targets[0].Expr, "$correlation_id", cid)
		}
	}
	queries := map[string][]string{ // query → the services whose lines it must return
		panel:                              {"api", "worker"},
		`{service="api"} |= "` + cid + `"`: {"api"},
		`{service="worker"} | json | correlationId="` + cid + `"`: {"worker"},
		`{service="outbox-relay"}`:                                {"outbox-relay"},
	}
	for q, want := range queries {
		var services []string
		var streams []lokiStream
		poll(t, time.Minute, "Loki answers "+q+" with lines of "+strings.Join(want, ", "), func() bool {
			var err error
			if streams, err = lokiQuery(loki, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			seen := map[string]bool{}
			for _, s := range streams {
				if len(s.Values) > 0 {
					seen[s.Stream["service"]] = true
				}
			}
			services = slices.Sorted(maps.Keys(seen))
			for _, w := range want {
				if !seen[w] {
					return false
				}
			}
			return true
		})
		t.Logf("%s → lines of %v", q, services)
		for _, s := range streams {
			var names []string
			for k := range s.Stream {
				names = append(names, k)
			}
			sort.Strings(names)
			if strings.Contains(q, "| json") {
				continue // the json stage adds the line's fields as labels
			}
			if !slices.Equal(names, []string{"level", "service"}) {
				t.Errorf("stream %v: labels %v, want level and service only", s.Stream, names)
			}
		}
	}
}
