package payment_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/dispatchhq/dispatch/internal/payment"
)

// Signing modes of FuzzParseWebhook: how the Stripe-Signature header is made from the fuzzed one.
const (
	headerAsGiven     = iota // the fuzzed header, which cannot hold a valid signature
	signedNow                // a valid signature over body, dated now
	signedPlusGiven          // a valid signature followed by the fuzzed header's elements
	signedOtherBody          // a valid signature over another body
	signedOtherSecret        // a signature made with another secret
	signedTooFarAhead        // a valid signature dated past the tolerance in the future
	signedTooOld             // a valid signature dated past the tolerance in the past
	signingModes
)

// FuzzParseWebhook checks, for any body and Stripe-Signature header, that ParseWebhook never
// panics; refuses every body not signed with the secret within the tolerance, with
// ErrBadSignature; fails otherwise only with ErrMalformed (a 400, never a 500); and that an
// event it accepts carries the id, type and fields the body holds, as text PostgreSQL stores.
// The seed corpus is in testdata/fuzz/FuzzParseWebhook.
func FuzzParseWebhook(f *testing.F) {
	for _, ev := range []payment.TestEvent{
		{ID: "evt_1", Type: payment.EventIntentSucceeded, PaymentIntentID: "pi_1", OrderID: "0190a8f0-4a3c-7d2e-9b1a-2f3c4d5e6f70", Amount: 2599, Currency: "usd"},
		{ID: "evt_2", Type: payment.EventIntentFailed, PaymentIntentID: "pi_2", Amount: 100, Currency: "eur", FailureMessage: "Your card was declined."},
		{ID: "evt_3", Type: payment.EventIntentCanceled, PaymentIntentID: "pi_3"},
		{ID: "evt_4", Type: payment.EventChargeRefunded, PaymentIntentID: "pi_4", RefundID: "re_4", RefundStatus: "succeeded", Amount: 100, Currency: "usd"},
		{ID: "evt_5", Type: payment.EventRefundUpdated, PaymentIntentID: "pi_5", RefundID: "re_5", RefundStatus: "failed", Amount: 100, Currency: "usd"},
		{ID: "evt_6", Type: "customer.created", PaymentIntentID: "pi_6"},
		{ID: "evt_7", Type: payment.EventIntentSucceeded, PaymentIntentID: "pi_7", APIVersion: "2020-08-27"},
	} {
		f.Add(ev.Build(), "", uint8(signedNow))
	}
	f.Fuzz(func(t *testing.T, body []byte, header string, mode uint8) {
		mode %= signingModes
		header, signed := signatureHeader(body, header, mode)
		ev, err := payment.ParseWebhook(body, header, testSecret)
		if !signed {
			if !errors.Is(err, payment.ErrBadSignature) {
				t.Fatalf("mode %d, header %q: got %+v, %v; want ErrBadSignature", mode, header, ev, err)
			}
			return
		}
		if err != nil {
			if !errors.Is(err, payment.ErrMalformed) && !(mode == signedPlusGiven && errors.Is(err, payment.ErrBadSignature)) {
				t.Fatalf("header %q: error %v is neither ErrMalformed nor, for a header with extra elements, ErrBadSignature", header, err)
			}
			if ev != (payment.Event{}) {
				t.Fatalf("an error (%v) came with an event %+v", err, ev)
			}
			return
		}
		checkEvent(t, body, ev)
	})
}

// signatureHeader makes the Stripe-Signature header of a mode, and says whether it is validly
// signed (a valid signature with extra elements may still be refused as a malformed header).
func signatureHeader(body []byte, given string, mode uint8) (string, bool) {
	now := time.Now()
	switch mode {
	case signedNow:
		return payment.Sign(body, testSecret, now), true
	case signedPlusGiven:
		return payment.Sign(body, testSecret, now) + "," + given, true
	case signedOtherBody:
		return payment.Sign(append(body[:len(body):len(body)], '\n'), testSecret, now), false
	case signedOtherSecret:
		return payment.Sign(body, testSecret+"x", now), false
	case signedTooFarAhead:
		return payment.Sign(body, testSecret, now.Add(payment.SignatureTolerance+time.Minute)), false
	case signedTooOld:
		return payment.Sign(body, testSecret, now.Add(-payment.SignatureTolerance-time.Minute)), false
	default:
		return given, false
	}
}

