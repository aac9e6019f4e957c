package worker

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/payment"
)

// The timeline's reason for an action that failed for good is read by the order's customer:
// Stripe's words or the kind of failure, an error's code, never an address or an internal
// error's text.
func TestTheTimelineNamesAFailureWithoutItsInternals(t *testing.T) {
	unreachable := &payment.GatewayError{Class: payment.ErrTransient, Err: errors.New("dial"),
		Message: `Post "http://10.0.0.7:12111/v1/refunds": dial tcp 10.0.0.7:12111: connect: connection refused`}
	refused := &payment.GatewayError{Class: payment.ErrRejected, Message: "Charge ch_1 has already been refunded."}
	badKey := &payment.GatewayError{Class: payment.ErrTransient, Message: "Invalid API Key provided: sk_live_****Aso0"}
	keyReused := &payment.GatewayError{Class: payment.ErrKeyReused, Message: "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than 'order-1-refund'"}
	for cause, want := range map[error]string{
		fmt.Errorf("refund: %w", unreachable):                                       "payment: provider unavailable",
		fmt.Errorf("refund: %w", badKey):                                            "payment: provider unavailable",
		fmt.Errorf("refund: %w", keyReused):                                         "payment: rejected by the provider: idempotency key used before with other parameters",
		fmt.Errorf("refund: %w", refused):                                           "payment: rejected by the provider: Charge ch_1 has already been refunded.",
		apperr.New(apperr.Conflict, "orders.errors.actionPending"):                  "orders.errors.actionPending",
		errors.New("postgres: dial tcp 10.0.0.5:5432: connect: connection refused"): "internal error",
	} {
		if got := reasonOf(cause); got != want {
			t.Errorf("reason of %v: %q, want %q", cause, got, want)
		}
	}
	long := &payment.GatewayError{Class: payment.ErrRejected, Message: strings.Repeat("é", 200)}
	if got := reasonOf(long); len(got) > 300 || !utf8.ValidString(got) {
		t.Fatalf("a long reason: %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
}
