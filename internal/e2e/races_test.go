package e2e_test

// Races the API must settle in the database (SPEC §3 Orders, §4, §7): customers racing for the
// last units of stock, one Idempotency-Key sent many times at once, ship racing cancel, and
// orders locking the same items in different orders.

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// customers signs up n customers (each with a session of their own).
func (s *stack) customers(n int) ([]uuid.UUID, []*testenv.Client) {
	ids, clients := make([]uuid.UUID, n), make([]*testenv.Client, n)
	for i := range n {
		ids[i], clients[i] = s.customer()
	}
	return ids, clients
}

// TestLastUnitsOfStock: 30 customers race for the last 7 units of an item (one each), and 30
// more for the last 10 units of another (1 to 3 each). Exactly the stock is sold, never more.
func TestLastUnitsOfStock(t *testing.T) {
	t.Parallel()
	s := newStack(t, noRelay, noWorker)
	const racers = 30
	_, clients := s.customers(racers)

	type answer struct {
		qty    int
		status int
		code   string
		err    error
		body   string
	}
	race := func(item uuid.UUID, qty func(i int) int) []answer {
		answers := make([]answer, racers)
		parallel(racers, func(i int) {
			q := qty(i)
			r, err := clients[i].Send("POST", "/v1/orders", map[string]any{"items": []map[string]any{{"itemId": item, "quantity": q}}},
				"Idempotency-Key", uuid.NewString())
			answers[i] = answer{qty: q, status: r.Status, code: errorCode(r), err: err, body: string(r.Body)}
		})
		for i, a := range answers {
			if a.err != nil {
				t.Fatalf("racer %d: %v", i, a.err)
			}
			if a.status != 201 && (a.status != 409 || a.code != "items.errors.insufficientStock") {
				t.Fatalf("racer %d: status %d code %q, want 201 or 409 items.errors.insufficientStock\n%s", i, a.status, a.code, a.body)
			}
		}
		return answers
	}
	sold := func(item uuid.UUID) (orders, units int) {
		var got struct {
			Orders int `db:"orders"`
			Units  int `db:"units"`
		}
		if err := s.db.Get(&got, `SELECT count(DISTINCT order_id) AS orders, coalesce(sum(quantity), 0) AS units
			FROM order_lines WHERE item_id = $1`, item); err != nil {
			t.Fatal(err)
		}
		return got.Orders, got.Units
	}

	// One unit each: exactly N winners.
	const n = 7
	item := s.item(n, 500)
	won := 0
	for _, a := range race(item, func(int) int { return 1 }) {
		if a.status == 201 {
			won++
		}
	}
	if won != n {
		t.Fatalf("%d orders succeeded, want %d", won, n)
	}
	s.wantStock(item, 0)
	if orders, units := sold(item); orders != n || units != n {
		t.Fatalf("order lines: %d orders, %d units; want %d and %d", orders, units, n, n)
	}

	// 1 to 3 units each: what was sold and what is left add up to the stock, and every loser
	// asked for more than was left at the end (stock only falls during the race).
	const m = 10
	item2 := s.item(m, 300)
	answers := race(item2, func(int) int { return 1 + rand.IntN(3) })
	won, units := 0, 0
	for _, a := range answers {
		if a.status == 201 {
			won++
			units += a.qty
		}
	}
	left := s.stock(item2)
	if left < 0 || int(left)+units != m {
		t.Fatalf("sold %d units in %d orders, %d left; want sold + left = %d", units, won, left, m)
	}
	for i, a := range answers {
		if a.status == 409 && int64(a.qty) <= left {
			t.Fatalf("racer %d was refused %d units while %d are still in stock", i, a.qty, left)
		}
	}
	if orders, lineUnits := sold(item2); orders != won || lineUnits != units {
		t.Fatalf("order lines: %d orders, %d units; the API created %d orders of %d units", orders, lineUnits, won, units)
	}
	if n := s.count(`SELECT count(*) FROM orders`); n != won+7 {
		t.Fatalf("orders = %d, want %d", n, won+7)
	}
}

