package e2e_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// The notifications API (SPEC §3 Notifications, §11).

type notificationView struct {
	ID        uuid.UUID
	Event     string
	Type      string
	Title     string
	Message   string
	Data      map[string]any
	Read      bool
	ReadAt    *string
	CreatedAt string
}

type notificationPage struct {
	Items      []notificationView
	NextCursor *string
	HasMore    bool
}

// allNotifications follows the cursor through every page of path (which has a query string).
func allNotifications(t *testing.T, c *testenv.Client, path string) ([]notificationView, int) {
	t.Helper()
	var out []notificationView
	pages := 0
	next := path
	for {
		var p notificationPage
		c.Do("GET", next, nil).Expect(t, 200).Decode(t, &p)
		pages++
		out = append(out, p.Items...)
		if !p.HasMore {
			if p.NextCursor != nil {
				t.Fatalf("last page has a cursor %q", *p.NextCursor)
			}
			return out, pages
		}
		if p.NextCursor == nil || *p.NextCursor == "" {
			t.Fatal("hasMore without a cursor")
		}
		next = "/v1/notifications?cursor=" + url.QueryEscape(*p.NextCursor)
		if strings.Contains(path, "unread=true") {
			next += "&unread=true"
		}
		if pages > 50 {
			t.Fatal("pagination does not end")
		}
	}
}

func ids(ns []notificationView) []uuid.UUID {
	out := make([]uuid.UUID, len(ns))
	for i, n := range ns {
		out[i] = n.ID
	}
	return out
}

