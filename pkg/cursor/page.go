package cursor

import "time"

// Request is a page request: the page size and, after the first page, where it starts.
type Request struct {
	Limit int
	After *Cursor
}

// Page is one page of a list in the API's envelope. Items is never nil.
type Page[T any] struct {
	Items      []T     `json:"items"`
	NextCursor *string `json:"nextCursor"`
	HasMore    bool    `json:"hasMore"`
}

// NewPage builds a page from rows fetched with LIMIT limit+1: the extra row only tells that
// more exist. key returns a row's sort key.
func NewPage[T any](rows []T, limit int, key func(T) (time.Time, string)) Page[T] {
	p := Page[T]{Items: rows}
	if len(rows) > limit {
		p.Items, p.HasMore = rows[:limit], true
		at, id := key(p.Items[limit-1])
		next := Cursor{At: at, ID: id, Limit: limit}.Encode()
		p.NextCursor = &next
	}
	if p.Items == nil {
		p.Items = []T{}
	}
	return p
}

// Map converts a page's items, keeping its position.
func Map[T, U any](p Page[T], f func(T) U) Page[U] {
	out := Page[U]{Items: make([]U, len(p.Items)), NextCursor: p.NextCursor, HasMore: p.HasMore}
	for i, it := range p.Items {
		out.Items[i] = f(it)
	}
	return out
}
