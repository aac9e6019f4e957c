package payment

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/stripe/stripe-go/v79"
	"github.com/stripe/stripe-go/v79/client"
	"github.com/stripe/stripe-go/v79/form"

	"github.com/dispatchhq/dispatch/internal/platform/metrics"
)

// Stripe is the Gateway on stripe-go. An empty apiBase means live Stripe.
type Stripe struct {
	api     *client.API
	backend *stripe.BackendImplementation
	key     string
}

// NewStripe returns a gateway with the secret key, talking to apiBase (stripe-mock locally).
func NewStripe(secretKey, apiBase string) *Stripe {
	cfg := &stripe.BackendConfig{
		HTTPClient:        &http.Client{Timeout: 10 * time.Second, Transport: keepAlive()},
		MaxNetworkRetries: stripe.Int64(1),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
		EnableTelemetry:   stripe.Bool(false),
	}
	if apiBase != "" {
		cfg.URL = stripe.String(apiBase)
	}
	backends := &stripe.Backends{
		API:     stripe.GetBackendWithConfig(stripe.APIBackend, cfg),
		Connect: stripe.GetBackendWithConfig(stripe.ConnectBackend, cfg),
		Uploads: stripe.GetBackendWithConfig(stripe.UploadsBackend, cfg),
	}
	return &Stripe{api: client.New(secretKey, backends), backend: backends.API.(*stripe.BackendImplementation), key: secretKey}
}

// idleConns is how many idle connections to Stripe are kept open for reuse. Go's default
// transport keeps two per host, so at more than two calls at once every other call opened a
// new connection (a TLS handshake against live Stripe): at 390 orders/s the API left 2,700
// closed connections behind in ten seconds (docs/performance.md).
const idleConns = 128

func keepAlive() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = idleConns
	t.MaxIdleConnsPerHost = idleConns
	return t
}

func (s *Stripe) call(op string, f func() error) error {
	start := time.Now()
	err := classify(f())
	outcome := "ok"
	var ge *GatewayError
	if errors.As(err, &ge) {
		outcome = map[error]string{ErrRejected: "rejected", ErrTransient: "transient", ErrNotFound: "not_found", ErrKeyReused: "key_reused"}[ge.Class]
	}
	metrics.Stripe(op, outcome, time.Since(start))
	return err
}

// CreatePaymentIntent implements Gateway.
func (s *Stripe) CreatePaymentIntent(ctx context.Context, p IntentParams) (Intent, error) {
	params := &stripe.PaymentIntentParams{
		Amount:   stripe.Int64(p.Amount),
		Currency: stripe.String(p.Currency),
		Metadata: map[string]string{"order_id": p.OrderID},
		AutomaticPaymentMethods: &stripe.PaymentIntentAutomaticPaymentMethodsParams{
			Enabled: stripe.Bool(true),
		},
	}
	if p.CustomerID != "" {
		params.Customer = stripe.String(p.CustomerID)
	}
	params.Context = ctx
	params.SetIdempotencyKey(p.IdempotencyKey)
	return s.intent("payment_intent.create", http.MethodPost, "/v1/payment_intents", params)
}

// GetPaymentIntent implements Gateway.
func (s *Stripe) GetPaymentIntent(ctx context.Context, id string) (Intent, error) {
	params := &stripe.PaymentIntentParams{}
	params.Context = ctx
	return s.intent("payment_intent.get", http.MethodGet, stripe.FormatURLPath("/v1/payment_intents/%s", id), params)
}

// CancelPaymentIntent implements Gateway.
func (s *Stripe) CancelPaymentIntent(ctx context.Context, id, idempotencyKey string) (Intent, error) {
	params := &stripe.PaymentIntentCancelParams{}
	params.Context = ctx
	params.SetIdempotencyKey(idempotencyKey)
	return s.intent("payment_intent.cancel", http.MethodPost, stripe.FormatURLPath("/v1/payment_intents/%s/cancel", id), params)
}

// intentFields are the PaymentIntent's fields Dispatch reads. Decoding only these, instead of
// stripe-go's full PaymentIntent with its expandable objects, is most of a call's CPU saved.
type intentFields struct {
	stripe.APIResource
	ID             string `json:"id"`
	ClientSecret   string `json:"client_secret"`
	Status         string `json:"status"`
	Amount         int64  `json:"amount"`
	AmountReceived int64  `json:"amount_received"`
	Currency       string `json:"currency"`
}

func (s *Stripe) intent(op, method, path string, params stripe.ParamsContainer) (Intent, error) {
	var pi intentFields
	err := s.call(op, func() error { return s.do(method, path, params, &pi) })
	if err != nil {
		return Intent{}, err
	}
	return Intent{ID: pi.ID, ClientSecret: pi.ClientSecret, Status: pi.Status, Amount: pi.Amount,
		AmountReceived: pi.AmountReceived, Currency: pi.Currency}, nil
}

// do is stripe-go's Call without its telemetry wrapper, which made every answer be checked and
// decoded twice (decoding was nearly half of a PaymentIntent call's CPU in the API): the params
// are encoded the same way, the request is built and sent (with retries) by stripe-go, and v is
// decoded once.
func (s *Stripe) do(method, path string, params stripe.ParamsContainer, v stripe.LastResponseSetter) error {
	values := &form.Values{}
	form.AppendTo(values, params)
	body := values.Encode()
	if method == http.MethodGet && body != "" {
		path, body = path+"?"+body, ""
	}
	req, err := s.backend.NewRequest(method, path, s.key, "application/x-www-form-urlencoded", params.GetParams())
	if err != nil {
		return err
	}
	return s.backend.Do(req, bytes.NewBufferString(body), v)
}

