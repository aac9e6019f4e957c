// Package worker runs the asynchronous tasks: one registry maps each task type to its
// strategy, and one handler applies the retry, compensation and locking policy to all of them.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/tasks"
	"github.com/dispatchhq/dispatch/internal/user"
)

// Strategy is how one task type is run.
type Strategy struct {
	// Run does the work. It must be idempotent: a task may run more than once.
	Run func(ctx context.Context, t Task) error
	// Compensate, when set, runs once after the task's last attempt failed. It reports whether
	// it changed anything (counted as a compensation).
	Compensate func(ctx context.Context, t Task, cause error) (bool, error)
	// Lock names what the task works on, whose lock it holds while it runs (zero: none).
	Lock func(t Task) Subject
}

// Subject is what a task works on: an order or a user, by id. Tasks of one subject run one at
// a time.
type Subject struct{ Kind, ID string }

// Task is a decoded task: its envelope and payload.
type Task struct {
	Type string
	tasks.Envelope
}

// Decode reads the task's payload into v.
func (t Task) Decode(v any) error {
	if err := json.Unmarshal(t.Data, v); err != nil {
		return malformed(fmt.Errorf("decode %s payload: %w", t.Type, err))
	}
	return nil
}

// Deps are the services the strategies call.
type Deps struct {
	Orders        *order.Service
	Notifications notification.Store
	Customers     *user.CustomerSync
	Maintenance   map[string]func(ctx context.Context) error // periodic tasks by type
}

// orderOf names the order of a task with an order payload (none when it does not decode).
func orderOf(t Task) Subject {
	var p tasks.Order
	if t.Decode(&p) != nil || p.OrderID == uuid.Nil {
		return Subject{}
	}
	return Subject{"order", p.OrderID.String()}
}

// userOf names the user of a Stripe customer task: two syncs of one user in parallel (an edit,
// then another) could reach Stripe in the wrong order and leave the older details there.
func userOf(t Task) Subject {
	var p tasks.Customer
	if t.Decode(&p) != nil || p.UserID == uuid.Nil {
		return Subject{}
	}
	return Subject{"user", p.UserID.String()}
}

// Registry returns the one map from task type to strategy.
func Registry(d Deps) map[string]Strategy {
	reg := map[string]Strategy{
		tasks.OrderProcess: {
			Run: withOrder(func(ctx context.Context, p tasks.Order) error { return d.Orders.Process(ctx, p.OrderID) }),
			Compensate: func(ctx context.Context, t Task, cause error) (bool, error) {
				var p tasks.Order
				if err := t.Decode(&p); err != nil {
					return false, nil
				}
				return d.Orders.CompensateProcess(ctx, p.OrderID, reasonOf(cause))
			},
			Lock: orderOf,
		},
		tasks.OrderCancel: {
			Run: withOrder(func(ctx context.Context, p tasks.Order) error {
				return d.Orders.Cancel(ctx, p.OrderID, actorOr(p.Actor), p.Reason)
			}),
			Compensate: failAction(d.Orders, order.ActionCancel),
			Lock:       orderOf,
		},
		tasks.OrderRefund: {
			Run: withOrder(func(ctx context.Context, p tasks.Order) error {
				return d.Orders.Refund(ctx, p.OrderID, actorOr(p.Actor), p.Reason)
			}),
			Compensate: failAction(d.Orders, order.ActionRefund),
			Lock:       orderOf,
		},
		tasks.CustomerCreate: {Run: withUser(d.Customers.Create), Lock: userOf},
		tasks.CustomerUpdate: {Run: withUser(d.Customers.Update), Lock: userOf},
		tasks.CustomerDelete: {Run: withUser(d.Customers.Delete), Lock: userOf},
		tasks.NotifyUser: {Run: func(ctx context.Context, t Task) error {
			var p tasks.Notify
			if err := t.Decode(&p); err != nil {
				return err
			}
			if p.UserID == uuid.Nil || p.Event == "" {
				return malformed(fmt.Errorf("notify without user or event"))
			}
			_, err := d.Notifications.Deliver(ctx, t.OutboxID, t.CreatedAt, p.UserID, p.Event, p.Data)
			return err
		}},
	}
	for typ, run := range d.Maintenance {
		reg[typ] = Strategy{Run: func(ctx context.Context, _ Task) error { return run(ctx) }}
	}
	return reg
}

// Check fails when a task type a producer can emit has no strategy, or a strategy has no
// known task type.
func Check(reg map[string]Strategy) error {
	var missing, unknown []string
	for _, typ := range tasks.Types() {
		if _, ok := reg[typ]; !ok {
			missing = append(missing, typ)
		}
	}
	for typ := range reg {
		if _, ok := tasks.QueueOf(typ); !ok {
			unknown = append(unknown, typ)
		}
	}
	sort.Strings(missing)
	sort.Strings(unknown)
	if len(missing)+len(unknown) > 0 {
		return fmt.Errorf("worker: task types without a strategy: [%s]; strategies of unknown types: [%s]",
			strings.Join(missing, " "), strings.Join(unknown, " "))
	}
	return nil
}

func withOrder(f func(context.Context, tasks.Order) error) func(context.Context, Task) error {
	return func(ctx context.Context, t Task) error {
		var p tasks.Order
		if err := t.Decode(&p); err != nil {
			return err
		}
		if p.OrderID == uuid.Nil {
			return malformed(fmt.Errorf("%s without orderId", t.Type))
		}
		return f(ctx, p)
	}
}

func withUser(f func(context.Context, uuid.UUID) error) func(context.Context, Task) error {
	return func(ctx context.Context, t Task) error {
		var p tasks.Customer
		if err := t.Decode(&p); err != nil {
			return err
		}
		if p.UserID == uuid.Nil {
			return malformed(fmt.Errorf("%s without userId", t.Type))
		}
		return f(ctx, p.UserID)
	}
}

func failAction(orders *order.Service, a order.Action) func(context.Context, Task, error) (bool, error) {
	return func(ctx context.Context, t Task, cause error) (bool, error) {
		var p tasks.Order
		if err := t.Decode(&p); err != nil {
			return false, nil
		}
		return orders.FailAction(ctx, p.OrderID, a, reasonOf(cause), !isPermanent(cause))
	}
}

func actorOr(actor string) string {
	if actor == "" {
		return order.ActorWorker
	}
	return actor
}

// reasonOf is what the timeline, which the order's customer reads too, says of a failure: the
// provider's words or the kind of its failure, else the error's code, else "internal error".
// The whole error, with addresses and internal detail, is in the worker's log.
func reasonOf(err error) string {
	s := payment.Shown(err)
	var e *apperr.Error
	switch {
	case s != "":
	case errors.As(err, &e):
		s = e.Code
	default:
		s = "internal error"
	}
	if len(s) > 300 {
		s = strings.ToValidUTF8(s[:300], "")
	}
	return s
}
