package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

// Cache views: the public and admin renderings of an item are cached apart.
const (
	viewPublic = "public"
	viewAdmin  = "admin"
)

func (s *Server) getItem(c *gin.Context)      { s.readItem(c, viewPublic) }
func (s *Server) adminGetItem(c *gin.Context) { s.readItem(c, viewAdmin) }

func (s *Server) readItem(c *gin.Context, view string) {
	id, err := pathID(c, "id")
	if err != nil {
		s.respondError(c, err)
		return
	}
	ctx := c.Request.Context()
	body, err := s.catalog.Cache.Item(ctx, view, id, func() ([]byte, error) {
		it, err := s.catalog.Get(ctx, id, view == viewAdmin)
		if err != nil {
			return nil, err
		}
		if view == viewAdmin {
			return json.Marshal(adminItem(it))
		}
		return json.Marshal(publicItem(it))
	})
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", body)
}

func (s *Server) listItems(c *gin.Context)      { s.readItems(c, viewPublic) }
func (s *Server) adminListItems(c *gin.Context) { s.readItems(c, viewAdmin) }

func (s *Server) readItems(c *gin.Context, view string) {
	page, err := pageRequest(c)
	if err != nil {
		s.respondError(c, err)
		return
	}
	f := catalog.Filter{IncludeDeleted: view == viewAdmin}
	if f.Name, err = query(c, "name"); err != nil {
		s.respondError(c, err)
		return
	}
	if view == viewAdmin {
		if f.Description, err = query(c, "description"); err != nil {
			s.respondError(c, err)
			return
		}
	}
	ctx := c.Request.Context()
	load := func() ([]byte, error) {
		p, err := s.catalog.List(ctx, f, page)
		if err != nil {
			return nil, err
		}
		if view == viewAdmin {
			return json.Marshal(cursor.Map(p, adminItem))
		}
		return json.Marshal(cursor.Map(p, publicItem))
	}
	var body []byte
	if page.After != nil || f.Name != "" || f.Description != "" {
		// Only unfiltered first pages are cached (one entry per view and limit): a cursor (not
		// signed) and a filter are the client's to write, and an entry for each would let
		// anyone fill Redis, which the queues share, with pages under made-up ones.
		body, err = load()
	} else {
		body, err = s.catalog.Cache.List(ctx, view, "limit="+strconv.Itoa(page.Limit), load)
	}
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", body)
}

func (s *Server) createItem(c *gin.Context) {
	var req catalog.Create
	if err := decode(c, &req); err != nil {
		s.respondError(c, err)
		return
	}
	it, err := s.catalog.Create(c.Request.Context(), req, idempotencyClaim(c.Request.Context()))
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusCreated, adminItem(it))
}

func (s *Server) updateItem(c *gin.Context) {
	id, err := pathID(c, "id")
	if err != nil {
		s.respondError(c, err)
		return
	}
	var req catalog.Update
	if err := decode(c, &req); err != nil {
		s.respondError(c, err)
		return
	}
	it, err := s.catalog.Update(c.Request.Context(), id, req, idempotencyClaim(c.Request.Context()))
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, adminItem(it))
}

func (s *Server) deleteItem(c *gin.Context) {
	id, err := pathID(c, "id")
	if err == nil {
		err = noBody(c)
	}
	if err != nil {
		s.respondError(c, err)
		return
	}
	if err := s.catalog.Delete(c.Request.Context(), id); err != nil {
		s.respondError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
