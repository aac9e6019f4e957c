//go:build chaos

package chaos_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// The program kinds of the cluster and how many replicas of each it runs.
const (
	kindAPI    = "api"
	kindRelay  = "outbox-relay"
	kindWorker = "worker"
)

var replicas = []struct {
	kind string
	n    int
}{{kindAPI, 2}, {kindRelay, 2}, {kindWorker, 3}}

// cluster is the system under test: its own PostgreSQL and Redis, stripe-mock behind a
// recording proxy, and the programs, each in a slot that restarts it whenever it ends.
type cluster struct {
	t      *testing.T
	pg     *testenv.PGServer
	redis  *testenv.RedisServer
	stripe *testenv.StripeProxy
	db     *postgres.DB // the test's own pool, for the invariants
	slots  []*slot
	apis   []string // base URLs of the API replicas
	logDir string

	logsSaved atomic.Bool
}

// startCluster builds the programs, starts the servers and every slot, and waits until every
// program is ready.
func startCluster(t *testing.T, logDir string) *cluster {
	t.Helper()
	bins := testenv.BuildCommands(t, kindAPI, kindRelay, kindWorker)
	c := &cluster{t: t, logDir: logDir}
	c.pg = testenv.StartPGServer(t)
	// Persistence on: a restart keeps the data unless the test deletes it (ForgetData).
	c.redis = testenv.StartRedisServer(t, "redis", "appendonly yes", "appendfsync everysec")
	c.stripe = testenv.NewStripeProxy(t, testenv.StripeURL(t))
	dbURL := c.pg.URL("dispatch")
	var err error
	if c.db, err = postgres.Open(context.Background(), dbURL, 4); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.db.Close() })
	t.Cleanup(c.saveLogs)

	base := programEnv(dbURL, c.redis.URL(), c.stripe.URL)
	for _, r := range replicas {
		for i := 1; i <= r.n; i++ {
			s := &slot{c: c, name: fmt.Sprintf("%s-%d", r.kind, i), kind: r.kind, bin: bins[r.kind], exited: make(chan struct{}, 1)}
			s.assignPorts(base)
			c.slots = append(c.slots, s)
		}
	}
	// The first API seeds the demo data alone; the others find it there.
	for _, s := range c.slots {
		c.launch(s, base)
	}
	for _, s := range c.slots {
		if s.kind == kindAPI {
			c.apis = append(c.apis, "http://"+s.httpAddr)
		}
	}
	return c
}

// assignPorts picks the slot's ports and sets its environment with them.
func (s *slot) assignPorts(base []string) {
	s.opsAddr = loopback(s.c.t)
	s.env = append(slices.Clone(base), "OPS_ADDR="+s.opsAddr)
	if s.kind == kindAPI {
		s.httpAddr = loopback(s.c.t) // the API serves /ready on its HTTP port
		s.env = append(s.env, "HTTP_ADDR="+s.httpAddr)
		s.opsAddr = s.httpAddr
	}
}

// launch starts s and waits until it is ready. A port is picked free well before its program
// binds it, and an outgoing connection can take it meanwhile: a run that ends before it is
// ready is started again on new ports (twice at most), and its end is not counted as an exit.
func (c *cluster) launch(s *slot, base []string) {
	c.t.Helper()
	for attempt := 1; ; attempt++ {
		s.start()
		ready := false
		testenv.Eventually(c.t, time.Minute, s.name+" ready", func() bool {
			ready = s.ready()
			return ready || !s.running()
		})
		if ready {
			return
		}
		<-s.exited
		s.mu.Lock()
		s.exits = s.exits[:len(s.exits)-1]
		s.mu.Unlock()
		if attempt == 3 {
			c.t.Fatalf("%s ended before it was ready, three times (its log: %s)", s.name, c.logDir)
		}
		s.assignPorts(base)
	}
}

// programEnv is what every program gets: the cluster's services, rate limits off, cheap
// password hashing, long access tokens (the load logs in once), and short redelivery and
// poll periods so that the cluster converges in seconds.
func programEnv(dbURL, redisURL, stripeURL string, extra ...string) []string {
	return append([]string{
		"APP_ENV=test", "DATABASE_URL=" + dbURL, "REDIS_URL=" + redisURL, "STRIPE_API_BASE=" + stripeURL,
		"RATE_LIMIT_ENABLED=false", "ARGON2_MEMORY_KIB=64", "ARGON2_TIME=1", "ARGON2_THREADS=1",
		"JWT_ACCESS_TTL=1h", "LOG_LEVEL=warn", "LOG_FORMAT=json", "SHUTDOWN_TIMEOUT=2s",
		"OUTBOX_POLL_INTERVAL=200ms", "OUTBOX_REDELIVER_AFTER=2s", "WORKER_CONCURRENCY=8",
	}, extra...)
}

