// Command dispatchctl is the developer's remote control of a local Dispatch:
//
//	dispatchctl webhook succeeded|failed|canceled <order-id|payment-intent-id> [-amount N] [-currency usd]
//	dispatchctl webhook refund-succeeded|refund-failed|refund-canceled <order-id|payment-intent-id>
//	dispatchctl timeline <order-id>
//	dispatchctl bench <scenario> [flags]   (load figures for docs/performance.md)
//
// webhook sends a correctly signed Stripe event for the order's PaymentIntent to the API (like
// "stripe trigger"), taking the amount and currency from the order unless overridden; the
// refund-* events are refund.updated for the refund recorded on the order. timeline
// prints the order's timeline. Both read DATABASE_URL and STRIPE_WEBHOOK_SECRET like the programs.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/config"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "dispatchctl:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  dispatchctl webhook succeeded|failed|canceled <order-id|payment-intent-id> [flags]
  dispatchctl webhook refund-succeeded|refund-failed|refund-canceled <order-id|payment-intent-id>
  dispatchctl timeline <order-id>`

func run(ctx context.Context, args []string, getenv func(string) string, out io.Writer) error {
	if len(args) < 2 {
		return errors.New(usage + "\n" + benchUsage)
	}
	cfg, err := config.Load(config.API, getenv)
	if err != nil {
		return err
	}
	db, err := postgres.Open(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	defer db.Close()
	switch args[0] {
	case "webhook":
		return webhook(ctx, db, cfg, args[1:], out)
	case "timeline":
		return timeline(ctx, db, args[1], out)
	case "bench":
		return bench(ctx, db, cfg, args[1:], out)
	}
	return errors.New(usage)
}

var eventTypes = map[string]string{
	"succeeded":        payment.EventIntentSucceeded,
	"failed":           payment.EventIntentFailed,
	"canceled":         payment.EventIntentCanceled,
	"refund-succeeded": payment.EventRefundUpdated,
	"refund-failed":    payment.EventRefundUpdated,
	"refund-canceled":  payment.EventRefundUpdated,
}

// apiURL is the base URL of the API listening on addr: on this host when addr names no host.
func apiURL(addr string) string {
	if strings.HasPrefix(addr, ":") {
		return "http://127.0.0.1" + addr
	}
	return "http://" + addr
}

func webhook(ctx context.Context, db *postgres.DB, cfg config.Config, args []string, out io.Writer) error {
	typ, ok := eventTypes[args[0]]
	if !ok || len(args) < 2 {
		return errors.New(usage)
	}
	refundStatus, isRefund := strings.CutPrefix(args[0], "refund-")
	fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	api := fs.String("api", apiURL(cfg.HTTPAddr), "base URL of the API")
	amount := fs.Int64("amount", -1, "amount received in minor units (default: the order's total)")
	currency := fs.String("currency", "", "currency (default: the order's)")
	message := fs.String("message", "Your card was declined.", "failure message of a failed payment")
	eventID := fs.String("event-id", "", "event id (default: a fresh one); repeat one to test deduplication")
	if err := fs.Parse(args[2:]); err != nil {
		return err
	}
	o, err := findOrder(ctx, db, args[1])
	if err != nil {
		return err
	}
	if o.Payment.IntentID == nil {
		return fmt.Errorf("order %s has no PaymentIntent yet", o.ID)
	}
	ev := payment.TestEvent{ID: *eventID, Type: typ, PaymentIntentID: *o.Payment.IntentID, OrderID: o.ID.String(),
		Amount: o.Total, Currency: o.Currency}
	if *amount >= 0 {
		ev.Amount = *amount
	}
	if *currency != "" {
		ev.Currency = *currency
	}
	if typ == payment.EventIntentFailed {
		ev.FailureMessage = *message
	}
	if isRefund {
		if o.Refund == nil {
			return fmt.Errorf("order %s has no refund recorded", o.ID)
		}
		ev.RefundID, ev.RefundStatus, ev.Amount = o.Refund.RefundID, refundStatus, o.Refund.Amount
	}
	body := ev.Build()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(*api, "/")+"/stripe/webhook", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", payment.Sign(body, cfg.StripeWebhookSecret, time.Now()))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	fmt.Fprintf(out, "%s for order %s (%s): %s %s\n", typ, o.ID, *o.Payment.IntentID, resp.Status, bytes.TrimSpace(answer))
	if resp.StatusCode != http.StatusOK {
		return errors.New("the API refused the event")
	}
	return nil
}

func findOrder(ctx context.Context, db *postgres.DB, ref string) (order.Order, error) {
	if id, err := uuid.Parse(ref); err == nil {
		return orderdb.Store{}.Get(ctx, db, id)
	}
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return order.Order{}, err
	}
	defer tx.Rollback() //nolint:errcheck // read only
	return orderdb.Store{}.LockByIntent(ctx, tx, ref)
}

func timeline(ctx context.Context, db *postgres.DB, ref string, out io.Writer) error {
	o, err := findOrder(ctx, db, ref)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "order %s #%d  status %s  total %d %s\n\n", o.ID, o.Number, o.Status, o.Total, o.Currency)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TIME\tTYPE\tFROM\tTO\tACTOR\tREASON\tCORRELATION ID")
	page := cursor.Request{Limit: 100}
	for {
		events, err := orderdb.Store{}.Events(ctx, db, o.ID, page)
		if err != nil {
			return err
		}
		for i, e := range events {
			if i == page.Limit {
				break
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.CreatedAt.UTC().Format(time.RFC3339Nano), e.Type,
				str(e.From), str(e.To), e.Actor, deref(e.Reason), e.CorrelationID)
		}
		if len(events) <= page.Limit {
			break
		}
		last := events[page.Limit-1]
		page.After = &cursor.Cursor{At: last.CreatedAt, ID: last.ID.String(), Limit: page.Limit}
	}
	return w.Flush()
}

func str(s *order.Status) string {
	if s == nil {
		return "-"
	}
	return string(*s)
}

func deref(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}
