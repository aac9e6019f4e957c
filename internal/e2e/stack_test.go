// Package e2e_test drives the whole system: the real API over HTTP, the outbox relay and the
// worker, on a database, Redis key prefix and queue namespace of each test's own, with
// stripe-mock behind a fault-injecting proxy. Assertions read the database.
package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/assembly"
	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/httpapi"
	"github.com/dispatchhq/dispatch/internal/outbox/relay"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/internal/worker"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	os.Exit(m.Run())
}

// stack is a running Dispatch.
type stack struct {
	t      *testing.T
	cfg    config.Config
	db     *postgres.DB
	dbURL  string
	rdb    *redis.Client
	keys   redisx.Prefix
	ns     tasks.Namespace
	stripe *testenv.StripeProxy
	api    *testenv.Client
	log    *slog.Logger
	worker *worker.Worker

	stopMu sync.Mutex
	stops  []func()
}

type stackOptions struct {
	noRelay, noWorker bool
	env               []string // configuration variables beyond the stack's, name then value
	retryBase         time.Duration
	batchSize         int
	redeliverAfter    time.Duration
}

// newStack starts API, relay and worker. Retries back off from 50 ms so retry paths finish fast.
func newStack(t *testing.T, opts ...func(*stackOptions)) *stack {
	t.Helper()
	o := stackOptions{retryBase: 50 * time.Millisecond, batchSize: 100, redeliverAfter: time.Minute}
	for _, f := range opts {
		f(&o)
	}
	db, dbURL := testenv.DB(t)
	rdb, keys, redisURL := testenv.Redis(t)
	proxy := testenv.NewStripeProxy(t, testenv.StripeURL(t))
	cfg := testenv.Config(t, config.API, dbURL, redisURL, append([]string{"STRIPE_API_BASE", proxy.URL, "WORKER_CONCURRENCY", "10"}, o.env...)...)
	s := &stack{t: t, cfg: cfg, db: db, dbURL: dbURL, rdb: rdb, keys: keys, stripe: proxy,
		ns: testenv.Namespace(t, rdb, "t"), log: testLogger()}

	a := s.assemble(rdb, proxy.URL, s.log)
	if err := demo.Seed(context.Background(), db, a.Users, a.Catalog, s.log); err != nil {
		t.Fatal(err)
	}
	api := httpapi.New(cfg, a, httpapi.Options{})
	t.Cleanup(api.Close)
	hs := httptest.NewServer(api.Handler())
	t.Cleanup(hs.Close)
	s.api = testenv.NewClient(t, hs.URL)

	if !o.noRelay {
		s.startRelay(o.batchSize, o.redeliverAfter)
	}
	if !o.noWorker {
		s.startWorker(o.retryBase)
	}
	t.Cleanup(s.stopAll)
	return s
}

func testLogger() *slog.Logger {
	if os.Getenv("E2E_LOG") != "" {
		return logging.New("e2e", slog.LevelDebug, "text", os.Stderr)
	}
	return logging.New("e2e", slog.LevelError, "json", io.Discard)
}

// assemble builds the services on the stack's database, with rdb, the Stripe at stripeURL and log.
func (s *stack) assemble(rdb *redis.Client, stripeURL string, log *slog.Logger) *assembly.App {
	return assembly.New(s.cfg, assembly.Infra{DB: s.db, Redis: rdb, Keys: s.keys, Log: log,
		Gateway: payment.NewStripe(s.cfg.StripeSecretKey, stripeURL)})
}

// startRelay runs one more relay until the test ends; the returned function stops it.
func (s *stack) startRelay(batch int, redeliverAfter time.Duration) func() {
	ctx, cancel := context.WithCancel(context.Background())
	r := relay.New(s.db, s.dbURL, s.rdb, s.ns, batch, 50*time.Millisecond, s.log)
	r.RedeliverAfter = redeliverAfter
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	stop := sync.OnceFunc(func() { cancel(); <-done })
	s.addStop(stop)
	return stop
}

