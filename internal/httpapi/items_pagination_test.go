package httpapi_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/pkg/cursor"
)

// seedSameTimestamp inserts n items straight into the database, in groups sharing one
// created_at (some groups differing only in microseconds, below the views' millisecond
// precision), with random ids so that id order is not insertion order. Every third item is
// soft-deleted. It returns nothing: callers read the expected order back with SQL.
func seedSameTimestamp(a *app, n int) {
	a.t.Helper()
	stamps := []string{
		"2024-03-01 12:00:00.123456+00", // most rows share this one
		"2024-03-01 12:00:00.123457+00", // one microsecond later: same millisecond
		"2024-03-01 12:00:00.123455+00", // one microsecond earlier
		"2023-12-31 23:59:59.999999+00",
	}
	for i := 0; i < n; i++ {
		at := stamps[0]
		if i%5 == 1 {
			at = stamps[1+i%3]
		}
		var deleted any
		if i%3 == 2 {
			deleted = "2024-06-01 00:00:00+00"
		}
		a.exec(`INSERT INTO items (id, name, description, price, currency, stock, created_at, updated_at, deleted_at)
VALUES ($1, $2, 'seeded', 100, 'usd', 1, $3, $3, $4)`, uuid.New(), fmt.Sprintf("Paged Item %03d", i), at, deleted)
	}
}

// expectedOrder is the SPEC §1 keyset order read straight from the database.
func expectedOrder(a *app, includeDeleted bool, nameLike string) []string {
	a.t.Helper()
	var out []string
	q := `SELECT id::text FROM items WHERE ($1 OR deleted_at IS NULL) AND name ILIKE $2 ORDER BY created_at DESC, id DESC`
	if err := a.db.Select(&out, q, includeDeleted, "%"+nameLike+"%"); err != nil {
		a.t.Fatal(err)
	}
	return out
}

// walk follows nextCursor from the first page (with query) to the end, checking each page's
// envelope, and returns the ids in the order served.
func walk(t *testing.T, c *testenv.Client, view, query string, limit int) []string {
	t.Helper()
	var got []string
	q := query
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("pagination does not end")
		}
		p := listItems(t, c, view, q)
		if len(p.Items) > limit {
			t.Fatalf("page of %d items, limit %d", len(p.Items), limit)
		}
		got = append(got, ids(p.Items)...)
		if !p.HasMore {
			if p.NextCursor != nil {
				t.Fatalf("last page has nextCursor %q", *p.NextCursor)
			}
			return got
		}
		if p.NextCursor == nil || *p.NextCursor == "" {
			t.Fatal("hasMore without nextCursor")
		}
		if len(p.Items) != limit {
			t.Fatalf("a page before the last holds %d items, want the limit %d", len(p.Items), limit)
		}
		// Follow the cursor alone: it carries the limit. Filters are sent again.
		v, _ := url.ParseQuery(query)
		v.Del("limit")
		v.Set("cursor", *p.NextCursor)
		q = v.Encode()
	}
}

