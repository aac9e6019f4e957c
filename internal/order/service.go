package order

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/outbox"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

// Filter selects orders in lists.
type Filter struct {
	UserID   uuid.UUID
	Status   Status
	From, To *time.Time // createdAt bounds, inclusive; nil for none
	// RefundOwed keeps the orders that hold a payment they must still return (their refund
	// failed or was canceled at Stripe, or a late payment not refunded yet).
	RefundOwed bool
}

// Store is the persistence of orders (implemented by orderdb).
type Store interface {
	Get(ctx context.Context, db postgres.Querier, id uuid.UUID) (Order, error)
	GetAny(ctx context.Context, db postgres.Querier, id uuid.UUID) (Order, error)
	Lock(ctx context.Context, tx postgres.Querier, id uuid.UUID) (Order, error)
	GetByIntent(ctx context.Context, db postgres.Querier, intentID string) (Order, error)
	LockByIntent(ctx context.Context, tx postgres.Querier, intentID string) (Order, error)
	LockByRefund(ctx context.Context, tx postgres.Querier, refundID string) (Order, error)
	List(ctx context.Context, db postgres.Querier, f Filter, page cursor.Request) ([]Order, error)
	Create(ctx context.Context, db postgres.Querier, o *Order, ev Event, msgs outbox.Rows, checkpoint idempotency.Point) (Placement, error)
	Save(ctx context.Context, tx postgres.Querier, o *Order, c Change) error
	AddEvent(ctx context.Context, tx sqlx.ExecerContext, e Event) error
	Events(ctx context.Context, db postgres.Querier, orderID uuid.UUID, page cursor.Request) ([]Event, error)
	LastEvent(ctx context.Context, db postgres.Querier, orderID uuid.UUID, types ...string) (Event, error)
	SetIntent(ctx context.Context, db postgres.Querier, orderID uuid.UUID, intentID, clientSecret, status string, done idempotency.Completion) (bool, error)
	AdoptIntent(ctx context.Context, tx sqlx.ExecerContext, orderID uuid.UUID, intentID string) error
	PutRefund(ctx context.Context, tx sqlx.ExecerContext, orderID uuid.UUID, r Refund) error
	SetRefundStatus(ctx context.Context, tx sqlx.ExecerContext, refundID, status string) (bool, error)
	UnsettledRefunds(ctx context.Context, db postgres.Querier, before time.Time, limit int) ([]UnsettledRefund, error)
	RefundLookedUp(ctx context.Context, db postgres.Querier, refundID string, at time.Time) error
	SoftDelete(ctx context.Context, tx sqlx.ExecerContext, id uuid.UUID) error
	PendingBefore(ctx context.Context, db postgres.Querier, before time.Time, after *PendingOrder, limit int) ([]PendingOrder, error)
	Stuck(ctx context.Context, db postgres.Querier, before time.Time, limit int) ([]StuckOrder, error)
	RecordStripeEvent(ctx context.Context, tx sqlx.ExecerContext, id, typ, outcome string) (bool, error)
}

// Change is what Store.Save writes with an order's new state, all of it only if the order still
// has the status and pending action it was read with.
type Change struct {
	Was       Status
	WasAction Action
	Event     *Event       // the timeline entry, or nil
	Paid      bool         // the payment changed
	Msgs      outbox.Rows  // the messages announcing the change
	Stripe    *StripeEvent // the webhook event behind the change, recorded with it
}

// StripeEvent is a webhook event as recorded, with what handling it did.
type StripeEvent struct{ ID, Type, Outcome string }

// Stock reserves and releases item quantities (implemented by catalogdb).
type Stock interface {
	Release(ctx context.Context, tx sqlx.ExecerContext, rs []catalog.Reservation) error
}

// Placement is the outcome of Store.Create.
type Placement struct {
	Placed   bool                   // false: the order could not be placed, and nothing was written
	Items    []catalog.ReservedItem // the items as the statement found them
	Customer string                 // the buyer's Stripe Customer id ("" while none is known)
	KeyInUse bool                   // the statement was to take the request's key, held by another record: nothing was written
}

// Customers finds the Stripe Customer of a user ("" while none is known).
type Customers interface {
	StripeCustomerID(ctx context.Context, userID uuid.UUID) (string, error)
}

// Service runs every command on orders: the API's, the webhook's and the worker's.
type Service struct {
	db        *postgres.DB
	store     Store
	stock     Stock
	cache     *catalog.Cache
	gateway   payment.Gateway
	idem      *idempotency.Store
	customers Customers
	wake      *outbox.Waker
	log       *slog.Logger
}

// NewService wires the orders service.
func NewService(db *postgres.DB, store Store, stock Stock, cache *catalog.Cache, gateway payment.Gateway,
	idem *idempotency.Store, customers Customers, wake *outbox.Waker, log *slog.Logger) *Service {
	return &Service{db: db, store: store, stock: stock, cache: cache, gateway: gateway, idem: idem,
		customers: customers, wake: wake, log: log}
}