func TestNotificationsListCountsAndRead(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	// Notifications are stamped when the worker stores them, and tasks of different events run
	// concurrently; each step waits for its notifications so that the expected order is known.
	uid, c := r.customer() // signs in: auth.login
	testenv.Eventually(t, 30*time.Second, "login notification", func() bool {
		return r.count(`SELECT count(*) FROM notifications WHERE user_id = $1`, uid) == 1
	})
	first := r.processed(c, 2, item)
	for _, ev := range []string{notification.EventOrderCreated, notification.EventOrderPaid, notification.EventOrderProcessed} {
		r.waitNotified(uid, first.ID, ev)
	}
	second := r.place(c, 1, item)
	r.waitNotified(uid, second.ID, notification.EventOrderCreated)
	r.quiesce()
	const total = 5 // login, 3 × first order, second order created

	var want []uuid.UUID
	if err := r.db.Select(&want, `SELECT id FROM notifications WHERE user_id = $1 ORDER BY created_at DESC, id DESC`, uid); err != nil {
		t.Fatal(err)
	}
	if len(want) != total {
		t.Fatalf("%d notifications stored, want %d", len(want), total)
	}

	// Newest first, across pages of 2, each once.
	got, pages := allNotifications(t, c, "/v1/notifications?limit=2")
	if pages != 3 || mustJSON(ids(got)) != mustJSON(want) {
		t.Fatalf("paged list (%d pages) %v, want %v", pages, ids(got), want)
	}
	for i := 1; i < len(got); i++ {
		if got[i-1].CreatedAt < got[i].CreatedAt {
			t.Fatalf("not newest first: %s before %s", got[i-1].CreatedAt, got[i].CreatedAt)
		}
	}
	if got[0].Event != notification.EventOrderCreated || got[0].Data["orderId"] != second.ID.String() {
		t.Fatalf("newest notification: %+v", got[0])
	}
	if got[total-1].Event != notification.EventAuthLogin {
		t.Fatalf("oldest notification: %+v", got[total-1])
	}
	var whole notificationPage
	c.Do("GET", "/v1/notifications", nil).Expect(t, 200).Decode(t, &whole)
	if len(whole.Items) != total || whole.HasMore || whole.NextCursor != nil {
		t.Fatalf("default page: %d items, hasMore %v", len(whole.Items), whole.HasMore)
	}
	for _, n := range whole.Items {
		if n.Read || n.ReadAt != nil || n.Type == "" || n.Title == "" || n.Message == "" {
			t.Fatalf("fresh notification: %+v", n)
		}
	}

	count := func() int {
		var v struct{ Count *int }
		c.Do("GET", "/v1/notifications/unread/count", nil).Expect(t, 200).Decode(t, &v)
		if v.Count == nil {
			t.Fatal("no count")
		}
		return *v.Count
	}
	hasNew := func() bool {
		var v struct{ HasNew *bool }
		c.Do("GET", "/v1/notifications/has-new", nil).Expect(t, 200).Decode(t, &v)
		if v.HasNew == nil {
			t.Fatal("no hasNew")
		}
		return *v.HasNew
	}
	if n := count(); n != total || !hasNew() {
		t.Fatalf("unread count %d, hasNew %v; want %d, true", n, hasNew(), total)
	}

	// Mark one read.
	target := got[1]
	var read notificationView
	c.Do("PATCH", "/v1/notifications/"+target.ID.String()+"/read", nil).Expect(t, 200).Decode(t, &read)
	if read.ID != target.ID || !read.Read || read.ReadAt == nil || read.Title != target.Title {
		t.Fatalf("marked read: %+v", read)
	}
	if _, err := time.Parse(time.RFC3339, *read.ReadAt); err != nil {
		t.Fatalf("readAt %q: %v", *read.ReadAt, err)
	}
	var again notificationView
	c.Do("PATCH", "/v1/notifications/"+target.ID.String()+"/read", nil).Expect(t, 200).Decode(t, &again)
	if again.ReadAt == nil || *again.ReadAt != *read.ReadAt {
		t.Fatalf("reading again moved readAt: %v → %v", *read.ReadAt, again.ReadAt)
	}
	if n := count(); n != total-1 || !hasNew() {
		t.Fatalf("after one read: count %d hasNew %v", n, hasNew())
	}
	unread, _ := allNotifications(t, c, "/v1/notifications?limit=2&unread=true")
	if len(unread) != total-1 {
		t.Fatalf("unread list has %d, want %d", len(unread), total-1)
	}
	for _, n := range unread {
		if n.ID == target.ID || n.Read {
			t.Fatalf("unread list holds a read notification: %+v", n)
		}
	}

	// Another user's notification answers exactly like one that does not exist.
	_, other := r.customer()
	foreign := decodeError(t, other.Do("PATCH", "/v1/notifications/"+got[0].ID.String()+"/read", nil), 404, "notifications.errors.notFound")
	missing := decodeError(t, other.Do("PATCH", "/v1/notifications/"+uuid.NewString()+"/read", nil), 404, "notifications.errors.notFound")
	if foreign.Message != missing.Message {
		t.Fatalf("another user's notification (%q) is told apart from a missing one (%q)", foreign.Message, missing.Message)
	}
	decodeError(t, c.Do("PATCH", "/v1/notifications/not-a-uuid/read", nil), 400, "common.errors.invalidId")
	if n := count(); n != total-1 {
		t.Fatalf("another user's request changed the owner's notifications: count %d", n)
	}
	var otherList notificationPage
	other.Do("GET", "/v1/notifications", nil).Expect(t, 200).Decode(t, &otherList)
	for _, n := range otherList.Items {
		if n.Event != notification.EventAuthLogin {
			t.Fatalf("the other user sees %+v", n)
		}
	}

	// Read all except… all of them.
	var upd struct{ Updated *int }
	c.Do("PATCH", "/v1/notifications/read-all", nil).Expect(t, 200).Decode(t, &upd)
	if upd.Updated == nil || *upd.Updated != total-1 {
		t.Fatalf("read-all updated %v, want %d", upd.Updated, total-1)
	}
	if n := count(); n != 0 || hasNew() {
		t.Fatalf("after read-all: count %d hasNew %v", n, hasNew())
	}
	c.Do("PATCH", "/v1/notifications/read-all", nil).Expect(t, 200).Decode(t, &upd)
	if *upd.Updated != 0 {
		t.Fatalf("second read-all updated %d", *upd.Updated)
	}
	var none notificationPage
	c.Do("GET", "/v1/notifications?unread=true", nil).Expect(t, 200).Decode(t, &none)
	if len(none.Items) != 0 || none.HasMore {
		t.Fatalf("unread after read-all: %+v", none)
	}
	c.Do("GET", "/v1/notifications", nil).Expect(t, 200).Decode(t, &whole)
	for _, n := range whole.Items {
		if !n.Read || n.ReadAt == nil {
			t.Fatalf("not read after read-all: %+v", n)
		}
	}

	// A new one makes hasNew true again.
	r.place(c, 1, item)
	testenv.Eventually(t, 30*time.Second, "new notification", func() bool { return count() == 1 })
	if !hasNew() {
		t.Fatal("hasNew false with one unread")
	}

	// The filter is "true" or "false", as the staff's refundOwed: no other spelling strconv knows.
	for _, v := range []string{"maybe", "1", "TRUE", ""} {
		e := decodeError(t, c.Do("GET", "/v1/notifications?unread="+v, nil), 400, "common.errors.validation")
		if !e.hasDetail("unread") {
			t.Fatalf("unread=%s: details %+v do not name unread", v, e.Details)
		}
	}
	c.Do("GET", "/v1/notifications?unread=false", nil).Expect(t, 200)
	decodeError(t, c.Do("GET", "/v1/notifications?cursor=bm90LWEtY3Vyc29y", nil), 400, "common.errors.invalidCursor")
	decodeError(t, r.api.Do("GET", "/v1/notifications", nil), 401, "auth.errors.unauthenticated")
}