func TestItemPaginationWalksEveryRowOnce(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	seedSameTimestamp(a, 61)

	for _, view := range []struct {
		path    string
		deleted bool
	}{{"items", false}, {"admin/items", true}} {
		want := expectedOrder(a, view.deleted, "")
		if len(want) < 40 {
			t.Fatalf("only %d rows seeded", len(want))
		}
		// Limits that divide the total, that do not, 1 and the maximum.
		limits := []int{1, 2, 3, 7, 10, 20, 100, len(want), len(want) - 1}
		for _, limit := range limits {
			if limit < 1 || limit > 100 {
				continue
			}
			got := walk(t, admin, view.path, fmt.Sprintf("limit=%d", limit), limit)
			if !slices.Equal(got, want) {
				t.Fatalf("%s limit %d: served %d ids, want %d in keyset order\n got %v\nwant %v",
					view.path, limit, len(got), len(want), got, want)
			}
		}
		// The default limit is 20.
		if p := listItems(t, admin, view.path, ""); len(p.Items) != 20 || !p.HasMore {
			t.Fatalf("%s default page: %d items, hasMore %v", view.path, len(p.Items), p.HasMore)
		}
		if got := walk(t, admin, view.path, "", 20); !slices.Equal(got, want) {
			t.Fatalf("%s default limit walk differs from the keyset order", view.path)
		}
	}

	// With a filter the walk covers exactly the filtered rows.
	want := expectedOrder(a, false, "Paged Item 0")
	if got := walk(t, admin, "items", "name=paged+item+0&limit=4", 4); !slices.Equal(got, want) {
		t.Fatalf("filtered walk: got %v\nwant %v", got, want)
	}

	// One page holding everything: no cursor.
	p := listItems(t, admin, "items", "limit=100")
	if p.HasMore || p.NextCursor != nil || len(p.Items) != len(expectedOrder(a, false, "")) {
		t.Fatalf("single page: %d items, hasMore %v, cursor %v", len(p.Items), p.HasMore, p.NextCursor)
	}
	// An empty result is an empty array, not null.
	if r := admin.Do("GET", "/v1/items?name=no-such-item", nil).Expect(t, 200); string(r.Body) != `{"items":[],"nextCursor":null,"hasMore":false}` {
		t.Fatalf("empty page: %s", r.Body)
	}
}

func TestItemPaginationCursorCarriesTheLimit(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	seedSameTimestamp(a, 30)
	want := expectedOrder(a, false, "")

	p1 := listItems(t, admin, "items", "limit=7")
	if len(p1.Items) != 7 || p1.NextCursor == nil {
		t.Fatalf("page 1: %+v", p1)
	}
	// The token is opaque base64url: no padding, no characters needing escapes in a URL.
	if strings.ContainsAny(*p1.NextCursor, "+/=") || url.QueryEscape(*p1.NextCursor) != *p1.NextCursor {
		t.Fatalf("cursor %q is not unpadded base64url", *p1.NextCursor)
	}
	p2 := listItems(t, admin, "items", "cursor="+*p1.NextCursor)
	if len(p2.Items) != 7 {
		t.Fatalf("following the cursor without a limit gave %d items, want the carried 7", len(p2.Items))
	}
	if !slices.Equal(append(ids(p1.Items), ids(p2.Items)...), want[:14]) {
		t.Fatal("page 2 does not continue page 1")
	}
	// An explicit limit wins over the carried one, and the next cursor carries the new limit.
	p3 := listItems(t, admin, "items", "limit=3&cursor="+*p2.NextCursor)
	if !slices.Equal(ids(p3.Items), want[14:17]) {
		t.Fatalf("explicit limit with a cursor: %v", ids(p3.Items))
	}
	p4 := listItems(t, admin, "items", "cursor="+*p3.NextCursor)
	if !slices.Equal(ids(p4.Items), want[17:20]) {
		t.Fatalf("cursor of a limit-3 page: %v", ids(p4.Items))
	}
	// Cursors name a position, not a list: the public cursor works on the admin list too, and
	// both continue after the same row.
	pa := listItems(t, admin, "admin/items", "cursor="+*p1.NextCursor)
	if len(pa.Items) != 7 {
		t.Fatalf("admin page from a public cursor: %d items", len(pa.Items))
	}
	adminWant := expectedOrder(a, true, "")
	at := slices.Index(adminWant, p1.Items[6].ID)
	if !slices.Equal(ids(pa.Items), adminWant[at+1:at+8]) {
		t.Fatal("admin page from a public cursor does not continue after the cursor's row")
	}
}

func TestItemPaginationIsStableUnderWrites(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	seedSameTimestamp(a, 20)
	before := expectedOrder(a, false, "")

	p1 := listItems(t, admin, "items", "limit=5")
	// Writes between pages: a new item (newest, so before the cursor), and the deletion of
	// the row the cursor points at. Neither shifts the rest of the walk.
	createItem(t, admin, newItemBody("Inserted Mid-Walk"))
	admin.Do("DELETE", "/v1/admin/items/"+p1.Items[4].ID, nil).Expect(t, 204)
	rest := walk(t, admin, "items", "cursor="+url.QueryEscape(*p1.NextCursor), 5)
	if !slices.Equal(rest, before[5:]) {
		t.Fatalf("walk after writes:\n got %v\nwant %v", rest, before[5:])
	}
}