// TestIdempotentCreateSentConcurrently: 20 identical POST /v1/orders with one Idempotency-Key
// at once make one order and one stock reservation; every answer is that order (first or
// replayed) or 409 idempotencyKeyInFlight.
func TestIdempotentCreateSentConcurrently(t *testing.T) {
	t.Parallel()
	s := newStack(t, noRelay, noWorker)
	item := s.item(100, 1999)
	uid, c := s.customer()
	key := "race-" + uuid.NewString()
	body := map[string]any{"items": []map[string]any{{"itemId": item, "quantity": 3}}}

	const n = 20
	type answer struct {
		status   int
		replayed string
		code     string
		id       uuid.UUID
		err      error
		body     string
	}
	answers := make([]answer, n)
	parallel(n, func(i int) {
		r, err := c.Send("POST", "/v1/orders", body, "Idempotency-Key", key)
		var o struct{ ID uuid.UUID }
		if r.Status == 201 {
			err = jsonErr(err, r.Body, &o)
		}
		answers[i] = answer{status: r.Status, replayed: r.Header.Get("Idempotent-Replayed"), code: errorCode(r), id: o.ID, err: err, body: string(r.Body)}
	})
	first, replays, inFlight := 0, 0, 0
	var orderID uuid.UUID
	for i, a := range answers {
		switch {
		case a.err != nil:
			t.Fatalf("request %d: %v", i, a.err)
		case a.status == 201 && a.replayed == "":
			first++
		case a.status == 201 && a.replayed == "true":
			replays++
		case a.status == 409 && a.code == "common.errors.idempotencyKeyInFlight":
			inFlight++
			continue
		default:
			t.Fatalf("request %d: status %d code %q replayed %q\n%s", i, a.status, a.code, a.replayed, a.body)
		}
		if orderID == uuid.Nil {
			orderID = a.id
		}
		if a.id != orderID {
			t.Fatalf("request %d answered order %s, another answered %s", i, a.id, orderID)
		}
	}
	if first != 1 {
		t.Fatalf("%d first (not replayed) 201 answers, want exactly 1 (%d replays, %d in flight)", first, replays, inFlight)
	}
	t.Logf("1 created, %d replayed, %d in flight", replays, inFlight)

	if n := s.count(`SELECT count(*) FROM orders WHERE user_id = $1`, uid); n != 1 {
		t.Fatalf("orders of the customer = %d, want 1", n)
	}
	s.wantStock(item, 97, "one reservation of 3")
	if n := s.count(`SELECT count(*) FROM outbox WHERE type = 'notify:user' AND payload->>'event' = 'order.created'`); n != 1 {
		t.Fatalf("order.created outbox rows = %d, want 1", n)
	}
	if n := len(s.stripe.Calls("POST", "/v1/payment_intents")); n != 1 {
		t.Fatalf("PaymentIntents created = %d, want 1", n)
	}
	// Once settled, the key replays the order.
	r := c.Do("POST", "/v1/orders", body, "Idempotency-Key", key).Expect(t, 201)
	var o struct{ ID uuid.UUID }
	r.Decode(t, &o)
	if r.Header.Get("Idempotent-Replayed") != "true" || o.ID != orderID {
		t.Fatalf("replay after the race: header %q, order %s; want true and %s", r.Header.Get("Idempotent-Replayed"), o.ID, orderID)
	}
}

func jsonErr(err error, body []byte, v any) error {
	if err != nil {
		return err
	}
	return json.Unmarshal(body, v)
}

