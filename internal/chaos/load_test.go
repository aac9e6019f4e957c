//go:build chaos

package chaos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// api sends the load's requests to the API replicas in turn. A request that gets no answer
// (its replica was killed) goes to the next replica; every answer is recorded.
type api struct {
	bases []string
	hc    *http.Client
	next  atomic.Uint64
	rec   *recorder
}

func newAPI(bases []string, rec *recorder) *api {
	return &api{bases: bases, rec: rec, hc: &http.Client{Timeout: 15 * time.Second}}
}

// answer is one HTTP answer.
type answer struct {
	status int
	body   []byte
	header http.Header
}

// code is the error body's code, if any.
func (a answer) code() string {
	var e struct{ Code string }
	_ = json.Unmarshal(a.body, &e)
	return e.Code
}

// request is what the load sends; route names it in the figures.
type request struct {
	route, method, path string
	token               string
	body                []byte
	headers             map[string]string
	sign                bool // a Stripe webhook: signed at each send
}

// once sends the request to one replica after another until one answers.
func (a *api) once(ctx context.Context, r request) (answer, error) {
	var last error
	for range a.bases {
		base := a.bases[int(a.next.Add(1))%len(a.bases)]
		req, err := http.NewRequestWithContext(ctx, r.method, base+r.path, bytes.NewReader(r.body))
		if err != nil {
			return answer{}, err
		}
		if r.body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if r.token != "" {
			req.Header.Set("Authorization", "Bearer "+r.token)
		}
		for k, v := range r.headers {
			req.Header.Set(k, v)
		}
		if r.sign {
			req.Header.Set("Stripe-Signature", payment.Sign(r.body, config.DefaultStripeWebhookSecret, time.Now()))
		}
		resp, err := a.hc.Do(req)
		if err != nil {
			a.rec.transport(r.route)
			last = err
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			a.rec.transport(r.route)
			last = err
			continue
		}
		ans := answer{status: resp.StatusCode, body: body, header: resp.Header}
		a.rec.answered(r.route, ans)
		return ans, nil
	}
	return answer{}, last
}

// retryable reports whether an answer (or its absence) calls for sending the same request
// again: no replica answered, a declared outage (503), or the same idempotency key still in
// flight on a replica that was killed mid-request.
func retryable(a answer, err error) bool {
	return err != nil || a.status == http.StatusServiceUnavailable ||
		(a.status == http.StatusConflict && a.code() == "common.errors.idempotencyKeyInFlight")
}

// errGaveUp is a request that got no final answer within its budget.
var errGaveUp = errors.New("no final answer")

