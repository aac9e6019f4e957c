package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
)

// Stack is a running Dispatch under test. Its rate limits must be off (RATE_LIMIT_ENABLED=false).
type Stack struct {
	Base          string
	DB            *postgres.DB  // for the pipeline's server-side timestamps
	Redis         *redis.Client // to force cache misses
	Keys          redisx.Prefix
	WebhookSecret string
	HTTP          *http.Client
	// Lines and Units shape the orders: order i has i%Lines+1 lines of distinct items chosen at
	// random, each of 1 to Units units. Prepare makes them at least 1.
	Lines, Units int

	admin     string
	customers []string
	items     []string
}

// Prepare logs in as the demo admin, creates n customers and items items with ample stock
// (orders pick up to Lines of them: few items make hot rows, many spread the load).
func (s *Stack) Prepare(ctx context.Context, n, items int) error {
	s.Lines, s.Units = max(s.Lines, 1), max(s.Units, 1)
	var err error
	if s.admin, err = s.login(ctx, demo.AdminEmail, demo.Password); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		email := fmt.Sprintf("bench-%s@example.com", uuid.NewString()[:12])
		if _, err := s.call(ctx, "POST", "/v1/users", "", map[string]any{"name": "Bench", "email": email, "password": "bench-password"}, 201); err != nil {
			return err
		}
		tok, err := s.login(ctx, email, "bench-password")
		if err != nil {
			return err
		}
		s.customers = append(s.customers, tok)
	}
	for i := 0; i < max(items, s.Lines, 2); i++ {
		var it struct{ ID string }
		body, err := s.call(ctx, "POST", "/v1/admin/items", s.admin, map[string]any{"name": "Bench item " + uuid.NewString()[:6],
			"description": "load test", "price": 1000 + i, "stock": 1_000_000_000}, 201)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(body, &it); err != nil {
			return err
		}
		s.items = append(s.items, it.ID)
	}
	return nil
}

func (s *Stack) login(ctx context.Context, email, password string) (string, error) {
	body, err := s.call(ctx, "POST", "/v1/auth/login", "", map[string]string{"email": email, "password": password}, 200)
	if err != nil {
		return "", err
	}
	var pair struct{ AccessToken string }
	return pair.AccessToken, json.Unmarshal(body, &pair)
}

func (s *Stack) call(ctx context.Context, method, path, token string, body any, want int) ([]byte, error) {
	req, err := s.request(ctx, method, path, token, body)
	if err != nil {
		return nil, err
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(buf.String()))
	}
	return buf.Bytes(), nil
}

func (s *Stack) request(ctx context.Context, method, path, token string, body any) (*http.Request, error) {
	var rd *bytes.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(raw)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.Base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if method == "POST" {
		req.Header.Set("Idempotency-Key", uuid.NewString())
	}
	return req, nil
}

func is(code int) OK { return func(status int) bool { return status == code } }

// ItemRead returns the request of GET /v1/items/:id (or the list when list is set). With miss,
// the item's (or the lists') cache generation is bumped before each request, so every read
// misses the cache and goes to Postgres; the bump is the client's cost, not the server's.
func (s *Stack) ItemRead(list, miss bool) (Request, OK) {
	path, gen := "/v1/items/"+s.items[0], s.Keys.Key("items", "gen", s.items[0])
	if list {
		path, gen = "/v1/items?limit=20", s.Keys.Key("items", "gen")
	}
	return func(ctx context.Context, i int) (*http.Request, error) {
		if miss {
			if err := s.Redis.Incr(ctx, gen).Err(); err != nil {
				return nil, err
			}
		}
		return s.request(ctx, "GET", path, s.customers[i%len(s.customers)], nil)
	}, is(200)
}

// Login returns the request of a demo login.
func (s *Stack) Login() (Request, OK) {
	return func(ctx context.Context, _ int) (*http.Request, error) {
		return s.request(ctx, "POST", "/v1/auth/login", "", map[string]string{"email": demo.AdminEmail, "password": demo.Password})
	}, is(200)
}

// CreateOrder returns the request of POST /v1/orders, shaped by Lines and Units.
func (s *Stack) CreateOrder() (Request, OK) {
	return func(ctx context.Context, i int) (*http.Request, error) {
		return s.request(ctx, "POST", "/v1/orders", s.customers[i%len(s.customers)], s.orderBody(i))
	}, is(201)
}