// TestShipRacesCancel: ship and cancel are sent at once for each of 12 PROCESSED orders. Never
// both: either the order ships and the cancel is refused, or the cancel is accepted, the ship
// refused, and the order ends CANCELED with its money back and its stock restored.
func TestShipRacesCancel(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	const orders = 12
	item := s.item(100, 450)
	uid, c := s.customer()
	list := make([]orderView, orders)
	for i := range list {
		list[i] = s.order(c, 2, item)
		s.pay(list[i])
	}
	for _, o := range list {
		s.waitStatus(o.ID, "PROCESSED")
	}
	shipper, financial := s.staff("shipper"), s.staff("financial")

	type pair struct{ ship, cancel testenv.Response }
	results := make([]pair, orders)
	var mu sync.Mutex
	var errs []error
	parallel(2*orders, func(i int) {
		o := list[i/2]
		var r testenv.Response
		var err error
		if i%2 == 0 {
			r, err = shipper.Send("PATCH", "/v1/admin/orders/"+o.ID.String()+"/ship",
				map[string]string{"trackingNumber": "TRK-" + o.ID.String()[:8], "carrier": "UPS"})
		} else {
			r, err = financial.Send("PATCH", "/v1/admin/orders/"+o.ID.String()+"/cancel", map[string]string{"reason": "race"})
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
		}
		if i%2 == 0 {
			results[i/2].ship = r
		} else {
			results[i/2].cancel = r
		}
	})
	if len(errs) > 0 {
		t.Fatal(errs)
	}

	shipped := 0
	for i, o := range list {
		r := results[i]
		switch {
		case r.ship.Status == 200 && r.cancel.Status == 409:
			if code := errorCode(r.cancel); code != "orders.errors.badPreconditions" {
				t.Fatalf("order %d: cancel after ship refused with %q", i, code)
			}
			shipped++
			if st, action := s.status(o.ID); st != "SHIPPED" || action != "" {
				t.Fatalf("order %d: ship won but the order is %s (pending %q)", i, st, action)
			}
		case r.cancel.Status == 202 && r.ship.Status == 409:
			if code := errorCode(r.ship); code != "orders.errors.actionPending" && code != "orders.errors.badPreconditions" {
				t.Fatalf("order %d: ship after cancel refused with %q", i, code)
			}
			s.waitStatus(o.ID, "CANCELED")
		default:
			t.Fatalf("order %d: ship %d, cancel %d — exactly one must win\nship: %s\ncancel: %s",
				i, r.ship.Status, r.cancel.Status, r.ship.Body, r.cancel.Body)
		}
	}
	t.Logf("%d shipped, %d canceled", shipped, orders-shipped)
	s.quiet()

	for i, o := range list {
		s.assertNoRepeatedTransition(o.ID)
		shippedN, canceledN := s.transitions(o.ID, "SHIPPED"), s.transitions(o.ID, "CANCELED")
		refunds := s.count(`SELECT count(*) FROM refunds WHERE order_id = $1`, o.ID)
		st, _ := s.status(o.ID)
		switch st {
		case "SHIPPED":
			if shippedN != 1 || canceledN != 0 || refunds != 0 || s.notifications(uid, o.ID, notification.EventOrderCanceled) != 0 {
				t.Fatalf("order %d SHIPPED: %d shipped, %d canceled transitions, %d refunds", i, shippedN, canceledN, refunds)
			}
		case "CANCELED":
			if shippedN != 0 || canceledN != 1 || refunds != 1 || s.notifications(uid, o.ID, notification.EventOrderCanceled) != 1 {
				t.Fatalf("order %d CANCELED: %d shipped, %d canceled transitions, %d refunds", i, shippedN, canceledN, refunds)
			}
		default:
			t.Fatalf("order %d ended %s", i, st)
		}
	}
	if got, want := s.stock(item), int64(100-2*shipped); got != want {
		t.Fatalf("stock = %d, want %d (only the canceled orders' units back)", got, want)
	}
}

// TestOrdersOverSharedItemsDoNotDeadlock: orders naming the same five items in different
// orders, placed at once while the worker cancels other orders of the same items (releasing
// their stock), all succeed: rows are locked in one global order, so nothing deadlocks.
func TestOrdersOverSharedItemsDoNotDeadlock(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	const stock = 1000
	items := make([]uuid.UUID, 5)
	for i := range items {
		items[i] = s.item(stock, int64(100+i))
	}
	_, clients := s.customers(4)
	shuffled := func() []map[string]any {
		lines := make([]map[string]any, len(items))
		for i, p := range rand.Perm(len(items)) {
			lines[i] = map[string]any{"itemId": items[p], "quantity": 1 + rand.IntN(3)}
		}
		return lines
	}
	// Orders to cancel during the race.
	const cancels, creates = 8, 24
	toCancel := make([]uuid.UUID, cancels)
	for i := range toCancel {
		var o struct{ ID uuid.UUID }
		clients[i%len(clients)].Do("POST", "/v1/orders", map[string]any{"items": shuffled()}, "Idempotency-Key", uuid.NewString()).
			Expect(t, 201).Decode(t, &o)
		toCancel[i] = o.ID
	}
	before := make([]int64, len(items))
	for i, id := range items {
		before[i] = s.stock(id)
	}
	financial := s.staff("financial")

	bodies := make([][]map[string]any, creates)
	for i := range bodies {
		bodies[i] = shuffled()
	}
	type answer struct {
		status int
		err    error
		body   string
	}
	answers := make([]answer, creates+cancels)
	parallel(creates+cancels, func(i int) {
		var r testenv.Response
		var err error
		if i < creates {
			r, err = clients[i%len(clients)].Send("POST", "/v1/orders", map[string]any{"items": bodies[i]}, "Idempotency-Key", uuid.NewString())
		} else {
			r, err = financial.Send("PATCH", "/v1/admin/orders/"+toCancel[i-creates].String()+"/cancel", nil)
		}
		answers[i] = answer{status: r.Status, err: err, body: string(r.Body)}
	})
	for i, a := range answers {
		want := 201
		if i >= creates {
			want = 202
		}
		if a.err != nil || a.status != want {
			t.Fatalf("request %d: status %d (want %d), err %v\n%s", i, a.status, want, a.err, a.body)
		}
	}
	for _, id := range toCancel {
		s.waitStatus(id, "CANCELED")
	}
	// Every unit is accounted for: the new orders took theirs, the canceled gave theirs back.
	for i, id := range items {
		want := before[i]
		for _, b := range bodies {
			for _, l := range b {
				if l["itemId"] == id {
					want -= int64(l["quantity"].(int))
				}
			}
		}
		var canceled int64
		if err := s.db.Get(&canceled, `SELECT coalesce(sum(quantity), 0) FROM order_lines WHERE item_id = $1 AND order_id = ANY($2)`,
			id, uuidArray(toCancel)); err != nil {
			t.Fatal(err)
		}
		want += canceled
		if got := s.stock(id); got != want {
			t.Fatalf("item %d: stock %d, want %d", i, got, want)
		}
	}
}

