package payment

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v79"
	"github.com/stripe/stripe-go/v79/webhook"
)

// Webhook event types Dispatch acts on.
const (
	EventIntentSucceeded = "payment_intent.succeeded"
	EventIntentFailed    = "payment_intent.payment_failed"
	EventIntentCanceled  = "payment_intent.canceled"
	EventChargeRefunded  = "charge.refunded"
	EventRefundUpdated   = "refund.updated"
)

// APIVersion is the Stripe API version stripe-go v79 pins; events of other versions are
// recorded and logged but not acted on, since their objects may decode wrongly.
const APIVersion = stripe.APIVersion

// SignatureTolerance is how far a signed webhook's timestamp may be from now, either way.
const SignatureTolerance = 5 * time.Minute

// ErrBadSignature means the webhook is not signed with the configured secret, or its
// signature is dated more than SignatureTolerance from now.
var ErrBadSignature = errors.New("payment: invalid webhook signature")

// Event is a verified webhook event with the fields Dispatch uses.
type Event struct {
	ID         string
	Type       string
	APIVersion string

	PaymentIntentID string
	OrderID         string // metadata.order_id, when Stripe echoes it
	AmountReceived  int64
	Currency        string
	FailureMessage  string

	RefundID     string
	RefundStatus string
}

// SupportedVersion reports whether the event has the API version Dispatch decodes.
func (e Event) SupportedVersion() bool { return e.APIVersion == APIVersion }

// ParseWebhook verifies the Stripe-Signature header over the raw body and decodes the event.
func ParseWebhook(body []byte, signature, secret string) (Event, error) {
	// stripe-go refuses only old signatures, but a signature dated a day ahead would let a
	// captured request be replayed for a day.
	if at, ok := signedAt(signature); !ok || at > time.Now().Add(SignatureTolerance).Unix() {
		return Event{}, ErrBadSignature
	}
	se, err := webhook.ConstructEventWithOptions(body, signature, secret, webhook.ConstructEventOptions{
		Tolerance: SignatureTolerance, IgnoreAPIVersionMismatch: true,
	})
	if err != nil {
		if errors.Is(err, webhook.ErrNotSigned) || errors.Is(err, webhook.ErrInvalidHeader) ||
			errors.Is(err, webhook.ErrNoValidSignature) || errors.Is(err, webhook.ErrTooOld) {
			return Event{}, ErrBadSignature
		}
		return Event{}, fmt.Errorf("payment: malformed event: %w", err)
	}
	if se.ID == "" || se.Type == "" || se.Data == nil {
		return Event{}, errors.New("payment: malformed event: missing id, type or data")
	}
	ev := Event{ID: se.ID, Type: string(se.Type), APIVersion: se.APIVersion}
	if !ev.SupportedVersion() {
		return ev, nil
	}
	raw := se.Data.Raw
	switch ev.Type {
	case EventIntentSucceeded, EventIntentFailed, EventIntentCanceled:
		var pi stripe.PaymentIntent
		if err := json.Unmarshal(raw, &pi); err != nil {
			return Event{}, fmt.Errorf("payment: malformed payment intent: %w", err)
		}
		ev.PaymentIntentID, ev.AmountReceived, ev.Currency = pi.ID, pi.AmountReceived, string(pi.Currency)
		ev.OrderID = pi.Metadata["order_id"]
		if pi.LastPaymentError != nil {
			ev.FailureMessage = pi.LastPaymentError.Msg
		}
	case EventChargeRefunded:
		var ch stripe.Charge
		if err := json.Unmarshal(raw, &ch); err != nil {
			return Event{}, fmt.Errorf("payment: malformed charge: %w", err)
		}
		if ch.PaymentIntent != nil {
			ev.PaymentIntentID = ch.PaymentIntent.ID
		}
		if ch.Refunds != nil && len(ch.Refunds.Data) > 0 {
			ev.RefundID, ev.RefundStatus = ch.Refunds.Data[0].ID, string(ch.Refunds.Data[0].Status)
		} else if ch.Refunded {
			ev.RefundStatus = string(stripe.RefundStatusSucceeded)
		}
	case EventRefundUpdated:
		var r stripe.Refund
		if err := json.Unmarshal(raw, &r); err != nil {
			return Event{}, fmt.Errorf("payment: malformed refund: %w", err)
		}
		ev.RefundID, ev.RefundStatus = r.ID, string(r.Status)
		if r.PaymentIntent != nil {
			ev.PaymentIntentID = r.PaymentIntent.ID
		}
	}
	return ev, nil
}

// signedAt reads the t element of a Stripe-Signature header ("t=<unix>,v1=<hex>,..."). A header
// with no t, or with more than one, which leaves unclear which was signed, has none.
func signedAt(header string) (int64, bool) {
	var (
		at    int64
		found bool
	)
	for element := range strings.SplitSeq(header, ",") {
		key, value, _ := strings.Cut(element, "=")
		if key != "t" {
			continue
		}
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil || found {
			return 0, false
		}
		at, found = n, true
	}
	return at, found
}

// TestEvent describes a webhook event to forge for local development and tests.
type TestEvent struct {
	ID              string // defaults to a time-based id
	Type            string
	PaymentIntentID string
	OrderID         string
	Amount          int64
	Currency        string
	FailureMessage  string
	RefundID        string
	RefundStatus    string
	APIVersion      string // defaults to APIVersion
}

// Build renders the event as Stripe would send it.
func (t TestEvent) Build() []byte {
	if t.ID == "" {
		t.ID = "evt_test_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	if t.APIVersion == "" {
		t.APIVersion = APIVersion
	}
	var object map[string]any
	switch t.Type {
	case EventChargeRefunded:
		object = map[string]any{
			"id": "ch_" + t.PaymentIntentID, "object": "charge", "payment_intent": t.PaymentIntentID,
			"amount": t.Amount, "amount_refunded": t.Amount, "currency": t.Currency, "refunded": true,
			"refunds": map[string]any{"object": "list", "data": []any{map[string]any{
				"id": t.RefundID, "object": "refund", "status": t.RefundStatus, "amount": t.Amount}}},
		}
	case EventRefundUpdated:
		object = map[string]any{"id": t.RefundID, "object": "refund", "status": t.RefundStatus,
			"amount": t.Amount, "currency": t.Currency, "payment_intent": t.PaymentIntentID}
	default:
		status := map[string]string{EventIntentSucceeded: "succeeded", EventIntentFailed: "requires_payment_method",
			EventIntentCanceled: "canceled"}[t.Type]
		received := int64(0)
		if t.Type == EventIntentSucceeded {
			received = t.Amount
		}
		object = map[string]any{
			"id": t.PaymentIntentID, "object": "payment_intent", "amount": t.Amount, "amount_received": received,
			"currency": t.Currency, "status": status, "metadata": map[string]string{"order_id": t.OrderID},
		}
		if t.FailureMessage != "" {
			object["last_payment_error"] = map[string]any{"type": "card_error", "code": "card_declined", "message": t.FailureMessage}
		}
	}
	body, _ := json.Marshal(map[string]any{
		"id": t.ID, "object": "event", "type": t.Type, "api_version": t.APIVersion,
		"created": time.Now().Unix(), "livemode": false, "pending_webhooks": 1,
		"data": map[string]any{"object": object},
	})
	return body
}

// Sign returns the Stripe-Signature header for body, as Stripe computes it.
func Sign(body []byte, secret string, at time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: at}).Header
}
