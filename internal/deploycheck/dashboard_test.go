package deploycheck_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// dashboard is the part of a Grafana dashboard JSON the checks read.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type variable struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// provisioned is a datasource of deploy/grafana/provisioning/datasources.
type provisioned struct {
	Name      string `yaml:"name"`
	UID       string `yaml:"uid"`
	Type      string `yaml:"type"`
	URL       string `yaml:"url"`
	IsDefault bool   `yaml:"isDefault"`
}

func loadDashboard(t testing.TB) dashboard {
	t.Helper()
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(readFile(t, "deploy/grafana/dashboards/dispatch-overview.json"))))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dispatch-overview.json: %v", err)
	}
	return d
}

// allPanels flattens rows.
func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

func provisionedDatasources(t testing.TB) map[string]provisioned {
	t.Helper()
	files, _ := filepath.Glob(path("deploy/grafana/provisioning/datasources/*.yml"))
	if len(files) == 0 {
		t.Fatal("no datasource provisioning file")
	}
	out := map[string]provisioned{}
	for _, f := range files {
		var doc struct {
			APIVersion  int           `yaml:"apiVersion"`
			Datasources []provisioned `yaml:"datasources"`
		}
		rel, _ := filepath.Rel(root, f)
		readYAML(t, filepath.ToSlash(rel), &doc)
		if doc.APIVersion != 1 {
			t.Errorf("%s: apiVersion %d, want 1", rel, doc.APIVersion)
		}
		for _, ds := range doc.Datasources {
			if ds.UID == "" {
				t.Errorf("%s: datasource %s has no fixed uid", rel, ds.Name)
			}
			out[ds.UID] = ds
		}
	}
	return out
}

func TestGrafanaProvisioning(t *testing.T) {
	ds := provisionedDatasources(t)
	byType := map[string]provisioned{}
	for _, d := range ds {
		byType[d.Type] = d
	}
	if byType["prometheus"].URL != "http://prometheus:9090" || !byType["prometheus"].IsDefault {
		t.Errorf("Prometheus datasource %+v, want the default, at http://prometheus:9090", byType["prometheus"])
	}
	if byType["loki"].URL != "http://loki:3100" {
		t.Errorf("Loki datasource %+v, want http://loki:3100", byType["loki"])
	}

	var providers struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, "deploy/grafana/provisioning/dashboards/dashboards.yml", &providers)
	if len(providers.Providers) != 1 || providers.Providers[0].Type != "file" {
		t.Fatalf("dashboard providers %+v, want one file provider", providers.Providers)
	}
	// The provider's path is where compose mounts deploy/grafana/dashboards.
	p := loadCompose(t)
	mounted := false
	for _, v := range p.Services["grafana"].Volumes {
		mounted = mounted || (v.Source == path("deploy/grafana/dashboards") && v.Target == providers.Providers[0].Options.Path)
	}
	if !mounted {
		t.Errorf("grafana does not mount deploy/grafana/dashboards at the provider's path %s", providers.Providers[0].Options.Path)
	}
}