func uuidArray(ids []uuid.UUID) string {
	out := "{"
	for i, id := range ids {
		if i > 0 {
			out += ","
		}
		out += id.String()
	}
	return out + "}"
}

// TestAccountDeletedWhileItsCustomerIsCreated: the user deletes the account while the Stripe
// Customer of its sign-up is being created. The delete task waits for the create (a user's
// customer tasks hold the user's lock); the create, finding the user deleted after its Stripe
// call, deletes the customer it made rather than leave the person's data at Stripe, and the
// delete task then finds it deleted (Stripe answers 404 to a second delete; stripe-mock 200).
func TestAccountDeletedWhileItsCustomerIsCreated(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.quiesce()
	r.stripe.Gather(2) // holds the customer create; no second call comes
	uid, c := r.customer()
	testenv.Eventually(t, 30*time.Second, "the customer create at Stripe", func() bool { return r.stripe.Held() == 1 })
	c.Do("DELETE", "/v1/users/me", nil).Expect(t, 204)
	// Time for the delete task to be handed off and to try (its wait for the lock gives way
	// after 6 s, well within the held call's time).
	time.Sleep(time.Second)
	if n := r.obs.outcomes(tasks.CustomerDelete)["success"]; n != 0 || len(r.stripe.Calls("DELETE", "/v1/customers/")) != 0 {
		t.Fatalf("the delete task ran (%d) while the create held the user", n)
	}

	r.stripe.Gather(0)
	r.quiesce()
	var customer string
	if err := r.db.Get(&customer, `SELECT COALESCE(stripe_customer_id, '') FROM users WHERE id = $1`, uid); err != nil || customer == "" {
		t.Fatalf("customer id %q (%v), want the one created", customer, err)
	}
	deletes := r.stripe.Calls("DELETE", "/v1/customers/")
	if len(deletes) == 0 || deletes[0].Status != 200 {
		t.Fatalf("customer deletes at Stripe: %+v, want %s's", deletes, customer)
	}
	for _, d := range deletes {
		if d.Path != "/v1/customers/"+customer {
			t.Fatalf("customer deletes at Stripe: %+v, want only %s's", deletes, customer)
		}
	}
	if got := r.obs.outcomes(tasks.CustomerDelete); got["success"] != 1 || got["failed"] != 0 {
		t.Fatalf("delete task outcomes %v, want one success", got)
	}
}

