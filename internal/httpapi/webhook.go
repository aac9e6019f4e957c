package httpapi

import (
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
)

// Webhook errors.
var (
	errWebhookSignature = apperr.New(apperr.Invalid, "payments.errors.invalidSignature")
	errWebhookPayload   = apperr.New(apperr.Invalid, "payments.errors.invalidEvent")
)

// stripeWebhook verifies the signature on the raw body, records and applies the event in one
// transaction, and answers only after the commit.
func (s *Server) stripeWebhook(c *gin.Context) {
	body, err := readBody(c.Request.Body)
	if errors.Is(err, apperr.ErrMalformedJSON) {
		err = errWebhookPayload
	}
	if err != nil {
		s.respondError(c, err)
		return
	}
	ctx := c.Request.Context()
	ev, err := payment.ParseWebhook(body, c.GetHeader("Stripe-Signature"), s.cfg.StripeWebhookSecret)
	if errors.Is(err, payment.ErrBadSignature) {
		s.observeWebhook("unknown", "bad_signature")
		s.respondError(c, errWebhookSignature)
		return
	}
	if err != nil {
		s.observeWebhook("unknown", "malformed")
		s.respondError(c, errWebhookPayload.Wrap(err))
		return
	}
	outcome, err := s.orders.HandlePaymentEvent(ctx, ev)
	if err != nil {
		s.observeWebhook(ev.Type, "error")
		s.respondError(c, err)
		return
	}
	s.observeWebhook(ev.Type, outcome)
	level := s.log.InfoContext
	if outcome != order.OutcomeApplied && outcome != order.OutcomeDuplicate {
		level = s.log.WarnContext
	}
	level(ctx, "stripe event", "eventId", ev.ID, "eventType", ev.Type, "apiVersion", ev.APIVersion,
		"paymentIntentId", ev.PaymentIntentID, "outcome", outcome)
	c.JSON(http.StatusOK, gin.H{"received": true, "outcome": outcome})
}

func (s *Server) observeWebhook(eventType, outcome string) { metrics.Webhook(eventType, outcome) }
