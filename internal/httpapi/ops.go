package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
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
// be guessed at speed (the UI shows task payloads: user ids, login IPs).
func (s *Server) queueUI() (gin.HandlerFunc, func() error, error) {
	target, err := redisx.Parse(s.cfg.RedisURL)
	if err != nil {
		return nil, nil, err
	}
	// Its own connections, to the same target: through Sentinel when REDIS_URL names one.
	mon := asynqmon.New(asynqmon.Options{RootPath: QueueUIPath, RedisConnOpt: queueConnOpt(target)})
	user, pass := sha256.Sum256([]byte(s.cfg.AdminUIUser)), sha256.Sum256([]byte(s.cfg.AdminUIPassword))
	// The UI's actions (pause a queue, delete or archive tasks) are POSTs without a body, and a
	// browser adds the operator's basic credentials to them by itself: another site's page
	// could send them through the operator's browser. Those are refused.
	sameOrigin := http.NewCrossOriginProtection()
	return func(c *gin.Context) {
		if err := sameOrigin.Check(c.Request); err != nil {
			s.respondError(c, apperr.ErrForbidden)
			return
		}
		failures := s.keys.Key("ratelimit", "queue-ui-failures", ratelimit.Client(c.ClientIP()))
		if s.tooManyFailures(c, failures) {
			return
		}
		u, p, ok := c.Request.BasicAuth()
		gotUser, gotPass := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
		okUser := subtle.ConstantTimeCompare(gotUser[:], user[:])
		okPass := subtle.ConstantTimeCompare(gotPass[:], pass[:])
		if !ok || s.cfg.AdminUIPassword == "" || okUser&okPass != 1 {
			if ok { // a browser's first request carries no credentials: not an attempt
				s.countFailure(c.Request.Context(), failures)
			}
			c.Header("WWW-Authenticate", `Basic realm="Dispatch queues", charset="UTF-8"`)
			s.respondError(c, errQueueUIAuth)
			return
		}
		mon.ServeHTTP(c.Writer, c.Request)
	}, mon.Close, nil
}

// tooManyFailures answers 429 when key has counted the login limit's failed attempts (wrong
// passwords) in its one-minute window, so a password cannot be guessed at speed. Whether rate
// limits are on does not matter: this guards secrets, not capacity. A Redis error lets the
// attempt through, as the rate limits do.
func (s *Server) tooManyFailures(c *gin.Context, key string) bool {
	blocked, left, err := s.limiter.Exceeded(c.Request.Context(), key, s.cfg.RateLimits.Login)
	if err != nil || !blocked {
		return false
	}
	s.respondError(c, apperr.ErrRateLimited.WithRetryAfter(max(left, time.Second)))
	return true
}

// countFailure counts one failed attempt under key.
func (s *Server) countFailure(ctx context.Context, key string) {
	if _, err := s.limiter.Allow(ctx, key, s.cfg.RateLimits.Login, time.Minute); err != nil {
		s.log.WarnContext(ctx, "failed attempt not counted", "key", key, "err", err)
	}
}

func metricsHandler(c *gin.Context) { metrics.Handler().ServeHTTP(c.Writer, c.Request) }

// openAPI serves the OpenAPI document kept in the repository.
func (s *Server) openAPI(c *gin.Context) {
	c.Data(http.StatusOK, "application/json; charset=utf-8", api.OpenAPI)
}
