package httpapi

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dispatchhq/dispatch/internal/user"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

func (s *Server) signUp(c *gin.Context) {
	var req user.SignUp
	if err := decode(c, &req); err != nil {
		s.respondError(c, err)
		return
	}
	u, err := s.users.SignUp(c.Request.Context(), req, idempotencyClaim(c.Request.Context()))
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusCreated, selfUser(u))
}

func (s *Server) listUsers(c *gin.Context) {
	page, filter, err := s.userListRequest(c, false)
	if err != nil {
		s.respondError(c, err)
		return
	}
	p, err := s.users.List(c.Request.Context(), filter, page)
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, cursor.Map(p, publicUser))
}

func (s *Server) userListRequest(c *gin.Context, admin bool) (cursor.Request, user.Filter, error) {
	var f user.Filter
	page, err := pageRequest(c)
	if err != nil {
		return page, f, err
	}
	if f.Name, err = query(c, "name"); err != nil {
		return page, f, err
	}
	if admin {
		if f.Email, err = query(c, "email"); err != nil {
			return page, f, err
		}
		if f.Role, err = query(c, "role"); err != nil {
			return page, f, err
		}
	}
	return page, f, nil
}

func (s *Server) getUser(c *gin.Context) {
	id, err := pathID(c, "id")
	if err != nil {
		s.respondError(c, err)
		return
	}
	u, err := s.users.Get(c.Request.Context(), id)
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, publicUser(u))
}

func (s *Server) me(c *gin.Context) {
	u, err := s.users.Get(c.Request.Context(), principal(c).UserID)
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, selfUser(u))
}

func (s *Server) updateMe(c *gin.Context) {
	var req user.Update
	if err := decode(c, &req); err != nil {
		s.respondError(c, err)
		return
	}
	// Password changes are counted per session, each try before its check (argon2id takes a
	// while: counting failures after it would let a burst through), against the login limit: a
	// stolen access token is one session, so it cannot become a way to guess its owner's
	// password, nor lock the owner's other sessions out. A rate limit like the others, off with
	// them.
	ctx, me := c.Request.Context(), principal(c)
	if req.Password != nil && s.cfg.RateLimitEnabled {
		key := s.keys.Key("ratelimit", "password-change", me.SessionID.String())
		res, err := s.limiter.Allow(ctx, key, s.cfg.RateLimits.Login, time.Minute)
		switch {
		case err != nil:
			s.outage.WarnContext(ctx, "rate limiter unavailable; password change allowed", "err", err)
		case !res.Allowed:
			s.rateLimited(c, res) // its headers tell this limit, not the route's
			return
		}
	}
	u, err := s.users.UpdateSelf(ctx, me, req, idempotencyClaim(ctx))
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, selfUser(u))
}

func (s *Server) deleteMe(c *gin.Context) {
	if err := noBody(c); err != nil {
		s.respondError(c, err)
		return
	}
	if err := s.users.DeleteSelf(c.Request.Context(), principal(c)); err != nil {
		s.respondError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (s *Server) adminCreateUser(c *gin.Context) {
	var req user.AdminCreate
	if err := decode(c, &req); err != nil {
		s.respondError(c, err)
		return
	}
	u, err := s.users.CreateByAdmin(c.Request.Context(), principal(c), req, idempotencyClaim(c.Request.Context()))
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusCreated, adminUser(u))
}

func (s *Server) adminListUsers(c *gin.Context) {
	page, filter, err := s.userListRequest(c, true)
	if err != nil {
		s.respondError(c, err)
		return
	}
	p, err := s.users.List(c.Request.Context(), filter, page)
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, cursor.Map(p, adminUser))
}

func (s *Server) adminGetUser(c *gin.Context) {
	id, err := pathID(c, "id")
	if err != nil {
		s.respondError(c, err)
		return
	}
	u, err := s.users.Get(c.Request.Context(), id)
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, adminUser(u))
}

func (s *Server) adminUpdateUser(c *gin.Context) {
	id, err := pathID(c, "id")
	if err != nil {
		s.respondError(c, err)
		return
	}
	var req user.AdminUpdate
	if err := decode(c, &req); err != nil {
		s.respondError(c, err)
		return
	}
	u, err := s.users.UpdateByAdmin(c.Request.Context(), principal(c), id, req, idempotencyClaim(c.Request.Context()))
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, adminUser(u))
}

func (s *Server) adminDeleteUser(c *gin.Context) {
	id, err := pathID(c, "id")
	if err == nil {
		err = noBody(c)
	}
	if err != nil {
		s.respondError(c, err)
		return
	}
	if err := s.users.DeleteByAdmin(c.Request.Context(), principal(c), id); err != nil {
		s.respondError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
