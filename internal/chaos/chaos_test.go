//go:build chaos

package chaos_test

// TestChaos (issue 10): the whole system on a PostgreSQL and a Redis of its own, under an
// order pipeline load, while programs die by SIGKILL every few seconds and Redis (with and
// without its data) and PostgreSQL (fast and immediate stops) restart. Then it must converge,
// and the database must show every invariant of docs/chaos.md.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// settings come from the environment (docs/chaos.md).
type settings struct {
	duration    time.Duration // CHAOS_DURATION: load and faults
	killEvery   time.Duration // CHAOS_KILL_EVERY: mean time between two SIGKILLs
	outageEvery time.Duration // between two Redis or PostgreSQL restarts
	converge    time.Duration // CHAOS_CONVERGE_TIMEOUT: how long convergence may take
	users       int           // CHAOS_USERS: virtual users of the load
	seed        uint64        // CHAOS_SEED: the random choices (faults and load)
	logDir      string        // CHAOS_LOG_DIR: where the programs' logs are written
}

func loadSettings(t *testing.T) settings {
	t.Helper()
	s := settings{
		duration:  envDuration(t, "CHAOS_DURATION", 2*time.Minute),
		killEvery: envDuration(t, "CHAOS_KILL_EVERY", 3*time.Second),
		converge:  envDuration(t, "CHAOS_CONVERGE_TIMEOUT", 3*time.Minute),
		users:     envInt(t, "CHAOS_USERS", 8),
		seed:      uint64(envInt(t, "CHAOS_SEED", int(time.Now().UnixNano()%1e9))),
		logDir:    os.Getenv("CHAOS_LOG_DIR"),
	}
	// Outages start six times a run at least, so that a short run has each of the five kinds
	// (the first after one interval); at most one every 15 s.
	s.outageEvery = min(max(s.duration/6, 6*time.Second), 15*time.Second)
	return s
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 40s or 2m", name, v)
	}
	return d
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func TestChaos(t *testing.T) {
	set := loadSettings(t)
	logDir := prepareLogDir(t, set.logDir)
	t.Logf("chaos: %s of load and faults, a SIGKILL every ~%s, an outage every %s, %d users, seed %d; logs in %s",
		set.duration, set.killEvery, set.outageEvery, set.users, set.seed, logDir)

	c := startCluster(t, logDir)
	rng := newRand(set.seed)
	rec := newRecorder()
	l := &load{api: newAPI(c.apis, rec), db: c.db, rng: rng}
	ctx := context.Background()
	initial := c.setUp(t, l)
	type vu struct {
		id    uuid.UUID
		token string
	}
	var users []vu
	for range set.users {
		id, tok, err := l.customer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, vu{id, tok})
	}

	superCtx, stopSupervising := context.WithCancel(ctx)
	supervisor := c.supervise(superCtx, rng)
	loadCtx, stopLoad := context.WithTimeout(ctx, set.duration)
	defer stopLoad()
	var vus sync.WaitGroup
	started := time.Now()
	for _, u := range users {
		vus.Add(1)
		go func() { defer vus.Done(); l.run(loadCtx, u.id, u.token) }()
	}
	faults := c.chaos(t, rng, started.Add(set.duration), set)
	vus.Wait()
	quiet := time.Now()
	t.Logf("chaos over after %s; the load's last orders played out %s later", set.duration,
		quiet.Sub(started.Add(set.duration)).Round(100*time.Millisecond))

	// Convergence: every program back, then nothing left to do.
	c.allReady(2 * time.Minute)
	stopSupervising()
	supervisor.Wait()
	// First the database (what an order's owner sees), then the queues too: a task a killed
	// worker left behind runs again once its lease expires, and must change nothing.
	v := &verdict{}
	var conv convergence
	conv.db, conv.dbLeft = c.converge(set.converge, func(o outstanding) bool { return o.Outbox+o.Paid+o.Pending == 0 })
	conv.dbTime = time.Since(quiet)
	conv.all, conv.allLeft = c.converge(set.converge, outstanding.none)
	conv.allTime = time.Since(quiet)
	if !conv.db {
		v.fail("the database did not converge within "+set.converge.String(), []string{conv.dbLeft})
	}
	if !conv.all {
		v.fail("the queues did not empty within "+set.converge.String()+" more", []string{conv.allLeft})
	}
	c.check(t, v, l, initial, rec, faults.windows)
	c.printFigures(t, l, rec, faults, conv)
	c.saveLogs()
	v.fail("a retry under the same Idempotency-Key answered unlike its first attempt", l.replays)
	v.fail("the load got answers no scenario allows", l.problems)
	if len(v.broken) > 0 {
		t.Errorf("broken invariants (seed %d, logs in %s):\n  - %s", set.seed, logDir, strings.Join(v.broken, "\n  - "))
	}
}

