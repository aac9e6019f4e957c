package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"

	"github.com/dispatchhq/dispatch/api"
	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
)

// QueueUIPath is where the Asynq web UI is mounted.
const QueueUIPath = "/admin/queues"

var errQueueUIAuth = apperr.New(apperr.Unauthorized, "auth.errors.basicAuth")

// queueUI mounts asynqmon behind HTTP basic auth. A wrong user and a wrong password fail alike.
func (s *Server) queueUI() (gin.HandlerFunc, func() error, error) {
	opt, err := asynq.ParseRedisURI(s.cfg.RedisURL)
	if err != nil {
		return nil, nil, err
	}
	mon := asynqmon.New(asynqmon.Options{RootPath: QueueUIPath, RedisConnOpt: opt})
	user, pass := sha256.Sum256([]byte(s.cfg.AdminUIUser)), sha256.Sum256([]byte(s.cfg.AdminUIPassword))
	return func(c *gin.Context) {
		u, p, ok := c.Request.BasicAuth()
		gotUser, gotPass := sha256.Sum256([]byte(u)), sha256.Sum256([]byte(p))
		okUser := subtle.ConstantTimeCompare(gotUser[:], user[:])
		okPass := subtle.ConstantTimeCompare(gotPass[:], pass[:])
		if !ok || s.cfg.AdminUIPassword == "" || okUser&okPass != 1 {
			c.Header("WWW-Authenticate", `Basic realm="Dispatch queues", charset="UTF-8"`)
			s.respondError(c, errQueueUIAuth)
			return
		}
		mon.ServeHTTP(c.Writer, c.Request)
	}, mon.Close, nil
}

func metricsHandler(c *gin.Context) { metrics.Handler().ServeHTTP(c.Writer, c.Request) }

// openAPI serves the OpenAPI document kept in the repository.
func (s *Server) openAPI(c *gin.Context) {
	c.Data(http.StatusOK, "application/json; charset=utf-8", api.OpenAPI)
}