func TestDashboardStructure(t *testing.T) {
	d := loadDashboard(t)
	if d.Title != "Dispatch overview" || d.UID == "" {
		t.Errorf("dashboard %q (uid %q), want \"Dispatch overview\" with a fixed uid", d.Title, d.UID)
	}
	ds := provisionedDatasources(t)
	ids := map[int]bool{}
	for _, p := range d.allPanels() {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W < 1 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H < 1 {
			t.Errorf("panel %q: grid position %+v off the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || ds[p.Datasource.UID].UID == "" || ds[p.Datasource.UID].Type != p.Datasource.Type {
			t.Errorf("panel %q: datasource %+v is not provisioned", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource != nil && *tg.Datasource != *p.Datasource {
				t.Errorf("panel %q query %s: datasource %+v differs from the panel's", p.Title, tg.RefID, tg.Datasource)
			}
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q query %s is empty", p.Title, tg.RefID)
			}
		}
	}
	if !slices.ContainsFunc(d.Templating.List, func(v variable) bool { return v.Name == "correlation_id" && v.Type == "textbox" }) {
		t.Error("no correlation_id variable")
	}

	// The panels the overview must have, by a word of their title.
	var titles []string
	for _, p := range d.allPanels() {
		titles = append(titles, strings.ToLower(p.Title))
	}
	all := strings.Join(titles, "\n")
	for _, want := range []string{"request rate", "p50 / p95 / p99", "5xx", "4xx", "order funnel", "outbox backlog",
		"oldest outbox", "queue depth", "failures", "retries", "compensations", "webhook", "stripe latency",
		"stripe errors", "cache hit ratio", "logs"} {
		if !strings.Contains(all, want) {
			t.Errorf("no panel about %q", want)
		}
	}
}

// The Loki panel filters every service's lines by the correlation id variable, with the only
// labels Dispatch and promtail set.
func TestDashboardLogsPanel(t *testing.T) {
	d := loadDashboard(t)
	found := false
	for _, p := range d.allPanels() {
		if p.Datasource == nil || p.Datasource.Type != "loki" {
			continue
		}
		found = true
		if p.Type != "logs" {
			t.Errorf("Loki panel %q is a %s, want logs", p.Title, p.Type)
		}
		for _, tg := range p.Targets {
			sel, pipeline := splitLogQL(t, tg.Expr)
			for _, m := range sel {
				if m.Name != "service" && m.Name != "level" {
					t.Errorf("%q selects on label %s; streams carry only service and level", tg.Expr, m.Name)
				}
			}
			if strings.TrimSpace(pipeline) != `|= "$correlation_id"` {
				t.Errorf("%q: want a line filter on $correlation_id", tg.Expr)
			}
		}
	}
	if !found {
		t.Error("no Loki logs panel")
	}
}

// splitLogQL parses a LogQL query's stream selector (PromQL selector syntax) and returns the
// pipeline after it.
func splitLogQL(t testing.TB, expr string) ([]*labelMatcher, string) {
	t.Helper()
	end := strings.Index(expr, "}")
	if !strings.HasPrefix(strings.TrimSpace(expr), "{") || end < 0 {
		t.Fatalf("LogQL %q has no stream selector", expr)
	}
	ms, err := parser.ParseMetricSelector(expr[:end+1])
	if err != nil {
		t.Fatalf("LogQL selector %q: %v", expr[:end+1], err)
	}
	var out []*labelMatcher
	for _, m := range ms {
		out = append(out, &labelMatcher{Name: m.Name, Value: m.Value})
	}
	return out, expr[end+1:]
}

type labelMatcher struct{ Name, Value string }

// grafanaVars stands in for Grafana's built-in variables so that queries parse as PromQL.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h")

// promQuery is one dashboard PromQL query, parsed.
type promQuery struct {
	panel, expr string
	ast         parser.Expr
}

func dashboardQueries(t testing.TB) []promQuery {
	t.Helper()
	var out []promQuery
	for _, p := range loadDashboard(t).allPanels() {
		if p.Datasource == nil || p.Datasource.Type != "prometheus" {
			continue
		}
		for _, tg := range p.Targets {
			expr := grafanaVars.Replace(tg.Expr)
			if strings.Contains(expr, "$") {
				t.Errorf("panel %q: unknown variable in %q", p.Title, tg.Expr)
				continue
			}
			ast, err := parser.ParseExpr(expr)
			if err != nil {
				t.Errorf("panel %q: %q does not parse: %v", p.Title, tg.Expr, err)
				continue
			}
			out = append(out, promQuery{panel: p.Title, expr: tg.Expr, ast: ast})
		}
	}
	if len(out) == 0 {
		t.Fatal("the dashboard has no PromQL query")
	}
	return out
}

func TestDashboardQueriesParse(t *testing.T) {
	for _, q := range dashboardQueries(t) {
		names := selectorNames(q.ast)
		if len(names) == 0 {
			t.Errorf("panel %q: %q selects no metric", q.panel, q.expr)
		}
		for _, n := range names {
			if !strings.HasPrefix(n, "dispatch_") && !prometheusSeries[n] && !runtimeMetric.MatchString(n) {
				t.Errorf("panel %q: metric %s is neither Dispatch's nor a runtime or Prometheus series", q.panel, n)
			}
		}
	}
}

// Series Prometheus makes itself for every target.
var prometheusSeries = map[string]bool{"up": true}

var runtimeMetric = regexp.MustCompile(`^(go|process)_`)

// selectorNames returns the metric names a query selects.
func selectorNames(e parser.Expr) []string {
	var out []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, vs.Name)
		}
		return nil
	})
	sort.Strings(out)
	return slices.Compact(out)
}

