// Package catalog is the items domain: validation, the service that changes items and the
// Redis cache-aside in front of item reads.
package catalog

import (
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/apperr"
	"github.com/dispatchhq/dispatch/internal/payment"
)

// Errors of the catalog.
var (
	ErrNotFound          = apperr.New(apperr.NotFound, "items.errors.notFound")
	ErrInsufficientStock = apperr.New(apperr.Conflict, "items.errors.insufficientStock")
)

// Limits of item fields beyond SPEC §3: every accepted value fits its column, and an item can
// be bought one at a time (a dearer one could never be charged).
const (
	MaxPrice = payment.MaxAmount // minor units
	MaxStock = 1_000_000_000
)

// Currencies are the accepted currency codes; the first is the default.
var Currencies = []string{"usd", "brl", "eur"}

// Item is a catalog entry.
type Item struct {
	ID             uuid.UUID  `db:"id"`
	Name           string     `db:"name"`
	Description    string     `db:"description"`
	Price          int64      `db:"price"`
	Currency       string     `db:"currency"`
	Stock          int64      `db:"stock"`
	PricePaymentID *string    `db:"price_payment_id"`
	CreatedAt      time.Time  `db:"created_at"`
	UpdatedAt      time.Time  `db:"updated_at"`
	DeletedAt      *time.Time `db:"deleted_at"`
}

// Create is the body of POST /v1/admin/items.
type Create struct {
	Name           string  `json:"name"`
	Description    string  `json:"description"`
	Price          *int64  `json:"price"`
	Currency       *string `json:"currency"`
	Stock          *int64  `json:"stock"`
	PricePaymentID *string `json:"pricePaymentId"`
}

// Update is the body of PATCH /v1/admin/items/:id; absent (or null) fields are left alone.
type Update struct {
	Name           *string `json:"name"`
	Description    *string `json:"description"`
	Price          *int64  `json:"price"`
	Currency       *string `json:"currency"`
	Stock          *int64  `json:"stock"`
	PricePaymentID *string `json:"pricePaymentId"`
}

// Filter selects items in lists. Deleted items are listed only when IncludeDeleted is set.
type Filter struct {
	Name           string
	Description    string
	IncludeDeleted bool
}

func (c Create) item() (Item, error) {
	var v apperr.Validation
	it := Item{Name: strings.TrimSpace(c.Name), Description: strings.TrimSpace(c.Description), Currency: Currencies[0]}
	v.Text("name", it.Name, 2, 200)
	v.Text("description", it.Description, 1, 5000)
	if v.Check(c.Price != nil, "price", "validation.required") {
		it.Price = *c.Price
		v.Range("price", it.Price, 1, MaxPrice)
	}
	if v.Check(c.Stock != nil, "stock", "validation.required") {
		it.Stock = *c.Stock
		v.Range("stock", it.Stock, 0, MaxStock)
	}
	if c.Currency != nil {
		it.Currency = strings.ToLower(strings.TrimSpace(*c.Currency))
		v.OneOf("currency", it.Currency, Currencies...)
	}
	if c.PricePaymentID != nil {
		p := strings.TrimSpace(*c.PricePaymentID)
		v.Text("pricePaymentId", p, 1, 255)
		it.PricePaymentID = &p
	}
	return it, v.Err()
}

func (u Update) apply(it *Item) error {
	var v apperr.Validation
	if u.Name != nil {
		it.Name = strings.TrimSpace(*u.Name)
		v.Text("name", it.Name, 2, 200)
	}
	if u.Description != nil {
		it.Description = strings.TrimSpace(*u.Description)
		v.Text("description", it.Description, 1, 5000)
	}
	if u.Price != nil {
		it.Price = *u.Price
		v.Range("price", it.Price, 1, MaxPrice)
	}
	if u.Stock != nil {
		it.Stock = *u.Stock
		v.Range("stock", it.Stock, 0, MaxStock)
	}
	if u.Currency != nil {
		it.Currency = strings.ToLower(strings.TrimSpace(*u.Currency))
		v.OneOf("currency", it.Currency, Currencies...)
	}
	if u.PricePaymentID != nil {
		p := strings.TrimSpace(*u.PricePaymentID)
		v.Text("pricePaymentId", p, 1, 255)
		it.PricePaymentID = &p
	}
	return v.Err()
}

// Reservation is a quantity of an item taken from (or given back to) stock.
type Reservation struct {
	ItemID   uuid.UUID
	Quantity int
}

// ReservedItem is an item as an order's reservation found it, with its row locked.
type ReservedItem struct {
	ID       uuid.UUID `json:"id"`
	Name     string    `json:"name"`
	Price    int64     `json:"price"`
	Currency string    `json:"currency"`
	Stock    int64     `json:"stock"`
	Deleted  bool      `json:"deleted"`
}
