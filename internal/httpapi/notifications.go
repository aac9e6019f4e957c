package httpapi

import (
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/notification"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

type notificationView struct {
	ID        uuid.UUID      `json:"id"`
	Event     string         `json:"event"`
	Type      string         `json:"type"`
	Title     string         `json:"title"`
	Message   string         `json:"message"`
	Data      map[string]any `json:"data"`
	Read      bool           `json:"read"`
	ReadAt    *string        `json:"readAt"`
	CreatedAt string         `json:"createdAt"`
}

func renderNotification(lang string) func(notification.Notification) notificationView {
	return func(n notification.Notification) notificationView {
		title, msg := n.Render(lang)
		data := n.Data
		if data == nil {
			data = map[string]any{}
		}
		return notificationView{ID: n.ID, Event: n.Event, Type: n.Kind(), Title: title, Message: msg, Data: data,
			Read: n.ReadAt != nil, ReadAt: formatTimePtr(n.ReadAt), CreatedAt: formatTime(n.CreatedAt)}
	}
}

func (s *Server) listNotifications(c *gin.Context) {
	page, err := pageRequest(c)
	if err != nil {
		s.respondError(c, err)
		return
	}
	unread, err := queryBool(c, "unread")
	if err != nil {
		s.respondError(c, err)
		return
	}
	p, err := s.notifications.List(c.Request.Context(), principal(c).UserID, unread, page)
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, cursor.Map(p, renderNotification(language(c))))
}

func (s *Server) unreadCount(c *gin.Context) {
	n, err := s.notifications.UnreadCount(c.Request.Context(), principal(c).UserID)
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"count": n})
}

func (s *Server) hasNew(c *gin.Context) {
	b, err := s.notifications.HasNew(c.Request.Context(), principal(c).UserID)
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"hasNew": b})
}

func (s *Server) markRead(c *gin.Context) {
	id, err := pathID(c, "id")
	if err == nil {
		err = noBody(c)
	}
	if err != nil {
		s.respondError(c, err)
		return
	}
	n, err := s.notifications.MarkRead(c.Request.Context(), principal(c).UserID, id)
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, renderNotification(language(c))(n))
}

func (s *Server) readAll(c *gin.Context) {
	if err := noBody(c); err != nil {
		s.respondError(c, err)
		return
	}
	n, err := s.notifications.ReadAll(c.Request.Context(), principal(c).UserID)
	if err != nil {
		s.respondError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"updated": n})
}
