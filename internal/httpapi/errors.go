package httpapi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/i18n"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/outage"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

var statusOf = map[apperr.Kind]int{
	apperr.Internal:         http.StatusInternalServerError,
	apperr.Invalid:          http.StatusBadRequest,
	apperr.Unauthorized:     http.StatusUnauthorized,
	apperr.Forbidden:        http.StatusForbidden,
	apperr.NotFound:         http.StatusNotFound,
	apperr.MethodNotAllowed: http.StatusMethodNotAllowed,
	apperr.TimedOut:         http.StatusRequestTimeout,
	apperr.Conflict:         http.StatusConflict,
	apperr.TooLarge:         http.StatusRequestEntityTooLarge,
	apperr.Unprocessable:    http.StatusUnprocessableEntity,
	apperr.RateLimited:      http.StatusTooManyRequests,
	apperr.BadGateway:       http.StatusBadGateway,
	apperr.Unavailable:      http.StatusServiceUnavailable,
	apperr.ClientGone:       statusClientClosed,
}

// statusClientClosed answers a request whose client went away (the status proxies log for it).
// Its idempotency key is released like after a 5xx: what it wrote before may be resumed.
const statusClientClosed = 499

type errorBody struct {
	Success       bool          `json:"success"`
	StatusCode    int           `json:"statusCode"`
	Error         string        `json:"error"`
	Code          string        `json:"code"`
	Message       string        `json:"message"`
	Details       []fieldDetail `json:"details,omitempty"`
	CorrelationID string        `json:"correlationId"`
	Timestamp     string        `json:"timestamp"`
	Path          string        `json:"path"`
}

type fieldDetail struct {
	Field   string `json:"field"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// outageRetryAfter is what a client is told to wait while PostgreSQL or Redis is away.
const outageRetryAfter = 3 * time.Second

// respondError is the one place where errors become HTTP responses. Domain errors keep their
// code and translated message; an unreachable PostgreSQL or Redis is a 503 with Retry-After;
// anything else is a 500 whose cause goes to the log only.
func (s *Server) respondError(c *gin.Context, err error) {
	status, body, retryAfter := s.errorAnswer(c.Request.Context(), err, language(c), c.Request.URL.Path)
	if retryAfter != "" {
		c.Header("Retry-After", retryAfter)
	}
	c.AbortWithStatusJSON(status, body)
}

// errorAnswer is the status, the body and the Retry-After value ("" for none) err is answered
// with, logged as its status asks.
func (s *Server) errorAnswer(ctx context.Context, err error, lang, path string) (int, errorBody, string) {
	e := asAppErr(err)
	ended := e.Kind == apperr.Unavailable || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		postgres.IsCode(err, postgres.QueryCanceled)
	switch {
	case ended && errors.Is(context.Cause(ctx), errDeadline):
		// It ran out of its time (ServeHTTP): a retry with its key resumes.
		e = apperr.ErrUnavailable.WithRetryAfter(outageRetryAfter).Wrap(err)
	case ended && ctx.Err() != nil:
		// The client went away: the request's next PostgreSQL or Redis call failed for that.
		e = apperr.ErrClientGone.Wrap(err)
	}
	status := statusOf[e.Kind]
	switch {
	case status == statusClientClosed:
		s.log.InfoContext(ctx, "request ended: its client went away", "err", err)
	case status == http.StatusServiceUnavailable:
		s.outage.WarnContext(ctx, "request refused: a dependency is unavailable", "err", err, "code", e.Code)
	case status >= 500:
		s.log.ErrorContext(ctx, "request failed", "err", err, "code", e.Code)
	}
	body := errorBody{
		StatusCode: status, Error: statusText(status), Code: e.Code,
		Message:       i18n.T(lang, e.Code, e.Params),
		CorrelationID: logging.CorrelationID(ctx),
		Timestamp:     formatTime(time.Now()),
		Path:          path,
	}
	for _, d := range e.Details {
		body.Details = append(body.Details, fieldDetail{Field: d.Field, Code: d.Code, Message: i18n.T(lang, d.Code, d.Params)})
	}
	retryAfter := ""
	if e.RetryAfter > 0 {
		retryAfter = strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds())))
	}
	return status, body, retryAfter
}

// asAppErr is the API error err is answered with.
func asAppErr(err error) *apperr.Error {
	var e *apperr.Error
	switch {
	case errors.As(err, &e):
		return e
	case outage.Is(err):
		return apperr.ErrUnavailable.WithRetryAfter(outageRetryAfter).Wrap(err)
	default:
		return apperr.ErrInternal.Wrap(err)
	}
}

// statusOfErr is the HTTP status err is answered with.
func statusOfErr(err error) int { return statusOf[asAppErr(err).Kind] }

func statusText(status int) string {
	if status == statusClientClosed {
		return "Client Closed Request"
	}
	return http.StatusText(status)
}
