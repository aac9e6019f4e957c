package payment_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/payment"
)

const testSecret = "whsec_test_dispatch"

// The offsets sit a minute either side of SignatureTolerance, so the run time of the test
// cannot move a case across the boundary.
func TestParseWebhookSignatureTime(t *testing.T) {
	t.Parallel()
	body := payment.TestEvent{Type: payment.EventIntentSucceeded, PaymentIntentID: "pi_1", Amount: 100, Currency: "usd"}.Build()
	for _, tc := range []struct {
		name   string
		offset time.Duration
		ok     bool
	}{
		{"now", 0, true},
		{"4 minutes old", -4 * time.Minute, true},
		{"6 minutes old", -6 * time.Minute, false},
		{"4 minutes ahead", 4 * time.Minute, true},
		{"6 minutes ahead", 6 * time.Minute, false},
		{"a day ahead", 24 * time.Hour, false},
		{"in 2100", time.Until(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)), false},
	} {
		_, err := payment.ParseWebhook(body, payment.Sign(body, testSecret, time.Now().Add(tc.offset)), testSecret)
		if tc.ok && err != nil {
			t.Errorf("%s: %v, want the event", tc.name, err)
		}
		if !tc.ok && !errors.Is(err, payment.ErrBadSignature) {
			t.Errorf("%s: %v, want ErrBadSignature", tc.name, err)
		}
	}
}

func TestParseWebhookSignatureHeader(t *testing.T) {
	t.Parallel()
	body := payment.TestEvent{Type: payment.EventIntentSucceeded, PaymentIntentID: "pi_1", Amount: 100, Currency: "usd"}.Build()
	valid := payment.Sign(body, testSecret, time.Now())
	ts, sig, _ := strings.Cut(valid, ",") // "t=<unix>", "v1=<hex>"
	futureTS, _, _ := strings.Cut(payment.Sign(body, testSecret, time.Now().Add(time.Hour)), ",")
	for _, tc := range []struct {
		name, header string
		ok           bool
	}{
		{"as Stripe sends it", valid, true},
		{"signatures for a rolled secret too", ts + ",v1=00ff," + sig + ",v0=abc", true},
		{"t after the signature", sig + "," + ts, true},
		{"empty", "", false},
		{"no t", sig, false},
		{"empty t", "t=," + sig, false},
		{"t without value", "t," + sig, false},
		{"t not a number", "t=soon," + sig, false},
		{"t with a fraction", ts + ".5," + sig, false},
		{"t past int64", "t=99999999999999999999," + sig, false},
		{"negative t", "t=-1," + sig, false},
		{"the signed t and a later one", ts + "," + sig + ",t=9999999999", false},
		{"a future t and the signed one", futureTS + "," + ts + "," + sig, false},
		{"no signature", ts, false},
		{"signature of another secret", payment.Sign(body, "whsec_other", time.Now()), false},
		{"signature of another body", payment.Sign(append(body, ' '), testSecret, time.Now()), false},
		{"spaces around elements", ts + ", " + sig, false},
	} {
		_, err := payment.ParseWebhook(body, tc.header, testSecret)
		if tc.ok && err != nil {
			t.Errorf("%s (%q): %v, want the event", tc.name, tc.header, err)
		}
		if !tc.ok && !errors.Is(err, payment.ErrBadSignature) {
			t.Errorf("%s (%q): %v, want ErrBadSignature", tc.name, tc.header, err)
		}
	}
}

