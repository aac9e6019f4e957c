package httpapi

// The Idempotency-Key mechanism on the HTTP side (SPEC §7): the middleware claims a key in
// idempotency.Store before the handler runs and records its outcome after. The store and the
// claim are transport-free; only this file knows gin.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/idempotency"
)

// idemHeader is the request header carrying the key.
const idemHeader = "Idempotency-Key"

// idemReplayedHeader marks a replayed response.
const idemReplayedHeader = "Idempotent-Replayed"

type claimKey struct{}

// idempotencyClaim returns the claim of the request running with ctx, or nil when it has no key.
func idempotencyClaim(ctx context.Context) *idempotency.Claim {
	c, _ := ctx.Value(claimKey{}).(*idempotency.Claim)
	return c
}

// keyUse is how a route uses the Idempotency-Key.
type keyUse int

const (
	keyOptional keyUse = iota
	keyRequired
	// keyInWrite: required, and taken by the handler's first write in its own statement
	// (idempotency.Defer); the handler ends through refuse.
	keyInWrite
	// keyOwn: optional, and never stored here (the route's answer carries tokens): the handler
	// honours it itself (a refresh, on its session) or not at all. A key no other route would
	// take is refused here too.
	keyOwn
)

// idempotencyGuard makes the routes it guards idempotent with store. A request without a key
// is refused when use is keyRequired or keyInWrite. owner names the caller's scope; fail renders an error
// (the API's single error mapping).
//
// Outcomes: 2xx is stored and replayed to duplicates; 4xx is forgotten (nothing was written, the
// client may fix the request and reuse the key); 5xx or a panic releases the key at its last
// recovery point so a retry resumes.
//
// A request holding a key ends by its deadline (ServeHTTP), which is less than the key's lease:
// the lease is not renewed, a retry takes a key over once it ran out, and a first attempt still
// working then (a stalled connection, a slow Stripe) would do the work a second time beside it.
// Past the deadline its statements and Stripe calls fail, it answers 503 and releases the key for
// the retry to resume.
func idempotencyGuard(s *idempotency.Store, use keyUse, owner func(*gin.Context) string, fail func(*gin.Context, error), log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		key, present := c.Request.Header[idemHeader]
		if !present {
			if use == keyRequired || use == keyInWrite {
				fail(c, apperr.ErrIdemKeyRequired)
				return
			}
			c.Next()
			return
		}
		if len(key) != 1 || !idempotency.ValidKey(key[0]) {
			fail(c, apperr.ErrIdemKeyInvalid)
			return
		}
		if use == keyOwn {
			c.Next()
			return
		}
		body, err := readBody(c.Request.Body)
		if err != nil {
			fail(c, err)
			return
		}
		c.Request.Body = io.NopCloser(bytes.NewReader(body))

		ctx := c.Request.Context()
		sc := idempotency.Scope{Owner: owner(c), Method: c.Request.Method, Path: scopePath(c), Key: key[0]}
		claim := idempotency.Defer(sc, s.Fingerprint(sc.Method, sc.Path, body))
		if use != keyInWrite {
			if err := s.Take(ctx, claim); err != nil {
				answer(c, err, fail)
				return
			}
		}

		w := &capture{ResponseWriter: c.Writer}
		c.Writer = w
		c.Request = c.Request.WithContext(context.WithValue(ctx, claimKey{}, claim))
		finished := false
		defer func() {
			// Persist the outcome even if the client went away.
			done, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			var err error
			switch status := w.Status(); {
			case !claim.Held(): // never taken: nothing was written
			case claim.Completed: // stored by the request's last write
			case !finished || status >= 500 || status == statusClientClosed:
				err = s.Release(done, claim)
			case status >= 400:
				err = s.Abandon(done, claim)
			default:
				err = s.Complete(done, claim, status, w.body.Bytes())
			}
			if err != nil {
				log.ErrorContext(done, "idempotency record not updated", "err", err, "path", sc.Path)
			}
		}()
		c.Next()
		finished = true
	}
}

// scopePath is the path a key is scoped to: the route with its parameters in one spelling
// (an id in lowercase, anything else escaped), so that every spelling of one resource's path
// (percent-encoded letters, an uppercase id) shares its keys. It is plain ASCII: a parameter
// that is not UTF-8 (or holds a NUL) can be stored, and its handler answers 400 instead of the
// insert failing with a 500.
func scopePath(c *gin.Context) string {
	route := c.FullPath()
	if route == "" {
		return c.Request.URL.EscapedPath()
	}
	segments := strings.Split(route, "/")
	for i, seg := range segments {
		name, ok := strings.CutPrefix(seg, ":")
		if !ok {
			continue
		}
		v := c.Param(name)
		if id, err := uuid.Parse(v); err == nil && len(v) == 36 {
			segments[i] = id.String()
		} else {
			segments[i] = url.PathEscape(v)
		}
	}
	return strings.Join(segments, "/")
}

// answer ends a request with err: the stored response when err is the *idempotency.Replay of
// a finished request, else fail's rendering of err.
func answer(c *gin.Context, err error, fail func(*gin.Context, error)) {
	var replay *idempotency.Replay
	if !errors.As(err, &replay) {
		fail(c, err)
		return
	}
	c.Header(idemReplayedHeader, "true")
	c.Data(replay.Status, "application/json; charset=utf-8", replay.Body)
	c.Abort()
}

// refuse ends a keyInWrite request with err. A claim its write never took (the request was
// refused before writing) is taken first, as the guard does before other handlers, so that a
// key used before gets the answer it would have had there (the stored response, 409 or 422)
// rather than err; a 4xx then forgets it again. A replay the service ended with is written.
func (s *Server) refuse(c *gin.Context, err error) {
	ctx := c.Request.Context()
	if claim := idempotencyClaim(ctx); claim != nil && !claim.Held() && statusOfErr(err) < 500 {
		if terr := s.idem.Take(ctx, claim); terr != nil {
			err = terr
		}
	}
	answer(c, err, s.respondError)
}

// capture tees the response body so a successful response can be stored.
type capture struct {
	gin.ResponseWriter
	body bytes.Buffer
}

func (w *capture) Write(b []byte) (int, error) {
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

func (w *capture) WriteString(s string) (int, error) {
	w.body.WriteString(s)
	return w.ResponseWriter.WriteString(s)
}