// Refund implements Gateway.
func (s *Stripe) Refund(ctx context.Context, p RefundParams) (Refund, error) {
	params := &stripe.RefundParams{PaymentIntent: stripe.String(p.PaymentIntentID), Amount: stripe.Int64(p.Amount)}
	params.Context = ctx
	params.SetIdempotencyKey(p.IdempotencyKey)
	return s.refund("refund.create", http.MethodPost, "/v1/refunds", params)
}

// GetRefund implements Gateway.
func (s *Stripe) GetRefund(ctx context.Context, id string) (Refund, error) {
	params := &stripe.RefundParams{}
	params.Context = ctx
	return s.refund("refund.get", http.MethodGet, stripe.FormatURLPath("/v1/refunds/%s", id), params)
}

// refundFields are the refund's fields Dispatch reads.
type refundFields struct {
	ID            string `json:"id"`
	Status        string `json:"status"`
	Amount        int64  `json:"amount"`
	Currency      string `json:"currency"`
	PaymentIntent string `json:"payment_intent"`
}

func (f refundFields) refund() Refund {
	return Refund{ID: f.ID, Status: f.Status, Amount: f.Amount, Currency: f.Currency}
}

func (s *Stripe) refund(op, method, path string, params stripe.ParamsContainer) (Refund, error) {
	var r struct {
		stripe.APIResource
		refundFields
	}
	if err := s.call(op, func() error { return s.do(method, path, params, &r) }); err != nil {
		return Refund{}, err
	}
	return r.refund(), nil
}

// FindRefund implements Gateway.
func (s *Stripe) FindRefund(ctx context.Context, paymentIntentID string) (Refund, bool, error) {
	params := &stripe.RefundListParams{PaymentIntent: stripe.String(paymentIntentID)}
	params.Context = ctx
	params.Limit = stripe.Int64(10)
	var list struct {
		stripe.APIResource
		Data []refundFields `json:"data"`
	}
	if err := s.call("refund.list", func() error { return s.do(http.MethodGet, "/v1/refunds", params, &list) }); err != nil {
		return Refund{}, false, err
	}
	for _, r := range list.Data {
		if r.PaymentIntent == paymentIntentID && !RefundNotMade(r.Status) {
			return r.refund(), true, nil
		}
	}
	return Refund{}, false, nil
}

// CreateCustomer implements Gateway.
func (s *Stripe) CreateCustomer(ctx context.Context, p CustomerParams, idempotencyKey string) (string, error) {
	params := customerParams(p)
	params.Context = ctx
	params.SetIdempotencyKey(idempotencyKey)
	var c *stripe.Customer
	err := s.call("customer.create", func() (err error) {
		c, err = s.api.Customers.New(params)
		return err
	})
	if err != nil {
		return "", err
	}
	return c.ID, nil
}

// UpdateCustomer implements Gateway.
func (s *Stripe) UpdateCustomer(ctx context.Context, id string, p CustomerParams) error {
	params := customerParams(p)
	params.Context = ctx
	return s.call("customer.update", func() error {
		_, err := s.api.Customers.Update(id, params)
		return err
	})
}

// DeleteCustomer implements Gateway.
func (s *Stripe) DeleteCustomer(ctx context.Context, id string) error {
	params := &stripe.CustomerParams{}
	params.Context = ctx
	return s.call("customer.delete", func() error {
		_, err := s.api.Customers.Del(id, params)
		return err
	})
}

func customerParams(p CustomerParams) *stripe.CustomerParams {
	params := &stripe.CustomerParams{Metadata: map[string]string{"user_id": p.UserID}}
	if p.Name != "" {
		params.Name = stripe.String(p.Name)
	}
	if p.Email != "" {
		params.Email = stripe.String(p.Email)
	}
	if a := p.Address; a != nil {
		params.Address = &stripe.AddressParams{
			Line1: stripe.String(a.Line1), Line2: stripe.String(a.Line2), City: stripe.String(a.City),
			State: stripe.String(a.State), PostalCode: stripe.String(a.PostalCode), Country: stripe.String(a.Country),
		}
	}
	return params
}

// classify sorts stripe-go errors: network failures, 5xx, 429, 409 (a concurrent request with
// the same idempotency key) and authentication errors (a configuration problem, not the
// order's) are transient; other 4xx are rejections, among them a key reused with other
// parameters; 404 means the object is unknown.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var se *stripe.Error
	if !errors.As(err, &se) {
		return &GatewayError{Class: ErrTransient, Message: err.Error(), Err: err}
	}
	class := ErrRejected
	switch code := se.HTTPStatusCode; {
	case code == http.StatusNotFound || se.Code == stripe.ErrorCodeResourceMissing:
		class = ErrNotFound
	case code >= 500, code == http.StatusTooManyRequests, code == http.StatusConflict,
		code == http.StatusUnauthorized, code == http.StatusForbidden, code == 0:
		class = ErrTransient
	case se.Type == stripe.ErrorTypeIdempotency:
		class = ErrKeyReused
	}
	return &GatewayError{Class: class, Message: se.Msg, Err: err}
}
