package httpapi

import (
	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/order"
)

type orderViewT struct {
	ID             uuid.UUID    `json:"id"`
	Number         int64        `json:"number"`
	UserID         uuid.UUID    `json:"userId"`
	Status         order.Status `json:"status"`
	PendingAction  *string      `json:"pendingAction"`
	Total          int64        `json:"total"`
	Currency       string       `json:"currency"`
	Items          []lineView   `json:"items"`
	Payment        paymentView  `json:"payment"`
	Refund         *refundView  `json:"refund"`
	TrackingNumber *string      `json:"trackingNumber"`
	Carrier        *string      `json:"carrier"`
	ShippedAt      *string      `json:"shippedAt"`
	DeliveredAt    *string      `json:"deliveredAt"`
	CanceledAt     *string      `json:"canceledAt"`
	RefundedAt     *string      `json:"refundedAt"`
	CreatedAt      string       `json:"createdAt"`
	UpdatedAt      string       `json:"updatedAt"`
}

type lineView struct {
	ID        uuid.UUID `json:"id"`
	ItemID    uuid.UUID `json:"itemId"`
	Name      string    `json:"name"`
	UnitPrice int64     `json:"unitPrice"`
	Quantity  int       `json:"quantity"`
	Subtotal  int64     `json:"subtotal"`
}

type paymentView struct {
	Status           string  `json:"status"`
	PaymentIntentID  *string `json:"paymentIntentId"`
	ClientSecret     *string `json:"clientSecret"`
	AmountReceived   *int64  `json:"amountReceived"`
	ReceivedCurrency *string `json:"receivedCurrency"`
	LastError        *string `json:"lastError"`
}

type refundView struct {
	Status   string `json:"status"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
	RefundID string `json:"refundId"`
	Kind     string `json:"kind"`
	Method   string `json:"method"`
}

// orderView renders an order; the client secret is shown to its owner only.
func orderView(o order.Order, owner bool) orderViewT {
	v := orderViewT{
		ID: o.ID, Number: o.Number, UserID: o.UserID, Status: o.Status, Total: o.Total, Currency: o.Currency,
		Items: make([]lineView, len(o.Lines)),
		Payment: paymentView{Status: o.Payment.Status, PaymentIntentID: o.Payment.IntentID, AmountReceived: o.Payment.AmountReceived,
			ReceivedCurrency: o.Payment.ReceivedCurrency, LastError: o.Payment.LastError},
		TrackingNumber: o.TrackingNumber, Carrier: o.Carrier,
		ShippedAt: formatTimePtr(o.ShippedAt), DeliveredAt: formatTimePtr(o.DeliveredAt),
		CanceledAt: formatTimePtr(o.CanceledAt), RefundedAt: formatTimePtr(o.RefundedAt),
		CreatedAt: formatTime(o.CreatedAt), UpdatedAt: formatTime(o.UpdatedAt),
	}
	if o.PendingAction != order.ActionNone {
		a := string(o.PendingAction)
		v.PendingAction = &a
	}
	if owner {
		v.Payment.ClientSecret = o.Payment.ClientSecret
	}
	for i, l := range o.Lines {
		v.Items[i] = lineView{ID: l.ID, ItemID: l.ItemID, Name: l.Name, UnitPrice: l.UnitPrice, Quantity: l.Quantity, Subtotal: l.Subtotal}
	}
	if r := o.Refund; r != nil {
		v.Refund = &refundView{Status: r.Status, Amount: r.Amount, Currency: r.Currency, RefundID: r.RefundID, Kind: r.Kind, Method: r.Method}
	}
	return v
}

type eventViewT struct {
	ID            uuid.UUID     `json:"id"`
	Type          string        `json:"type"`
	FromStatus    *order.Status `json:"fromStatus"`
	ToStatus      *order.Status `json:"toStatus"`
	Actor         string        `json:"actor"`
	Reason        *string       `json:"reason"`
	CorrelationID string        `json:"correlationId"`
	CreatedAt     string        `json:"createdAt"`
}

func eventView(e order.Event) eventViewT {
	return eventViewT{ID: e.ID, Type: e.Type, FromStatus: e.From, ToStatus: e.To, Actor: e.Actor, Reason: e.Reason,
		CorrelationID: e.CorrelationID, CreatedAt: formatTime(e.CreatedAt)}
}
