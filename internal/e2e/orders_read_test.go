package e2e_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/testenv"
)

// Reading orders (SPEC §3 Orders, §2 visibility) and validating their creation.

type orderPage struct {
	Items      []fullOrder
	NextCursor *string
	HasMore    bool
}

// listAll follows the cursor through every page of base (a path with a query string).
func listAll(t *testing.T, c *testenv.Client, base string) ([]uuid.UUID, int) {
	t.Helper()
	var out []uuid.UUID
	pages := 0
	next := base
	for {
		var p orderPage
		c.Do("GET", next, nil).Expect(t, 200).Decode(t, &p)
		pages++
		for _, o := range p.Items {
			out = append(out, o.ID)
		}
		if !p.HasMore {
			if p.NextCursor != nil {
				t.Fatalf("%s: last page has a cursor", base)
			}
			return out, pages
		}
		if p.NextCursor == nil || pages > 50 {
			t.Fatalf("%s: bad pagination", base)
		}
		sep := "?"
		if strings.Contains(base, "?") {
			sep = "&"
		}
		next = base + sep + "cursor=" + url.QueryEscape(*p.NextCursor)
	}
}

func sameIDs(a, b []uuid.UUID) bool { return mustJSON(a) == mustJSON(b) }

func TestOrderVisibility(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1000)
	_, alice := r.customer()
	_, bob := r.customer()
	o := r.place(alice, 1, item)
	path := "/v1/orders/" + o.ID.String()

	var mine fullOrder
	alice.Do("GET", path, nil).Expect(t, 200).Decode(t, &mine)
	if mine.ID != o.ID || mine.Payment.ClientSecret == nil || *mine.Payment.ClientSecret == "" ||
		len(mine.Items) != 1 || mine.Items[0].ItemID != item || mine.Items[0].UnitPrice != 1000 || mine.Items[0].Subtotal != 1000 {
		t.Fatalf("owner's view: %s", mustJSON(mine))
	}

	// Staff see a client secret on their own orders only, in the admin list as in the admin view.
	admin := r.as("admin")
	own := r.place(admin, 1, item)
	var list struct{ Items []fullOrder }
	admin.Do("GET", "/v1/admin/orders?limit=100", nil).Expect(t, 200).Decode(t, &list)
	seen := 0
	for _, lo := range list.Items {
		switch lo.ID {
		case own.ID:
			seen++
			if lo.Payment.ClientSecret == nil || *lo.Payment.ClientSecret != *own.Payment.ClientSecret {
				t.Fatalf("the admin list hides a staff member's own client secret: %s", mustJSON(lo.Payment))
			}
		case o.ID:
			seen++
			if lo.Payment.ClientSecret != nil {
				t.Fatal("the admin list shows a customer's client secret")
			}
		}
	}
	if seen != 2 {
		t.Fatalf("%d of the two orders in the admin list", seen)
	}

	foreign := decodeError(t, bob.Do("GET", path, nil), 404, "orders.errors.notFound")
	missing := decodeError(t, bob.Do("GET", "/v1/orders/"+uuid.NewString(), nil), 404, "orders.errors.notFound")
	if foreign.Message != missing.Message {
		t.Fatalf("another customer's order (%q) is told apart from a missing one (%q)", foreign.Message, missing.Message)
	}
	decodeError(t, bob.Do("GET", "/v1/orders/not-a-uuid", nil), 400, "common.errors.invalidId")
	decodeError(t, bob.Do("GET", path+"/events", nil), 404, "orders.errors.notFound")
	decodeError(t, r.as("shipper").Do("GET", path+"/events", nil), 404, "orders.errors.notFound")
	decodeError(t, bob.Do("GET", "/v1/admin/orders/"+o.ID.String(), nil), 403, "auth.errors.forbidden")
	decodeError(t, r.as("shipper").Do("GET", "/v1/admin/orders", nil), 403, "auth.errors.forbidden")
	decodeError(t, r.api.Do("GET", path, nil), 401, "auth.errors.unauthenticated")

	// The timeline: owner, financial and admin see the same events, oldest first.
	type timelinePage struct {
		Items []struct {
			ID                   uuid.UUID
			Type, Actor          string
			FromStatus, ToStatus *string
			CorrelationID        string
			CreatedAt            string
		}
		NextCursor *string
		HasMore    bool
	}
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", map[string]string{"reason": "test"}).Expect(t, 202)
	r.waitStatus(o.ID, "CANCELED")
	var want timelinePage
	alice.Do("GET", path+"/events", nil).Expect(t, 200).Decode(t, &want)
	types := []string{}
	for _, e := range want.Items {
		types = append(types, e.Type)
		if e.CorrelationID == "" || e.Actor == "" || e.CreatedAt == "" {
			t.Fatalf("event lacks fields: %+v", e)
		}
	}
	if strings.Join(types, ",") != "created,cancelRequested,statusChanged" || want.HasMore {
		t.Fatalf("timeline types %v", types)
	}
	if e := want.Items[2]; deref(e.FromStatus) != "PENDING" || deref(e.ToStatus) != "CANCELED" {
		t.Fatalf("statusChanged event: %+v", e)
	}
	for _, e := range want.Items[:2] { // created, cancelRequested: actions, not transitions
		if e.FromStatus != nil || e.ToStatus != nil {
			t.Fatalf("action event with statuses: %+v", e)
		}
	}
	for _, role := range []string{"financial", "admin", "superadmin"} {
		var got timelinePage
		r.as(role).Do("GET", path+"/events", nil).Expect(t, 200).Decode(t, &got)
		if mustJSON(got) != mustJSON(want) {
			t.Fatalf("%s sees another timeline:\n%s\n%s", role, mustJSON(got), mustJSON(want))
		}
	}
	var page1, page2 timelinePage
	alice.Do("GET", path+"/events?limit=2", nil).Expect(t, 200).Decode(t, &page1)
	if len(page1.Items) != 2 || !page1.HasMore || page1.NextCursor == nil || page1.Items[0].ID != want.Items[0].ID {
		t.Fatalf("first timeline page: %s", mustJSON(page1))
	}
	alice.Do("GET", path+"/events?cursor="+url.QueryEscape(*page1.NextCursor), nil).Expect(t, 200).Decode(t, &page2)
	if len(page2.Items) != 1 || page2.HasMore || page2.Items[0].ID != want.Items[2].ID {
		t.Fatalf("second timeline page: %s", mustJSON(page2))
	}
}

