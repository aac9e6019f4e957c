package httpapi_test

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
	"github.com/dispatchhq/dispatch/internal/testenv"

	"github.com/redis/go-redis/v9"
)

// Emails of the seeded admins.
const (
	adminEmail      = "admin@dispatch.local"
	superadminEmail = "superadmin@dispatch.local"
)

// newAppRedisDown starts an API like newApp whose Redis client points at a closed port: every
// Redis call fails at once, as in an outage.
func newAppRedisDown(t *testing.T, overrides ...string) *app {
	t.Helper()
	redisURL := fmt.Sprintf("redis://127.0.0.1:%d/0", testenv.FreePort(t))
	opts, err := redisx.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err == nil {
		t.Fatalf("something answers on %s; the outage is not simulated", redisURL)
	}
	return startApp(t, rdb, redisx.Prefix("test:down:"+uuid.NewString()+":"), redisURL, overrides...)
}

// itemView is the admin (and, without its last two fields, the public) rendering of an item.
type itemView struct {
	ID             string  `json:"id"`
	Name           string  `json:"name"`
	Description    string  `json:"description"`
	Price          int64   `json:"price"`
	Currency       string  `json:"currency"`
	Stock          int64   `json:"stock"`
	CreatedAt      string  `json:"createdAt"`
	UpdatedAt      string  `json:"updatedAt"`
	PricePaymentID *string `json:"pricePaymentId"`
	DeletedAt      *string `json:"deletedAt"`
}

// itemPage is the list envelope of items.
type itemPage struct {
	Items      []itemView `json:"items"`
	NextCursor *string    `json:"nextCursor"`
	HasMore    bool       `json:"hasMore"`
}

// Key sets of the two item views (SPEC §3 Items).
var (
	publicItemKeys = []string{"createdAt", "currency", "description", "id", "name", "price", "stock", "updatedAt"}
	adminItemKeys  = []string{"createdAt", "currency", "deletedAt", "description", "id", "name", "price", "pricePaymentId", "stock", "updatedAt"}
)

// timestampRE is an RFC 3339 UTC timestamp with millisecond precision (SPEC §1).
var timestampRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)

// newItemBody returns a valid create body with a unique name.
func newItemBody(name string) map[string]any {
	return map[string]any{"name": name, "description": "A thing for tests.", "price": 1250, "stock": 7}
}

// createItem creates an item as c (an admin) and returns its admin view.
func createItem(t *testing.T, c *testenv.Client, body any) itemView {
	t.Helper()
	var it itemView
	c.Do("POST", "/v1/admin/items", body, key()...).Expect(t, 201).Decode(t, &it)
	return it
}

// getItem reads an item through a view ("items" for public, "admin/items" for admin).
func getItem(t *testing.T, c *testenv.Client, view, id string) itemView {
	t.Helper()
	var it itemView
	c.Do("GET", "/v1/"+view+"/"+id, nil).Expect(t, 200).Decode(t, &it)
	return it
}

// listItems reads one page of a list ("items" or "admin/items") with a raw query string.
func listItems(t *testing.T, c *testenv.Client, view, query string) itemPage {
	t.Helper()
	var p itemPage
	path := "/v1/" + view
	if query != "" {
		path += "?" + query
	}
	c.Do("GET", path, nil).Expect(t, 200).Decode(t, &p)
	if p.Items == nil {
		t.Fatalf("GET %s: items is null, want an array", path)
	}
	return p
}

// ids returns the ids of a page's items.
func ids(items []itemView) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}

// findItem returns the item with id in items.
func findItem(items []itemView, id string) (itemView, bool) {
	i := slices.IndexFunc(items, func(it itemView) bool { return it.ID == id })
	if i < 0 {
		return itemView{}, false
	}
	return items[i], true
}

// userID returns the id of the user with email.
func (a *app) userID(email string) string {
	a.t.Helper()
	var id string
	if err := a.db.Get(&id, `SELECT id FROM users WHERE email = $1 AND deleted_at IS NULL`, email); err != nil {
		a.t.Fatalf("user %s: %v", email, err)
	}
	return id
}

// countItems counts item rows (deleted included) with the given name.
func (a *app) countItems(name string) int {
	a.t.Helper()
	var n int
	if err := a.db.Get(&n, `SELECT count(*) FROM items WHERE name = $1`, name); err != nil {
		a.t.Fatal(err)
	}
	return n
}

// exec runs SQL directly on the test database, bypassing the API and its cache invalidation.
func (a *app) exec(query string, args ...any) {
	a.t.Helper()
	if _, err := a.db.Exec(query, args...); err != nil {
		a.t.Fatalf("%s: %v", query, err)
	}
}

// parseTime parses a view timestamp.
func parseTime(t *testing.T, s string) time.Time {
	t.Helper()
	if !timestampRE.MatchString(s) {
		t.Fatalf("timestamp %q is not RFC 3339 UTC with milliseconds", s)
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// customerOrAdmin picks the client allowed on a view.
func customerOrAdmin(view string, customer, admin *testenv.Client) *testenv.Client {
	if strings.HasPrefix(view, "admin/") {
		return admin
	}
	return customer
}

// demoItemID returns the id of the i-th seeded item.
func demoItemID(i int) string { return demo.Items()[i].ID.String() }
