package httpapi

import (
	"net/http"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/user"
)

type loginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

func (s *Server) login(c *gin.Context) {
	var req loginRequest
	if err := decode(c, &req); err != nil {
		s.respondError(c, err)
		return
	}
	// Longer than any account's is a wrong credential like another (SPEC §3: they all answer
	// alike), and needs no hash to tell.
	req.Email = user.NormalizeEmail(req.Email)
	if utf8.RuneCountInString(req.Email) > 254 || utf8.RuneCountInString(req.Password) > 128 {
		s.respondError(c, auth.ErrInvalidCredentials)
		return
	}
	var v apperr.Validation
	v.Length("email", req.Email, 1, 254)
	v.Length("password", req.Password, 1, 128)
	if err := v.Err(); err != nil {
		s.respondError(c, err)
		return
	}
	pair, err := s.auth.Login(c.Request.Context(), req.Email, req.Password,
		auth.Client{IP: c.ClientIP(), UserAgent: c.Request.UserAgent()})
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, pair)
}

// tokenBody is the body refresh and logout take besides none: the refresh token, as clients
// that keep it beside the access token send it. The Bearer header is SPEC's way.
type tokenBody struct {
	RefreshToken *string `json:"refreshToken"`
}

// refresh takes the refresh token from the body when it is there, else as Bearer: a client
// that sends it in the body keeps its access token in the Authorization header.
func (s *Server) refresh(c *gin.Context) {
	var in tokenBody
	if err := decodeOptional(c, &in); err != nil {
		s.respondError(c, err)
		return
	}
	token, ok := bearer(c)
	if in.RefreshToken != nil {
		token, ok = *in.RefreshToken, true
	}
	if !ok || token == "" {
		s.respondError(c, apperr.ErrUnauthenticated)
		return
	}
	// The key was checked by idempotencyGuard; the session keeps what its retry needs.
	pair, err := s.auth.Refresh(c.Request.Context(), token, c.GetHeader(idemHeader))
	if err != nil {
		s.respondError(c, err)
		return
	}
	if pair.Replayed {
		c.Header(idemReplayedHeader, "true")
	}
	c.JSON(http.StatusOK, pair)
}

// logout ends the access token's session; a refresh token sent with it is of no use (the
// session is known) and is only accepted.
func (s *Server) logout(c *gin.Context) {
	if err := decodeOptional(c, &tokenBody{}); err != nil {
		s.respondError(c, err)
		return
	}
	if err := s.auth.Logout(c.Request.Context(), principal(c)); err != nil {
		s.respondError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
