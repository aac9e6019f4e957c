package orderdb_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/catalog/catalogdb"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/order/orderdb"
	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// Create is an order's whole transaction in one statement: all of it when every line's stock
// can be taken (with the number in its message and the request's checkpoint), none of it
// otherwise, with the items reported as the reservation found them.
func TestCreateWritesAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, u, a := seed(t) // a: 10 in stock
	b := catalog.Item{ID: uuid.New(), Name: "Scarce", Description: "d", Price: 700, Currency: "usd", Stock: 2}
	gone := catalog.Item{ID: uuid.New(), Name: "Gone", Description: "d", Price: 100, Currency: "usd", Stock: 5}
	euro := catalog.Item{ID: uuid.New(), Name: "Euro", Description: "d", Price: 100, Currency: "eur", Stock: 5}
	for _, it := range []*catalog.Item{&b, &gone, &euro} {
		if err := (catalogdb.Store{}).Insert(ctx, db, it); err != nil {
			t.Fatal(err)
		}
	}
	if err := (catalogdb.Store{}).SoftDelete(ctx, db, gone.ID); err != nil {
		t.Fatal(err)
	}
	idem := idempotency.NewStore(db, "test")
	claim, _, err := idem.Begin(ctx, idempotency.Scope{Owner: u.ID.String(), Method: "POST", Path: "/v1/orders", Key: "k1"}, []byte("fp"))
	if err != nil {
		t.Fatal(err)
	}

	newOrder := func(lines ...order.Line) *order.Order {
		o := &order.Order{ID: uuid.New(), UserID: u.ID, Status: order.Pending, Currency: "usd", Lines: lines}
		for _, l := range lines {
			o.Total += l.Subtotal
		}
		return o
	}
	line := func(it catalog.Item, qty int) order.Line {
		return order.Line{ID: uuid.New(), ItemID: it.ID, Name: it.Name, UnitPrice: it.Price, Quantity: qty, Subtotal: it.Price * int64(qty)}
	}
	create := func(o *order.Order, claim *idempotency.Claim) order.Placement {
		t.Helper()
		msgs, err := outbox.Encode(ctx, outbox.Message{Type: tasks.NotifyUser,
			Payload: tasks.Notify{UserID: u.ID, Event: "order.created", Data: map[string]any{"orderId": o.ID, "number": 0}}})
		if err != nil {
			t.Fatal(err)
		}
		p, err := orderdb.Store{}.Create(ctx, db, o, order.Event{ID: uuid.New(), Actor: u.ID.String(), CorrelationID: "t"},
			msgs, claim.At(order.RecoveryOrderCreated, o.ID))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	type state struct{ orders, outbox, stockA, stockB int }
	now := func() state {
		t.Helper()
		var s state
		for q, dst := range map[string]*int{
			`SELECT count(*) FROM orders`: &s.orders, `SELECT count(*) FROM outbox`: &s.outbox,
			`SELECT stock FROM items WHERE id = '` + a.ID.String() + `'`: &s.stockA,
			`SELECT stock FROM items WHERE id = '` + b.ID.String() + `'`: &s.stockB,
		} {
			if err := db.GetContext(ctx, dst, q); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}

	// One line short, one that could be taken: nothing is written, not even the other line's stock.
	for name, o := range map[string]*order.Order{
		"short":   newOrder(line(a, 3), line(b, 3)),
		"deleted": newOrder(line(a, 3), line(gone, 1)),
		"missing": newOrder(line(a, 3), line(catalog.Item{ID: uuid.New(), Name: "None", Price: 1}, 1)),
		"mixed":   newOrder(line(a, 3), line(euro, 1)),
	} {
		p := create(o, claim)
		if p.Placed {
			t.Fatalf("%s: placed", name)
		}
		if got := now(); got != (state{0, 0, 10, 2}) {
			t.Fatalf("%s: refused order left %+v, want nothing written", name, got)
		}
		if claim.RecoveryPoint != idempotency.Started {
			t.Fatalf("%s: recovery point %q after a refused order", name, claim.RecoveryPoint)
		}
	}
	p := create(newOrder(line(a, 3), line(b, 3)), nil)
	if len(p.Items) != 2 {
		t.Fatalf("refused order reported items %+v, want both", p.Items)
	}
	for _, it := range p.Items {
		if it.ID == b.ID && (it.Stock != 2 || it.Name != "Scarce" || it.Deleted) {
			t.Fatalf("reported %+v for the scarce item", it)
		}
	}

	// Every line available: all of it, priced from the items as locked (not from the names and
	// prices the caller passed), the message numbered and priced, the checkpoint recorded.
	o := newOrder(line(a, 3), line(b, 2))
	o.Lines[0].Name, o.Lines[0].UnitPrice = "stale", 1
	p = create(o, claim)
	if !p.Placed || len(p.Items) != 2 {
		t.Fatalf("order refused or items not reported: %+v", p)
	}
	if got := now(); got != (state{1, 1, 7, 0}) {
		t.Fatalf("placed order left %+v", got)
	}
	if o.Number == 0 || o.CreatedAt.IsZero() {
		t.Fatalf("number %d, created %v not filled", o.Number, o.CreatedAt)
	}
	wantTotal := a.Price*3 + b.Price*2
	var msg struct {
		Number   int64  `db:"number"`
		Total    int64  `db:"total"`
		Currency string `db:"currency"`
		OrderID  string `db:"order_id"`
	}
	if err := db.GetContext(ctx, &msg, `SELECT (payload->'data'->>'number')::bigint AS number,
		(payload->'data'->>'total')::bigint AS total, payload->'data'->>'currency' AS currency,
		payload->'data'->>'orderId' AS order_id FROM outbox`); err != nil ||
		msg.Number != o.Number || msg.Total != wantTotal || msg.Currency != "usd" || msg.OrderID != o.ID.String() {
		t.Fatalf("message carries %+v (%v), want number %d, total %d usd of %s", msg, err, o.Number, wantTotal, o.ID)
	}
	if claim.RecoveryPoint != order.RecoveryOrderCreated || claim.ResourceID == nil || *claim.ResourceID != o.ID {
		t.Fatalf("claim after the order: %q %v", claim.RecoveryPoint, claim.ResourceID)
	}
	var stored string
	if err := db.GetContext(ctx, &stored, `SELECT recovery_point FROM idempotency_keys WHERE key = 'k1' AND resource_id = $1`, o.ID); err != nil || stored != order.RecoveryOrderCreated {
		t.Fatalf("stored recovery point %q (%v)", stored, err)
	}
	got, err := orderdb.Store{}.Get(ctx, db, o.ID)
	if err != nil || len(got.Lines) != 2 || got.Total != wantTotal || got.Currency != "usd" || got.Payment.Status != order.PaymentPending {
		t.Fatalf("stored order %+v (%v)", got, err)
	}
	for i, it := range []catalog.Item{a, b} {
		if l := got.Lines[i]; l.ID != o.Lines[i].ID || l.ItemID != it.ID || l.Name != it.Name || l.UnitPrice != it.Price ||
			l.Subtotal != it.Price*int64(l.Quantity) {
			t.Fatalf("stored line %d %+v, want item %s at %d", i, l, it.Name, it.Price)
		}
	}

	// The statement is the transaction: an error (here a second order with the same id) leaves
	// the stock as it was.
	dup := newOrder(line(a, 1))
	dup.ID = o.ID
	_, err = orderdb.Store{}.Create(ctx, db, dup, order.Event{ID: uuid.New(), Actor: "t", CorrelationID: "t"},
		outbox.Rows{}, (*idempotency.Claim)(nil).At(order.RecoveryOrderCreated, dup.ID))
	if err == nil {
		t.Fatal("second order with the same id: no error")
	}
	if got := now(); got != (state{1, 1, 7, 0}) {
		t.Fatalf("failed statement left %+v", got)
	}
}

// Taking and giving back stock looks the items up by key, also in the plan a prepared
// statement settles on after its first executions: PostgreSQL's generic plan guessed the
// order's lines at 10 rows and hashed the whole catalog to join them, two scans of every
// item per order.
func TestStockIsTakenAndGivenBackWithoutScanningTheCatalog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, u, _ := seed(t)
	if _, err := db.Pool().ExecContext(ctx, `INSERT INTO items (id, name, description, price, currency, stock)
		SELECT gen_random_uuid(), 'Item ' || g, 'd', 100 + g, 'usd', 1000 FROM generate_series(1, 2000) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool().ExecContext(ctx, `ANALYZE items`); err != nil {
		t.Fatal(err)
	}
	var ids []uuid.UUID
	if err := db.Pool().SelectContext(ctx, &ids, `SELECT id FROM items ORDER BY price LIMIT 40`); err != nil {
		t.Fatal(err)
	}
	placeAndRelease := func(q postgres.Querier, a, b uuid.UUID) error {
		o := order.Order{ID: uuid.New(), UserID: u.ID, Status: order.Pending,
			Lines: []order.Line{{ID: uuid.New(), ItemID: a, Quantity: 1}, {ID: uuid.New(), ItemID: b, Quantity: 2}}}
		p, err := orderdb.Store{}.Create(ctx, q, &o, order.Event{ID: uuid.New(), Actor: "t", CorrelationID: "t"},
			outbox.Rows{}, (*idempotency.Claim)(nil).At(order.RecoveryOrderCreated, o.ID))
		if err != nil || !p.Placed {
			return fmt.Errorf("order: %+v %v", p, err)
		}
		return (catalogdb.Store{}).Release(ctx, q, o.Reservations())
	}
	// Outside a transaction the pool prepares the statements before running them; inside
	// one it runs a statement it has not prepared yet as it is, planned for its values.
	if err := placeAndRelease(db, ids[0], ids[1]); err != nil {
		t.Fatal(err)
	}
	err := postgres.WithTx(ctx, db, func(tx *postgres.Tx) error {
		before := testenv.ScansOf(t, tx, "items")
		for i := 0; i < 20; i++ { // a prepared statement's first five runs are planned for their values
			if err := placeAndRelease(tx, ids[2*i], ids[2*i+1]); err != nil {
				return fmt.Errorf("order %d: %w", i, err)
			}
		}
		after := testenv.ScansOf(t, tx, "items")
		if seq, idx := after.Seq-before.Seq, after.Index-before.Index; seq != 0 || idx == 0 {
			return fmt.Errorf("items scanned whole %d times, by index %d times, for 20 orders and their release", seq, idx)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCreateTakesStockGivenBackWhileItWaited: an order that waits for its item's row while a
// release (a cancel) gives stock back takes its quantity from the stock it found once it held the
// row. PostgreSQL checks a row's new version against the table's constraints before it finds that
// the row changed under the statement, so a new stock computed from the row as the statement
// first saw it broke stock >= 0 whenever the order wanted more than that: a 500 for an order
// there was stock for.
func TestCreateTakesStockGivenBackWhileItWaited(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, u, it := seed(t) // 10 in stock
	release, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer release.Rollback()
	if err := (catalogdb.Store{}).Release(ctx, release, []catalog.Reservation{{ItemID: it.ID, Quantity: 5}}); err != nil {
		t.Fatal(err)
	}
	var p order.Placement
	placed := testenv.Blocked(t, db, func(tx *postgres.Tx) error {
		o := order.Order{ID: uuid.New(), UserID: u.ID, Status: order.Pending,
			Lines: []order.Line{{ID: uuid.New(), ItemID: it.ID, Quantity: 12}}}
		var err error
		p, err = orderdb.Store{}.Create(ctx, tx, &o, order.Event{ID: uuid.New(), Actor: "t", CorrelationID: "t"},
			outbox.Rows{}, (*idempotency.Claim)(nil).At(order.RecoveryOrderCreated, o.ID))
		if err != nil {
			return err
		}
		return tx.Commit()
	})
	if err := release.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := placed(); err != nil || !p.Placed {
		t.Fatalf("the order of 12 of 15 in stock: %+v %v", p, err)
	}
	var stock int
	if err := db.GetContext(ctx, &stock, `SELECT stock FROM items WHERE id = $1`, it.ID); err != nil || stock != 3 {
		t.Fatalf("stock %d (%v), want 10 + 5 - 12", stock, err)
	}
}

// A create with a deferred claim takes the request's key in its own statement: at the order's
// recovery point when placed, at Started when refused (for the 4xx to forget it), and when the
// key is in use (a retry, a duplicate) it writes nothing at all, placeable or not.
func TestCreateTakesTheKeyOrWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, u, a := seed(t) // a: 10 in stock
	sc := idempotency.Scope{Owner: u.ID.String(), Method: "POST", Path: "/v1/orders", Key: "deferred"}
	create := func(qty int, claim *idempotency.Claim) (*order.Order, order.Placement) {
		t.Helper()
		o := &order.Order{ID: uuid.New(), UserID: u.ID, Status: order.Pending,
			Lines: []order.Line{{ID: uuid.New(), ItemID: a.ID, Quantity: qty}}}
		p, err := orderdb.Store{}.Create(ctx, db, o, order.Event{ID: uuid.New(), Actor: "t", CorrelationID: "t"},
			outbox.Rows{}, claim.At(order.RecoveryOrderCreated, o.ID))
		if err != nil {
			t.Fatal(err)
		}
		return o, p
	}
	type record struct {
		Point    string    `db:"recovery_point"`
		Resource uuid.UUID `db:"resource_id"`
		State    string    `db:"state"`
		Orders   int       `db:"orders"`
		Stock    int       `db:"stock"`
	}
	now := func() (r record) {
		t.Helper()
		if err := db.GetContext(ctx, &r, `SELECT k.recovery_point, COALESCE(k.resource_id, '`+uuid.Nil.String()+`') AS resource_id, k.state,
			(SELECT count(*) FROM orders) AS orders, (SELECT stock FROM items WHERE id = $1) AS stock
			FROM idempotency_keys k WHERE k.key = 'deferred'`, a.ID); err != nil {
			t.Fatal(err)
		}
		return r
	}

	refused := idempotency.Defer(sc, []byte("fp"))
	if _, p := create(11, refused); p.Placed || p.KeyInUse || len(p.Items) != 1 {
		t.Fatalf("refused order: %+v", p)
	}
	if !refused.Held() || refused.RecoveryPoint != idempotency.Started {
		t.Fatalf("refused order's claim: held %v at %q", refused.Held(), refused.RecoveryPoint)
	}
	if got := now(); got != (record{Point: idempotency.Started, State: "in_flight", Orders: 0, Stock: 10}) {
		t.Fatalf("after a refused order: %+v", got)
	}
	if err := idempotency.NewStore(db, "test").Abandon(ctx, refused); err != nil {
		t.Fatal(err)
	}

	claim := idempotency.Defer(sc, []byte("fp"))
	o, p := create(3, claim)
	if !p.Placed || !claim.Held() || claim.RecoveryPoint != order.RecoveryOrderCreated || *claim.ResourceID != o.ID {
		t.Fatalf("placed: %+v, claim %+v", p, claim)
	}
	if got := now(); got != (record{Point: order.RecoveryOrderCreated, Resource: o.ID, State: "in_flight", Orders: 1, Stock: 7}) {
		t.Fatalf("after the order: %+v", got)
	}

	for _, qty := range []int{1, 11} {
		again := idempotency.Defer(sc, []byte("fp"))
		if _, p := create(qty, again); !p.KeyInUse || p.Placed || again.Held() {
			t.Fatalf("key in use, %d wanted: %+v, held %v", qty, p, again.Held())
		}
		if got := now(); got.Orders != 1 || got.Stock != 7 || got.Resource != o.ID {
			t.Fatalf("a create under a key in use wrote: %+v", got)
		}
	}
}
