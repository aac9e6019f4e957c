package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

// orderID is the order :id of the path. The request's later log lines, its access line
// included, name it (SPEC §8: orderId where known).
func orderID(c *gin.Context) (uuid.UUID, error) {
	id, err := pathID(c, "id")
	if err == nil {
		namesOrder(c, id)
	}
	return id, err
}

// namesOrder has the request's later log lines name order id.
func namesOrder(c *gin.Context, id uuid.UUID) {
	c.Request = c.Request.WithContext(logging.With(c.Request.Context(), slog.String("orderId", id.String())))
}

func (s *Server) createOrder(c *gin.Context) {
	var req order.CreateInput
	if err := decode(c, &req); err != nil {
		s.refuse(c, err)
		return
	}
	// The body is rendered where the service asks for it, so that it is stored with the
	// PaymentIntent in one statement; a resumed request whose PaymentIntent was stored before
	// renders it here, and the idempotency guard stores it.
	var body []byte
	answer := func(o order.Order) (int, []byte, error) {
		var err error
		body, err = json.Marshal(orderView(o, true))
		return http.StatusCreated, body, err
	}
	ctx := c.Request.Context()
	o, err := s.orders.Create(ctx, principal(c).UserID, req, idempotencyClaim(ctx), answer)
	if err == nil && body == nil {
		_, _, err = answer(o)
	}
	if err != nil {
		s.refuse(c, err)
		return
	}
	namesOrder(c, o.ID)
	c.Data(http.StatusCreated, "application/json; charset=utf-8", body)
}

func (s *Server) myOrders(c *gin.Context) {
	s.listOrders(c, order.Filter{UserID: principal(c).UserID})
}

func (s *Server) adminListOrders(c *gin.Context) {
	var f order.Filter
	if v := c.Query("userId"); v != "" {
		// The canonical form only, as path ids; the nil id, which no user has, would read as
		// no filter at all.
		id, err := uuid.Parse(v)
		if err != nil || !validUUID(v) || id == uuid.Nil {
			s.respondError(c, apperr.ErrValidation.WithDetails(apperr.Field("userId", "validation.uuid")))
			return
		}
		f.UserID = id
	}
	var err error
	if f.RefundOwed, err = queryBool(c, "refundOwed"); err != nil {
		s.respondError(c, err)
		return
	}
	s.listOrders(c, f)
}

// listOrders answers a page of the orders f selects; the caller's own show their client secret.
func (s *Server) listOrders(c *gin.Context, f order.Filter) {
	page, err := pageRequest(c)
	if err != nil {
		s.respondError(c, err)
		return
	}
	if st := c.Query("status"); st != "" {
		if !order.Status(st).Valid() {
			s.respondError(c, apperr.ErrValidation.WithDetails(apperr.Field("status", "validation.oneOf", "values", statusList())))
			return
		}
		f.Status = order.Status(st)
	}
	if f.From, err = queryTime(c, "from", false); err != nil {
		s.respondError(c, err)
		return
	}
	if f.To, err = queryTime(c, "to", true); err != nil {
		s.respondError(c, err)
		return
	}
	p, err := s.orders.List(c.Request.Context(), f, page)
	if err != nil {
		s.respondError(c, err)
		return
	}
	me := principal(c).UserID
	c.JSON(http.StatusOK, cursor.Map(p, func(o order.Order) orderViewT { return orderView(o, o.UserID == me) }))
}

func statusList() string {
	out := ""
	for i, st := range order.Statuses() {
		if i > 0 {
			out += ", "
		}
		out += string(st)
	}
	return out
}

func (s *Server) getMyOrder(c *gin.Context) {
	id, err := orderID(c)
	if err != nil {
		s.respondError(c, err)
		return
	}
	o, err := s.orders.GetOwned(c.Request.Context(), principal(c).UserID, id)
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, orderView(o, true))
}

func (s *Server) adminGetOrder(c *gin.Context) {
	id, err := orderID(c)
	if err != nil {
		s.respondError(c, err)
		return
	}
	o, err := s.orders.Get(c.Request.Context(), id)
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, orderView(o, o.UserID == principal(c).UserID))
}

