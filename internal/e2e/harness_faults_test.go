package e2e_test

// Helpers of the exactly-once, race and fault tests: requests safe to send from many
// goroutines, relays and workers with hooks, queue inspection, a Redis logical database of the
// test's own for real programs (which use the production queue names and key prefix), building
// and killing the real cmd/ programs, and a Stripe front that holds responses back.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/outbox/relay"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/internal/worker"
)

// noRelay, noWorker and the other options of newStack.
func noRelay(o *stackOptions)  { o.noRelay = true }
func noWorker(o *stackOptions) { o.noWorker = true }

// later sends a request from a goroutine of its own, for one that will wait (on a lock, on
// Stripe), and returns where its answer comes; a failure to send it fails t.
func later(t testing.TB, c *testenv.Client, method, path string, body any, headers ...string) <-chan testenv.Response {
	out := make(chan testenv.Response, 1)
	go func() {
		resp, err := c.Send(method, path, body, headers...)
		if err != nil {
			t.Error(err)
		}
		out <- resp
	}()
	return out
}

// parallel runs f(i) for i in [0, n) in n goroutines released at once, and waits for all.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			f(i)
		}()
	}
	close(start)
	wg.Wait()
}

// errorCode is the code of an error body ("" when the body is not one).
func errorCode(r testenv.Response) string {
	var m struct{ Code string }
	_ = json.Unmarshal(r.Body, &m)
	return m.Code
}

// payEvent is the signed body of a payment_intent.succeeded for the order's full amount.
func (s *stack) payEvent(o orderView, eventID string) ([]byte, string) {
	body := payment.TestEvent{ID: eventID, Type: payment.EventIntentSucceeded, PaymentIntentID: *o.Payment.PaymentIntentID,
		OrderID: o.ID.String(), Amount: o.Total, Currency: o.Currency}.Build()
	return body, payment.Sign(body, s.cfg.StripeWebhookSecret, time.Now())
}

// processed places an order of qty units of item and takes it to PROCESSED.
func (s *stack) processed(c *testenv.Client, qty int, item uuid.UUID) orderView {
	s.t.Helper()
	o := s.order(c, qty, item)
	s.pay(o)
	s.waitStatus(o.ID, "PROCESSED")
	return o
}

// transitions counts the order's timeline events that moved it to status.
func (s *stack) transitions(id uuid.UUID, to string) int {
	return s.count(`SELECT count(*) FROM order_events WHERE order_id = $1 AND type = 'statusChanged' AND to_status = $2`, id, to)
}

// assertNoRepeatedTransition fails when any status was entered twice by the order.
func (s *stack) assertNoRepeatedTransition(id uuid.UUID) {
	s.t.Helper()
	if n := s.count(`SELECT count(*) FROM (SELECT to_status FROM order_events WHERE order_id = $1 AND type = 'statusChanged'
		GROUP BY to_status HAVING count(*) > 1) d`, id); n != 0 {
		var evs []string
		_ = s.db.Select(&evs, `SELECT coalesce(from_status, '-') || '->' || to_status FROM order_events
			WHERE order_id = $1 AND type = 'statusChanged' ORDER BY created_at, id`, id)
		s.t.Fatalf("order %s entered a status twice: %v", id, evs)
	}
}

// refundCalls returns Stripe refund calls per idempotency key.
func (s *stack) refundCalls() map[string]int {
	out := map[string]int{}
	for _, c := range s.stripe.Calls("POST", "/v1/refunds") {
		out[c.IdempotencyKey]++
	}
	return out
}

// userIDs returns the ids of every live user (the demo staff and customers).
func (s *stack) userIDs() []uuid.UUID {
	s.t.Helper()
	var ids []uuid.UUID
	if err := s.db.Select(&ids, `SELECT id FROM users WHERE deleted_at IS NULL ORDER BY id`); err != nil {
		s.t.Fatal(err)
	}
	return ids
}

