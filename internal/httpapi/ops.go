package httpapi

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hibiken/asynqmon"

	"github.com/dispatchhq/dispatch/api"
	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/ratelimit"
)

// QueueUIPath is where the Asynq web UI is mounted.
const QueueUIPath = "/admin/queues"

var errQueueUIAuth = apperr.New(apperr.Unauthorized, "auth.errors.basicAuth")

// queueUI mounts asynqmon behind HTTP basic auth. A wrong user and a wrong password fail alike.
// Failed attempts are counted per client IP like logins: past the login limit in a minute,
// every attempt from that IP is refused with 429 until the window ends, so the password cannot
// be guessed at speed (the UI shows task payloads: user ids, login IPs). While Redis cannot
// count them, the UI is refused (503): it cannot show anything without Redis anyway.
func (s *Server) queueUI() (gin.HandlerFunc, func() error, error) {
	target, err := redisx.Parse(s.cfg.RedisURL)
	if err != nil {
		return nil, nil, err
	}
	// Its own connections, to the same target: through Sentinel when REDIS_URL names one.
	mon := asynqmon.New(asynqmon.Options{RootPath: QueueUIPath, RedisConnOpt: queueConnOpt(target)})
	user, pass := sha256.Sum256([]byte(s.cfg.AdminUIUser)), sha256.Sum256([]byte(s.cfg.AdminUIPassword))
	limit := s.cfg.RateLimits.Login
	// The UI's actions (pause a queue, delete or archive tasks) are POSTs without a body, and a
	// browser adds the operator's basic credentials to them by itself: another site's page
	// could send them through the operator's browser. Those are refused.
	sameOrigin := http.NewCrossOriginProtection()
	return func(c *gin.Context) {
		ctx := c.Request.Context()
		if err := sameOrigin.Check(c.Request); err != nil {
			s.respondError(c, apperr.ErrForbidden)
			return
		}
		u, p, ok := c.Request.BasicAuth()
		gotUser, gotPass := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
		okUser := subtle.ConstantTimeCompare(gotUser[:], user[:])
		okPass := subtle.ConstantTimeCompare(gotPass[:], pass[:])
		right := ok && s.cfg.AdminUIPassword != "" && okUser&okPass == 1
		// A browser's first request carries no credentials: not a failed attempt.
		failures := s.keys.Key("ratelimit", "queue-ui-failures", ratelimit.Client(c.ClientIP()))
		allowed, left, err := s.limiter.Attempt(ctx, failures, limit, time.Minute, ok && !right)
		switch {
		case err != nil:
			s.respondError(c, apperr.ErrUnavailable.WithRetryAfter(outageRetryAfter).Wrap(fmt.Errorf("queue UI attempts: %w", err)))
			return
		case !allowed:
			s.respondError(c, apperr.ErrRateLimited.WithRetryAfter(max(left, time.Second)))
			return
		case !right:
			c.Header("WWW-Authenticate", `Basic realm="Dispatch queues", charset="UTF-8"`)
			s.respondError(c, errQueueUIAuth)
			return
		}
		w := &heldFailure{ResponseWriter: c.Writer}
		mon.ServeHTTP(w, c.Request)
		switch {
		case w.status != 0 && c.Writer.Written(): // too late for an answer of ours
			s.log.WarnContext(ctx, "queue UI failed after answering", "status", w.status, "err", string(bytes.TrimSpace(w.text)))
		case w.status != 0:
			c.Writer.Header().Del("Content-Type")
			s.respondError(c, apperr.ErrUnavailable.WithRetryAfter(outageRetryAfter).
				Wrap(fmt.Errorf("queue UI answered %d: %s", w.status, bytes.TrimSpace(w.text))))
		}
	}, mon.Close, nil
}

// heldFailure holds back a 5xx that asynqmon writes (http.Error with Redis's error text, when
// Redis cannot be reached) so that it is answered like the API's own: 503, the JSON error body,
// nothing internal.
type heldFailure struct {
	http.ResponseWriter
	status int
	text   []byte
}

func (w *heldFailure) WriteHeader(code int) {
	if code >= http.StatusInternalServerError {
		w.status = code
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *heldFailure) Write(b []byte) (int, error) {
	if w.status == 0 {
		return w.ResponseWriter.Write(b)
	}
	if len(w.text) < 512 {
		w.text = append(w.text, b[:min(len(b), 512-len(w.text))]...)
	}
	return len(b), nil
}

func metricsHandler(c *gin.Context) { metrics.Handler().ServeHTTP(c.Writer, c.Request) }

// openAPI serves the OpenAPI document kept in the repository.
func (s *Server) openAPI(c *gin.Context) {
	c.Data(http.StatusOK, "application/json; charset=utf-8", api.OpenAPI)
}