// prometheusConfig is the part of prometheus.yml the checks read.
type prometheusConfig struct {
	Global struct {
		ScrapeInterval string `yaml:"scrape_interval"`
	} `yaml:"global"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
		DNSSDConfigs []struct {
			Names []string `yaml:"names"`
			Type  string   `yaml:"type"`
			Port  int      `yaml:"port"`
		} `yaml:"dns_sd_configs"`
	} `yaml:"scrape_configs"`
}

func TestPrometheusConfig(t *testing.T) {
	var cfg prometheusConfig
	readYAML(t, "deploy/prometheus/prometheus.yml", &cfg)
	jobs := map[string]string{}
	for _, sc := range cfg.ScrapeConfigs {
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			t.Errorf("job %s scrapes %s, the programs serve /metrics", sc.JobName, sc.MetricsPath)
		}
		switch {
		case len(sc.StaticConfigs) == 1 && len(sc.StaticConfigs[0].Targets) == 1 && len(sc.DNSSDConfigs) == 0:
			jobs[sc.JobName] = "static " + sc.StaticConfigs[0].Targets[0]
		case len(sc.DNSSDConfigs) == 1 && len(sc.StaticConfigs) == 0:
			d := sc.DNSSDConfigs[0]
			jobs[sc.JobName] = "dns " + d.Type + " " + strings.Join(d.Names, ",") + " " + strconv.Itoa(d.Port)
		default:
			jobs[sc.JobName] = "other"
		}
	}
	want := map[string]string{
		"api":          "static api:8080",
		"outbox-relay": "static outbox-relay:9102",
		"worker":       "dns A worker 9101",
	}
	for job, target := range want {
		if jobs[job] != target {
			t.Errorf("job %s: %q, want %q", job, jobs[job], target)
		}
	}
	// The scrape targets are the compose services and the ports their programs listen on.
	p := loadCompose(t)
	for job := range want {
		if _, ok := p.Services[job]; !ok {
			t.Errorf("job %s scrapes a service that docker-compose.yml does not have", job)
		}
	}
	// The dashboard's job matchers name these jobs.
	for _, q := range dashboardQueries(t) {
		parser.Inspect(q.ast, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			for _, m := range vs.LabelMatchers {
				if m.Name != "job" {
					continue
				}
				for _, alt := range strings.Split(m.Value, "|") {
					if _, ok := want[alt]; !ok {
						t.Errorf("panel %q matches job %q, which prometheus.yml does not define", q.panel, alt)
					}
				}
			}
			return nil
		})
	}
}

func TestLokiAndPromtailConfig(t *testing.T) {
	var loki struct {
		AuthEnabled bool `yaml:"auth_enabled"`
		Server      struct {
			HTTPListenPort int `yaml:"http_listen_port"`
		} `yaml:"server"`
		Common struct {
			Storage struct {
				Filesystem map[string]string `yaml:"filesystem"`
			} `yaml:"storage"`
		} `yaml:"common"`
		SchemaConfig struct {
			Configs []struct {
				Store, ObjectStore, Schema string
			} `yaml:"configs"`
		} `yaml:"schema_config"`
	}
	readYAML(t, "deploy/loki/loki.yml", &loki)
	if loki.AuthEnabled || loki.Server.HTTPListenPort != 3100 || len(loki.Common.Storage.Filesystem) == 0 {
		t.Errorf("loki.yml: want single-tenant, port 3100, filesystem storage: %+v", loki)
	}

	var promtail struct {
		Clients []struct {
			URL string `yaml:"url"`
		} `yaml:"clients"`
		ScrapeConfigs []struct {
			DockerSDConfigs []struct {
				Host    string `yaml:"host"`
				Filters []struct {
					Name   string   `yaml:"name"`
					Values []string `yaml:"values"`
				} `yaml:"filters"`
			} `yaml:"docker_sd_configs"`
			RelabelConfigs []struct {
				SourceLabels []string `yaml:"source_labels"`
				Regex        string   `yaml:"regex"`
				Action       string   `yaml:"action"`
				TargetLabel  string   `yaml:"target_label"`
			} `yaml:"relabel_configs"`
			PipelineStages []map[string]any `yaml:"pipeline_stages"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, "deploy/loki/promtail.yml", &promtail)
	if len(promtail.Clients) != 1 || promtail.Clients[0].URL != "http://loki:3100/loki/api/v1/push" {
		t.Errorf("promtail pushes to %+v, want http://loki:3100/loki/api/v1/push", promtail.Clients)
	}
	if len(promtail.ScrapeConfigs) != 1 || len(promtail.ScrapeConfigs[0].DockerSDConfigs) != 1 {
		t.Fatalf("promtail: want one scrape config with docker_sd_configs")
	}
	sc := promtail.ScrapeConfigs[0]
	sd := sc.DockerSDConfigs[0]
	if sd.Host != "unix:///var/run/docker.sock" || len(sd.Filters) != 1 ||
		!slices.Equal(sd.Filters[0].Values, []string{"com.docker.compose.project=" + loadCompose(t).Name}) {
		t.Errorf("promtail docker_sd_configs %+v: want the Docker socket, this compose project only", sd)
	}
	// The drop rule names the compose label the pushing programs carry, as docker_sd spells it.
	pushMeta := "__meta_docker_container_label_" + strings.NewReplacer(".", "_", "-", "_").Replace(pushLabelKey)
	dropped, labels := false, []string{}
	for _, r := range sc.RelabelConfigs {
		if r.Action == "drop" && slices.Equal(r.SourceLabels, []string{pushMeta}) && regexp.MustCompile("^(?:"+r.Regex+")$").MatchString(pushLabelValue) {
			dropped = true
		}
		if r.TargetLabel != "" {
			labels = append(labels, r.TargetLabel)
		}
	}
	if !dropped {
		t.Errorf("promtail does not drop containers labelled %s=%s: their lines would reach Loki twice", pushLabelKey, pushLabelValue)
	}
	for _, stage := range sc.PipelineStages {
		if l, ok := stage["labels"].(map[string]any); ok {
			for k := range l {
				labels = append(labels, k)
			}
		}
	}
	sort.Strings(labels)
	if !slices.Equal(labels, []string{"level", "service"}) {
		t.Errorf("promtail sets labels %v, want only level and service", labels)
	}
	// Promtail needs the Docker socket.
	mounted := false
	for _, v := range loadCompose(t).Services["promtail"].Volumes {
		mounted = mounted || v.Source == "/var/run/docker.sock"
	}
	if !mounted {
		t.Error("promtail does not mount /var/run/docker.sock")
	}
	if _, err := os.Stat(path("deploy/loki/promtail.yml")); err != nil {
		t.Fatal(err)
	}
}