// orderEvents serves the timeline to the order's owner and to FINANCIAL staff; anyone else
// gets the same 404 as for a missing order.
func (s *Server) orderEvents(c *gin.Context) {
	id, err := orderID(c)
	if err != nil {
		s.respondError(c, err)
		return
	}
	page, err := pageRequest(c)
	if err != nil {
		s.respondError(c, err)
		return
	}
	ctx := c.Request.Context()
	p := principal(c)
	if auth.Financial.Allows(p.Role) {
		_, err = s.orders.Get(ctx, id)
	} else {
		_, err = s.orders.GetOwned(ctx, p.UserID, id)
	}
	if err != nil {
		s.respondError(c, err)
		return
	}
	events, err := s.orders.Events(ctx, id, page)
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, cursor.Map(events, eventView))
}

func (s *Server) shipOrder(c *gin.Context) {
	id, err := orderID(c)
	if err != nil {
		s.respondError(c, err)
		return
	}
	var req order.ShipInput
	if err = decode(c, &req); err == nil {
		err = req.Validate()
	}
	if err != nil {
		s.respondError(c, err)
		return
	}
	o, err := s.orders.Ship(c.Request.Context(), actor(c), id, req, notification.EventOrderShipped, idempotencyClaim(c.Request.Context()))
	s.respondOrder(c, o, err, http.StatusOK)
}

func (s *Server) deliverOrder(c *gin.Context) {
	id, err := orderID(c)
	if err != nil {
		s.respondError(c, err)
		return
	}
	if err := noBody(c); err != nil {
		s.respondError(c, err)
		return
	}
	o, err := s.orders.Deliver(c.Request.Context(), actor(c), id, notification.EventOrderDelivered, idempotencyClaim(c.Request.Context()))
	s.respondOrder(c, o, err, http.StatusOK)
}

// refundOutside records a refund that staff returned outside Stripe, for an order that owes its
// payment back; it answers 200 with the order (nothing is left for the worker).
func (s *Server) refundOutside(c *gin.Context) {
	id, err := orderID(c)
	if err != nil {
		s.respondError(c, err)
		return
	}
	var req order.OutsideRefundInput
	if err := decode(c, &req); err != nil {
		s.respondError(c, err)
		return
	}
	o, err := s.orders.RefundOutside(c.Request.Context(), actor(c), id, req, idempotencyClaim(c.Request.Context()))
	s.respondOrder(c, o, err, http.StatusOK)
}

type reasonRequest struct {
	Reason *string `json:"reason"`
}

func (s *Server) cancelOrder(c *gin.Context) { s.requestAction(c, order.ActionCancel) }
func (s *Server) refundOrder(c *gin.Context) { s.requestAction(c, order.ActionRefund) }

func (s *Server) requestAction(c *gin.Context, a order.Action) {
	id, err := orderID(c)
	if err != nil {
		s.respondError(c, err)
		return
	}
	var req reasonRequest
	if err := decodeOptional(c, &req); err != nil {
		s.respondError(c, err)
		return
	}
	reason := ""
	if req.Reason != nil {
		reason = *req.Reason
	}
	var o order.Order
	if a == order.ActionCancel {
		o, err = s.orders.RequestCancel(c.Request.Context(), actor(c), id, reason, idempotencyClaim(c.Request.Context()))
	} else {
		o, err = s.orders.RequestRefund(c.Request.Context(), actor(c), id, reason, idempotencyClaim(c.Request.Context()))
	}
	s.respondOrder(c, o, err, http.StatusAccepted)
}

func (s *Server) setOrderStatus(c *gin.Context) {
	id, err := orderID(c)
	if err != nil {
		s.respondError(c, err)
		return
	}
	var req order.StatusInput
	if err := decode(c, &req); err != nil {
		s.respondError(c, err)
		return
	}
	o, accepted, err := s.orders.SetStatus(c.Request.Context(), actor(c), id, req, idempotencyClaim(c.Request.Context()))
	status := http.StatusOK
	if accepted {
		status = http.StatusAccepted
	}
	s.respondOrder(c, o, err, status)
}

func (s *Server) deleteOrder(c *gin.Context) {
	id, err := orderID(c)
	if err == nil {
		err = noBody(c)
	}
	if err != nil {
		s.respondError(c, err)
		return
	}
	if err := s.orders.Delete(c.Request.Context(), id); err != nil {
		s.respondError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (s *Server) respondOrder(c *gin.Context, o order.Order, err error, status int) {
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(status, orderView(o, o.UserID == principal(c).UserID))
}

// actor names the caller on the timeline.
func actor(c *gin.Context) string { return principal(c).UserID.String() }
