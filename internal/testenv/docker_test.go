//go:build docker

package testenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	dc "github.com/ory/dockertest/v3/docker"
)

// ownerHelperEnv makes this test binary, run by TestContainersGoWithTheirOwner, start a Redis
// container through testenv, print its owner identity and wait to be killed.
const ownerHelperEnv = "TESTENV_OWNER_HELPER"

func init() {
	if os.Getenv(ownerHelperEnv) != "1" || os.Getenv(watcherEnv) != "" {
		return // not the helper, or the helper's watcher
	}
	c, err := docker()
	if err == nil {
		_, err = c.redis()
	}
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("owner", c.owner)
	select {}
}

// requireDocker returns the engine and fails without one. These tests are built only with the
// docker tag (make test-docker); other runs (make test, CI) keep away from Docker.
func requireDocker(t *testing.T) *containers {
	t.Helper()
	c, err := docker()
	if err != nil {
		t.Fatalf("no Docker engine: %v", err)
	}
	return c
}

func owned(t *testing.T, c *containers, owner string) []dc.APIContainers {
	t.Helper()
	list, err := c.pool.Client.ListContainers(dc.ListContainersOptions{
		All: true, Filters: map[string][]string{"label": {ownerLabel + "=" + owner}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// A process that starts containers and is then killed leaves nothing behind: no container,
// no volume.
func TestContainersGoWithTheirOwner(t *testing.T) {
	c := requireDocker(t)
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), ownerHelperEnv+"=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	owner, ok := strings.CutPrefix(strings.TrimSpace(line), "owner ")
	if err != nil || !ok {
		t.Fatalf("helper: %q %v", line, err)
	}

	list := owned(t, c, owner)
	if len(list) != 1 {
		t.Fatalf("the helper owns %d containers, want 1 (redis)", len(list))
	}
	info, err := c.pool.Client.InspectContainer(list[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	hc := info.HostConfig
	if !hc.AutoRemove || (hc.RestartPolicy.Name != "" && hc.RestartPolicy.Name != "no") {
		t.Errorf("AutoRemove %t, restart policy %q: want removal when it stops and no restart", hc.AutoRemove, hc.RestartPolicy.Name)
	}
	for _, m := range info.Mounts {
		if m.Name != "" { // a volume, named or anonymous
			t.Errorf("mounts volume %s at %s: it would outlive the container", m.Name, m.Destination)
		}
	}
	if _, ok := hc.Tmpfs["/data"]; !ok {
		t.Errorf("tmpfs %v: want Redis's /data in memory", hc.Tmpfs)
	}
	for port, bindings := range info.NetworkSettings.Ports {
		for _, b := range bindings {
			if b.HostIP != "127.0.0.1" {
				t.Errorf("port %s published on %q, want 127.0.0.1 only", port, b.HostIP)
			}
		}
	}

	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	Eventually(t, time.Minute, "the killed owner's containers are removed", func() bool {
		return len(owned(t, c, owner)) == 0
	})
}

// Containers whose owner is gone are removed by the next test process; live owners' stay.
func TestReapOrphans(t *testing.T) {
	c := requireDocker(t)
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	orphan := &containers{pool: c.pool, owner: fmt.Sprintf("%s/%d/1", host, gone.Process.Pid)}
	mine := &containers{pool: c.pool, owner: c.owner}
	for _, cs := range []*containers{orphan, mine} {
		if _, err := cs.stripeMock(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { removeOwned(c.pool, c.owner) })

	reapOrphans(c.pool)
	if n := len(owned(t, c, orphan.owner)); n != 0 {
		t.Errorf("%d containers of a dead owner left", n)
	}
	if n := len(owned(t, c, c.owner)); n != 1 {
		t.Errorf("this process owns %d containers after the reaping, want 1", n)
	}
}

func TestOwnerAlive(t *testing.T) {
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	pid := strconv.Itoa(os.Getpid())
	for owner, want := range map[string]bool{
		self():                  true,
		host + "/" + pid + "/1": false, // same pid, another process (start time differs)
		host + "/" + strconv.Itoa(gone.Process.Pid) + "/" + processStart(os.Getpid()): false,
		"another-host/1/1":    true, // not ours to judge
		host + "/not-a-pid/1": false,
	} {
		if got := ownerAlive(owner); got != want {
			t.Errorf("ownerAlive(%q) = %t, want %t", owner, got, want)
		}
	}
}
