package httpapi

import "github.com/gin-gonic/gin"

// HandlePanic adds a route at path whose handler panics with v.
func (s *Server) HandlePanic(path string, v any) {
	s.engine.GET(path, func(*gin.Context) { panic(v) })
}

// HandleHeld adds a route at path (GET and POST; the body is never read) whose handler is deaf
// to its context: it waits for release,
// having first begun its answer when begin is set, then writes "ended" and sends what its write
// returned to wrote.
func (s *Server) HandleHeld(path string, begin bool, release <-chan struct{}, wrote chan<- error) {
	s.engine.Match([]string{"GET", "POST"}, path, func(c *gin.Context) {
		if begin {
			c.Status(200)
			_, _ = c.Writer.WriteString("begun, ")
			c.Writer.Flush()
		}
		<-release
		_, err := c.Writer.WriteString("ended")
		wrote <- err
	})
}
