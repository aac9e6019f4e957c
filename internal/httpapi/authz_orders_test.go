package httpapi_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// orderIn creates an order of one demo item for the user and moves it to status directly in
// the database (the matrix tests guards, not the pipeline).
func (a *app) orderIn(t *testing.T, userID string, status order.Status) uuid.UUID {
	t.Helper()
	if userID == "" {
		userID = a.provision(t, "user").ID
	}
	uid := uuid.MustParse(userID)
	qty := 1
	o, err := a.svc.Orders.Create(testenv.Context(t), uid, order.CreateInput{
		Items: []order.LineInput{{ItemID: demo.Items()[0].ID.String(), Quantity: &qty}}}, nil, nil)
	if err != nil {
		t.Fatalf("create order: %v", err)
	}
	if status != order.Pending {
		_, err = a.db.Exec(`UPDATE orders SET status = $2, tracking_number = 'T1', carrier = 'UPS' WHERE id = $1`, o.ID, status)
		if err != nil {
			t.Fatalf("move order to %s: %v", status, err)
		}
	}
	return o.ID
}

func (a *app) orderStatus(t *testing.T, id uuid.UUID) (string, bool) {
	t.Helper()
	var row struct {
		Status  string `db:"status"`
		Pending bool   `db:"pending"`
	}
	if err := a.db.Get(&row, `SELECT status, pending_action IS NOT NULL AS pending FROM orders WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	return row.Status, row.Pending
}

// expectOrder checks an order's status and whether an action is pending after a matrix call.
func (a *app) expectOrder(id uuid.UUID, ifAllowed, ifRefused string, pendingIfAllowed bool) func(*testing.T, bool) {
	return func(t *testing.T, allowed bool) {
		want, pending := ifRefused, false
		if allowed {
			want, pending = ifAllowed, pendingIfAllowed
		}
		if st, p := a.orderStatus(t, id); st != want || p != pending {
			t.Fatalf("order is %s (pending action %v), want %s (%v)", st, p, want, pending)
		}
	}
}

// owner is the caller's id, or a fresh customer's for an anonymous caller.
func owner(c account) string { return c.ID }

func orderMatrixRoutes() []matrixRoute {
	demoItem := demo.Items()[0].ID.String()
	other := func(t *testing.T, a *app) string { return a.provision(t, "user").ID }
	return []matrixRoute{
		{"POST", "/v1/orders", anyUser, 201, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/orders", headers: key(),
				body: map[string]any{"items": []map[string]any{{"itemId": demoItem, "quantity": 1}}}}
		}},
		{"GET", "/v1/orders/me", anyUser, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/orders/me"}
		}},
		{"GET", "/v1/orders/:id", anyUser, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/orders/" + a.orderIn(t, owner(c), order.Pending).String()}
		}},
		{"GET", "/v1/orders/:id/events", anyUser, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/orders/" + a.orderIn(t, owner(c), order.Pending).String() + "/events"}
		}},
		{"GET", "/v1/admin/orders", financial, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/admin/orders"}
		}},
		{"GET", "/v1/admin/orders/:id", financial, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/admin/orders/" + a.orderIn(t, other(t, a), order.Pending).String()}
		}},
		{"PATCH", "/v1/admin/orders/:id", admins, 202, accessToken, func(t *testing.T, a *app, c account) request {
			id := a.orderIn(t, other(t, a), order.Pending)
			return request{path: "/v1/admin/orders/" + id.String(), body: map[string]any{"status": "CANCELED"},
				check: a.expectOrder(id, "PENDING", "PENDING", true)}
		}},
		{"PATCH", "/v1/admin/orders/:id/ship", shipping, 200, accessToken, func(t *testing.T, a *app, c account) request {
			id := a.orderIn(t, other(t, a), order.Processed)
			return request{path: "/v1/admin/orders/" + id.String() + "/ship",
				body:  map[string]any{"trackingNumber": "TRK1", "carrier": "DHL"},
				check: a.expectOrder(id, "SHIPPED", "PROCESSED", false)}
		}},
		{"PATCH", "/v1/admin/orders/:id/deliver", delivery, 200, accessToken, func(t *testing.T, a *app, c account) request {
			id := a.orderIn(t, other(t, a), order.Shipped)
			return request{path: "/v1/admin/orders/" + id.String() + "/deliver",
				check: a.expectOrder(id, "DELIVERED", "SHIPPED", false)}
		}},
		{"PATCH", "/v1/admin/orders/:id/cancel", financial, 202, accessToken, func(t *testing.T, a *app, c account) request {
			id := a.orderIn(t, other(t, a), order.Pending)
			return request{path: "/v1/admin/orders/" + id.String() + "/cancel", body: map[string]any{"reason": "matrix"},
				check: a.expectOrder(id, "PENDING", "PENDING", true)}
		}},
		{"PATCH", "/v1/admin/orders/:id/refund", financial, 202, accessToken, func(t *testing.T, a *app, c account) request {
			id := a.orderIn(t, other(t, a), order.Delivered)
			return request{path: "/v1/admin/orders/" + id.String() + "/refund",
				check: a.expectOrder(id, "DELIVERED", "DELIVERED", true)}
		}},
		{"PATCH", "/v1/admin/orders/:id/refund/outside", financial, 200, accessToken, func(t *testing.T, a *app, c account) request {
			id := a.orderIn(t, other(t, a), order.Canceled)
			// Paid after its cancellation, the payment not returned: it owes the payment back.
			if _, err := a.db.Exec(`UPDATE payments SET status = 'succeeded', amount_received = 100, received_currency = 'usd' WHERE order_id = $1`, id); err != nil {
				t.Fatal(err)
			}
			return request{path: "/v1/admin/orders/" + id.String() + "/refund/outside", body: map[string]any{"reference": "TR-1"},
				check: func(t *testing.T, allowed bool) {
					var recorded bool
					if err := a.db.Get(&recorded, `SELECT EXISTS (SELECT 1 FROM refunds WHERE order_id = $1 AND method = 'outside')`, id); err != nil {
						t.Fatal(err)
					}
					if recorded != allowed {
						t.Fatalf("refund recorded outside Stripe = %v, want %v", recorded, allowed)
					}
				}}
		}},
		{"DELETE", "/v1/admin/orders/:id", admins, 204, accessToken, func(t *testing.T, a *app, c account) request {
			id := a.orderIn(t, other(t, a), order.Canceled)
			return request{path: "/v1/admin/orders/" + id.String(), check: func(t *testing.T, allowed bool) {
				var deleted bool
				if err := a.db.Get(&deleted, `SELECT deleted_at IS NOT NULL FROM orders WHERE id = $1`, id); err != nil {
					t.Fatal(err)
				}
				if deleted != allowed {
					t.Fatalf("order deleted = %v, want %v", deleted, allowed)
				}
			}}
		}},
		{"GET", "/v1/notifications", anyUser, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/notifications"}
		}},
		{"GET", "/v1/notifications/unread/count", anyUser, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/notifications/unread/count"}
		}},
		{"GET", "/v1/notifications/has-new", anyUser, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/notifications/has-new"}
		}},
		{"PATCH", "/v1/notifications/read-all", anyUser, 200, accessToken, func(t *testing.T, a *app, c account) request {
			return request{path: "/v1/notifications/read-all"}
		}},
		{"PATCH", "/v1/notifications/:id/read", anyUser, 200, accessToken, func(t *testing.T, a *app, c account) request {
			uid := owner(c)
			if uid == "" {
				uid = other(t, a)
			}
			if _, err := a.svc.Notifications.Deliver(testenv.Context(t), 0, time.Time{}, uuid.MustParse(uid), "order.created", nil); err != nil {
				t.Fatal(err)
			}
			var id string
			if err := a.db.Get(&id, `SELECT id FROM notifications WHERE user_id = $1`, uid); err != nil {
				t.Fatal(err)
			}
			return request{path: "/v1/notifications/" + id + "/read"}
		}},
		{"POST", "/stripe/webhook", public, 200, accessToken, func(t *testing.T, a *app, c account) request {
			body := payment.TestEvent{Type: "customer.created"}.Build()
			return request{path: "/stripe/webhook", body: body,
				headers: []string{"Stripe-Signature", payment.Sign(body, a.cfg.StripeWebhookSecret, time.Now())}}
		}},
	}
}
