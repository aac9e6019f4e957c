package order

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/i18n"
)

// allowed is SPEC §4 written out independently of the transition table: from → the statuses
// it may move to. Every pair not listed here must be refused.
var allowed = map[Status][]Status{
	Pending:   {Paid, Canceled},
	Paid:      {Processed, Canceled, Refunded},
	Processed: {Shipped, Canceled, Refunded},
	Shipped:   {Delivered, Refunded},
	Delivered: {Refunded},
	Canceled:  nil,
	Refunded:  nil,
}

func isAllowed(from, to Status) bool {
	for _, s := range allowed[from] {
		if s == to {
			return true
		}
	}
	return false
}

func TestStatusesAreTheSevenOfTheSpec(t *testing.T) {
	want := []Status{"PENDING", "PAID", "PROCESSED", "SHIPPED", "DELIVERED", "CANCELED", "REFUNDED"}
	if len(Statuses()) != len(want) {
		t.Fatalf("Statuses() = %v, want %v", Statuses(), want)
	}
	for i, s := range want {
		if Statuses()[i] != s {
			t.Fatalf("Statuses() = %v, want %v", Statuses(), want)
		}
		if !s.Valid() {
			t.Errorf("%s.Valid() = false", s)
		}
	}
	for _, s := range []Status{"", "pending", "Paid", "UNKNOWN", "CANCELLED"} {
		if s.Valid() {
			t.Errorf("%q.Valid() = true", s)
		}
	}
}

func TestTransitionTableIsExactlyTheSpec(t *testing.T) {
	n := 0
	for _, from := range Statuses() {
		for _, to := range Statuses() {
			want := isAllowed(from, to)
			if got := CanTransition(from, to); got != want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", from, to, got, want)
			}
			if want {
				n++
			}
		}
	}
	if n != 11 {
		t.Fatalf("the spec allows 11 transitions, the test table lists %d", n)
	}
	// Unknown statuses never move and are never reached.
	for _, s := range Statuses() {
		if CanTransition("BOGUS", s) || CanTransition(s, "BOGUS") || CanTransition(s, "") {
			t.Errorf("a transition involving an unknown status is allowed (%s)", s)
		}
	}
}

func TestFinalOnlyForCanceledAndRefunded(t *testing.T) {
	for _, s := range Statuses() {
		want := s == Canceled || s == Refunded
		if got := s.Final(); got != want {
			t.Errorf("%s.Final() = %v, want %v", s, got, want)
		}
	}
}

func TestOrderTransitionSetsTimestampsAndRefusesOthers(t *testing.T) {
	at := time.Date(2024, 6, 20, 12, 0, 0, 0, time.UTC)
	for _, from := range Statuses() {
		for _, to := range Statuses() {
			o := Order{Status: from}
			err := o.transition(to, at)
			if !isAllowed(from, to) {
				if !errors.Is(err, ErrBadPreconditions) || apperr.KindOf(err) != apperr.Conflict {
					t.Errorf("%s → %s: err = %v, want ErrBadPreconditions", from, to, err)
				}
				if o.Status != from || o.ShippedAt != nil || o.DeliveredAt != nil || o.CanceledAt != nil || o.RefundedAt != nil {
					t.Errorf("%s → %s refused but the order changed: %+v", from, to, o)
				}
				continue
			}
			if err != nil || o.Status != to {
				t.Fatalf("%s → %s: err = %v, status %s", from, to, err, o.Status)
			}
			stamps := map[Status]*time.Time{Shipped: o.ShippedAt, Delivered: o.DeliveredAt, Canceled: o.CanceledAt, Refunded: o.RefundedAt}
			for st, ts := range stamps {
				if (st == to) != (ts != nil) {
					t.Errorf("%s → %s: %s timestamp set = %v", from, to, st, ts != nil)
				}
				if ts != nil && !ts.Equal(at) {
					t.Errorf("%s → %s: timestamp %v, want %v", from, to, ts, at)
				}
			}
		}
	}
}

func TestRequestActionFollowsTheTableAndRefusesASecondAction(t *testing.T) {
	for _, a := range []Action{ActionCancel, ActionRefund} {
		for _, from := range Statuses() {
			o := Order{Status: from}
			err := o.request(a)
			if want := isAllowed(from, a.target()); want != (err == nil) {
				t.Errorf("request %s on %s: err = %v, want allowed=%v", a, from, err, want)
			}
			if err != nil {
				if !errors.Is(err, ErrBadPreconditions) || o.PendingAction != ActionNone {
					t.Errorf("request %s on %s: err = %v, pending %q", a, from, err, o.PendingAction)
				}
				continue
			}
			if o.PendingAction != a || o.Status != from {
				t.Errorf("request %s on %s: pending %q, status %s", a, from, o.PendingAction, o.Status)
			}
			// While one action is pending, no other is accepted, whatever the status allows.
			for _, b := range []Action{ActionCancel, ActionRefund} {
				if err := o.request(b); !errors.Is(err, ErrActionPending) {
					t.Errorf("second request %s after %s on %s: err = %v, want ErrActionPending", b, a, from, err)
				}
			}
		}
	}
	if ActionCancel.target() != Canceled || ActionRefund.target() != Refunded {
		t.Fatal("action targets")
	}
}