func (s *Stack) orderBody(i int) map[string]any {
	picked := rand.Perm(len(s.items))[:i%s.Lines+1]
	lines := make([]map[string]any, len(picked))
	for k, p := range picked {
		lines[k] = map[string]any{"itemId": s.items[p], "quantity": 1 + rand.IntN(s.Units)}
	}
	return map[string]any{"items": lines}
}

// ServerCPU reads the API process's CPU seconds from its /metrics.
func (s *Stack) ServerCPU(ctx context.Context) (time.Duration, error) {
	families, err := scrape(ctx, s.HTTP, s.Base+"/metrics")
	if err != nil {
		return 0, err
	}
	if ms := families["process_cpu_seconds_total"].GetMetric(); len(ms) > 0 {
		return time.Duration(ms[0].GetCounter().GetValue() * float64(time.Second)), nil
	}
	return 0, fmt.Errorf("no process_cpu_seconds_total on %s/metrics", s.Base)
}

// Pipeline places orders at rate per second for d and pays each with a signed webhook at
// once. The latency it reports is from sending the webhook to the order's PROCESSED event as
// the database recorded it (same machine, same clock), read after the run.
func (s *Stack) Pipeline(ctx context.Context, rate float64, d time.Duration) (Result, error) {
	type paid struct {
		order  uuid.UUID
		sentAt time.Time
	}
	var (
		mu    sync.Mutex
		sent  []paid
		fails = map[int]int{}
	)
	res := Open(ctx, "pipeline: order + webhook", s.HTTP, rate, d, func(ctx context.Context, i int) (*http.Request, error) {
		body, err := s.call(ctx, "POST", "/v1/orders", s.customers[i%len(s.customers)], s.orderBody(i), 201)
		if err != nil {
			mu.Lock()
			fails[0]++
			mu.Unlock()
			return nil, err
		}
		var o struct {
			ID       uuid.UUID
			Total    int64
			Currency string
			Payment  struct{ PaymentIntentID string }
		}
		if err := json.Unmarshal(body, &o); err != nil {
			return nil, err
		}
		ev := payment.TestEvent{ID: "evt_bench_" + uuid.NewString(), Type: payment.EventIntentSucceeded,
			PaymentIntentID: o.Payment.PaymentIntentID, OrderID: o.ID.String(), Amount: o.Total, Currency: o.Currency}.Build()
		req, err := http.NewRequestWithContext(ctx, "POST", s.Base+"/stripe/webhook", bytes.NewReader(ev))
		if err != nil {
			return nil, err
		}
		now := time.Now()
		req.Header.Set("Stripe-Signature", payment.Sign(ev, s.WebhookSecret, now))
		mu.Lock()
		sent = append(sent, paid{order: o.ID, sentAt: now})
		mu.Unlock()
		return req, nil
	}, is(200))
	res.Name = fmt.Sprintf("webhook → PROCESSED at %.0f orders/s (webhook answered in p50 %s, p99 %s)",
		rate, ms(res.Percentile(50)), ms(res.Percentile(99)))

	deadline := time.Now().Add(2 * time.Minute)
	ids := make([]uuid.UUID, len(sent))
	for i, p := range sent {
		ids[i] = p.order
	}
	// Polled once a second for the orders not seen processed yet, so that the poll adds little
	// to the database's CPU the run reports.
	processed := map[uuid.UUID]time.Time{}
	for time.Now().Before(deadline) && len(ids) > 0 {
		seen, err := orderdb.Store{}.ProcessedAt(ctx, s.DB, ids)
		if err != nil {
			return res, err
		}
		maps.Copy(processed, seen)
		ids = slices.DeleteFunc(ids, func(id uuid.UUID) bool { _, ok := processed[id]; return ok })
		if len(ids) > 0 {
			time.Sleep(time.Second)
		}
	}
	res.Latencies = res.Latencies[:0]
	for _, p := range sent {
		if at, ok := processed[p.order]; ok {
			res.Latencies = append(res.Latencies, at.Sub(p.sentAt))
		}
	}
	if missing := len(sent) - len(processed); missing > 0 {
		return res, fmt.Errorf("%d of %d orders never reached PROCESSED", missing, len(sent))
	}
	return res, nil
}