func loopback(t *testing.T) string { return fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)) }

// waitReady waits until the slot's program answers /ready with 200.
func (c *cluster) waitReady(s *slot, timeout time.Duration) {
	c.t.Helper()
	testenv.Eventually(c.t, timeout, s.name+" ready", s.ready)
}

// allReady waits until every program is running and ready.
func (c *cluster) allReady(timeout time.Duration) {
	c.t.Helper()
	for _, s := range c.slots {
		c.waitReady(s, timeout)
	}
}

// supervise restarts every slot's program whenever it ends, as an orchestrator would, until
// ctx ends. Restarts come after a short random pause.
func (c *cluster) supervise(ctx context.Context, rng *lockedRand) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, s := range c.slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case <-s.exited:
				}
				pause := time.Duration(200+rng.IntN(1300)) * time.Millisecond
				select {
				case <-ctx.Done():
					return
				case <-time.After(pause):
				}
				s.start()
			}
		}()
	}
	return &wg
}

// killRandom SIGKILLs one running program at random and returns its slot (nil when none ran).
func (c *cluster) killRandom(rng *lockedRand) *slot {
	order := rng.Perm(len(c.slots))
	for _, i := range order {
		if s := c.slots[i]; s.kill() {
			return s
		}
	}
	return nil
}

// saveLogs writes each program's output (all its runs) and PostgreSQL's log to logDir, once:
// at the end of the test while the programs still run, or when the test stops early.
func (c *cluster) saveLogs() {
	if c.logDir == "" || c.logsSaved.Swap(true) {
		return
	}
	for _, s := range c.slots {
		s.mu.Lock()
		out := s.log.String()
		if s.proc != nil && s.proc.Running() {
			out += s.proc.Output(maxLog)
		}
		s.mu.Unlock()
		_ = os.WriteFile(filepath.Join(c.logDir, s.name+".log"), []byte(out), 0o644)
	}
	_ = os.WriteFile(filepath.Join(c.logDir, "postgres.log"), []byte(c.pg.Output(maxLog)), 0o644)
}

// maxLog bounds what is kept of one run of a program.
const maxLog = 4 << 20

// slot is one replica: its program, restarted after each end, and what happened to it.
type slot struct {
	c                 *cluster
	name, kind, bin   string
	env               []string
	opsAddr, httpAddr string

	mu      sync.Mutex
	proc    *testenv.Program
	killing bool // the current run ends by the test's SIGKILL
	log     strings.Builder
	starts  int
	kills   int
	exits   []time.Time // when runs ended by themselves
	exited  chan struct{}
}

// start runs the program and watches for its end.
func (s *slot) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := testenv.StartProgram(s.c.t, s.name, s.bin, s.env)
	p.Quiet()
	s.proc, s.killing = p, false
	s.starts++
	fmt.Fprintf(&s.log, "=== run %d (pid %d) at %s ===\n", s.starts, p.Pid(), time.Now().Format(time.RFC3339Nano))
	go func() {
		<-p.Done()
		s.mu.Lock()
		if s.killing {
			s.kills++
		} else {
			s.exits = append(s.exits, time.Now())
		}
		fmt.Fprintf(&s.log, "%s\n=== ended at %s: %v (killed by the test: %v) ===\n", p.Output(maxLog),
			time.Now().Format(time.RFC3339Nano), p.Err(), s.killing)
		s.mu.Unlock()
		select { // one run at a time: at most one end waits for the supervisor
		case s.exited <- struct{}{}:
		default:
		}
	}()
}

// kill SIGKILLs the program if it runs and reports whether it did.
func (s *slot) kill() bool {
	s.mu.Lock()
	p := s.proc
	if p == nil || !p.Running() || s.killing {
		s.mu.Unlock()
		return false
	}
	s.killing = true
	s.mu.Unlock()
	p.Kill()
	return true
}

// ready reports whether the program runs and its /ready answers 200.
// running reports whether the slot's program runs.
func (s *slot) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && s.proc.Running()
}

func (s *slot) ready() bool {
	if !s.running() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.opsAddr+"/ready", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// counts returns the slot's kills, and its runs that ended by themselves during (or just
// after) an outage and at other times.
func (s *slot) counts(windows []window) (kills, inOutage, other int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, at := range s.exits {
		if inWindow(at, windows) {
			inOutage++
		} else {
			other++
		}
	}
	return s.kills, inOutage, other
}

// lockedRand is a seeded random source shared by goroutines.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func newRand(seed uint64) *lockedRand {
	return &lockedRand{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (l *lockedRand) IntN(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.IntN(n)
}

func (l *lockedRand) Float64() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Float64()
}

func (l *lockedRand) Perm(n int) []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Perm(n)
}