// Outside the table, a refund is taken from a final order only while it owes its payment back:
// a late payment never refunded, or a refund that failed or was canceled at Stripe. A cancel
// never is.
func TestRefundOfAFinalOrderOnlyWhileItOwesThePayment(t *testing.T) {
	received, currency := int64(100), "usd"
	paid := Payment{Status: PaymentSucceeded, AmountReceived: &received, ReceivedCurrency: &currency}
	refund := func(status string) *Refund {
		return &Refund{Kind: RefundOrder, RefundID: "re_1", Amount: 100, Status: status}
	}
	for _, c := range []struct {
		name string
		o    Order
		owes bool
	}{
		{"canceled, never paid", Order{Status: Canceled}, false},
		{"canceled, paid late", Order{Status: Canceled, Payment: paid}, true},
		{"canceled, refunded", Order{Status: Canceled, Payment: paid, Refund: refund("succeeded")}, false},
		{"canceled, refund under way", Order{Status: Canceled, Payment: paid, Refund: refund("pending")}, false},
		{"canceled, refund failed", Order{Status: Canceled, Payment: paid, Refund: refund("failed")}, true},
		{"refunded", Order{Status: Refunded, Payment: paid, Refund: refund("succeeded")}, false},
		{"refunded, refund under way", Order{Status: Refunded, Payment: paid, Refund: refund("requires_action")}, false},
		{"refunded, refund failed", Order{Status: Refunded, Payment: paid, Refund: refund("failed")}, true},
		{"refunded, refund canceled", Order{Status: Refunded, Payment: paid, Refund: refund("canceled")}, true},
	} {
		o := c.o
		if err := o.request(ActionRefund); (err == nil) != c.owes || (err != nil && !errors.Is(err, ErrBadPreconditions)) {
			t.Errorf("%s: refund request err = %v, want taken=%v", c.name, err, c.owes)
		}
		o = c.o
		if err := o.request(ActionCancel); !errors.Is(err, ErrBadPreconditions) {
			t.Errorf("%s: cancel request err = %v, want refused", c.name, err)
		}
		o = c.o
		kind := RefundLatePayment // a late payment's first refund
		if c.o.Refund != nil {
			kind = c.o.Refund.Kind // in the failed one's place
		}
		want := Refund{Kind: kind, RefundID: "outside_1", Amount: 100, Currency: "usd", Status: "succeeded", Method: RefundOutsideStripe}
		if r, err := o.refundOutside("outside_1"); (err == nil) != c.owes || (err != nil && !errors.Is(err, ErrNothingOwed)) {
			t.Errorf("%s: refund outside Stripe err = %v, want taken=%v", c.name, err, c.owes)
		} else if err == nil && (r != want || o.Refund == nil || *o.Refund != want || o.owesRefund() || o.Status != c.o.Status) {
			t.Errorf("%s: refund outside Stripe gave %+v, left %+v (owes %v, %s), want %+v", c.name, r, o.Refund, o.owesRefund(), o.Status, want)
		}
		if c.owes {
			o = c.o
			o.PendingAction = ActionRefund // a refund through Stripe may be under way
			if _, err := o.refundOutside("outside_1"); !errors.Is(err, ErrActionPending) {
				t.Errorf("%s: refund outside Stripe with a refund pending err = %v", c.name, err)
			}
		}
	}
}

// TestRefusalsNameStatusesAndActionsInWords: the statuses and actions a refusal names are
// rendered in the reader's language, never as their codes: every one has a term in both
// catalogs.
func TestRefusalsNameStatusesAndActionsInWords(t *testing.T) {
	render := func(err error, lang string) string {
		var e *apperr.Error
		if !errors.As(err, &e) {
			t.Fatalf("%v is not an apperr.Error", err)
		}
		return i18n.T(lang, e.Code, e.Params)
	}
	for _, a := range []Action{ActionCancel, ActionRefund} {
		for _, lang := range []string{i18n.English, i18n.Portuguese} {
			if !i18n.Has(lang, "orders.actions."+string(a)) {
				t.Errorf("%s has no term for the action %s", lang, a)
			}
		}
	}
	if got, want := render(actionPending(ActionCancel), i18n.Portuguese), "O pedido tem uma ação pendente (cancelamento); aguarde sua conclusão."; got != want {
		t.Errorf("pt-BR actionPending = %q, want %q", got, want)
	}
	if got, want := render(actionPending(ActionRefund), i18n.English), "The order has a pending refund; wait for it to finish."; got != want {
		t.Errorf("en actionPending = %q, want %q", got, want)
	}
	for _, s := range Statuses() {
		for _, lang := range []string{i18n.English, i18n.Portuguese} {
			if !i18n.Has(lang, "orders.status."+string(s)) {
				t.Errorf("%s has no term for the status %s", lang, s)
			}
		}
	}
	notFinal := ErrNotFinal.With("status", i18n.Term("orders.status."+string(Paid)))
	if got := render(notFinal, i18n.Portuguese); !strings.HasSuffix(got, "este está pago.") {
		t.Errorf("pt-BR notFinal = %q", got)
	}
}
