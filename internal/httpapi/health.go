package httpapi

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/platform/server"
)

func (s *Server) health(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// ready answers 200 only when Postgres and Redis both answer within a second, and not once the
// program is stopping: a load balancer then stops sending requests while the server drains.
func (s *Server) ready(c *gin.Context) {
	select {
	case <-s.stopping:
		s.respondError(c, apperr.ErrNotReady.WithDetails(apperr.Field("api", "common.errors.stopping")))
		return
	default:
	}
	if failed := server.Check(c.Request.Context(), server.Dependencies(s.db, s.rdb)); len(failed) > 0 {
		var v []apperr.FieldError
		for _, name := range failed {
			v = append(v, apperr.Field(name, "common.errors.dependencyDown"))
		}
		s.respondError(c, apperr.ErrNotReady.WithDetails(v...))
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready"})
}