func TestClientSecretOnlyForTheOwner(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(10, 1000)
	uid, c := r.customer()
	o := r.place(c, 1, item)

	var adminView fullOrder
	r.as("admin").Do("GET", "/v1/admin/orders/"+o.ID.String(), nil).Expect(t, 200).Decode(t, &adminView)
	if adminView.Payment.ClientSecret != nil || adminView.Payment.PaymentIntentID == nil {
		t.Fatalf("admin view of a customer's order: %s", mustJSON(adminView.Payment))
	}
	for _, role := range []string{"admin", "financial"} {
		var list orderPage
		r.as(role).Do("GET", "/v1/admin/orders?userId="+uid.String(), nil).Expect(t, 200).Decode(t, &list)
		if len(list.Items) != 1 || list.Items[0].Payment.ClientSecret != nil {
			t.Fatalf("%s list: %s", role, mustJSON(list))
		}
	}
	var fin fullOrder
	r.as("financial").Do("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", nil).Expect(t, 202).Decode(t, &fin)
	if fin.Payment.ClientSecret != nil {
		t.Fatal("the cancel answer shows the client secret to staff")
	}
	var own orderPage
	c.Do("GET", "/v1/orders/me", nil).Expect(t, 200).Decode(t, &own)
	if len(own.Items) != 1 || own.Items[0].Payment.ClientSecret == nil {
		t.Fatalf("owner's list: %s", mustJSON(own))
	}
}