func TestParseWebhookEvents(t *testing.T) {
	t.Parallel()
	const orderID = "0190a8f0-4a3c-7d2e-9b1a-2f3c4d5e6f70"
	for _, tc := range []struct {
		name string
		body string
		want payment.Event // zero: ErrMalformed
	}{
		{"payment succeeded", string(payment.TestEvent{ID: "evt_1", Type: payment.EventIntentSucceeded, PaymentIntentID: "pi_1",
			OrderID: orderID, Amount: 2599, Currency: "usd"}.Build()),
			payment.Event{ID: "evt_1", Type: payment.EventIntentSucceeded, APIVersion: payment.APIVersion, PaymentIntentID: "pi_1",
				OrderID: orderID, AmountReceived: 2599, Currency: "usd"}},
		{"payment failed", string(payment.TestEvent{ID: "evt_2", Type: payment.EventIntentFailed, PaymentIntentID: "pi_1",
			Amount: 2599, Currency: "usd", FailureMessage: "Your card was declined."}.Build()),
			payment.Event{ID: "evt_2", Type: payment.EventIntentFailed, APIVersion: payment.APIVersion, PaymentIntentID: "pi_1",
				Currency: "usd", FailureMessage: "Your card was declined."}},
		{"charge refunded, latest refund first", `{"id":"evt_3","type":"charge.refunded","api_version":"2024-06-20","data":{"object":
			{"id":"ch_1","payment_intent":"pi_1","refunded":true,"refunds":{"data":[{"id":"re_2","status":"pending"},{"id":"re_1","status":"succeeded"}]}}}}`,
			payment.Event{ID: "evt_3", Type: payment.EventChargeRefunded, APIVersion: payment.APIVersion, PaymentIntentID: "pi_1",
				RefundID: "re_2", RefundStatus: "pending"}},
		{"charge refunded without its refunds (no status: the refund may be under way), intent expanded", `{"id":"evt_4","type":"charge.refunded","api_version":"2024-06-20",
			"data":{"object":{"id":"ch_1","payment_intent":{"id":"pi_1","object":"payment_intent"},"refunded":true}}}`,
			payment.Event{ID: "evt_4", Type: payment.EventChargeRefunded, APIVersion: payment.APIVersion, PaymentIntentID: "pi_1"}},
		{"charge refunded with a null refund", `{"id":"evt_5","type":"charge.refunded","api_version":"2024-06-20",
			"data":{"object":{"id":"ch_1","payment_intent":null,"refunded":true,"refunds":{"data":[null]}}}}`,
			payment.Event{ID: "evt_5", Type: payment.EventChargeRefunded, APIVersion: payment.APIVersion}},
		{"refund updated, escaped intent id", `{"id":"evt_6","type":"refund.updated","api_version":"2024-06-20",
			"data":{"object":{"id":"re_1","status":"failed","payment_intent":"pi_\u0031"}}}`,
			payment.Event{ID: "evt_6", Type: payment.EventRefundUpdated, APIVersion: payment.APIVersion, PaymentIntentID: "pi_1",
				RefundID: "re_1", RefundStatus: "failed"}},
		{"unknown type", `{"id":"evt_7","type":"customer.created","api_version":"2024-06-20","data":{"object":{"id":"cus_1"}}}`,
			payment.Event{ID: "evt_7", Type: "customer.created", APIVersion: payment.APIVersion}},
		{"other version: object not read", `{"id":"evt_8","type":"payment_intent.succeeded","api_version":"2020-08-27",
			"data":{"object":{"id":"pi_1","amount_received":"a string in no version"}}}`,
			payment.Event{ID: "evt_8", Type: payment.EventIntentSucceeded, APIVersion: "2020-08-27"}},
		{"version before request became an object", `{"id":"evt_9","type":"charge.refunded","api_version":"2017-02-14",
			"request":"req_1","data":{"object":{"id":"ch_1"}}}`,
			payment.Event{ID: "evt_9", Type: payment.EventChargeRefunded, APIVersion: "2017-02-14"}},
		{"fields Dispatch does not read are not checked", `{"id":"evt_10","type":"payment_intent.canceled","api_version":"2024-06-20",
			"created":"yesterday","data":{"object":{"id":"pi_1","amount":"lots","customer":7}}}`,
			payment.Event{ID: "evt_10", Type: payment.EventIntentCanceled, APIVersion: payment.APIVersion, PaymentIntentID: "pi_1"}},
		{"no API version: read as the pinned one, a succeeded intent's amount as received", `{"id":"evt_22","type":"payment_intent.succeeded",
			"data":{"object":{"id":"pi_1","amount":2599,"currency":"usd"}}}`,
			payment.Event{ID: "evt_22", Type: payment.EventIntentSucceeded, PaymentIntentID: "pi_1", AmountReceived: 2599, Currency: "usd"}},
		{"amount received given: the amount is not read", `{"id":"evt_23","type":"payment_intent.succeeded","api_version":"2024-06-20",
			"data":{"object":{"id":"pi_1","amount":2599,"amount_received":0,"currency":"usd"}}}`,
			payment.Event{ID: "evt_23", Type: payment.EventIntentSucceeded, APIVersion: payment.APIVersion, PaymentIntentID: "pi_1", Currency: "usd"}},
		{"no amount received and an amount that is no number", `{"id":"evt_24","type":"payment_intent.succeeded","api_version":"2024-06-20",
			"data":{"object":{"id":"pi_1","amount":"lots","currency":"usd"}}}`,
			payment.Event{ID: "evt_24", Type: payment.EventIntentSucceeded, APIVersion: payment.APIVersion, PaymentIntentID: "pi_1", Currency: "usd"}},
		{"a failed intent's amount is not received", `{"id":"evt_25","type":"payment_intent.payment_failed","api_version":"2024-06-20",
			"data":{"object":{"id":"pi_1","amount":2599,"currency":"usd"}}}`,
			payment.Event{ID: "evt_25", Type: payment.EventIntentFailed, APIVersion: payment.APIVersion, PaymentIntentID: "pi_1", Currency: "usd"}},
		{"truncated", `{"id":"evt_11","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1"`, payment.Event{}},
		{"not an object", `["evt_12"]`, payment.Event{}},
		{"no id", `{"type":"customer.created","data":{"object":{}}}`, payment.Event{}},
		{"no type", `{"id":"evt_13","data":{"object":{}}}`, payment.Event{}},
		{"no data", `{"id":"evt_14","type":"customer.created"}`, payment.Event{}},
		{"null object", `{"id":"evt_15","type":"payment_intent.succeeded","api_version":"2024-06-20","data":{"object":null}}`, payment.Event{}},
		{"object as an id", `{"id":"evt_16","type":"payment_intent.succeeded","api_version":"2024-06-20","data":{"object":"pi_1"}}`, payment.Event{}},
		{"amount past int64", `{"id":"evt_17","type":"payment_intent.succeeded","api_version":"2024-06-20",
			"data":{"object":{"id":"pi_1","amount_received":9223372036854775808}}}`, payment.Event{}},
		{"metadata not text", `{"id":"evt_18","type":"payment_intent.succeeded","api_version":"2024-06-20",
			"data":{"object":{"id":"pi_1","metadata":{"order_id":1}}}}`, payment.Event{}},
		{"intent reference a number", `{"id":"evt_19","type":"refund.updated","api_version":"2024-06-20",
			"data":{"object":{"id":"re_1","payment_intent":1}}}`, payment.Event{}},
		{"NUL in the event id", `{"id":"evt_\u0000","type":"customer.created","data":{"object":{}}}`, payment.Event{}},
		{"NUL in the intent id", `{"id":"evt_20","type":"payment_intent.succeeded","api_version":"2024-06-20",
			"data":{"object":{"id":"pi_\u0000"}}}`, payment.Event{}},
		{"NUL in the failure message", `{"id":"evt_21","type":"payment_intent.payment_failed","api_version":"2024-06-20",
			"data":{"object":{"id":"pi_1","last_payment_error":{"message":"no\u0000"}}}}`, payment.Event{}},
		{"event id past 255 bytes", `{"id":"evt_` + strings.Repeat("x", 252) + `","type":"customer.created","data":{"object":{}}}`, payment.Event{}},
	} {
		body := []byte(tc.body)
		ev, err := payment.ParseWebhook(body, payment.Sign(body, testSecret, time.Now()), testSecret)
		if tc.want == (payment.Event{}) {
			if !errors.Is(err, payment.ErrMalformed) || ev != (payment.Event{}) {
				t.Errorf("%s: %+v, %v; want ErrMalformed", tc.name, ev, err)
			}
			continue
		}
		if err != nil || ev != tc.want {
			t.Errorf("%s: %+v, %v\nwant %+v", tc.name, ev, err, tc.want)
		}
	}
	// 255 bytes is still an id.
	body := []byte(`{"id":"evt_` + strings.Repeat("x", 251) + `","type":"customer.created","data":{"object":{}}}`)
	if _, err := payment.ParseWebhook(body, payment.Sign(body, testSecret, time.Now()), testSecret); err != nil {
		t.Errorf("a 255-byte event id: %v", err)
	}
}