// Get returns an order that is not deleted.
func (s *Service) Get(ctx context.Context, id uuid.UUID) (Order, error) {
	return s.store.Get(ctx, s.db, id)
}

// GetOwned returns the caller's own order; another user's answers exactly like a missing one.
func (s *Service) GetOwned(ctx context.Context, userID, id uuid.UUID) (Order, error) {
	o, err := s.store.Get(ctx, s.db, id)
	if err != nil {
		return Order{}, err
	}
	if o.UserID != userID {
		return Order{}, ErrNotFound
	}
	return o, nil
}

// List returns a page of orders.
func (s *Service) List(ctx context.Context, f Filter, page cursor.Request) (cursor.Page[Order], error) {
	rows, err := s.store.List(ctx, s.db, f, page)
	if err != nil {
		return cursor.Page[Order]{}, err
	}
	return cursor.NewPage(rows, page.Limit, func(o Order) (time.Time, string) { return o.CreatedAt, o.ID.String() }), nil
}

// Events returns a page of an order's timeline, oldest first.
func (s *Service) Events(ctx context.Context, id uuid.UUID, page cursor.Request) (cursor.Page[Event], error) {
	rows, err := s.store.Events(ctx, s.db, id, page)
	if err != nil {
		return cursor.Page[Event]{}, err
	}
	return cursor.NewPage(rows, page.Limit, func(e Event) (time.Time, string) { return e.CreatedAt, e.ID.String() }), nil
}

// change is one command on one order inside a transaction: it locks the order, lets mutate
// change it, then persists the change as a compare-and-set with its timeline event, its
// payment (when mutate changed o.Payment) and its outbox messages. mutate may write other rows
// of the order's aggregate with tx (refund, stock); it returns the event to append (nil for
// none) and the messages to send.
type change func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error)

// apply runs a change in its own transaction and returns the order as saved.
func (s *Service) apply(ctx context.Context, id uuid.UUID, mutate change) (Order, error) {
	var o Order
	err := s.wake.InTx(ctx, func(tx *postgres.Tx) error {
		var err error
		o, err = s.applyTx(ctx, tx, id, mutate)
		return err
	})
	return o, err
}

// RecoveryOrderChanged is the idempotency recovery point of an order command whose change
// committed.
const RecoveryOrderChanged = "order_changed"

// applyOnce is apply for a request under an idempotency claim (nil without a key). The
// checkpoint commits with the change, so a retry after a crash that lost the stored response
// finds it and answers with the order as it is now, where trying the change again would be
// refused (the order has moved on).
func (s *Service) applyOnce(ctx context.Context, claim *idempotency.Claim, id uuid.UUID, mutate change) (Order, error) {
	if done, ok := claim.Resumed(RecoveryOrderChanged); ok && done == id {
		// The change reached the order, so its answer shows it: deleted ones too (a command
		// reaches a deleted order that owes a payment back).
		return s.store.GetAny(ctx, s.db, id)
	}
	return s.apply(ctx, id, func(tx *postgres.Tx, o *Order) (*Event, []outbox.Message, error) {
		if o.DeletedAt != nil && !o.owesRefund() {
			// Deleted, it is hidden from staff commands, unless it came to owe a payment back
			// after the deletion (a late payment whose automatic refund was refused, a refund
			// that failed at Stripe): the staff refund must reach it.
			return nil, nil, ErrNotFound
		}
		ev, msgs, err := mutate(tx, o)
		if err == nil && claim != nil {
			err = s.idem.Checkpoint(ctx, tx, claim, RecoveryOrderChanged, o.ID)
		}
		return ev, msgs, err
	})
}

func (s *Service) applyTx(ctx context.Context, tx *postgres.Tx, id uuid.UUID, mutate change) (Order, error) {
	o, err := s.store.Lock(ctx, tx, id)
	if err != nil {
		return Order{}, err
	}
	return s.applyLocked(ctx, tx, o, mutate)
}

// applyLocked is applyTx for an order already read FOR UPDATE in tx. Whatever the change
// writes (a move, an event, the payment, messages) goes in one Save, which also moves the
// order's updated_at: a timeline event or a payment noted without a move is a change too (the
// stuck sweep then waits StuckAfter from it). A deleted order is changed like any other:
// deletion hides an order from reads and staff commands (applyOnce), not from its money, so a
// late payment's webhook and refund still reach it.
func (s *Service) applyLocked(ctx context.Context, tx *postgres.Tx, o Order, mutate change) (Order, error) {
	was := o
	ev, msgs, err := mutate(tx, &o)
	if err != nil || (ev == nil && len(msgs) == 0 && !moved(was, o) && o.Payment == was.Payment) {
		return o, err
	}
	if err := s.save(ctx, tx, &o, was, ev, msgs, nil); err != nil {
		return Order{}, err
	}
	return o, nil
}