// startWorker runs one more worker until the test ends; the returned function stops it.
func (s *stack) startWorker(retryBase time.Duration) (*worker.Worker, func()) {
	w, err := worker.New(s.cfg, s.assemble(s.rdb, s.stripe.URL, s.log), worker.Options{Namespace: s.ns, RetryBase: retryBase, DelayedInterval: 100 * time.Millisecond})
	if err != nil {
		s.t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		s.t.Fatal(err)
	}
	if s.worker == nil {
		s.worker = w
	}
	stop := sync.OnceFunc(w.Shutdown)
	s.addStop(stop)
	return w, stop
}

func (s *stack) addStop(f func()) {
	s.stopMu.Lock()
	s.stops = append(s.stops, f)
	s.stopMu.Unlock()
}

func (s *stack) stopAll() {
	s.stopMu.Lock()
	stops := s.stops
	s.stopMu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
}

// login returns a client with an access token.
func (s *stack) login(email, password string) *testenv.Client {
	s.t.Helper()
	var pair struct{ AccessToken string }
	s.api.Do("POST", "/v1/auth/login", map[string]string{"email": email, "password": password}).Expect(s.t, 200).Decode(s.t, &pair)
	return s.api.As(pair.AccessToken)
}

// staff logs in as a demo user (admin, superadmin, shipper, delivery, financial).
func (s *stack) staff(role string) *testenv.Client {
	return s.login(role+"@dispatch.local", demo.Password)
}

// customer signs up a new customer and logs in.
func (s *stack) customer() (uuid.UUID, *testenv.Client) {
	s.t.Helper()
	email := "c-" + uuid.NewString()[:8] + "@example.com"
	var u struct{ ID uuid.UUID }
	s.api.Do("POST", "/v1/users", map[string]any{"name": "Customer", "email": email, "password": "password123"},
		"Idempotency-Key", uuid.NewString()).Expect(s.t, 201).Decode(s.t, &u)
	return u.ID, s.login(email, "password123")
}

// item creates an item with stock and price (usd) and returns its id.
func (s *stack) item(stock, price int64) uuid.UUID {
	s.t.Helper()
	var it struct{ ID uuid.UUID }
	s.staff("admin").Do("POST", "/v1/admin/items", map[string]any{"name": "Item " + uuid.NewString()[:6],
		"description": "test item", "price": price, "stock": stock}, "Idempotency-Key", uuid.NewString()).
		Expect(s.t, 201).Decode(s.t, &it)
	return it.ID
}

// orderView is the API's order as tests read it.
type orderView struct {
	ID            uuid.UUID
	Status        string
	PendingAction *string
	Total         int64
	Currency      string
	Payment       struct {
		Status          string
		PaymentIntentID *string
		ClientSecret    *string
		LastError       *string
	}
	Refund *struct {
		Status, RefundID, Kind string
		Amount                 int64
	}
}

// order places an order of quantity units of each item.
func (s *stack) order(c *testenv.Client, qty int, items ...uuid.UUID) orderView {
	s.t.Helper()
	var lines []map[string]any
	for _, id := range items {
		lines = append(lines, map[string]any{"itemId": id, "quantity": qty})
	}
	var o orderView
	c.Do("POST", "/v1/orders", map[string]any{"items": lines}, "Idempotency-Key", uuid.NewString()).Expect(s.t, 201).Decode(s.t, &o)
	return o
}

// webhook sends a signed event and returns the response.
func (s *stack) webhook(ev payment.TestEvent) testenv.Response {
	body, signature := s.signed(ev)
	return s.api.Do("POST", "/stripe/webhook", body, signature...)
}

// webhookLater is webhook for an event whose handling will wait: its answer comes later.
func (s *stack) webhookLater(ev payment.TestEvent) <-chan testenv.Response {
	body, signature := s.signed(ev)
	return later(s.t, s.api, "POST", "/stripe/webhook", body, signature...)
}

