package httpapi

import (
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/i18n"
	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/ratelimit"
)

// accessLog writes one line per request after it finished.
func (s *Server) accessLog(c *gin.Context) {
	start := time.Now()
	w := c.Writer // a handler may replace it (idempotencyGuard)
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	status, size := w.Status(), w.Size()
	if n, ok := answeredFor(w); ok { // what the client got, not what the handler wrote
		status, size = http.StatusServiceUnavailable, n
	}
	level := slog.LevelInfo
	switch {
	case status == statusClientClosed:
	case status >= 500:
		level = slog.LevelError
	case status >= 400:
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("method", metrics.Method(c.Request.Method)), slog.String("route", route), slog.Int("status", status),
		slog.Float64("durationMs", float64(time.Since(start).Microseconds())/1000),
		slog.Int("bytes", max(size, 0)), slog.String("ip", c.ClientIP()),
	}
	// userId, when authenticated, comes with the request's context (see authenticate).
	s.log.LogAttrs(c.Request.Context(), level, "request", attrs...)
	metrics.ObserveHTTP(c.Request.Method, route, status, time.Since(start))
}

// recovery turns a panic into a 500 with the standard body, logged with the panic's stack.
func (s *Server) recovery(c *gin.Context) {
	defer func() {
		if r := recover(); r != nil {
			if r == http.ErrAbortHandler {
				panic(r)
			}
			s.respondError(c, fmt.Errorf("panic: %v\n%s", r, debug.Stack()))
		}
	}()
	c.Next()
}

// limitBody caps request bodies at MaxBodyBytes; a declared larger body is refused at once.
func (s *Server) limitBody(c *gin.Context) {
	if c.Request.ContentLength > MaxBodyBytes {
		s.respondError(c, apperr.ErrBodyTooLarge)
		return
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, MaxBodyBytes)
	c.Next()
}

// allowsOrigin reports whether origin is one of the configured CORS origins. Every answer to it
// is marked for it (ServeHTTP).
func (s *Server) allowsOrigin(origin string) bool {
	return origin != "" && (slices.Contains(s.cfg.CORSOrigins, "*") || slices.Contains(s.cfg.CORSOrigins, origin))
}

// cors answers the preflights of the configured origins.
func (s *Server) cors(c *gin.Context) {
	if !s.allowsOrigin(c.GetHeader("Origin")) {
		c.Next()
		return
	}
	h := c.Writer.Header()
	if c.Request.Method == http.MethodOptions && c.GetHeader("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, POST, PATCH, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Idempotency-Key, X-Correlation-Id, X-Request-Id, Accept-Language")
		h.Set("Access-Control-Max-Age", "600")
		c.AbortWithStatus(http.StatusNoContent)
		return
	}
	c.Next()
}

// checkQuery refuses a query string that does not parse. Go's reading of it drops a pair with a
// bad percent escape or a semicolon, or every pair past 10,000, without a word: a filter or a
// cursor the client sent would be taken as absent (a 200 on the whole list).
func (s *Server) checkQuery(c *gin.Context) {
	if _, err := url.ParseQuery(c.Request.URL.RawQuery); err != nil {
		s.respondError(c, apperr.ErrMalformedQuery.Wrap(err))
		return
	}
	c.Next()
}

// negotiate picks the language from ?lang= or Accept-Language; the caller's saved language
// applies later when neither is given.
func (s *Server) negotiate(c *gin.Context) {
	if l := negotiatedLanguage(c.Query("lang"), c.GetHeader("Accept-Language")); l != "" {
		c.Set(langKey, l)
	}
	c.Next()
}

// negotiatedLanguage is the language a request asks for, by its lang parameter or else its
// Accept-Language header, or "" when it asks for none that is supported.
func negotiatedLanguage(param, acceptLanguage string) string {
	if l, ok := i18n.Supported(param); ok {
		return l
	}
	return i18n.FromAcceptLanguage(acceptLanguage)
}

// authenticate requires a valid access token and loads the caller with the database role.
func (s *Server) authenticate(c *gin.Context) {
	token, ok := bearer(c)
	if !ok {
		s.respondError(c, apperr.ErrUnauthenticated)
		return
	}
	p, err := s.auth.Authenticate(c.Request.Context(), token)
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.Set(principalKey, p)
	c.Request = c.Request.WithContext(logging.With(c.Request.Context(), slog.String("userId", p.UserID.String())))
	c.Next()
}

func bearer(c *gin.Context) (string, bool) {
	h := c.GetHeader("Authorization")
	if len(h) < 8 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	t := strings.TrimSpace(h[7:])
	return t, t != ""
}

// allow lets only the roles of g through.
func (s *Server) allow(g auth.Group) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !g.Allows(principal(c).Role) {
			s.respondError(c, apperr.ErrForbidden)
			return
		}
		c.Next()
	}
}

// limit enforces limit requests per minute per client (IP, or IPv6 /64) and route, shared by all
// replicas.
// When Redis is unavailable requests pass: rate limiting protects, it must not take the API down.
func (s *Server) limit(limit int) gin.HandlerFunc {
	return func(c *gin.Context) {
		if !s.cfg.RateLimitEnabled {
			c.Next()
			return
		}
		key := s.keys.Key("ratelimit", c.Request.Method+" "+c.FullPath(), ratelimit.Client(c.ClientIP()))
		res, err := s.limiter.Allow(c.Request.Context(), key, limit, time.Minute)
		if err != nil {
			s.outage.WarnContext(c.Request.Context(), "rate limiter unavailable; request allowed", "err", err)
			c.Next()
			return
		}
		if !s.rateLimited(c, res) {
			c.Next()
		}
	}
}

// rateLimited sets the rate-limit headers of res and, when res refuses the request, answers 429.
func (s *Server) rateLimited(c *gin.Context, res ratelimit.Result) bool {
	h := c.Writer.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(res.Limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(res.Remaining))
	h.Set("X-RateLimit-Reset", strconv.Itoa(int(math.Ceil(res.Reset.Seconds()))))
	if !res.Allowed {
		s.respondError(c, apperr.ErrRateLimited.WithRetryAfter(max(res.Reset, time.Second)))
	}
	return !res.Allowed
}

// idempotent guards a route with the Idempotency-Key mechanism. The route's :id is checked
// first: the record is keyed on the concrete path, and a path of any length would not fit the
// key's index (a 500 instead of the handler's 400).
func (s *Server) idempotent(use keyUse) gin.HandlerFunc {
	guard := idempotencyGuard(s.idem, use, func(c *gin.Context) string {
		if p := principal(c); p.UserID != uuid.Nil {
			return p.UserID.String()
		}
		return "anonymous"
	}, s.respondError, s.log)
	return func(c *gin.Context) {
		if id, ok := c.Params.Get("id"); ok && !validUUID(id) {
			s.respondError(c, apperr.ErrInvalidID.With("param", "id"))
			return
		}
		guard(c)
	}
}
