package httpapi

// Every request is answered by its deadline. A handler can be held where no context reaches it:
// a lib/pq read from a PostgreSQL that stopped answering without closing its connections waits
// for the server whatever the request's context says. Such a request would keep its client
// until the server's write timeout, and past it the answer could not be sent at all. So the
// deadline is in the request's context, and a watch started when it passes answers for a
// handler that has not begun to answer a grace later (503 with Retry-After); what the handler
// writes after that goes nowhere. What it did once the server is back, a retry with the same
// Idempotency-Key (or the same webhook event) replays or resumes.
//
// The handler stays on the connection's goroutine: on one of its own per request (as
// http.TimeoutHandler runs it) a cached read cost half as much CPU again (docs/performance.md,
// thirty-third pass).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
)

// DefaultDeadline bounds every request: less than an Idempotency-Key's lease, so that no retry
// takes a key over from an attempt still working (idempotencyGuard). The server's read timeout
// (server.New) is shorter again, so that a body still arriving is answered 408 by its handler.
const DefaultDeadline = idempotency.Lease - 5*time.Second

// answerGrace is how long past the deadline a handler still gets to answer for itself: one whose
// calls end with their context answers its own 503, releasing its key as it does.
const answerGrace = time.Second

// errDeadline is the cause of a request's context ending at its deadline.
var errDeadline = errors.New("request ran out of its time")

// ServeHTTP serves one request through the gin engine, answered by its deadline. The headers
// every answer carries (the correlation id, the security headers, CORS) are set here, so that an
// answer given for a held handler has them too.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := correlationID(r.Header)
	h := w.Header()
	h.Set("X-Correlation-Id", id)
	// Not to be sniffed as another content type, never stored by a browser or a shared cache
	// (answers carry tokens and personal data), never framed, no Referer sent onwards.
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	if origin := r.Header.Get("Origin"); s.allowsOrigin(origin) {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Expose-Headers", "X-Correlation-Id, Idempotent-Replayed, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After")
	}

	ctx, cancel := context.WithTimeoutCause(logging.WithCorrelationID(r.Context(), id), s.deadline, errDeadline)
	defer cancel()
	r = r.WithContext(ctx)
	aw := &answerWriter{w: w, h: make(http.Header)}
	stop := context.AfterFunc(ctx, func() { s.answerIfHeld(aw, r) })
	defer func() {
		stop()
		aw.finish() // waits for an answer being written for it
	}()
	s.engine.ServeHTTP(aw, r)
}

// answerIfHeld runs once the request's context ended: at its deadline, and the handler has
// neither finished nor begun its answer a grace later, it answers for it.
func (s *Server) answerIfHeld(aw *answerWriter, r *http.Request) {
	if !errors.Is(context.Cause(r.Context()), errDeadline) {
		return // the client went away
	}
	time.Sleep(answerGrace) // a handler whose calls ended with the context answers by itself
	aw.mu.Lock()
	defer aw.mu.Unlock()
	if aw.began || aw.finished {
		return
	}
	aw.expired = true
	aw.answered = s.answerForHeld(aw.w, r)
}

// answerForHeld answers for a handler still held past its deadline: 503 with Retry-After, the
// standard error body in the language the request asked for, and the connection closed after it.
// The answer is flushed whole (its length given): the connection's goroutine, still in the
// handler, cannot finish it. It returns the body's length.
func (s *Server) answerForHeld(w http.ResponseWriter, r *http.Request) int {
	ctx := r.Context()
	lang := negotiatedLanguage(r.URL.Query().Get("lang"), r.Header.Get("Accept-Language"))
	status, body, retryAfter := s.errorAnswer(ctx, fmt.Errorf("answered for, its handler still held: %w", ctx.Err()), lang, r.URL.Path)
	raw, err := json.Marshal(body)
	if err != nil {
		panic(err) // a struct of strings and numbers
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Retry-After", retryAfter)
	// Not only to end the connection: net/http reads what is left of a request's body after an
	// answer it may keep the connection for, which would race the handler's own reads.
	h.Set("Connection", "close")
	h.Set("Content-Length", strconv.Itoa(len(raw)))
	w.WriteHeader(status)
	n, _ := w.Write(raw)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	return n
}

// correlationID is the request's X-Correlation-Id, else its X-Request-Id, else a new one; a
// client's id is taken only if it can go into logs, rows and headers as it is.
func correlationID(h http.Header) string {
	for _, name := range []string{"X-Correlation-Id", "X-Request-Id"} {
		if id := h.Get(name); usableCorrelationID(id) {
			return id
		}
	}
	return uuid.NewString()
}

// usableCorrelationID reports whether a client's id is printable ASCII, 1 to 128 characters.
func usableCorrelationID(id string) bool { return idempotency.ValidKey(id) && len(id) <= 128 }

// answerWriter is the handler's ResponseWriter: its own header map, copied out when it begins to
// answer, and nothing written once the request was answered for. Its lock orders the handler's
// writes and an answer written for it. It flushes, and that is all: nothing here hijacks a
// connection or streams.
type answerWriter struct {
	w  http.ResponseWriter
	h  http.Header
	mu sync.Mutex
	// began: the handler began its answer; expired: the request was answered for; finished:
	// the handler returned, and w may no longer be used.
	began, expired, finished bool
	answered                 int // the bytes of the body answered for it
}

func (aw *answerWriter) Header() http.Header { return aw.h }

func (aw *answerWriter) WriteHeader(status int) {
	aw.mu.Lock()
	defer aw.mu.Unlock()
	aw.begin(status)
}

func (aw *answerWriter) Write(b []byte) (int, error) {
	aw.mu.Lock()
	aw.begin(http.StatusOK)
	expired := aw.expired
	aw.mu.Unlock()
	if expired {
		return 0, http.ErrHandlerTimeout
	}
	return aw.w.Write(b)
}

// Flush sends what the handler wrote so far (a 200 if it wrote nothing), unless the request
// was answered for.
func (aw *answerWriter) Flush() {
	aw.mu.Lock()
	aw.begin(http.StatusOK)
	expired := aw.expired
	aw.mu.Unlock()
	if f, ok := aw.w.(http.Flusher); ok && !expired {
		f.Flush()
	}
}

// begin sends the status and the handler's headers, once, unless the request was answered for.
func (aw *answerWriter) begin(status int) {
	if aw.began || aw.expired {
		return
	}
	aw.began = true
	dst := aw.w.Header()
	for k, v := range aw.h {
		dst[k] = v
	}
	aw.w.WriteHeader(status)
}

func (aw *answerWriter) finish() {
	aw.mu.Lock()
	defer aw.mu.Unlock()
	aw.finished = true
}

// answeredFor reports whether the request w (the gin writer an access log saw first) serves
// was answered for at its deadline, the answer its client got being then a 503 of n bytes.
func answeredFor(w http.ResponseWriter) (n int, ok bool) {
	u, ok := w.(interface{ Unwrap() http.ResponseWriter })
	if !ok {
		return 0, false
	}
	aw, ok := u.Unwrap().(*answerWriter)
	if !ok {
		return 0, false
	}
	aw.mu.Lock()
	defer aw.mu.Unlock()
	return aw.answered, aw.expired
}