// signed is ev's body and its Stripe-Signature header.
func (s *stack) signed(ev payment.TestEvent) ([]byte, []string) {
	body := ev.Build()
	return body, []string{"Stripe-Signature", payment.Sign(body, s.cfg.StripeWebhookSecret, time.Now())}
}

// pay sends payment_intent.succeeded for the order's full amount.
func (s *stack) pay(o orderView) {
	s.t.Helper()
	s.webhook(payment.TestEvent{Type: payment.EventIntentSucceeded, PaymentIntentID: *o.Payment.PaymentIntentID,
		OrderID: o.ID.String(), Amount: o.Total, Currency: o.Currency}).Expect(s.t, 200)
}

// status reads an order's status and pending action from the database.
func (s *stack) status(id uuid.UUID) (string, string) {
	var row struct {
		Status string  `db:"status"`
		Action *string `db:"pending_action"`
	}
	if err := s.db.Get(&row, `SELECT status, pending_action FROM orders WHERE id = $1`, id); err != nil {
		s.t.Fatal(err)
	}
	action := ""
	if row.Action != nil {
		action = *row.Action
	}
	return row.Status, action
}

// waitStatus waits until the order reaches status with no pending action.
func (s *stack) waitStatus(id uuid.UUID, want string) {
	s.t.Helper()
	testenv.Eventually(s.t, 30*time.Second, "order "+id.String()+" reaches "+want, func() bool {
		st, action := s.status(id)
		return st == want && action == ""
	})
}

// count runs a COUNT query.
func (s *stack) count(query string, args ...any) int {
	s.t.Helper()
	var n int
	if err := s.db.Get(&n, query, args...); err != nil {
		s.t.Fatal(err)
	}
	return n
}

// stock reads an item's stock.
func (s *stack) stock(id uuid.UUID) int64 {
	var n int64
	if err := s.db.Get(&n, `SELECT stock FROM items WHERE id = $1`, id); err != nil {
		s.t.Fatal(err)
	}
	return n
}

// wantStock stops the test unless item's stock is want; why, when given, says what the figure
// means.
func (s *stack) wantStock(item uuid.UUID, want int64, why ...string) {
	s.t.Helper()
	if got := s.stock(item); got != want && len(why) == 0 {
		s.t.Fatalf("stock = %d, want %d", got, want)
	} else if got != want {
		s.t.Fatalf("stock = %d, want %d (%s)", got, want, strings.Join(why, "; "))
	}
}

// refundRow is a refund recorded for an order.
type refundRow struct {
	Kind     string `db:"kind"`
	RefundID string `db:"refund_id"`
	Amount   int64  `db:"amount"`
	Status   string `db:"status"`
	Method   string `db:"method"`
}

// refunds reads the refunds recorded for an order.
func (s *stack) refunds(id uuid.UUID) []refundRow {
	s.t.Helper()
	var out []refundRow
	if err := s.db.Select(&out, `SELECT kind, refund_id, amount, status, method FROM refunds WHERE order_id = $1 ORDER BY created_at`, id); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// notified waits until the user has a notification of event about the order, and returns
// how many there are.
func (s *stack) waitNotified(userID, orderID uuid.UUID, event string) {
	s.t.Helper()
	testenv.Eventually(s.t, 30*time.Second, "notification "+event, func() bool {
		return s.count(`SELECT count(*) FROM notifications WHERE user_id = $1 AND event = $2 AND data->>'orderId' = $3`,
			userID, event, orderID.String()) > 0
	})
}

func (s *stack) notifications(userID, orderID uuid.UUID, event string) int {
	return s.count(`SELECT count(*) FROM notifications WHERE user_id = $1 AND event = $2 AND data->>'orderId' = $3`,
		userID, event, orderID.String())
}

var _ = json.Marshal