// checkEvent compares an accepted event with the body, decoded independently of ParseWebhook.
func checkEvent(t *testing.T, body []byte, ev payment.Event) {
	t.Helper()
	var raw struct {
		ID         string `json:"id"`
		Type       string `json:"type"`
		APIVersion string `json:"api_version"`
		Data       struct {
			Object json.RawMessage `json:"object"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("accepted %+v from a body that does not decode: %v", ev, err)
	}
	if ev.ID == "" || ev.Type == "" {
		t.Fatalf("accepted an event without id or type: %+v", ev)
	}
	if ev.ID != raw.ID || ev.Type != raw.Type || ev.APIVersion != raw.APIVersion {
		t.Fatalf("event %+v, body has id %q, type %q, api_version %q", ev, raw.ID, raw.Type, raw.APIVersion)
	}
	if !strings.HasPrefix(string(raw.Data.Object), "{") {
		t.Fatalf("accepted %+v whose data.object is %.40q, not an object", ev, raw.Data.Object)
	}
	for name, s := range map[string]string{"id": ev.ID, "type": ev.Type, "api version": ev.APIVersion,
		"payment intent": ev.PaymentIntentID, "order": ev.OrderID, "currency": ev.Currency,
		"refund": ev.RefundID, "refund status": ev.RefundStatus} {
		if len(s) > payment.MaxIDLen || !storable(s) {
			t.Fatalf("accepted %s %.40q (%d bytes): PostgreSQL cannot store or index it", name, s, len(s))
		}
	}
	if !storable(ev.FailureMessage) {
		t.Fatalf("accepted failure message %q: PostgreSQL cannot store it", ev.FailureMessage)
	}
	want := payment.Event{ID: raw.ID, Type: raw.Type, APIVersion: raw.APIVersion}
	if ev.SupportedVersion() {
		switch ev.Type {
		case payment.EventIntentSucceeded, payment.EventIntentFailed, payment.EventIntentCanceled:
			want = intentFields(t, raw.Data.Object, want)
		case payment.EventChargeRefunded:
			want = chargeFields(t, raw.Data.Object, want)
		case payment.EventRefundUpdated:
			want = refundFields(t, raw.Data.Object, want)
		}
	}
	if ev != want {
		t.Fatalf("event %+v, want %+v from the body", ev, want)
	}
}

// storable reports whether PostgreSQL can store s as text: UTF-8 without NUL.
func storable(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// intentFields adds to ev the fields a payment_intent.* event documents, read from object.
func intentFields(t *testing.T, object json.RawMessage, ev payment.Event) payment.Event {
	t.Helper()
	var pi struct {
		ID               string            `json:"id"`
		AmountReceived   int64             `json:"amount_received"`
		Currency         string            `json:"currency"`
		Metadata         map[string]string `json:"metadata"`
		LastPaymentError *struct {
			Message string `json:"message"`
		} `json:"last_payment_error"`
	}
	if err := json.Unmarshal(object, &pi); err != nil {
		t.Fatalf("accepted a payment intent that does not decode: %v", err)
	}
	ev.PaymentIntentID, ev.AmountReceived, ev.Currency, ev.OrderID = pi.ID, pi.AmountReceived, pi.Currency, pi.Metadata["order_id"]
	if pi.LastPaymentError != nil {
		ev.FailureMessage = pi.LastPaymentError.Message
	}
	return ev
}

// chargeFields adds to ev the fields a charge.refunded event documents: its PaymentIntent and
// its latest refund, first in the list, when it has an id.
func chargeFields(t *testing.T, object json.RawMessage, ev payment.Event) payment.Event {
	t.Helper()
	var ch struct {
		PaymentIntent json.RawMessage `json:"payment_intent"`
		Refunds       *struct {
			Data []*struct {
				ID     string `json:"id"`
				Status string `json:"status"`
			} `json:"data"`
		} `json:"refunds"`
	}
	if err := json.Unmarshal(object, &ch); err != nil {
		t.Fatalf("accepted a charge that does not decode: %v", err)
	}
	ev.PaymentIntentID = expandedID(t, ch.PaymentIntent)
	if ch.Refunds != nil && len(ch.Refunds.Data) > 0 && ch.Refunds.Data[0] != nil && ch.Refunds.Data[0].ID != "" {
		ev.RefundID, ev.RefundStatus = ch.Refunds.Data[0].ID, ch.Refunds.Data[0].Status
	}
	return ev
}

// refundFields adds to ev the fields a refund.updated event documents.
func refundFields(t *testing.T, object json.RawMessage, ev payment.Event) payment.Event {
	t.Helper()
	var r struct {
		ID            string          `json:"id"`
		Status        string          `json:"status"`
		PaymentIntent json.RawMessage `json:"payment_intent"`
	}
	if err := json.Unmarshal(object, &r); err != nil {
		t.Fatalf("accepted a refund that does not decode: %v", err)
	}
	ev.RefundID, ev.RefundStatus, ev.PaymentIntentID = r.ID, r.Status, expandedID(t, r.PaymentIntent)
	return ev
}

// expandedID reads a reference Stripe may expand: an id string, an object with an id, or null.
func expandedID(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var id string
	if err := json.Unmarshal(raw, &id); err == nil {
		return id
	}
	var obj struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatalf("accepted a reference %.40q that is neither an id nor an object: %v", raw, err)
	}
	return obj.ID
}