// prepareLogDir returns dir, or a new directory kept when the test fails.
func prepareLogDir(t *testing.T, dir string) string {
	t.Helper()
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	dir, err := os.MkdirTemp("", "dispatch-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		}
	})
	return dir
}

// setUp creates the items the load orders and returns their initial stock; it logs the
// financial staff member in.
func (c *cluster) setUp(t *testing.T, l *load) map[uuid.UUID]int64 {
	t.Helper()
	ctx := context.Background()
	admin, err := l.login(ctx, "admin@dispatch.local", demo.Password)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		body, _ := json.Marshal(map[string]any{"name": fmt.Sprintf("Chaos item %d", i+1), "description": "chaos",
			"price": 1000 + 250*i, "stock": 1_000_000})
		ans, _, err := l.api.send(ctx, request{route: "POST /v1/admin/items", method: "POST", path: "/v1/admin/items",
			token: admin, body: body, headers: map[string]string{"Idempotency-Key": uuid.NewString()}}, time.Minute)
		if err != nil || ans.status != http.StatusCreated {
			t.Fatalf("create item: status %d %s: %v", ans.status, ans.body, err)
		}
		var it struct{ ID uuid.UUID }
		_ = json.Unmarshal(ans.body, &it)
		l.items = append(l.items, it.ID)
	}
	if err := l.staffLogin(ctx); err != nil {
		t.Fatal(err)
	}
	initial := map[uuid.UUID]int64{}
	for _, id := range l.items {
		var n int64
		if err := c.db.Get(&n, `SELECT stock FROM items WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		initial[id] = n
	}
	return initial
}

// faultLog is what the chaos did besides the kills (the slots count those).
type faultLog struct {
	windows                                               []window
	redisKept, redisWiped, redisFull, pgFast, pgImmediate int
}

// chaos SIGKILLs a random program every killEvery (±50 %) and breaks Redis or PostgreSQL
// every outageEvery, in turn: Redis restarted keeping its AOF, PostgreSQL fast, Redis restarted
// losing its data, PostgreSQL immediate (a crash: WAL replay), Redis out of memory. It returns
// at until.
func (c *cluster) chaos(t *testing.T, rng *lockedRand, until time.Time, set settings) faultLog {
	var f faultLog
	outages := []func() window{
		func() window { f.redisKept++; return c.restartRedis(t, true) },
		func() window { f.pgFast++; return c.restartPG(testenv.StopFast) },
		func() window { f.redisWiped++; return c.restartRedis(t, false) },
		func() window { f.pgImmediate++; return c.restartPG(testenv.StopImmediate) },
		func() window { f.redisFull++; return c.fillRedis(t) },
	}
	jitter := func() time.Duration {
		return time.Duration(float64(set.killEvery) * (0.5 + rng.Float64()))
	}
	nextKill, nextOutage := time.Now().Add(jitter()), time.Now().Add(set.outageEvery)
	for i := 0; ; {
		now := time.Now()
		if !now.Before(until) {
			return f
		}
		switch {
		case !now.Before(nextOutage):
			w := outages[i%len(outages)]()
			i++
			f.windows = append(f.windows, w)
			t.Logf("%s: %s, down %s", w.start.Format("15:04:05.000"), w.what, w.end.Sub(w.start).Round(time.Millisecond))
			nextOutage = w.start.Add(set.outageEvery)
		case !now.Before(nextKill):
			if s := c.killRandom(rng); s != nil {
				t.Logf("%s: SIGKILL %s", now.Format("15:04:05.000"), s.name)
			}
			nextKill = now.Add(jitter())
		}
		time.Sleep(min(time.Until(nextKill), time.Until(nextOutage), time.Until(until), time.Second) + time.Millisecond)
	}
}

// restartRedis kills Redis (SIGKILL), leaves it down a second, deletes its data unless keep,
// and starts it again.
func (c *cluster) restartRedis(t *testing.T, keep bool) window {
	w := window{what: "Redis SIGKILL, restart with its AOF", start: time.Now()}
	c.redis.Kill()
	time.Sleep(time.Second)
	if !keep {
		w.what = "Redis SIGKILL, restart without its data"
		c.redis.ForgetData()
	}
	c.redis.Start()
	w.end = time.Now()
	return w
}

// fillRedis caps Redis's memory at what it uses, with the policy that evicts nothing, for
// three seconds: every command that would take memory (every Asynq script, the caches' writes)
// is refused with OOM while reads go on. Then it lifts the cap.
func (c *cluster) fillRedis(t *testing.T) window {
	w := window{what: "Redis full (maxmemory reached, noeviction)", start: time.Now()}
	ctx, rdb := context.Background(), c.redis.Client()
	info := rdb.InfoMap(ctx, "memory")
	used, err := strconv.ParseInt(info.Item("Memory", "used_memory"), 10, 64)
	if err = errors.Join(info.Err(), err); err != nil || used == 0 {
		t.Fatalf("reading Redis's memory: %v (used %d)", err, used)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatalf("setting Redis's eviction policy: %v", err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", strconv.FormatInt(used, 10)).Err(); err != nil {
		t.Fatalf("capping Redis's memory: %v", err)
	}
	time.Sleep(3 * time.Second)
	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatalf("lifting Redis's memory cap: %v", err)
	}
	w.end = time.Now()
	return w
}

// restartPG stops PostgreSQL in mode, leaves it down two seconds and starts it again.
func (c *cluster) restartPG(mode testenv.PGStopMode) window {
	w := window{what: "PostgreSQL " + mode.String() + " stop, restart", start: time.Now()}
	c.pg.Stop(mode)
	time.Sleep(2 * time.Second)
	c.pg.Start()
	w.end = time.Now()
	return w
}

// converge waits until done holds for what the cluster owes, twice in a row half a second
// apart. When it does not within timeout, it returns what was left, or why it could not be
// read.
func (c *cluster) converge(timeout time.Duration, done func(outstanding) bool) (bool, string) {
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: c.redis.Addr()})
	defer insp.Close()
	deadline := time.Now().Add(timeout)
	var last string
	settled := 0
	for time.Now().Before(deadline) {
		o, err := c.outstanding(insp)
		switch {
		case err != nil:
			last, settled = "reading what is left: "+err.Error(), 0
		case done(o):
			if settled++; settled == 2 {
				return true, ""
			}
		default:
			last, settled = o.String(), 0
		}
		time.Sleep(500 * time.Millisecond)
	}
	return false, last
}

// check runs every invariant.
func (c *cluster) check(t *testing.T, v *verdict, l *load, initial map[uuid.UUID]int64, rec *recorder, windows []window) {
	t.Helper()
	l.mu.Lock()
	orders := append([]placed(nil), l.orders...)
	l.mu.Unlock()
	refundKeys := map[string]int{}
	for _, call := range c.stripe.Calls("POST", "/v1/refunds") {
		refundKeys[call.IdempotencyKey]++
	}
	for _, check := range []func() error{
		func() error { return c.checkOrders(v, orders) },
		func() error { return c.checkStock(v, initial) },
		func() error { return c.checkDuplicates(v, refundKeys) },
		func() error { return c.checkNotified(v) },
	} {
		if err := check(); err != nil {
			t.Fatalf("reading the invariants: %v", err)
		}
	}
	rec.mu.Lock()
	errs := append([]serverError(nil), rec.serverErr...)
	rec.mu.Unlock()
	checkStatuses(v, errs, windows)
}

// printFigures logs the run's figures as a table.
func (c *cluster) printFigures(t *testing.T, l *load, rec *recorder, f faultLog, conv convergence) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "  %s\t%v\n", k, v) }
	counts := l.scenarioCounts()
	var statuses struct {
		Total, Processed, Canceled, Refunded, Pending, Late int
	}
	_ = c.db.Get(&statuses.Total, `SELECT count(*) FROM orders`)
	_ = c.db.Get(&statuses.Processed, `SELECT count(*) FROM orders WHERE status = 'PROCESSED'`)
	_ = c.db.Get(&statuses.Canceled, `SELECT count(*) FROM orders WHERE status = 'CANCELED'`)
	_ = c.db.Get(&statuses.Refunded, `SELECT count(*) FROM orders WHERE status = 'REFUNDED'`)
	_ = c.db.Get(&statuses.Pending, `SELECT count(*) FROM orders WHERE status = 'PENDING'`)
	_ = c.db.Get(&statuses.Late, `SELECT count(*) FROM refunds WHERE kind = 'late_payment'`)
	row("orders placed (in the database)", fmt.Sprintf("%d (%d)", len(l.orders), statuses.Total))
	row("  by scenario", scenarioLine(counts))
	row("payments accepted", counts["paid"])
	row("cancels / refunds accepted", fmt.Sprintf("%d / %d", counts["cancel accepted"], counts["refund accepted"]))
	row("ended PROCESSED / CANCELED / REFUNDED / PENDING", fmt.Sprintf("%d / %d / %d / %d",
		statuses.Processed, statuses.Canceled, statuses.Refunded, statuses.Pending))
	row("late payments refunded", statuses.Late)
	kills, exitsInOutage, exits := map[string]int{}, map[string]int{}, map[string]int{}
	for _, s := range c.slots {
		k, eo, e := s.counts(f.windows)
		kills[s.kind] += k
		exitsInOutage[s.kind] += eo
		exits[s.kind] += e
	}
	row("SIGKILLs api / relay / worker", fmt.Sprintf("%d / %d / %d", kills[kindAPI], kills[kindRelay], kills[kindWorker]))
	row("exits in an outage api / relay / worker", fmt.Sprintf("%d / %d / %d (a start refused while a server is down)",
		exitsInOutage[kindAPI], exitsInOutage[kindRelay], exitsInOutage[kindWorker]))
	row("other exits api / relay / worker", fmt.Sprintf("%d / %d / %d", exits[kindAPI], exits[kindRelay], exits[kindWorker]))
	row("Redis restarts with AOF / without data", fmt.Sprintf("%d / %d", f.redisKept, f.redisWiped))
	row("Redis out of memory for 3 s", f.redisFull)
	row("PostgreSQL restarts fast / immediate", fmt.Sprintf("%d / %d", f.pgFast, f.pgImmediate))
	answers, fivexx, noAnswer := rec.totals()
	row("HTTP answers / 5xx / unanswered tries", fmt.Sprintf("%d / %d / %d", answers, fivexx, noAnswer))
	row("  5xx by route and status", serverErrorLine(rec))
	row("time to converge: database / queues too", conv.String())
	tw.Flush()
	t.Logf("figures:\n%s", b.String())
}

// convergence is how long the cluster took to owe nothing, in the database and in the queues.
type convergence struct {
	db, all         bool
	dbLeft, allLeft string
	dbTime, allTime time.Duration
}

func (c convergence) String() string {
	show := func(ok bool, d time.Duration) string {
		if !ok {
			return "not converged"
		}
		return d.Round(100 * time.Millisecond).String()
	}
	return show(c.db, c.dbTime) + " / " + show(c.all, c.allTime)
}

func scenarioLine(counts map[string]int) string {
	var parts []string
	for _, m := range mix {
		parts = append(parts, fmt.Sprintf("%s %d", m.sc, counts[string(m.sc)]))
	}
	return strings.Join(parts, ", ")
}

func serverErrorLine(rec *recorder) string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	n := map[string]int{}
	for _, e := range rec.serverErr {
		n[fmt.Sprintf("%s %d", e.route, e.status)]++
	}
	var parts []string
	for k, v := range n {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, v))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