// send sends the request until the answer is final, as a client with an Idempotency-Key and
// Stripe's webhook retries do, within budget. unanswered tells whether an earlier attempt got
// no answer (its replica died): that attempt may have done the work.
func (a *api) send(ctx context.Context, r request, budget time.Duration) (ans answer, unanswered bool, err error) {
	deadline := time.Now().Add(budget)
	for {
		ans, err := a.once(ctx, r)
		if !retryable(ans, err) {
			return ans, unanswered, nil
		}
		if err != nil {
			unanswered = true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return ans, unanswered, fmt.Errorf("%s %s: %w (last: status %d, %v)", r.method, r.path, errGaveUp, ans.status, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// recorder counts the answers by route and status and keeps every 5xx with its time.
type recorder struct {
	mu        sync.Mutex
	byRoute   map[string]map[int]int
	noAnswer  map[string]int
	serverErr []serverError
}

type serverError struct {
	at     time.Time
	route  string
	status int
	code   string
}

func newRecorder() *recorder {
	return &recorder{byRoute: map[string]map[int]int{}, noAnswer: map[string]int{}}
}

func (r *recorder) answered(route string, a answer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byRoute[route] == nil {
		r.byRoute[route] = map[int]int{}
	}
	r.byRoute[route][a.status]++
	if a.status >= 500 {
		r.serverErr = append(r.serverErr, serverError{at: time.Now(), route: route, status: a.status, code: a.code()})
	}
}

func (r *recorder) transport(route string) {
	r.mu.Lock()
	r.noAnswer[route]++
	r.mu.Unlock()
}

// totals returns the number of answers, of 5xx answers and of requests no replica answered.
func (r *recorder) totals() (answers, fivexx, noAnswer int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, byStatus := range r.byRoute {
		for st, n := range byStatus {
			answers += n
			if st >= 500 {
				fivexx += n
			}
		}
	}
	for _, n := range r.noAnswer {
		noAnswer += n
	}
	return answers, fivexx, noAnswer
}

// scenario is what the load does with one order after placing it.
type scenario string

const (
	scPay         scenario = "pay"          // paid; it must end PROCESSED
	scPayRefund   scenario = "pay+refund"   // paid, then refunded
	scPayCancel   scenario = "pay+cancel"   // paid, then canceled (refund of the capture)
	scCancel      scenario = "cancel"       // canceled unpaid
	scLatePayment scenario = "late-payment" // canceled, then paid: the payment is refunded
	scUnpaid      scenario = "unpaid"       // left PENDING, its stock held
)

// mix is the share of each scenario.
var mix = []struct {
	sc     scenario
	weight int
}{{scPay, 40}, {scPayRefund, 15}, {scPayCancel, 10}, {scCancel, 10}, {scLatePayment, 15}, {scUnpaid, 10}}

// placed is an order the load placed and what it did with it.
type placed struct {
	ID       uuid.UUID
	UserID   uuid.UUID
	Scenario scenario
	Paid     bool // a payment_intent.succeeded was accepted (200)
	Action   string
	Accepted bool // the cancel or refund was answered 202
}

// load drives the order pipeline through the API with a number of virtual users, each a
// customer of its own; a financial staff member cancels and refunds.
type load struct {
	api       *api
	db        *postgres.DB
	rng       *lockedRand
	items     []uuid.UUID
	financial string // access token

	mu       sync.Mutex
	orders   []placed
	problems []string // answers no scenario allows, with their request
	replays  []string // retries under one Idempotency-Key answered unlike their first attempt
}

// customer signs up a customer and logs them in; it returns the user id and access token.
func (l *load) customer(ctx context.Context) (uuid.UUID, string, error) {
	email := "chaos-" + uuid.NewString()[:12] + "@example.com"
	body, _ := json.Marshal(map[string]string{"name": "Chaos Customer", "email": email, "password": "password123"})
	ans, _, err := l.api.send(ctx, request{route: "POST /v1/users", method: "POST", path: "/v1/users", body: body,
		headers: map[string]string{"Idempotency-Key": uuid.NewString()}}, time.Minute)
	if err != nil || ans.status != http.StatusCreated {
		return uuid.Nil, "", fmt.Errorf("sign up: status %d %s: %v", ans.status, ans.body, err)
	}
	var u struct{ ID uuid.UUID }
	_ = json.Unmarshal(ans.body, &u)
	token, err := l.login(ctx, email, "password123")
	return u.ID, token, err
}

func (l *load) login(ctx context.Context, email, password string) (string, error) {
	body, _ := json.Marshal(map[string]string{"email": email, "password": password})
	ans, _, err := l.api.send(ctx, request{route: "POST /v1/auth/login", method: "POST", path: "/v1/auth/login", body: body}, time.Minute)
	if err != nil || ans.status != http.StatusOK {
		return "", fmt.Errorf("login %s: status %d %s: %v", email, ans.status, ans.body, err)
	}
	var pair struct{ AccessToken string }
	_ = json.Unmarshal(ans.body, &pair)
	return pair.AccessToken, nil
}

// staffLogin logs the demo financial user in.
func (l *load) staffLogin(ctx context.Context) error {
	tok, err := l.login(ctx, "financial@dispatch.local", demo.Password)
	l.financial = tok
	return err
}

// run is one virtual user: it places orders and plays a scenario with each until ctx ends.
func (l *load) run(ctx context.Context, userID uuid.UUID, token string) {
	for ctx.Err() == nil {
		l.iteration(ctx, userID, token)
		time.Sleep(time.Duration(50+l.rng.IntN(150)) * time.Millisecond)
	}
}

func (l *load) iteration(ctx context.Context, userID uuid.UUID, token string) {
	// The iteration's requests outlive the load's end: an order placed is played to the end.
	work := context.WithoutCancel(ctx)
	o, pi, err := l.place(work, token)
	if err != nil {
		l.problem("place: %v", err)
		return
	}
	o.UserID = userID
	o.Scenario = l.pick()
	switch o.Scenario {
	case scPay:
		o.Paid = l.pay(work, o, pi)
	case scPayRefund, scPayCancel:
		if o.Paid = l.pay(work, o, pi); o.Paid {
			time.Sleep(time.Duration(l.rng.IntN(1000)) * time.Millisecond)
			o.Action = map[scenario]string{scPayRefund: "refund", scPayCancel: "cancel"}[o.Scenario]
			o.Accepted = l.act(work, o.ID, o.Action)
		}
	case scCancel:
		o.Action = "cancel"
		o.Accepted = l.act(work, o.ID, o.Action)
	case scLatePayment:
		o.Action = "cancel"
		if o.Accepted = l.act(work, o.ID, o.Action); o.Accepted {
			l.waitCanceled(o.ID, 20*time.Second)
			o.Paid = l.pay(work, o, pi)
		}
	}
	l.mu.Lock()
	l.orders = append(l.orders, o)
	l.mu.Unlock()
}

func (l *load) pick() scenario {
	total := 0
	for _, m := range mix {
		total += m.weight
	}
	n := l.rng.IntN(total)
	for _, m := range mix {
		if n -= m.weight; n < 0 {
			return m.sc
		}
	}
	return scPay
}

// orderBody is the order's part the load needs.
type orderBody struct {
	ID       uuid.UUID
	Total    int64
	Currency string
	Payment  struct{ PaymentIntentID *string }
}

// place creates an order of one or two items, 1 to 3 units each, under one Idempotency-Key
// whatever the retries.
func (l *load) place(ctx context.Context, token string) (placed, orderBody, error) {
	first := l.rng.IntN(len(l.items))
	lines := []map[string]any{{"itemId": l.items[first], "quantity": 1 + l.rng.IntN(3)}}
	if l.rng.IntN(2) == 0 {
		lines = append(lines, map[string]any{"itemId": l.items[(first+1)%len(l.items)], "quantity": 1 + l.rng.IntN(3)})
	}
	body, _ := json.Marshal(map[string]any{"items": lines})
	ans, _, err := l.api.send(ctx, request{route: "POST /v1/orders", method: "POST", path: "/v1/orders", token: token,
		body: body, headers: map[string]string{"Idempotency-Key": uuid.NewString()}}, time.Minute)
	if err != nil {
		return placed{}, orderBody{}, err
	}
	if ans.status != http.StatusCreated {
		return placed{}, orderBody{}, fmt.Errorf("status %d: %s", ans.status, ans.body)
	}
	var o orderBody
	if err := json.Unmarshal(ans.body, &o); err != nil || o.Payment.PaymentIntentID == nil {
		return placed{}, orderBody{}, fmt.Errorf("created order without a PaymentIntent: %s", ans.body)
	}
	return placed{ID: o.ID}, o, nil
}

// pay sends payment_intent.succeeded for the order's amount (now and then twice, as Stripe
// may) and reports whether it was accepted.
func (l *load) pay(ctx context.Context, p placed, o orderBody) bool {
	ev := payment.TestEvent{ID: "evt_chaos_" + uuid.NewString(), Type: payment.EventIntentSucceeded,
		PaymentIntentID: *o.Payment.PaymentIntentID, OrderID: o.ID.String(), Amount: o.Total, Currency: o.Currency}
	r := request{route: "POST /stripe/webhook", method: "POST", path: "/stripe/webhook", body: ev.Build(), sign: true}
	sends := 1
	if l.rng.IntN(5) == 0 {
		sends = 2
	}
	ok := true
	for range sends {
		ans, _, err := l.api.send(ctx, r, time.Minute)
		if err != nil || ans.status != http.StatusOK {
			l.problem("webhook for order %s: status %d %s: %v", p.ID, ans.status, ans.body, err)
			ok = false
		}
	}
	return ok
}

// act asks for a cancel or refund and reports whether it was accepted (202). A retry that
// follows an unanswered attempt must answer 202 too (the stored response of its key); when it
// answers otherwise, the database tells whether the first attempt took the action, and the
// answer is reported.
func (l *load) act(ctx context.Context, id uuid.UUID, action string) bool {
	body, _ := json.Marshal(map[string]string{"reason": "chaos " + action})
	ans, unanswered, err := l.api.send(ctx, request{route: "PATCH /v1/admin/orders/:id/" + action, method: "PATCH",
		path: "/v1/admin/orders/" + id.String() + "/" + action, token: l.financial, body: body,
		headers: map[string]string{"Idempotency-Key": uuid.NewString()}}, time.Minute)
	switch {
	case err == nil && ans.status == http.StatusAccepted:
		return true
	case err == nil && unanswered && l.requested(id, action):
		l.replayProblem("%s order %s: the attempt cut by a SIGKILL took the action; its retry under the same Idempotency-Key answered %d %s",
			action, id, ans.status, ans.code())
		return true
	}
	l.problem("%s order %s: status %d %s: %v", action, id, ans.status, ans.body, err)
	return false
}

// requested reports whether the order's timeline holds the action's request.
func (l *load) requested(id uuid.UUID, action string) bool {
	var n int
	err := l.db.Get(&n, `SELECT count(*) FROM order_events WHERE order_id = $1 AND type = $2`, id, action+"Requested")
	return err == nil && n > 0
}

// waitCanceled waits (bounded) until the order is CANCELED, so that its payment comes late.
func (l *load) waitCanceled(id uuid.UUID, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		var st string
		if err := l.db.Get(&st, `SELECT status FROM orders WHERE id = $1`, id); err == nil && st == "CANCELED" {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (l *load) problem(format string, args ...any) {
	l.mu.Lock()
	l.problems = append(l.problems, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *load) replayProblem(format string, args ...any) {
	l.mu.Lock()
	l.replays = append(l.replays, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

// scenarioCounts counts the placed orders by scenario, and those paid and accepted.
func (l *load) scenarioCounts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, o := range l.orders {
		out[string(o.Scenario)]++
		if o.Paid {
			out["paid"]++
		}
		if o.Accepted {
			out[o.Action+" accepted"]++
		}
	}
	return out
}