// TestACustomerMadeByACreateThatDiedGoesWithTheAccount: the customer create reached Stripe and
// its worker died before storing the id (here: every answer lost); the user then deleted the
// account, and its delete task found no customer to delete. Either task, run again, sends the
// create again under the user's key, which Stripe (and the proxy) answers with the customer the
// first made, and deletes it: no customer is left at Stripe for a deleted account.
func TestACustomerMadeByACreateThatDiedGoesWithTheAccount(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.pauseWorker()
	customers := r.assemble(r.rdb, r.stripe.URL, r.log).Customers
	ctx := context.Background()
	for _, run := range []struct {
		name  string
		again func(context.Context, uuid.UUID) error
	}{{"the delete task", customers.Delete}, {"the create task", customers.Create}} {
		uid, c := r.customer()
		key := "user-" + uid.String() + "-customer"
		r.stripe.Fail("POST", "/v1/customers", testenv.Fault{Status: 500, Type: "api_error", Message: "lost",
			Times: stripeTriesPerCall, Forward: true})
		if err := customers.Create(ctx, uid); err == nil {
			t.Fatal("a create whose answers were lost reported no error")
		}
		c.Do("DELETE", "/v1/users/me", nil).Expect(t, 204)
		if err := run.again(ctx, uid); err != nil {
			t.Fatalf("%s, run again: %v", run.name, err)
		}
		var customer string
		if err := r.db.Get(&customer, `SELECT COALESCE(stripe_customer_id, '') FROM users WHERE id = $1`, uid); err != nil || customer == "" {
			t.Fatalf("%s: customer id %q (%v), want the one the create got back", run.name, customer, err)
		}
		var creates []testenv.Call
		for _, call := range r.stripe.Calls("POST", "/v1/customers") {
			if call.IdempotencyKey == key {
				creates = append(creates, call)
			}
		}
		if len(creates) != stripeTriesPerCall+1 || creates[0].Object != customer {
			t.Fatalf("%s: creates under %s %+v, want the create sent again, answered with the customer the first made (%s)", run.name, key, creates, customer)
		}
		if deletes := r.stripe.Calls("DELETE", "/v1/customers/"+customer); len(deletes) != 1 || deletes[0].Status != 200 {
			t.Fatalf("%s: deletes %+v, want the customer the first create made deleted", run.name, deletes)
		}
	}
}

// TestARestoredAccountKeepsItsCustomer: an account deleted and restored (in SQL, the way
// docs/decisions.md gives for a lost superadmin) before its deletion's customer task ran keeps
// its Stripe Customer: the task finds the user live and deletes nothing.
func TestARestoredAccountKeepsItsCustomer(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	uid, c := r.customer()
	r.quiesce()
	var customer string
	if err := r.db.Get(&customer, `SELECT COALESCE(stripe_customer_id, '') FROM users WHERE id = $1`, uid); err != nil || customer == "" {
		t.Fatalf("customer id %q (%v), want one", customer, err)
	}
	r.pauseRelay()
	c.Do("DELETE", "/v1/users/me", nil).Expect(t, 204)
	if _, err := r.db.Exec(`UPDATE users SET deleted_at = NULL WHERE id = $1`, uid); err != nil {
		t.Fatal(err)
	}
	r.resumeRelay()
	r.quiesce()
	if got := r.obs.outcomes(tasks.CustomerDelete); got["success"] != 1 {
		t.Fatalf("delete task outcomes %v, want it run once", got)
	}
	if deletes := r.stripe.Calls("DELETE", "/v1/customers/"); len(deletes) != 0 {
		t.Fatalf("the restored account's customer was deleted at Stripe: %+v", deletes)
	}
}

