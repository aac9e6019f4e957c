package deploycheck_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// TestRunScriptStartsProgramsAgain runs scripts/run.sh (what `make run` runs) on a database,
// a Redis logical database and ports of its own, then does to it what a fault probe does:
// SIGKILLs the worker and the API and SIGTERMs the relay. Each must be started again and be
// ready, and an order placed afterwards must be paid and processed. SIGTERM to the script
// then stops every program it started.
func TestRunScriptStartsProgramsAgain(t *testing.T) {
	bins := testenv.BuildCommands(t, "migrate", "api", "outbox-relay", "worker")
	dbURL := testenv.EmptyDB(t)
	redisURL, _ := isolatedRedis(t)
	const secret = "whsec_runscript_test"
	addr := map[string]string{"api": freeAddr(t), "outbox-relay": freeAddr(t), "worker": freeAddr(t)}

	cmd := exec.Command(path("scripts/run.sh"))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"BIN=" + filepath.Dir(bins["api"]),
		"DATABASE_URL=" + dbURL, "REDIS_URL=" + redisURL, "STRIPE_API_BASE=" + testenv.StripeURL(t),
		"STRIPE_WEBHOOK_SECRET=" + secret, "RATE_LIMIT_ENABLED=false",
		"HTTP_ADDR=" + addr["api"], "RELAY_OPS_ADDR=" + addr["outbox-relay"], "WORKER_OPS_ADDR=" + addr["worker"],
	}
	// Its own process group, so that the cleanup reaches the programs even if the script is gone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	script := testenv.StartCommand(t, "run.sh", cmd)
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	for _, name := range []string{"api", "outbox-relay", "worker"} {
		script.WaitReady(addr[name])
	}

	for _, fault := range []struct {
		name string
		sig  syscall.Signal
	}{{"worker", syscall.SIGKILL}, {"outbox-relay", syscall.SIGTERM}, {"api", syscall.SIGKILL}} {
		before := processesOf(t, bins[fault.name])
		if len(before) != 1 {
			t.Fatalf("%s: %d processes, want 1", fault.name, len(before))
		}
		if err := syscall.Kill(before[0], fault.sig); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, fault.name+" started again", func() bool {
			now := processesOf(t, bins[fault.name])
			return len(now) == 1 && now[0] != before[0]
		})
		script.WaitReady(addr[fault.name])
	}

	db, err := postgres.Open(testenv.Context(t), dbURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	d := newDriver(t, "http://"+addr["api"], db, secret)
	o := d.order(d.customer(), demo.Items()[0].ID.String(), "")
	d.pay(o, o.Total, "")
	d.waitStatus(o.ID, "PROCESSED")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-script.Done():
	case <-time.After(time.Minute):
		t.Fatal("run.sh did not stop within a minute of SIGTERM")
	}
	for name, bin := range bins {
		if left := processesOf(t, bin); len(left) > 0 {
			t.Errorf("%s still running after run.sh stopped: %v", name, left)
		}
	}
}

// TestRunScriptWaitsForPostgreSQL: `make run` started while PostgreSQL does not answer yet
// tries its migrations again until it does, then starts the stack; it used to exit at once.
func TestRunScriptWaitsForPostgreSQL(t *testing.T) {
	bins := testenv.BuildCommands(t, "migrate", "api", "outbox-relay", "worker")
	dbURL := testenv.EmptyDB(t)
	proxied, proxy := testenv.BehindProxy(t, dbURL)
	proxy.Cut()
	redisURL, _ := isolatedRedis(t)
	addr := map[string]string{"api": freeAddr(t), "outbox-relay": freeAddr(t), "worker": freeAddr(t)}

	cmd := exec.Command(path("scripts/run.sh"))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"BIN=" + filepath.Dir(bins["api"]),
		"DATABASE_URL=" + proxied, "REDIS_URL=" + redisURL, "STRIPE_API_BASE=" + testenv.StripeURL(t),
		"HTTP_ADDR=" + addr["api"], "RELAY_OPS_ADDR=" + addr["outbox-relay"], "WORKER_OPS_ADDR=" + addr["worker"],
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	script := testenv.StartCommand(t, "run.sh", cmd)
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })

	testenv.Eventually(t, 30*time.Second, "a failed migrate tried again", func() bool {
		if !script.Running() {
			t.Fatalf("run.sh ended while PostgreSQL was away:\n%s", script.Output(2000))
		}
		return strings.Contains(script.Output(4000), "PostgreSQL not reachable for the migrations; trying again")
	})
	proxy.Restore(t)
	for _, name := range []string{"api", "outbox-relay", "worker"} {
		script.WaitReady(addr[name])
	}
}

// TestRunScriptStopsOnABadSetting: a setting the programs refuse stops `make run` at its
// migrations, at once: only an unreachable PostgreSQL is worth trying again.
func TestRunScriptStopsOnABadSetting(t *testing.T) {
	bins := testenv.BuildCommands(t, "migrate", "api", "outbox-relay", "worker")
	cmd := exec.Command(path("scripts/run.sh"))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"BIN=" + filepath.Dir(bins["api"]),
		"DATABASE_URL=" + testenv.EmptyDB(t), "STRIPE_API_BASE=" + testenv.StripeURL(t),
		"ORDER_UNPAID_TTL=soon",
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	script := testenv.StartCommand(t, "run.sh", cmd)
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	select {
	case <-script.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("run.sh still running 20 s after a bad setting:\n%s", script.Output(2000))
	}
	if script.Err() == nil || !strings.Contains(script.Output(2000), "ORDER_UNPAID_TTL") ||
		strings.Contains(script.Output(4000), "trying again") {
		t.Fatalf("run.sh ended with %v, want a failure naming the setting, not tried again:\n%s", script.Err(), script.Output(2000))
	}
}

// processesOf lists the running processes whose executable is bin.
func processesOf(t *testing.T, bin string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && exe == bin {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}
