package testenv

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/ory/dockertest/v3"
	dc "github.com/ory/dockertest/v3/docker"
)

// ownerLabel names, on every container testenv starts, the test process that owns it.
const ownerLabel = "dispatch.testenv.owner"

// self is this process's owner identity: host, pid and the process's start time (in clock
// ticks since boot), so that a later process that gets the same pid is not mistaken for it.
func self() string {
	host, _ := os.Hostname()
	pid := os.Getpid()
	return fmt.Sprintf("%s/%d/%s", host, pid, processStart(pid))
}

// ownerAlive reports whether the process an owner label names still runs. Owners on another
// host (a Docker engine shared by several machines) are not ours to judge: they count as alive.
func ownerAlive(owner string) bool {
	host, rest, _ := strings.Cut(owner, "/")
	pidText, start, _ := strings.Cut(rest, "/")
	if me, _ := os.Hostname(); host != me {
		return true
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return false
	}
	if start != "" {
		return processStart(pid) == start
	}
	err = syscall.Kill(pid, 0) // no /proc: existence only
	return err == nil || errors.Is(err, syscall.EPERM)
}

// processStart returns field 22 of /proc/<pid>/stat (the start time), or "" if unknown.
func processStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command name (field 2) is in parentheses and may hold spaces: count after it.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return ""
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return ""
	}
	return fields[19]
}

// reapOrphans removes the containers whose owner is gone.
func reapOrphans(pool *dockertest.Pool) {
	list, err := pool.Client.ListContainers(dc.ListContainersOptions{
		All: true, Filters: map[string][]string{"label": {ownerLabel}},
	})
	if err != nil {
		return
	}
	for _, c := range list {
		if !ownerAlive(c.Labels[ownerLabel]) {
			removeContainer(pool, c.ID)
		}
	}
}

// removeOwned removes every container of owner.
func removeOwned(pool *dockertest.Pool, owner string) {
	list, err := pool.Client.ListContainers(dc.ListContainersOptions{
		All: true, Filters: map[string][]string{"label": {ownerLabel + "=" + owner}},
	})
	if err != nil {
		return
	}
	for _, c := range list {
		removeContainer(pool, c.ID)
	}
}
