// Package payment talks to Stripe: the Gateway the order and user flows call (PaymentIntents,
// refunds, customers), its stripe-go adapter, and the verification and parsing of webhooks.
package payment

import (
	"context"
	"errors"
	"fmt"
)

// Gateway is the payment provider as the domain needs it. Every creating call carries an
// idempotency key so a retried call never charges, refunds or creates twice.
type Gateway interface {
	CreatePaymentIntent(ctx context.Context, p IntentParams) (Intent, error)
	GetPaymentIntent(ctx context.Context, id string) (Intent, error)
	CancelPaymentIntent(ctx context.Context, id, idempotencyKey string) (Intent, error)
	Refund(ctx context.Context, p RefundParams) (Refund, error)
	// FindRefund returns a refund of the PaymentIntent that went through or is under way, if
	// Stripe has one: whether a refund whose answers were lost was made.
	FindRefund(ctx context.Context, paymentIntentID string) (Refund, bool, error)
	// GetRefund returns a refund as Stripe reports it now.
	GetRefund(ctx context.Context, id string) (Refund, error)
	CreateCustomer(ctx context.Context, p CustomerParams, idempotencyKey string) (string, error)
	UpdateCustomer(ctx context.Context, id string, p CustomerParams) error
	DeleteCustomer(ctx context.Context, id string) error
}

// IntentParams describe a PaymentIntent to create for an order.
type IntentParams struct {
	OrderID        string
	Amount         int64
	Currency       string
	CustomerID     string
	IdempotencyKey string
}

// MaxAmount is the largest amount, in minor units, Stripe takes a PaymentIntent for in each
// currency the catalog accepts (usd, eur and brl alike: eight digits). Its least amount is not
// a constant: 0.50 of the account's settlement currency, converted at the day's rate.
const MaxAmount int64 = 99_999_999

// Intent is a PaymentIntent as Stripe reports it.
type Intent struct {
	ID             string
	ClientSecret   string
	Status         string // requires_payment_method, processing, succeeded, canceled…
	Amount         int64
	AmountReceived int64
	Currency       string
}

// PaymentIntent statuses the flows act on.
const (
	IntentSucceeded  = "succeeded"
	IntentCanceled   = "canceled"
	IntentProcessing = "processing" // a payment under way (a bank debit can take days)
)

// RefundParams describe a refund of a PaymentIntent.
type RefundParams struct {
	PaymentIntentID string
	Amount          int64
	IdempotencyKey  string
}

// Refund is a refund as Stripe reports it.
type Refund struct {
	ID       string
	Status   string
	Amount   int64
	Currency string
}

// Refund statuses. A refund under way is pending (or requires_action); the others are settled,
// though a succeeded one may still fail.
const (
	RefundPending        = "pending"
	RefundRequiresAction = "requires_action"
	RefundSucceeded      = "succeeded"
	RefundFailed         = "failed"
	RefundCanceled       = "canceled"
)

// RefundUnderWay reports whether a refund of status may still succeed or fail.
func RefundUnderWay(status string) bool {
	return status == RefundPending || status == RefundRequiresAction
}

// RefundNotMade reports whether a refund of status returned nothing: it failed or was canceled.
func RefundNotMade(status string) bool { return status == RefundFailed || status == RefundCanceled }

// RefundStatusKnown reports whether status is one Stripe gives a refund.
func RefundStatusKnown(status string) bool {
	return RefundUnderWay(status) || status == RefundSucceeded || RefundNotMade(status)
}

// CustomerParams describe a Stripe Customer.
type CustomerParams struct {
	UserID  string
	Name    string
	Email   string
	Address *Address
}

// Address is a customer's postal address.
type Address struct {
	Line1, Line2, City, State, PostalCode, Country string
}

// Error classes. A rejected call will fail the same way if retried; a transient one may not.
var (
	ErrRejected  = errors.New("payment: rejected by the provider")
	ErrTransient = errors.New("payment: provider unavailable")
	ErrNotFound  = errors.New("payment: no such object at the provider")
	// ErrKeyReused is a rejection of a call whose idempotency key was used before with other
	// parameters (it is also ErrRejected).
	ErrKeyReused = fmt.Errorf("%w: idempotency key used before with other parameters", ErrRejected)
)

// GatewayError wraps a provider error with its class (one of the Err* above).
type GatewayError struct {
	Class   error
	Message string
	Err     error
}

func (e *GatewayError) Error() string { return e.Class.Error() + ": " + e.Message }

// Shown is what may be shown of err beyond the logs (an order's timeline, which its customer
// reads): a provider error's class, with the provider's words only for what it said of the
// payment (a refusal, an object it does not know). A transient error's text may be the
// transport's (addresses) or an account error's (the end of the API key, the account id), a
// reused key's names the key. It is "" for any other error.
func Shown(err error) string {
	var e *GatewayError
	switch {
	case !errors.As(err, &e):
		return ""
	case e.Class == ErrRejected, e.Class == ErrNotFound:
		return e.Error()
	default:
		return e.Class.Error()
	}
}

// Unwrap returns both the class and the cause, for errors.Is.
func (e *GatewayError) Unwrap() []error { return []error{e.Class, e.Err} }