func TestOrderListsFilterAndPaginate(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	item := r.item(100, 1000)
	aliceID, alice := r.customer()
	bobID, bob := r.customer()
	var placed []fullOrder
	for i := 0; i < 4; i++ {
		placed = append(placed, r.place(alice, 1, item))
	}
	bobs := r.place(bob, 1, item)
	r.paid(placed[1])
	r.waitStatus(placed[1].ID, "PROCESSED")
	newestFirst := []uuid.UUID{placed[3].ID, placed[2].ID, placed[1].ID, placed[0].ID}

	all, pages := listAll(t, alice, "/v1/orders/me?limit=1")
	if !sameIDs(all, newestFirst) || pages != 4 {
		t.Fatalf("paged own orders (%d pages): %v, want %v", pages, all, newestFirst)
	}
	all, _ = listAll(t, alice, "/v1/orders/me?limit=3")
	if !sameIDs(all, newestFirst) {
		t.Fatalf("own orders by 3: %v", all)
	}
	all, _ = listAll(t, alice, "/v1/orders/me?status=PROCESSED")
	if !sameIDs(all, []uuid.UUID{placed[1].ID}) {
		t.Fatalf("status=PROCESSED: %v", all)
	}
	all, _ = listAll(t, alice, "/v1/orders/me?status=PENDING&limit=2")
	if !sameIDs(all, []uuid.UUID{placed[3].ID, placed[2].ID, placed[0].ID}) {
		t.Fatalf("status=PENDING: %v", all)
	}
	all, _ = listAll(t, alice, "/v1/orders/me?status=SHIPPED")
	if len(all) != 0 {
		t.Fatalf("status=SHIPPED: %v", all)
	}

	// from/to bound createdAt inclusively, at the millisecond the API shows (the database keeps
	// microseconds): an order's own createdAt bounds it in, at either end.
	at := func(o fullOrder) time.Time {
		ts, err := time.Parse(time.RFC3339Nano, o.CreatedAt)
		if err != nil {
			t.Fatal(err)
		}
		return ts
	}
	q := func(ts time.Time) string { return url.QueryEscape(ts.UTC().Format(time.RFC3339Nano)) }
	all, _ = listAll(t, alice, "/v1/orders/me?from="+q(at(placed[1])))
	if !sameIDs(all, newestFirst[:3]) {
		t.Fatalf("from second: %v", all)
	}
	all, _ = listAll(t, alice, "/v1/orders/me?to="+q(at(placed[2])))
	if !sameIDs(all, newestFirst[1:]) {
		t.Fatalf("to third: %v", all)
	}
	all, _ = listAll(t, alice, "/v1/orders/me?limit=1&from="+q(at(placed[1]))+"&to="+q(at(placed[2])))
	if !sameIDs(all, []uuid.UUID{placed[2].ID, placed[1].ID}) {
		t.Fatalf("from second to third: %v", all)
	}
	all, _ = listAll(t, alice, "/v1/orders/me?from="+q(at(placed[2]))+"&to="+q(at(placed[2])))
	if !sameIDs(all, []uuid.UUID{placed[2].ID}) {
		t.Fatalf("from and to the third's createdAt: %v", all)
	}
	all, _ = listAll(t, alice, "/v1/orders/me?from="+q(at(placed[1]))+"&status=PENDING")
	if !sameIDs(all, []uuid.UUID{placed[3].ID, placed[2].ID}) {
		t.Fatalf("from second, PENDING: %v", all)
	}
	all, _ = listAll(t, alice, "/v1/orders/me?from="+q(time.Now().Add(time.Hour)))
	if len(all) != 0 {
		t.Fatalf("from the future: %v", all)
	}
	// The year 1 is a bound like any other, not "no bound".
	for _, to := range []string{"0001-01-01T00:00:00Z", "0001-01-01T05:00:00+05:00"} {
		if all, _ = listAll(t, alice, "/v1/orders/me?to="+url.QueryEscape(to)); len(all) != 0 {
			t.Fatalf("to %s: %v", to, all)
		}
	}
	// RFC 3339 allows its letters in lowercase.
	all, _ = listAll(t, alice, "/v1/orders/me?from="+url.QueryEscape(strings.ToLower(at(placed[1]).UTC().Format(time.RFC3339Nano))))
	if !sameIDs(all, newestFirst[:3]) {
		t.Fatalf("from second, in lowercase: %v", all)
	}

	// What clients commonly send: a date alone names its whole UTC day, and an offset's "+"
	// left unencoded arrives as a space.
	day := func(ts time.Time) string { return ts.UTC().Format(time.DateOnly) }
	all, _ = listAll(t, alice, "/v1/orders/me?from="+day(at(placed[0]))+"&to="+day(at(placed[3])))
	if !sameIDs(all, newestFirst) {
		t.Fatalf("from the first's day to the last's: %v", all)
	}
	if all, _ = listAll(t, alice, "/v1/orders/me?to="+day(at(placed[0]).AddDate(0, 0, -1))); len(all) != 0 {
		t.Fatalf("to the day before the first: %v", all)
	}
	all, _ = listAll(t, alice, "/v1/orders/me?from="+at(placed[1]).UTC().Format("2006-01-02T15:04:05.000+00:00"))
	if !sameIDs(all, newestFirst[:3]) {
		t.Fatalf("from second, its offset's + unencoded: %v", all)
	}

	// Bob sees only his.
	all, _ = listAll(t, bob, "/v1/orders/me")
	if !sameIDs(all, []uuid.UUID{bobs.ID}) {
		t.Fatalf("bob's orders: %v", all)
	}

	// Staff list everyone's, filtered by user and status.
	fin := r.as("financial")
	all, _ = listAll(t, fin, "/v1/admin/orders?userId="+aliceID.String()+"&limit=2")
	if !sameIDs(all, newestFirst) {
		t.Fatalf("admin list of alice: %v", all)
	}
	all, _ = listAll(t, fin, "/v1/admin/orders?userId="+bobID.String())
	if !sameIDs(all, []uuid.UUID{bobs.ID}) {
		t.Fatalf("admin list of bob: %v", all)
	}
	all, _ = listAll(t, fin, "/v1/admin/orders?userId="+aliceID.String()+"&status=PROCESSED")
	if !sameIDs(all, []uuid.UUID{placed[1].ID}) {
		t.Fatalf("admin list of alice PROCESSED: %v", all)
	}
	all, _ = listAll(t, fin, "/v1/admin/orders?status=PENDING&limit=2")
	if !sameIDs(all, []uuid.UUID{bobs.ID, placed[3].ID, placed[2].ID, placed[0].ID}) {
		t.Fatalf("admin list PENDING: %v", all)
	}
	all, _ = listAll(t, r.as("admin"), "/v1/admin/orders?userId="+uuid.NewString())
	if len(all) != 0 {
		t.Fatalf("admin list of a stranger: %v", all)
	}

	for _, bad := range []string{"/v1/orders/me?status=LOST", "/v1/orders/me?from=yesterday", "/v1/orders/me?to=2024-13-01",
		"/v1/orders/me?limit=0", "/v1/orders/me?limit=101"} {
		decodeError(t, alice.Do("GET", bad, nil), 400, "common.errors.validation")
	}
	decodeError(t, alice.Do("GET", "/v1/orders/me?cursor=garbage", nil), 400, "common.errors.invalidCursor")
	// Only the canonical spelling of a user id, and not the nil id (it would read as no filter).
	for _, bad := range []string{"nope", "urn:uuid:" + aliceID.String(), "{" + aliceID.String() + "}",
		strings.ReplaceAll(aliceID.String(), "-", ""), uuid.Nil.String()} {
		e := decodeError(t, fin.Do("GET", "/v1/admin/orders?userId="+url.QueryEscape(bad), nil), 400, "common.errors.validation")
		if !e.hasDetail("userId") {
			t.Fatalf("userId=%s: details %+v", bad, e.Details)
		}
	}
}

