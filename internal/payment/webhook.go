package payment

import (
	"bytes"
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

// maxIDLen bounds the identifiers an event may carry. Stripe's are a few dozen characters;
// Dispatch stores event and PaymentIntent ids in indexed columns, whose entries PostgreSQL
// caps at about 2.7 kB.
const maxIDLen = 255

var (
	// ErrBadSignature means the webhook is not signed with the configured secret, or its
	// signature is dated more than SignatureTolerance from now.
	ErrBadSignature = errors.New("payment: invalid webhook signature")
	// ErrMalformed means a validly signed event that Dispatch cannot read or store.
	ErrMalformed = errors.New("payment: malformed webhook event")
)

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

// SupportedVersion reports whether the event has the API version Dispatch decodes. An event
// that names none is read as one of it: Stripe names the version on every event since 2014, so
// such an event is one made by hand for a test, against the API it is sent to.
func (e Event) SupportedVersion() bool { return e.APIVersion == APIVersion || e.APIVersion == "" }

// envelope is the part of an event that every API version shares and Dispatch reads. The rest
// changed over versions (request was a string before 2017-05-25) and must not make an event of
// a version Dispatch records but does not apply unreadable.
type envelope struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	APIVersion string `json:"api_version"`
	Data       struct {
		Object json.RawMessage `json:"object"`
	} `json:"data"`
}

// ParseWebhook verifies the Stripe-Signature header over the raw body and decodes the event.
// It fails with ErrBadSignature or ErrMalformed.
func ParseWebhook(body []byte, signature, secret string) (Event, error) {
	if err := verifySignature(body, signature, secret); err != nil {
		return Event{}, err
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if env.ID == "" || env.Type == "" || !bytes.HasPrefix(env.Data.Object, []byte("{")) {
		return Event{}, fmt.Errorf("%w: no id or type, or data.object is not an object", ErrMalformed)
	}
	ev := Event{ID: env.ID, Type: env.Type, APIVersion: env.APIVersion}
	if ev.SupportedVersion() {
		if err := ev.decodeObject(env.Data.Object); err != nil {
			return Event{}, fmt.Errorf("%w: %s: %v", ErrMalformed, ev.Type, err)
		}
	}
	if err := ev.storable(); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return ev, nil
}

// verifySignature checks the signature over body and that it is dated within
// SignatureTolerance of now. stripe-go refuses only old signatures, but a signature dated a day
// ahead would let a captured request be replayed for a day.
func verifySignature(body []byte, header, secret string) error {
	at, ok := signedAt(header)
	if !ok || at > time.Now().Add(SignatureTolerance).Unix() {
		return ErrBadSignature
	}
	// Every error ValidatePayload returns is about the header or the signature.
	if webhook.ValidatePayloadWithTolerance(body, header, secret, SignatureTolerance) != nil {
		return ErrBadSignature
	}
	return nil
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

// The parts of data.object Dispatch reads, by event type. Only these must decode: a field
// Dispatch ignores cannot make an event unreadable.
type (
	intentObject struct {
		ID               string            `json:"id"`
		AmountReceived   *int64            `json:"amount_received"`
		Amount           json.RawMessage   `json:"amount"`
		Currency         string            `json:"currency"`
		Metadata         map[string]string `json:"metadata"`
		LastPaymentError *struct {
			Message string `json:"message"`
		} `json:"last_payment_error"`
	}
	chargeObject struct {
		PaymentIntent reference `json:"payment_intent"`
		Refunds       *struct {
			Data []*refundObject `json:"data"` // newest first
		} `json:"refunds"`
	}
	refundObject struct {
		ID            string    `json:"id"`
		Status        string    `json:"status"`
		PaymentIntent reference `json:"payment_intent"`
	}
)

// reference is the id of an object Stripe may expand: the id string, or the object holding it.
// (stripe-go's types take a string's raw bytes without decoding its escapes.)
type reference string

// UnmarshalJSON implements json.Unmarshaler.
func (r *reference) UnmarshalJSON(b []byte) error {
	var id string
	if err := json.Unmarshal(b, &id); err == nil {
		*r = reference(id)
		return nil
	}
	var object struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &object); err != nil {
		return err
	}
	*r = reference(object.ID)
	return nil
}

// received is the amount a PaymentIntent's event says was received. Stripe always sends
// amount_received; an event made by hand that gives only the amount of a succeeded
// PaymentIntent means that amount (an amount that is no whole number means none).
func (pi intentObject) received(eventType string) int64 {
	if pi.AmountReceived != nil {
		return *pi.AmountReceived
	}
	if eventType != EventIntentSucceeded {
		return 0
	}
	n, _ := strconv.ParseInt(string(pi.Amount), 10, 64)
	return n
}

// decodeObject reads from data.object the fields of the event types Dispatch acts on.
func (e *Event) decodeObject(raw json.RawMessage) error {
	switch e.Type {
	case EventIntentSucceeded, EventIntentFailed, EventIntentCanceled:
		var pi intentObject
		if err := json.Unmarshal(raw, &pi); err != nil {
			return err
		}
		e.PaymentIntentID, e.Currency = pi.ID, pi.Currency
		e.AmountReceived = pi.received(e.Type)
		e.OrderID = pi.Metadata["order_id"]
		if pi.LastPaymentError != nil {
			e.FailureMessage = pi.LastPaymentError.Message
		}
	case EventChargeRefunded:
		var ch chargeObject
		if err := json.Unmarshal(raw, &ch); err != nil {
			return err
		}
		e.PaymentIntentID = string(ch.PaymentIntent)
		// The charge's latest refund, when the event carries it (API version 2024-06-20 leaves
		// the list out): the charge alone does not say whether its refund went through, as
		// its refunded amount counts refunds still under way.
		if ch.Refunds != nil && len(ch.Refunds.Data) > 0 && ch.Refunds.Data[0] != nil && ch.Refunds.Data[0].ID != "" {
			e.RefundID, e.RefundStatus = ch.Refunds.Data[0].ID, ch.Refunds.Data[0].Status
		}
	case EventRefundUpdated:
		var r refundObject
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		e.RefundID, e.RefundStatus, e.PaymentIntentID = r.ID, r.Status, string(r.PaymentIntent)
	}
	return nil
}

// storable refuses text PostgreSQL cannot store (NUL) or index (ids past maxIDLen), which
// would otherwise fail the webhook's transaction with a 500 on every redelivery.
func (e Event) storable() error {
	for _, id := range []string{e.ID, e.Type, e.APIVersion, e.PaymentIntentID, e.OrderID, e.Currency, e.RefundID, e.RefundStatus} {
		if len(id) > maxIDLen || strings.ContainsRune(id, 0) {
			return fmt.Errorf("identifier %.40q… is longer than %d bytes or holds a NUL", id, maxIDLen)
		}
	}
	if strings.ContainsRune(e.FailureMessage, 0) {
		return errors.New("failure message holds a NUL")
	}
	return nil
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
