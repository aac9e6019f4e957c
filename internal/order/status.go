// Package order is the orders domain: the state machine, the order aggregate, and the commands
// the API, the webhook and the worker run on orders.
package order

import (
	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/tasks"
)

// Status is an order's place in the state machine.
type Status string

// The statuses (SPEC §4).
const (
	Pending   Status = "PENDING"
	Paid      Status = "PAID"
	Processed Status = "PROCESSED"
	Shipped   Status = "SHIPPED"
	Delivered Status = "DELIVERED"
	Canceled  Status = "CANCELED"
	Refunded  Status = "REFUNDED"
)

// Statuses lists every status in lifecycle order (a copy: the list is the package's).
func Statuses() []Status {
	return []Status{Pending, Paid, Processed, Shipped, Delivered, Canceled, Refunded}
}

// transitions is the state machine, the only one: target status → the statuses it may be
// reached from. Every path (API, webhook, worker, reconciler, admin PATCH) checks it.
var transitions = map[Status][]Status{
	Paid:      {Pending},
	Processed: {Paid},
	Shipped:   {Processed},
	Delivered: {Shipped},
	Canceled:  {Pending, Paid, Processed},
	Refunded:  {Paid, Processed, Shipped, Delivered},
}

// CanTransition reports whether the state machine allows from → to.
func CanTransition(from, to Status) bool {
	for _, f := range transitions[to] {
		if f == from {
			return true
		}
	}
	return false
}

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	for _, x := range Statuses() {
		if s == x {
			return true
		}
	}
	return false
}

// Final reports whether no transition leaves s (CANCELED, REFUNDED).
func (s Status) Final() bool {
	for to := range transitions {
		if CanTransition(s, to) {
			return false
		}
	}
	return true
}

// Action is an asynchronous action requested on an order and run by the worker.
type Action string

// The pending actions.
const (
	ActionNone   Action = ""
	ActionCancel Action = "cancel"
	ActionRefund Action = "refund"
)

// target is the status an action ends in.
func (a Action) target() Status {
	if a == ActionCancel {
		return Canceled
	}
	return Refunded
}

// requested is the timeline event that asks for the action.
func (a Action) requested() string {
	if a == ActionCancel {
		return EventCancelRequested
	}
	return EventRefundRequested
}

// taskType is the task that runs the action; with none pending, a paid order's processing.
func (a Action) taskType() string {
	switch a {
	case ActionCancel:
		return tasks.OrderCancel
	case ActionRefund:
		return tasks.OrderRefund
	}
	return tasks.OrderProcess
}

// Errors of the orders domain.
var (
	ErrNotFound           = apperr.New(apperr.NotFound, "orders.errors.notFound")
	ErrBadPreconditions   = apperr.New(apperr.Conflict, "orders.errors.badPreconditions")
	ErrActionPending      = apperr.New(apperr.Conflict, "orders.errors.actionPending")
	ErrConcurrentUpdate   = apperr.New(apperr.Conflict, "orders.errors.concurrentUpdate")
	ErrNotFinal           = apperr.New(apperr.Conflict, "orders.errors.notFinal")
	ErrRefundOwed         = apperr.New(apperr.Conflict, "orders.errors.refundOwed")
	ErrNothingOwed        = apperr.New(apperr.Conflict, "orders.errors.nothingOwed")
	ErrRefundAtStripe     = apperr.New(apperr.Conflict, "orders.errors.refundAtStripe")
	ErrMixedCurrencies    = apperr.New(apperr.Invalid, "orders.errors.mixedCurrencies")
	ErrTotalTooLarge      = apperr.New(apperr.Invalid, "orders.errors.totalTooLarge")
	ErrGatewayRejected    = apperr.New(apperr.BadGateway, "payments.errors.gatewayRejected")
	ErrGatewayUnavailable = apperr.New(apperr.Unavailable, "payments.errors.gatewayUnavailable")
)

// badTransition is the error for a move the state machine refuses.
func badTransition(from, to Status) error {
	return ErrBadPreconditions.With("from", from, "to", to)
}