// Creating an order: every refusal leaves stock and orders untouched.
func TestCreateOrderValidation(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	usd := r.item(5, 1000)
	usd2 := r.item(3, 500)
	eur := r.itemIn(10, 700, "eur")
	gone := r.item(10, 100)
	r.as("admin").Do("DELETE", "/v1/admin/items/"+gone.String(), nil).Expect(t, 204)
	uid, c := r.customer()

	line := func(id any, qty any) map[string]any { return map[string]any{"itemId": id, "quantity": qty} }
	many := make([]map[string]any, 51)
	for i := range many {
		many[i] = line(uuid.NewString(), 1)
	}
	stocks := func() [3]int64 { return [3]int64{r.stock(usd), r.stock(usd2), r.stock(eur)} }
	before := stocks()

	for _, tc := range []struct {
		name   string
		lines  any
		status int
		code   string
		field  string
	}{
		{"no lines", []map[string]any{}, 400, "common.errors.validation", "items"},
		{"null lines", nil, 400, "common.errors.validation", "items"},
		{"51 lines", many, 400, "common.errors.validation", "items"},
		{"quantity 0", []map[string]any{line(usd, 0)}, 400, "common.errors.validation", "items[0].quantity"},
		{"quantity 1001", []map[string]any{line(usd2, 1), line(usd, 1001)}, 400, "common.errors.validation", "items[1].quantity"},
		{"negative quantity", []map[string]any{line(usd, -1)}, 400, "common.errors.validation", "items[0].quantity"},
		{"missing quantity", []map[string]any{{"itemId": usd}}, 400, "common.errors.validation", "items[0].quantity"},
		{"fractional quantity", []map[string]any{line(usd, 1.5)}, 400, "common.errors.validation", ""},
		{"duplicate item", []map[string]any{line(usd, 1), line(usd2, 1), line(usd, 2)}, 400, "common.errors.validation", "items[2].itemId"},
		{"non-UUID item", []map[string]any{line("item-1", 1)}, 400, "common.errors.validation", "items[0].itemId"},
		{"missing item id", []map[string]any{{"quantity": 1}}, 400, "common.errors.validation", "items[0].itemId"},
		{"unknown item", []map[string]any{line(usd, 1), line(uuid.New(), 1)}, 404, "items.errors.notFound", ""},
		{"deleted item", []map[string]any{line(usd, 1), line(gone, 1)}, 404, "items.errors.notFound", ""},
		{"mixed currencies", []map[string]any{line(usd, 1), line(eur, 1)}, 400, "orders.errors.mixedCurrencies", ""},
		{"insufficient stock", []map[string]any{line(usd, 1), line(usd2, 4)}, 409, "items.errors.insufficientStock", ""},
		{"insufficient stock first", []map[string]any{line(usd, 6), line(usd2, 1)}, 409, "items.errors.insufficientStock", ""},
		// SPEC §3 checks the items before the stock: a short line does not hide a later one's fault.
		{"short, then unknown", []map[string]any{line(usd, 6), line(uuid.New(), 1)}, 404, "items.errors.notFound", ""},
		{"short, then deleted", []map[string]any{line(usd, 6), line(gone, 1)}, 404, "items.errors.notFound", ""},
		{"short, then another currency", []map[string]any{line(usd, 6), line(eur, 1)}, 400, "orders.errors.mixedCurrencies", ""},
		{"other currency, then unknown", []map[string]any{line(usd, 1), line(eur, 1), line(uuid.New(), 1)}, 404, "items.errors.notFound", ""},
	} {
		body := map[string]any{"items": tc.lines}
		resp := c.Do("POST", "/v1/orders", body, "Idempotency-Key", uuid.NewString())
		if resp.Status != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.name, resp.Status, tc.status, resp.Body)
			continue
		}
		e := decodeError(t, resp, tc.status, tc.code)
		if tc.field != "" && !e.hasDetail(tc.field) {
			t.Errorf("%s: details %+v do not name %s", tc.name, e.Details, tc.field)
		}
		if tc.status == 400 && tc.code == "common.errors.validation" && len(e.Details) == 0 {
			t.Errorf("%s: no details", tc.name)
		}
		if got := stocks(); got != before {
			t.Fatalf("%s: stock moved %v → %v", tc.name, before, got)
		}
		if n := r.ordersOf(uid); n != 0 {
			t.Fatalf("%s: %d orders written", tc.name, n)
		}
	}

	// The insufficient-stock error names the item.
	var name struct{ Name string }
	c.Do("GET", "/v1/items/"+usd2.String(), nil).Expect(t, 200).Decode(t, &name)
	e := decodeError(t, c.Do("POST", "/v1/orders", map[string]any{"items": []map[string]any{line(usd2, 4)}},
		"Idempotency-Key", uuid.NewString()), 409, "items.errors.insufficientStock")
	if !strings.Contains(e.Message, name.Name) {
		t.Fatalf("message %q does not name %q", e.Message, name.Name)
	}

	// An order of exactly the stock goes through; a refused key can be reused after a fix.
	key := uuid.NewString()
	c.Do("POST", "/v1/orders", map[string]any{"items": []map[string]any{line(usd, 0)}}, "Idempotency-Key", key).Expect(t, 400)
	var o fullOrder
	c.Do("POST", "/v1/orders", map[string]any{"items": []map[string]any{line(usd, 5), line(usd2, 3)}}, "Idempotency-Key", key).
		Expect(t, 201).Decode(t, &o)
	if o.Total != 5*1000+3*500 || len(o.Items) != 2 || r.stock(usd) != 0 || r.stock(usd2) != 0 {
		t.Fatalf("order of the whole stock: %s (stock %d, %d)", mustJSON(o), r.stock(usd), r.stock(usd2))
	}
	decodeError(t, c.Do("POST", "/v1/orders", map[string]any{"items": []map[string]any{line(usd, 1)}},
		"Idempotency-Key", uuid.NewString()), 409, "items.errors.insufficientStock")
	decodeError(t, c.Do("POST", "/v1/orders", map[string]any{"items": []map[string]any{line(usd, 1)}}), 400,
		"common.errors.idempotencyKeyRequired")
	if n := r.ordersOf(uid); n != 1 {
		t.Fatalf("orders = %d, want 1", n)
	}
}