func TestItemPaginationRefusesBadParameters(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)

	for _, limit := range []string{"0", "101", "-1", "abc", "1.5", "1e1", "99999999999999999999", " 5"} {
		for _, path := range []string{"/v1/items", "/v1/admin/items"} {
			expectValidation(t, admin.Do("GET", path+"?limit="+url.QueryEscape(limit), nil), path, "limit=validation.range")
		}
	}
	for _, limit := range []string{"1", "100", ""} { // empty: none given, like an empty cursor
		admin.Do("GET", "/v1/items?limit="+limit, nil).Expect(t, 200)
	}

	enc := func(v any) string {
		raw, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(raw)
	}
	id := uuid.NewString()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	good := cursor.Cursor{At: time.Now(), ID: id, Limit: 5}.Encode()
	admin.Do("GET", "/v1/items?cursor="+good, nil).Expect(t, 200)

	// padded encodes raw JSON in base64url with '=' padding (adding a space so there is some).
	padded := func(raw string) string {
		if len(raw)%3 == 0 {
			raw += " "
		}
		tok := base64.URLEncoding.EncodeToString([]byte(raw))
		if !strings.HasSuffix(tok, "=") {
			t.Fatalf("no padding in %q", tok)
		}
		return tok
	}
	for name, tok := range map[string]string{
		"garbage":          "not a cursor!",
		"not base64":       "%%%%",
		"padded base64":    padded(`{"t":"` + now + `","i":"` + id + `","l":5}`),
		"std base64":       strings.ReplaceAll(strings.ReplaceAll(good, "-", "+"), "_", "/") + "+/",
		"not json":         base64.RawURLEncoding.EncodeToString([]byte("hello")),
		"json array":       enc([]any{now, id, 5}),
		"empty object":     enc(map[string]any{}),
		"bad time":         enc(map[string]any{"t": "yesterday", "i": id, "l": 5}),
		"bad id":           enc(map[string]any{"t": now, "i": "1 OR 1=1", "l": 5}),
		"short uuid":       enc(map[string]any{"t": now, "i": strings.ReplaceAll(id, "-", ""), "l": 5}),
		"limit zero":       enc(map[string]any{"t": now, "i": id, "l": 0}),
		"limit 101":        enc(map[string]any{"t": now, "i": id, "l": 101}),
		"limit negative":   enc(map[string]any{"t": now, "i": id, "l": -3}),
		"limit string":     enc(map[string]any{"t": now, "i": id, "l": "5"}),
		"offset +23:59":    enc(map[string]any{"t": "2024-01-01T00:00:00+23:59", "i": id, "l": 5}),
		"offset -15:00":    enc(map[string]any{"t": "2024-01-01T00:00:00-15:00", "i": id, "l": 5}),
		"year 10000 (UTC)": enc(map[string]any{"t": "9999-12-31T23:59:59-01:00", "i": id, "l": 5}),
		"too long":         strings.Repeat("A", cursor.MaxLen+1),
		"truncated cursor": good[:len(good)-3],
	} {
		for _, path := range []string{"/v1/items", "/v1/admin/items"} {
			r := admin.Do("GET", path+"?cursor="+url.QueryEscape(tok), nil)
			if r.Status != 400 {
				t.Errorf("%s with %s cursor: status %d\n%s", path, name, r.Status, r.Body)
				continue
			}
			r.ExpectError(t, 400, "common.errors.invalidCursor")
		}
	}
	// A bad limit next to a good cursor is still a bad limit.
	expectValidation(t, admin.Do("GET", "/v1/items?limit=0&cursor="+good, nil), "/v1/items", "limit=validation.range")
}