// drainOutbox relays what the outbox holds now (e.g. the demo seed's rows) into the stack's
// queues, so that a test's own backlog is all the outbox holds.
func (s *stack) drainOutbox() {
	s.t.Helper()
	r := relay.New(s.db, s.dbURL, s.rdb, s.ns, 500, time.Hour, s.log)
	for {
		n, err := r.RunOnce(context.Background())
		if err != nil {
			s.t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

// writeNotifyBacklog writes n notify:user outbox rows for users (round robin) with outbox.Write,
// in a few transactions, and returns the ids of the rows written.
func writeNotifyBacklog(t *testing.T, db *postgres.DB, users []uuid.UUID, n int) []int64 {
	t.Helper()
	ctx := context.Background()
	var before int64
	if err := db.Get(&before, `SELECT coalesce(max(id), 0) FROM outbox`); err != nil {
		t.Fatal(err)
	}
	const chunk = 2500
	for done := 0; done < n; done += chunk {
		msgs := make([]outbox.Message, 0, chunk)
		for i := done; i < min(n, done+chunk); i++ {
			msgs = append(msgs, outbox.Message{Type: tasks.NotifyUser, Payload: tasks.Notify{
				UserID: users[i%len(users)], Event: "order.statusChanged",
				Data: map[string]any{"orderId": uuid.NewString(), "seq": i, "status": "SHIPPED"},
			}})
		}
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := outbox.Write(ctx, tx, msgs...); err != nil {
			_ = tx.Rollback()
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	var ids []int64
	if err := db.Select(&ids, `SELECT id FROM outbox WHERE id > $1 AND type = $2 ORDER BY id`, before, tasks.NotifyUser); err != nil {
		t.Fatal(err)
	}
	if len(ids) != n {
		t.Fatalf("backlog: %d rows written, want %d", len(ids), n)
	}
	return ids
}

// assertDeliveredOnce checks that every outbox row of ids produced exactly one notification.
func assertDeliveredOnce(t *testing.T, db *postgres.DB, ids []int64) {
	t.Helper()
	var got struct {
		Total    int `db:"total"`
		Distinct int `db:"dist"`
		Missing  int `db:"missing"`
	}
	err := db.Get(&got, `SELECT
		(SELECT count(*) FROM notifications WHERE outbox_id = ANY($1)) AS total,
		(SELECT count(DISTINCT outbox_id) FROM notifications WHERE outbox_id = ANY($1)) AS dist,
		(SELECT count(*) FROM unnest($1::bigint[]) AS w(id) WHERE NOT EXISTS (SELECT 1 FROM notifications n WHERE n.outbox_id = w.id)) AS missing`,
		int64Array(ids))
	if err != nil {
		t.Fatal(err)
	}
	if got.Total != len(ids) || got.Distinct != len(ids) || got.Missing != 0 {
		t.Fatalf("notifications for %d outbox rows: %d in all, %d distinct rows, %d rows without one", len(ids), got.Total, got.Distinct, got.Missing)
	}
}

func int64Array(ids []int64) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	b.WriteByte('}')
	return b.String()
}

// --- relays and workers with hooks ------------------------------------------------------

// startRelayWith runs a relay on rdb and ns, configured by configure before it starts, until
// the test ends; the returned function stops it (finishing the batch in progress).
func (s *stack) startRelayWith(rdb *redis.Client, ns tasks.Namespace, batch int, poll time.Duration, configure func(*relay.Relay)) func() {
	ctx, cancel := context.WithCancel(context.Background())
	r := relay.New(s.db, s.dbURL, rdb, ns, batch, poll, s.log)
	if configure != nil {
		configure(r)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	stop := sync.OnceFunc(func() { cancel(); <-done })
	s.addStop(stop)
	return stop
}

// startWorkerWith runs a worker on rdb and ns with its infrastructure adjusted by configure.
func (s *stack) startWorkerWith(rdb *redis.Client, ns tasks.Namespace, configure func(*worker.Options)) (*worker.Worker, func()) {
	opts := worker.Options{Namespace: ns, RetryBase: 50 * time.Millisecond, DelayedInterval: 100 * time.Millisecond}
	if configure != nil {
		configure(&opts)
	}
	w, err := worker.New(s.cfg, s.assemble(rdb, s.stripe.URL, s.log), opts)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		s.t.Fatal(err)
	}
	stop := sync.OnceFunc(w.Shutdown)
	s.addStop(stop)
	return w, stop
}

// taskLog counts how task attempts ended, by type and outcome, and compensations by type.
type taskLog struct {
	mu          sync.Mutex
	done        map[string]map[string]int
	compensated map[string]int
}

func newTaskLog() *taskLog {
	return &taskLog{done: map[string]map[string]int{}, compensated: map[string]int{}}
}

func (l *taskLog) observer() worker.Observer {
	return worker.Observer{
		Done: func(taskType, outcome string, _ time.Duration) {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.done[taskType] == nil {
				l.done[taskType] = map[string]int{}
			}
			l.done[taskType][outcome]++
		},
		Compensated: func(taskType string) {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.compensated[taskType]++
		},
	}
}

// count returns how many attempts of taskType ended with outcome.
func (l *taskLog) count(taskType, outcome string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done[taskType][outcome]
}

// compensations returns how many compensations changed something, over all types.
func (l *taskLog) compensations() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.compensated {
		n += c
	}
	return n
}

func (l *taskLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("attempts %v, compensations %v", l.done, l.compensated)
}

// --- queues ----------------------------------------------------------------------------

// queues inspects the Asynq queues of one namespace on one Redis database.
type queues struct {
	t    testing.TB
	rdb  *redis.Client
	ns   tasks.Namespace
	insp *asynq.Inspector
}

func newQueues(t testing.TB, rdb *redis.Client, ns tasks.Namespace) *queues {
	return &queues{t: t, rdb: rdb, ns: ns, insp: asynq.NewInspectorFromRedisClient(rdb)}
}

// info returns the stats of queue q (zero when Asynq never saw the queue).
func (q *queues) info(queue string) asynq.QueueInfo {
	q.t.Helper()
	name := q.ns.Queue(queue)
	known, err := q.rdb.SIsMember(context.Background(), tasks.QueueIndex, name).Result()
	if err != nil {
		q.t.Fatal(err)
	}
	if !known {
		return asynq.QueueInfo{Queue: name}
	}
	info, err := q.insp.GetQueueInfo(name)
	if err != nil {
		q.t.Fatalf("queue %s: %v", name, err)
	}
	return *info
}

// busy counts tasks not finished yet (pending, active, scheduled, retry) over every queue.
func (q *queues) busy() int {
	n := 0
	for _, queue := range tasks.Queues() {
		i := q.info(queue)
		n += i.Pending + i.Active + i.Scheduled + i.Retry + i.Aggregating
	}
	return n
}

// processed is the cumulative count of task attempts over every queue.
func (q *queues) processed() int {
	n := 0
	for _, queue := range tasks.Queues() {
		n += q.info(queue).ProcessedTotal
	}
	return n
}

// archived returns the tasks that failed for good in queue.
func (q *queues) archived(queue string) []*asynq.TaskInfo {
	q.t.Helper()
	if q.info(queue).Archived == 0 {
		return nil
	}
	list, err := q.insp.ListArchivedTasks(q.ns.Queue(queue), asynq.PageSize(1000))
	if err != nil {
		q.t.Fatal(err)
	}
	return list
}

// completed returns the finished tasks of taskType in queue whose payload data has
// orderId == orderID ("" for any).
func (q *queues) completed(queue, taskType, orderID string) []*asynq.TaskInfo {
	q.t.Helper()
	if q.info(queue).Completed == 0 {
		return nil
	}
	var out []*asynq.TaskInfo
	for page := 1; ; page++ {
		list, err := q.insp.ListCompletedTasks(q.ns.Queue(queue), asynq.PageSize(500), asynq.Page(page))
		if err != nil {
			q.t.Fatal(err)
		}
		for _, ti := range list {
			if ti.Type == taskType && (orderID == "" || payloadOrder(ti.Payload) == orderID) {
				out = append(out, ti)
			}
		}
		if len(list) < 500 {
			return out
		}
	}
}

// taskExists reports whether Asynq knows a task with id in queue, in any state.
func (q *queues) taskExists(queue, id string) bool {
	n, err := q.rdb.Exists(context.Background(), "asynq:{"+q.ns.Queue(queue)+"}:t:"+id).Result()
	if err != nil {
		q.t.Fatal(err)
	}
	return n == 1
}

func payloadOrder(raw []byte) string {
	var env struct {
		Data struct {
			OrderID string `json:"orderId"`
		} `json:"data"`
	}
	_ = json.Unmarshal(raw, &env)
	return env.Data.OrderID
}

// waitQuiet waits until the outbox is empty and no task is left to run, seen the same way on
// three polls in a row (a relay between claim and commit, or a task writing outbox rows, shows
// up as a change in between).
func waitQuiet(t testing.TB, db *postgres.DB, q *queues, timeout time.Duration) {
	t.Helper()
	stable, last := 0, -1
	testenv.Eventually(t, timeout, "outbox drained and queues idle", func() bool {
		var backlog int
		if err := db.Get(&backlog, `SELECT count(*) FROM outbox`); err != nil {
			t.Fatal(err)
		}
		busy := q.busy()
		processed := q.processed()
		if backlog != 0 || busy != 0 || processed != last {
			stable, last = 0, processed
			return false
		}
		stable++
		if stable < 3 {
			time.Sleep(50 * time.Millisecond)
			return false
		}
		return true
	})
}

// quiet is waitQuiet on the stack's own namespace.
func (s *stack) quiet() *queues {
	s.t.Helper()
	q := newQueues(s.t, s.rdb, s.ns)
	waitQuiet(s.t, s.db, q, 30*time.Second)
	return q
}

// --- a Redis database of the test's own --------------------------------------------------

const redisClaimKey = "dispatch-e2e:claim"

// isolatedRedis claims a Redis logical database (1..15) that is empty and claimed by nobody
// else, for programs that use the production queue names and key prefix. It returns its URL
// and a client. When the test ends it deletes the keys Dispatch and Asynq wrote there (the
// database was empty when claimed) and the claim. Never FLUSHDB: the server is shared.
func isolatedRedis(t *testing.T) (string, *redis.Client) {
	t.Helper()
	_, _, base := testenv.Redis(t)
	token := make([]byte, 8)
	_, _ = rand.Read(token)
	claim := hex.EncodeToString(token)
	ctx := context.Background()
	for n := 15; n >= 1; n-- {
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/" + strconv.Itoa(n)
		rdb, err := redisx.Open(ctx, u.String())
		if err != nil {
			t.Fatal(err)
		}
		ok, err := rdb.SetNX(ctx, redisClaimKey, claim, time.Hour).Result()
		if err != nil || !ok {
			rdb.Close()
			continue
		}
		if size, err := rdb.DBSize(ctx).Result(); err != nil || size != 1 {
			releaseClaim(rdb, claim)
			rdb.Close()
			continue
		}
		t.Cleanup(func() {
			for _, pattern := range []string{"asynq:*", string(redisx.DefaultPrefix) + "*"} {
				iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
				var keys []string
				for iter.Next(ctx) {
					keys = append(keys, iter.Val())
				}
				for len(keys) > 0 {
					k := min(len(keys), 500)
					rdb.Del(ctx, keys[:k]...)
					keys = keys[k:]
				}
			}
			releaseClaim(rdb, claim)
			rdb.Close()
		})
		return u.String(), rdb
	}
	t.Fatal("no free Redis logical database (1..15) to run real programs on")
	return "", nil
}

func releaseClaim(rdb *redis.Client, claim string) {
	ctx := context.Background()
	if v, _ := rdb.Get(ctx, redisClaimKey).Result(); v == claim {
		rdb.Del(ctx, redisClaimKey)
	}
}

// --- real programs ---------------------------------------------------------------------

// buildCmd builds ./cmd/<name> and returns the binary's path.
func buildCmd(t *testing.T, name string) string {
	t.Helper()
	return testenv.BuildCommands(t, name)[name]
}

// startProc runs bin with exactly env (plus PATH and HOME); see testenv.StartProgram.
func startProc(t *testing.T, name, bin string, env ...string) *testenv.Program {
	t.Helper()
	return testenv.StartProgram(t, name, bin, append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...))
}

// opsAddr returns a free local address for a program's ops server.
func opsAddr(t *testing.T) string {
	return "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
}

// --- a Stripe front that holds responses back --------------------------------------------

// slowStripe forwards every call to the test's Stripe proxy at once (so Stripe has acted on
// it) and, for calls of method under prefix while a delay is set, holds the response back for
// that long: a worker killed meanwhile has made the Stripe call but never learns its result.
type slowStripe struct {
	URL      string
	method   string
	prefix   string
	delay    atomic.Int64
	inflight atomic.Int32
}

func newSlowStripe(t *testing.T, target, method, prefix string) *slowStripe {
	s := &slowStripe{method: method, prefix: prefix}
	client := &http.Client{Timeout: 30 * time.Second}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slow := r.Method == s.method && strings.HasPrefix(r.URL.Path, s.prefix)
		if slow {
			s.inflight.Add(1)
			defer s.inflight.Add(-1)
		}
		body, _ := io.ReadAll(r.Body)
		req, err := http.NewRequestWithContext(context.WithoutCancel(r.Context()), r.Method, target+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		respBody, _ := io.ReadAll(resp.Body)
		// Hold the answer while the delay lasts and is not lifted.
		for start := time.Now(); slow && time.Since(start) < time.Duration(s.delay.Load()); {
			time.Sleep(20 * time.Millisecond)
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(respBody)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}
