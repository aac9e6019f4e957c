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
