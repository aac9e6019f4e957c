package deploycheck_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
)

// sentinelFiles are the compose files of the Sentinel variant, in the order given to -f.
var sentinelFiles = []string{"docker-compose.yml", "deploy/sentinel/docker-compose.yml"}

var sentinelServices = []string{"sentinel-1", "sentinel-2", "sentinel-3"}

// loadSentinelCompose parses the root compose file with the Sentinel override as docker
// compose does (see loadCompose).
func loadSentinelCompose(t testing.TB) *types.Project {
	t.Helper()
	files := make([]string, len(sentinelFiles))
	for i, f := range sentinelFiles {
		files[i] = path(f)
	}
	opts, err := cli.NewProjectOptions(files, cli.WithWorkingDirectory(root), cli.WithEnv(nil), cli.WithConsistency(true))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("%v: %v", sentinelFiles, err)
	}
	return p
}

// sentinelMonitor reads the master name, host, port and quorum of deploy/sentinel/sentinel.conf.
func sentinelMonitor(t *testing.T) (name, host, port, quorum string) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, "deploy/sentinel/sentinel.conf")))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 6 && f[0] == "sentinel" && f[1] == "monitor" {
			return f[2], f[3], f[4], f[5]
		}
	}
	t.Fatal("deploy/sentinel/sentinel.conf has no sentinel monitor line")
	return
}

// TestComposeSentinelVariant: the programs of the Sentinel variant find the master through the
// three sentinels under the name the sentinels monitor it by, a majority of them must agree
// before a failover, and they start after the sentinels know the master.
func TestComposeSentinelVariant(t *testing.T) {
	p := loadSentinelCompose(t)
	for _, name := range append([]string{"redis", "redis-replica"}, sentinelServices...) {
		if _, ok := p.Services[name]; !ok {
			t.Fatalf("the Sentinel variant has no %s service", name)
		}
	}
	master, host, port, quorum := sentinelMonitor(t)
	if host != "redis" || port != "6379" || quorum != "2" {
		t.Errorf("sentinel.conf monitors %s:%s with quorum %s, want redis:6379 with 2 (a majority of 3)", host, port, quorum)
	}
	if cmd := strings.Join(p.Services["redis-replica"].Command, " "); !strings.Contains(cmd, "--replicaof redis 6379") ||
		!strings.Contains(cmd, "--appendonly yes") {
		t.Errorf("redis-replica runs %q, want a replica of redis:6379 with an append-only file", cmd)
	}
	var wantAddrs []string
	for _, s := range sentinelServices {
		wantAddrs = append(wantAddrs, s+":26379")
	}
	for _, name := range []string{"api", "outbox-relay", "worker"} {
		svc := p.Services[name]
		env := composeEnv(svc)
		cfg, err := config.Load(appServices[name].service, func(k string) string { return env[k] })
		if err != nil {
			t.Errorf("%s: its environment does not load: %v", name, err)
			continue
		}
		target, err := redisx.Parse(cfg.RedisURL)
		if err != nil || target.Failover == nil {
			t.Errorf("%s: REDIS_URL %q is not a Sentinel URL (%v)", name, cfg.RedisURL, err)
			continue
		}
		if f := target.Failover; f.MasterName != master || !slices.Equal(f.SentinelAddrs, wantAddrs) {
			t.Errorf("%s: REDIS_URL names master %q at %v, want %q at %v", name, f.MasterName, f.SentinelAddrs, master, wantAddrs)
		}
		for _, s := range sentinelServices {
			if c := svc.DependsOn[s].Condition; c != types.ServiceConditionHealthy {
				t.Errorf("%s depends on %s with condition %q, want healthy", name, s, c)
			}
		}
	}
	for _, s := range sentinelServices {
		svc := p.Services[s]
		if !strings.Contains(strings.Join(svc.Command, " "), "redis-server /data/sentinel.conf --sentinel") || svc.HealthCheck == nil {
			t.Errorf("%s: command %q, health check %+v; want redis-server --sentinel on its copy of sentinel.conf, with a health check", s, svc.Command, svc.HealthCheck)
			continue
		}
		if !strings.Contains(strings.Join(svc.HealthCheck.Test, " "), master) {
			t.Errorf("%s: health check %q does not ask for master %s", s, svc.HealthCheck.Test, master)
		}
	}
	for name, svc := range p.Services {
		for _, pc := range svc.Ports {
			if pc.HostIP != "127.0.0.1" {
				t.Errorf("%s: port %d published on %q, want 127.0.0.1 only", name, pc.Target, pc.HostIP)
			}
		}
		for _, v := range svc.Volumes {
			if v.Type == types.VolumeTypeBind && v.Source != "/var/run/docker.sock" {
				if _, err := os.Stat(v.Source); err != nil || !strings.HasPrefix(v.Source, root) {
					t.Errorf("%s: bind mount %s must be a file of the repository (%v)", name, v.Source, err)
				}
			}
		}
	}
}

// TestDockerComposeConfigSentinel is TestDockerComposeConfig for the Sentinel variant.
func TestDockerComposeConfigSentinel(t *testing.T) {
	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Log("docker CLI absent: docker compose config not run (compose-go checked the files)")
		return
	}
	if out, err := exec.Command(docker, "compose", "version").CombinedOutput(); err != nil {
		t.Logf("docker compose plugin absent (%s): docker compose config not run (compose-go checked the files)", strings.TrimSpace(string(out)))
		return
	}
	args := []string{"compose"}
	for _, f := range sentinelFiles {
		args = append(args, "-f", path(f))
	}
	cmd := exec.Command(docker, append(args, "config", "-q")...)
	cmd.Dir = root
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