// TestCustomerCreateRetriedAfterTheAccountChanged: the Stripe customer create went through but
// its answer was lost, and the user renamed themselves before the retry. Stripe refuses a key
// sent again with other parameters (the proxy keeps that rule): the retry still gets the
// customer made under its key, stores it and gives it the account's details as they are now.
func TestCustomerCreateRetriedAfterTheAccountChanged(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.pauseWorker()
	uid, c := r.customer()
	customers := r.assemble(r.rdb, r.stripe.URL, r.log).Customers
	ctx := context.Background()
	r.stripe.Fail("POST", "/v1/customers", testenv.Fault{Status: 500, Type: "api_error", Message: "lost",
		Times: stripeTriesPerCall, Forward: true})
	if err := customers.Create(ctx, uid); err == nil {
		t.Fatal("a create whose answers were lost reported no error")
	}
	c.Do("PATCH", "/v1/users/me", map[string]any{"name": "Renamed Meanwhile"}).Expect(t, 200)
	if err := customers.Create(ctx, uid); err != nil {
		t.Fatalf("the create's retry: %v", err)
	}

	var customer string
	if err := r.db.Get(&customer, `SELECT COALESCE(stripe_customer_id, '') FROM users WHERE id = $1`, uid); err != nil || customer == "" {
		t.Fatalf("customer id %q (%v), want the one created", customer, err)
	}
	var creates []testenv.Call // of this user: another user's, made before the worker paused, may be there too
	for _, call := range r.stripe.Calls("POST", "/v1/customers") {
		if call.Path == "/v1/customers" && call.Form.Get("metadata[user_id]") == uid.String() {
			creates = append(creates, call)
		}
	}
	if len(creates) != stripeTriesPerCall+1 || creates[len(creates)-1].Status != 200 {
		t.Fatalf("customer creates: %+v", creates)
	}
	updates := r.stripe.Calls("POST", "/v1/customers/"+customer)
	if len(updates) != 1 || updates[0].Status != 200 || updates[0].Form.Get("name") != "Renamed Meanwhile" {
		t.Fatalf("customer updates: %+v, want one with the new name", updates)
	}

	// The customer stored, its update failed: the create's retry sends the update again.
	other, _ := r.customer()
	r.stripe.Fail("POST", "/v1/customers/", testenv.Fault{Status: 500, Type: "api_error", Message: "down", Times: stripeTriesPerCall})
	if err := customers.Create(ctx, other); err == nil {
		t.Fatal("a create whose update failed reported no error")
	}
	if err := customers.Create(ctx, other); err != nil {
		t.Fatalf("the create's retry: %v", err)
	}
	if err := r.db.Get(&customer, `SELECT COALESCE(stripe_customer_id, '') FROM users WHERE id = $1`, other); err != nil || customer == "" {
		t.Fatalf("customer id %q (%v)", customer, err)
	}
	updates = r.stripe.Calls("POST", "/v1/customers/"+customer)
	if len(updates) != stripeTriesPerCall+1 || updates[stripeTriesPerCall].Status != 200 || updates[stripeTriesPerCall].Form.Get("email") == "" {
		t.Fatalf("customer updates: %+v, want the failed one, then one that went through", updates)
	}
}

// Staff asking for a refund while the worker records a late payment's refund wait for the
// order's lock, and then decide on the refund as the worker committed it: nothing is owed any
// more, so the request is refused. Before, the waiting read saw the order after the worker's
// commit and its refund before it: the request was accepted, and the order kept a pending
// refund that no task would ever clear.
func TestARefundAskedWhileTheLateRefundCommitsIsRefused(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	_, c := r.customer()
	o := r.canceled(c, 1, r.item(10, 700))
	r.pauseWorker()
	r.paid(o) // late: the order owes it back, and order:refund waits for the worker
	if st, action := r.status(o.ID); st != "CANCELED" || action != "refund" {
		t.Fatalf("order %s/%q after a late payment, want CANCELED with a refund pending", st, action)
	}

	// The worker's commit, held open: the refund recorded with the order's row.
	held := r.holdOrder(o.ID)
	ctx := context.Background()
	refund := order.Refund{Kind: order.RefundLatePayment, RefundID: "re_" + uuid.NewString(), Amount: o.Total,
		Currency: o.Currency, Status: "succeeded", Method: order.RefundByStripe}
	if err := (orderdb.Store{}).PutRefund(ctx, held, o.ID, refund); err != nil {
		t.Fatal(err)
	}
	if _, err := held.ExecContext(ctx, `UPDATE orders SET pending_action = NULL, updated_at = now() WHERE id = $1`, o.ID); err != nil {
		t.Fatal(err)
	}

	answer := later(t, r.as("financial"), "PATCH", "/v1/admin/orders/"+o.ID.String()+"/refund", map[string]string{"reason": "asked twice"})
	r.waitForOrderLock("the staff refund")
	if err := held.Commit(); err != nil {
		t.Fatal(err)
	}
	resp := <-answer
	if resp.Status != 409 || errorCode(resp) != "orders.errors.badPreconditions" {
		t.Fatalf("refund asked after the late refund committed: %d %s", resp.Status, resp.Body)
	}
	r.resumeWorker()
	r.quiesce()
	if st, action := r.status(o.ID); st != "CANCELED" || action != "" {
		t.Fatalf("order %s/%q, want CANCELED with nothing pending", st, action)
	}
	if got := r.refunds(o.ID); len(got) != 1 || got[0].RefundID != refund.RefundID {
		t.Fatalf("refunds %+v, want the late payment's alone", got)
	}
}