// applyRead runs a change that writes nothing but what Save writes (mutate gets no
// transaction) on the order as read without a lock: Save's compare-and-set is then the whole
// transaction, two round trips where apply takes four. When the order moved meanwhile, when
// the change fails or would write anything else, it runs the locking way instead.
func (s *Service) applyRead(ctx context.Context, id uuid.UUID, mutate func(o *Order) (*Event, []outbox.Message, error)) (Order, error) {
	o, err := s.store.Get(ctx, s.db, id)
	if err != nil {
		return Order{}, err
	}
	if o, done, err := s.changeRead(ctx, o, mutate, nil); done || err != nil {
		return o, err
	}
	return s.apply(ctx, id, func(_ *postgres.Tx, o *Order) (*Event, []outbox.Message, error) { return mutate(o) })
}

// changeRead makes mutate's change to o, read without a lock, when Save writes all of it:
// Save's compare-and-set stands for the lock, and records se (when not nil) with the change.
// It reports false, having written nothing, when the locking way must run instead: mutate
// failed, the change writes more than Save does (or records se without moving the order), the
// order moved meanwhile, or se was recorded before.
func (s *Service) changeRead(ctx context.Context, o Order, mutate func(o *Order) (*Event, []outbox.Message, error), se *StripeEvent) (Order, bool, error) {
	was := o
	ev, msgs, err := mutate(&o)
	switch {
	case err != nil || !moved(was, o) && (se != nil || ev != nil || len(msgs) > 0 || o.Payment != was.Payment):
		return Order{}, false, nil
	case !moved(was, o):
		return o, true, nil // nothing to write
	}
	err = s.save(ctx, s.db, &o, was, ev, msgs, se)
	switch {
	case errors.Is(err, ErrConcurrentUpdate):
		return Order{}, false, nil
	case err != nil:
		return Order{}, false, err
	}
	s.wake.Wake()
	return o, true, nil
}

// moved reports whether a change moved the order's status or pending action: what Save's
// compare-and-set is about.
func moved(was, o Order) bool { return o.Status != was.Status || o.PendingAction != was.PendingAction }

// save writes a change that moved o from was with its event, payment and messages, and the
// Stripe event behind it when se is not nil (Save).
func (s *Service) save(ctx context.Context, q postgres.Querier, o *Order, was Order, ev *Event, msgs []outbox.Message, se *StripeEvent) error {
	if ev != nil {
		stamp(ctx, ev, o.ID)
	}
	rows, err := outbox.Encode(ctx, msgs...)
	if err == nil {
		err = s.store.Save(ctx, q, o, Change{Was: was.Status, WasAction: was.PendingAction, Event: ev,
			Paid: o.Payment != was.Payment, Msgs: rows, Stripe: se})
	}
	if err == nil && o.Status != was.Status {
		from, to := string(was.Status), string(o.Status)
		postgres.AfterCommit(q, func() { metrics.Transition(from, to) })
	}
	return err
}

// stamp gives a timeline event its id, order and correlation id.
func stamp(ctx context.Context, ev *Event, orderID uuid.UUID) {
	ev.ID, ev.OrderID, ev.CorrelationID = uuid.Must(uuid.NewV7()), orderID, logging.CorrelationID(ctx)
}

// statusEvent is the timeline entry of a transition.
func statusEvent(from, to Status, actor, reason string) *Event {
	return &Event{Type: EventStatusChanged, From: &from, To: &to, Actor: actor, Reason: optional(reason)}
}

// actionEvent is the timeline entry of an action that changes no status.
func actionEvent(typ, actor, reason string) *Event {
	return &Event{Type: typ, Actor: actor, Reason: optional(reason)}
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// notify is the outbox message that tells the order's owner about event.
func notify(o *Order, event string, extra map[string]any) outbox.Message {
	data := map[string]any{"orderId": o.ID, "number": o.Number, "total": o.Total, "currency": o.Currency,
		"status": o.Status}
	for k, v := range extra {
		data[k] = v
	}
	return outbox.Message{Type: tasks.NotifyUser, Payload: tasks.Notify{UserID: o.UserID, Event: event, Data: data}}
}

// task is the outbox message that runs an order strategy in the worker.
func task(typ string, o *Order, actor, reason string) outbox.Message {
	return outbox.Message{Type: typ, Payload: tasks.Order{OrderID: o.ID, Actor: actor, Reason: reason}}
}

// itemIDs are the items of an order, for cache invalidation.
func itemIDs(o *Order) []uuid.UUID {
	ids := make([]uuid.UUID, len(o.Lines))
	for i, l := range o.Lines {
		ids[i] = l.ItemID
	}
	return ids
}
