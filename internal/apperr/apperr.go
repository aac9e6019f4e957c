// Package apperr is the error vocabulary shared by the domain packages and the HTTP layer.
//
// A domain error carries a Kind (what went wrong, in transport-free terms) and a stable,
// machine-readable Code that doubles as the i18n message key. The HTTP layer maps kinds to
// status codes in one place; domain packages never see HTTP.
package apperr

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies an error. Each kind maps to exactly one HTTP status.
type Kind int

// The kinds, roughly in HTTP order.
const (
	Internal Kind = iota
	Invalid
	Unauthorized
	Forbidden
	NotFound
	MethodNotAllowed
	TimedOut // the request's body did not arrive within the server's read timeout
	Conflict
	TooLarge
	Unprocessable
	RateLimited
	BadGateway
	Unavailable
	ClientGone // the client went away before the answer: nobody's fault on the server's side
)

// FieldError names one invalid input field. Code is an i18n key; Params fill its placeholders.
type FieldError struct {
	Field  string
	Code   string
	Params map[string]any
}

// Error is a domain error with a stable code.
type Error struct {
	Kind       Kind
	Code       string
	Params     map[string]any
	Details    []FieldError
	RetryAfter time.Duration
	cause      error
}

// New returns an error of kind with code. Package-level sentinels are built with New.
func New(kind Kind, code string) *Error { return &Error{Kind: kind, Code: code} }

func (e *Error) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%s: %v", e.Code, e.cause)
	}
	return e.Code
}

// Unwrap exposes the cause for errors.Is/As chains.
func (e *Error) Unwrap() error { return e.cause }

// Is matches any *Error with the same kind and code, so copies made by With* still match
// their sentinel.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Kind == e.Kind && t.Code == e.Code
}

// With returns a copy carrying message parameters given as alternating name, value pairs.
func (e *Error) With(kv ...any) *Error {
	c := *e
	c.Params = make(map[string]any, len(e.Params)+len(kv)/2)
	for k, v := range e.Params {
		c.Params[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		c.Params[fmt.Sprint(kv[i])] = kv[i+1]
	}
	return &c
}

// WithDetails returns a copy carrying field errors.
func (e *Error) WithDetails(d ...FieldError) *Error {
	c := *e
	c.Details = append(append([]FieldError(nil), e.Details...), d...)
	return &c
}

// WithRetryAfter returns a copy that tells the client when to try again.
func (e *Error) WithRetryAfter(d time.Duration) *Error {
	c := *e
	c.RetryAfter = d
	return &c
}

// Wrap returns a copy whose cause is err (kept for logs, never shown to clients).
func (e *Error) Wrap(err error) *Error {
	c := *e
	c.cause = err
	return &c
}

// Common errors shared by every resource.
var (
	ErrValidation       = New(Invalid, "common.errors.validation")
	ErrMalformedJSON    = New(Invalid, "common.errors.malformedJson")
	ErrInvalidID        = New(Invalid, "common.errors.invalidId")
	ErrInvalidCursor    = New(Invalid, "common.errors.invalidCursor")
	ErrMalformedQuery   = New(Invalid, "common.errors.malformedQuery")
	ErrBodyTooLarge     = New(TooLarge, "common.errors.bodyTooLarge")
	ErrBodyTimedOut     = New(TimedOut, "common.errors.bodyTimedOut")
	ErrRouteNotFound    = New(NotFound, "common.errors.routeNotFound")
	ErrMethodNotAllowed = New(MethodNotAllowed, "common.errors.methodNotAllowed")
	ErrRateLimited      = New(RateLimited, "common.errors.rateLimited")
	ErrUnauthenticated  = New(Unauthorized, "auth.errors.unauthenticated")
	ErrForbidden        = New(Forbidden, "auth.errors.forbidden")
	ErrInternal         = New(Internal, "common.errors.internal")
	ErrUnavailable      = New(Unavailable, "common.errors.unavailable")
	ErrClientGone       = New(ClientGone, "common.errors.clientClosedRequest")
	ErrIdemKeyInvalid   = New(Invalid, "common.errors.idempotencyKeyInvalid")
	ErrIdemKeyRequired  = New(Invalid, "common.errors.idempotencyKeyRequired")
	ErrIdemKeyReused    = New(Unprocessable, "common.errors.idempotencyKeyReused")
	ErrIdemKeyInFlight  = New(Conflict, "common.errors.idempotencyKeyInFlight")
	ErrNotReady         = New(Unavailable, "common.errors.notReady")
)

// Field builds a FieldError from alternating parameter name, value pairs.
func Field(field, code string, kv ...any) FieldError {
	fe := FieldError{Field: field, Code: code}
	if len(kv) > 1 {
		fe.Params = make(map[string]any, len(kv)/2)
		for i := 0; i+1 < len(kv); i += 2 {
			fe.Params[fmt.Sprint(kv[i])] = kv[i+1]
		}
	}
	return fe
}

// Validation collects field errors and turns them into one 400 error.
type Validation struct{ fields []FieldError }

// Add records a field error.
func (v *Validation) Add(field, code string, kv ...any) {
	v.fields = append(v.fields, Field(field, code, kv...))
}

// Err returns nil when nothing was added, else ErrValidation with the details.
func (v *Validation) Err() error {
	if len(v.fields) == 0 {
		return nil
	}
	return ErrValidation.WithDetails(v.fields...)
}

// KindOf returns the kind of err, or Internal when err is not an *Error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}