// A staff refund asked while the webhook that fails the order's refund commits waits for it and
// is taken: the payment is owed back. Before, the webhook changed the refund without the
// order's lock; the staff command waited only on its timeline insert, read the refund as still
// succeeded and answered 409, though the money was owed.
func TestARefundAskedWhileItsFailureCommitsIsTaken(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	_, c := r.customer()
	o := r.processed(c, 1, r.item(10, 900))
	path := "/v1/admin/orders/" + o.ID.String()
	r.as("financial").Do("PATCH", path+"/refund", nil).Expect(t, 202)
	r.waitStatus(o.ID, "REFUNDED")
	r.quiesce()
	first := r.get(o.ID).Refund

	// The webhook's commit held open: a transaction of the test's holds its event's id.
	ctx := context.Background()
	id := eventID()
	held, err := r.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Rollback()
	if _, err := held.ExecContext(ctx, `INSERT INTO stripe_events (id, type, outcome) VALUES ($1, 'refund.updated', 'held')`, id); err != nil {
		t.Fatal(err)
	}
	hooked := r.webhookLater(payment.TestEvent{ID: id, Type: payment.EventRefundUpdated, RefundID: first.RefundID, RefundStatus: "failed",
		PaymentIntentID: *o.Payment.PaymentIntentID, Amount: first.Amount, Currency: "usd"})
	testenv.Eventually(t, 30*time.Second, "the webhook waiting for its event's id", func() bool {
		return r.count(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO stripe_events%'`) == 1
	})
	answer := later(t, r.as("financial"), "PATCH", path+"/refund", map[string]string{"reason": "card replaced"})
	r.waitForOrderLock("the staff refund")
	if err := held.Rollback(); err != nil {
		t.Fatal(err)
	}
	(<-hooked).Expect(t, 200)
	resp := <-answer
	if resp.Status != 202 {
		t.Fatalf("refund asked while the refund's failure committed: %d %s", resp.Status, resp.Body)
	}
	r.quiesce()
	got := r.get(o.ID)
	if got.Status != "REFUNDED" || deref(got.PendingAction) != "" || got.Refund == nil || got.Refund.Status != "succeeded" ||
		got.Refund.RefundID == first.RefundID {
		t.Fatalf("order %s/%q refund %s, want REFUNDED with a new refund made", got.Status, deref(got.PendingAction), mustJSON(got.Refund))
	}
}

// A Stripe outage that outlasts a customer sync's retries does not lose the sync: a task with
// nothing to compensate its failure waits it out like an outage of ours, and runs once Stripe
// answers. Before, it failed for good after its fourth attempt and its row was acknowledged:
// the account had no Stripe customer until its next change (a deleted account's details stayed
// at Stripe for good).
func TestCustomerSyncWaitsOutAStripeOutage(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.quiesce() // the demo accounts' syncs done
	creates := func() []testenv.Call {
		var out []testenv.Call
		for _, c := range r.stripe.Calls("POST", "/v1/customers") {
			if c.Path == "/v1/customers" {
				out = append(out, c)
			}
		}
		return out
	}
	before, seen := r.obs.outcomes(tasks.CustomerCreate), len(creates())
	failures := (maxRetry + 2) * stripeTriesPerCall // one attempt more than the task has
	r.stripe.Fail("POST", "/v1/customers", testenv.Fault{Status: 500, Type: "api_error", Message: "down", Times: failures})
	uid, _ := r.customer()
	testenv.Eventually(t, 90*time.Second, "the customer synced once Stripe answered", func() bool {
		return r.count(`SELECT count(*) FROM users WHERE id = $1 AND stripe_customer_id IS NOT NULL`, uid) == 1 &&
			r.obs.outcomes(tasks.CustomerCreate)["success"] > before["success"]
	})
	got := r.obs.outcomes(tasks.CustomerCreate)
	if got["failed"] != before["failed"] || got["success"] != before["success"]+1 || got["retry"] != before["retry"] ||
		got["waited"]-before["waited"] < maxRetry+1 {
		t.Fatalf("customer create attempts %v (before the outage %v), want more waits than the task has retries, none counted, then one success", got, before)
	}
	if calls := creates()[seen:]; len(calls) != failures+1 || calls[failures].Status != 200 {
		t.Fatalf("customer creates: %+v, want %d failed and one that went through", calls, failures)
	}
}