func TestNotificationsAreRenderedWithValues(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1250)
	uid, c := r.customer()
	o := r.processed(c, 2, item) // total 2500 = $25.00
	r.ship(o.ID)
	r.waitNotified(uid, o.ID, notification.EventOrderShipped)
	failed := r.place(c, 1, item)
	r.webhook(paymentFailedEvent(failed, "Card declined.")).Expect(t, 200)
	r.waitNotified(uid, failed.ID, notification.EventOrderPaymentFailed)
	r.quiesce()
	if o.Number == 0 {
		t.Fatal("order without a number")
	}
	num := fmt.Sprintf("#%d", o.Number)

	check := func(lang string, all []notificationView) map[string]notificationView {
		byEvent := map[string]notificationView{}
		for _, n := range all {
			for _, s := range []string{n.Title, n.Message} {
				if strings.ContainsAny(s, "{}") || strings.Contains(s, "notifications.") || strings.Contains(s, "orders.") || s == "" {
					t.Errorf("%s %s: unrendered text %q", lang, n.Event, s)
				}
			}
			if n.Data["orderId"] == o.ID.String() || n.Event == notification.EventAuthLogin {
				byEvent[n.Event] = n
			}
		}
		return byEvent
	}

	var en notificationPage
	c.Do("GET", "/v1/notifications?limit=100", nil).Expect(t, 200).Decode(t, &en)
	byEvent := check("en", en.Items)
	for _, tc := range []struct{ event, title, message string }{
		{notification.EventOrderCreated, "Order " + num + " placed", "We received your order " + num + " of $25.00."},
		{notification.EventOrderPaid, "Payment received", "Your payment of $25.00 for order " + num + " was received."},
		{notification.EventOrderProcessed, "Order " + num + " processed", "Order " + num + " is confirmed"},
		{notification.EventOrderShipped, "Order " + num + " shipped", "shipped with UPS; tracking number TRK-" + o.ID.String()[:8]},
	} {
		n, ok := byEvent[tc.event]
		if !ok {
			t.Fatalf("no %s notification", tc.event)
		}
		if n.Title != tc.title || !strings.Contains(n.Message, tc.message) {
			t.Errorf("%s: %q / %q, want %q / containing %q", tc.event, n.Title, n.Message, tc.title, tc.message)
		}
		if n.Data["orderId"] != o.ID.String() {
			t.Errorf("%s: data %v lacks the order id", tc.event, n.Data)
		}
	}
	if byEvent[notification.EventOrderPaid].Type != "success" || byEvent[notification.EventOrderCreated].Type != "info" {
		t.Errorf("types: %+v", byEvent)
	}
	if login := byEvent[notification.EventAuthLogin]; !strings.Contains(login.Message, "127.0.0.1") {
		t.Errorf("login message %q does not name the address", login.Message)
	}
	for _, n := range en.Items {
		if n.Event == notification.EventOrderPaymentFailed {
			// Stripe's reason is in data, not in the text: Stripe writes it in English only.
			if !strings.Contains(n.Message, "$12.50") || n.Data["error"] != "Card declined." || strings.Contains(n.Message, "Card declined.") ||
				!strings.Contains(n.Message, fmt.Sprintf("#%d", failed.Number)) || n.Type != "warning" {
				t.Errorf("paymentFailed: %+v", n)
			}
		}
	}

	for _, lang := range []string{"?lang=pt-BR&limit=100", "?limit=100"} {
		cl := c
		if lang == "?limit=100" {
			cl = c.With("Accept-Language", "pt")
		}
		var pt notificationPage
		cl.Do("GET", "/v1/notifications"+lang, nil).Expect(t, 200).Decode(t, &pt)
		ptBy := check("pt-BR", pt.Items)
		created := ptBy[notification.EventOrderCreated]
		if created.Title != "Pedido "+num+" realizado" || !strings.Contains(created.Message, "US$ 25,00") {
			t.Errorf("pt-BR (%s) order.created: %q / %q", lang, created.Title, created.Message)
		}
		if paid := ptBy[notification.EventOrderPaid]; !strings.Contains(paid.Message, "US$ 25,00") || paid.Title != "Pagamento recebido" {
			t.Errorf("pt-BR order.paid: %q / %q", paid.Title, paid.Message)
		}
	}

	// A customer who saved pt-BR reads Portuguese without asking.
	c.Do("PATCH", "/v1/users/me", map[string]string{"language": "pt-BR"}).Expect(t, 200)
	var pair struct{ AccessToken string }
	r.api.Do("POST", "/v1/auth/login", map[string]string{"email": emailOf(t, c), "password": "password123"}).Expect(t, 200).Decode(t, &pair)
	var saved notificationPage
	r.api.As(pair.AccessToken).Do("GET", "/v1/notifications?limit=100", nil).Expect(t, 200).Decode(t, &saved)
	if n := check("saved pt-BR", saved.Items)[notification.EventOrderCreated]; !strings.Contains(n.Message, "US$ 25,00") {
		t.Errorf("saved language ignored: %q", n.Message)
	}
}

func emailOf(t *testing.T, c *testenv.Client) string {
	t.Helper()
	var me struct{ Email string }
	c.Do("GET", "/v1/users/me", nil).Expect(t, 200).Decode(t, &me)
	return me.Email
}
