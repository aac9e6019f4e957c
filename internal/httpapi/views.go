package httpapi

import (
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/catalog"
	"github.com/dispatchhq/dispatch/internal/user"
)

// formatTime renders timestamps as RFC 3339 UTC with millisecond precision (SPEC §1).
func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

func formatTimePtr(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := formatTime(*t)
	return &s
}

type publicUserView struct {
	ID        uuid.UUID `json:"id"`
	Name      string    `json:"name"`
	CreatedAt string    `json:"createdAt"`
}

type selfUserView struct {
	ID        uuid.UUID     `json:"id"`
	Name      string        `json:"name"`
	Email     string        `json:"email"`
	Language  string        `json:"language"`
	Role      string        `json:"role"`
	CreatedAt string        `json:"createdAt"`
	Address   *user.Address `json:"address"`
}

type adminUserView struct {
	selfUserView
	UpdatedAt string `json:"updatedAt"`
}

func publicUser(u user.User) publicUserView {
	return publicUserView{ID: u.ID, Name: u.Name, CreatedAt: formatTime(u.CreatedAt)}
}

func selfUser(u user.User) selfUserView {
	return selfUserView{ID: u.ID, Name: u.Name, Email: u.Email, Language: u.Language, Role: string(u.Role),
		CreatedAt: formatTime(u.CreatedAt), Address: u.Address}
}

func adminUser(u user.User) adminUserView {
	return adminUserView{selfUserView: selfUser(u), UpdatedAt: formatTime(u.UpdatedAt)}
}

type publicItemView struct {
	ID          uuid.UUID `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Price       int64     `json:"price"`
	Currency    string    `json:"currency"`
	Stock       int64     `json:"stock"`
	CreatedAt   string    `json:"createdAt"`
	UpdatedAt   string    `json:"updatedAt"`
}

type adminItemView struct {
	publicItemView
	PricePaymentID *string `json:"pricePaymentId"`
	DeletedAt      *string `json:"deletedAt"`
}

func publicItem(it catalog.Item) publicItemView {
	return publicItemView{ID: it.ID, Name: it.Name, Description: it.Description, Price: it.Price,
		Currency: it.Currency, Stock: it.Stock, CreatedAt: formatTime(it.CreatedAt), UpdatedAt: formatTime(it.UpdatedAt)}
}

func adminItem(it catalog.Item) adminItemView {
	return adminItemView{publicItemView: publicItem(it), PricePaymentID: it.PricePaymentID, DeletedAt: formatTimePtr(it.DeletedAt)}
}
