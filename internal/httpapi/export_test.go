package httpapi

import "github.com/gin-gonic/gin"

// HandlePanic adds a route at path whose handler panics with v.
func (s *Server) HandlePanic(path string, v any) {
	s.engine.GET(path, func(*gin.Context) { panic(v) })
}
