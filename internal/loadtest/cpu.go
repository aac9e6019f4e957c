package loadtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat: 100 per second on Linux, whatever
// the kernel's own tick rate.
const userHZ = 100

// CPUMeter samples the CPU time the stack's processes spent, from /proc, so that a run can say
// what each costs per order. It only works with the stack on the load generator's machine.
type CPUMeter struct {
	groups []procGroup
}

type procGroup struct {
	name string
	pids []int
	tree bool // the root's children count too (PostgreSQL's backends)
	ours bool // part of Dispatch's own budget (stripe-mock is not)
}

// CPUSample is the CPU time of each group so far.
type CPUSample map[string]time.Duration

// FindProcesses finds the programs in dir (api, outbox-relay, worker: every running instance),
// the PostgreSQL server behind db (its postmaster and every child), the Redis server behind rdb
// and any stripe-mock.
func FindProcesses(ctx context.Context, db *postgres.DB, rdb *redis.Client, dir string) (*CPUMeter, error) {
	m := &CPUMeter{}
	exes, err := executables()
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"api", "outbox-relay", "worker"} {
		m.add(procGroup{name: name, pids: exes[filepath.Join(dir, name)], ours: true})
	}
	var backend int
	if err := db.GetContext(ctx, &backend, `SELECT pg_backend_pid()`); err != nil {
		return nil, err
	}
	if st, err := readStat(backend); err == nil {
		m.add(procGroup{name: "postgres", pids: []int{st.ppid}, tree: true, ours: true})
	}
	if info, err := rdb.Info(ctx, "server").Result(); err == nil {
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
				pid, _ := strconv.Atoi(v)
				m.add(procGroup{name: "redis", pids: []int{pid}, ours: true})
			}
		}
	}
	var mocks []int
	for exe, pids := range exes {
		if filepath.Base(exe) == "stripe-mock" {
			mocks = append(mocks, pids...)
		}
	}
	m.add(procGroup{name: "stripe-mock", pids: mocks})
	return m, nil
}

func (m *CPUMeter) add(g procGroup) {
	if len(g.pids) > 0 {
		m.groups = append(m.groups, g)
	}
}

// Sample reads every group's CPU time now.
func (m *CPUMeter) Sample() CPUSample {
	s := CPUSample{}
	var children map[int][]int
	for _, g := range m.groups {
		if g.tree && children == nil {
			children = childrenOf()
		}
		for _, pid := range g.pids {
			st, err := readStat(pid)
			if err != nil {
				continue // gone since FindProcesses
			}
			s[g.name] += st.cpu
			if g.tree {
				s[g.name] += st.reaped
				for _, c := range children[pid] {
					if cs, err := readStat(c); err == nil {
						s[g.name] += cs.cpu
					}
				}
			}
		}
	}
	return s
}

// Report renders the CPU each group spent between two samples per unit of work (n orders).
func (m *CPUMeter) Report(before, after CPUSample, n int, unit string) string {
	if n == 0 || len(m.groups) == 0 {
		return ""
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	var parts []string
	var ours time.Duration
	for _, g := range m.groups {
		d := after[g.name] - before[g.name]
		parts = append(parts, fmt.Sprintf("%s %.2f", g.name, per(d)))
		if g.ours {
			ours += d
		}
	}
	return fmt.Sprintf("  CPU ms per %s: %s; ours (all but stripe-mock) %.2f\n", unit, strings.Join(parts, ", "), per(ours))
}

type procStat struct {
	ppid   int
	cpu    time.Duration // user + system of the process
	reaped time.Duration // user + system of its children it waited for
}

// readStat parses /proc/<pid>/stat; fields are counted after the command name, which may hold
// spaces and parentheses, so from its last ')'.
func readStat(pid int) (procStat, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	n := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
	ticks := func(t int64) time.Duration { return time.Duration(t) * time.Second / userHZ }
	// After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
	return procStat{ppid: int(n(1)), cpu: ticks(n(11) + n(12)), reaped: ticks(n(13) + n(14))}, nil
}

// executables maps each running executable's path to its processes.
func executables() (map[string][]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := map[string][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil {
			out[exe] = append(out[exe], pid)
		}
	}
	return out, nil
}

// childrenOf maps every process to its children.
func childrenOf() map[int][]int {
	out := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			out[st.ppid] = append(out[st.ppid], pid)
		}
	}
	return out
}
