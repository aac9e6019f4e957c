package httpapi_test

import (
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/httpapi"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

func TestItemCreateReturnsAdminView(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)

	r := admin.Do("POST", "/v1/admin/items", map[string]any{
		"name": "  Desk Lamp  ", "description": " Warm light. ", "price": 2599, "stock": 0,
	}, key()...).Expect(t, 201)
	m := r.JSON(t)
	if got := keysOf(m); !slices.Equal(got, adminItemKeys) {
		t.Fatalf("create answered keys %v, want the admin view %v", got, adminItemKeys)
	}
	var it itemView
	r.Decode(t, &it)
	if it.Name != "Desk Lamp" || it.Description != "Warm light." {
		t.Fatalf("name/description not trimmed: %q / %q", it.Name, it.Description)
	}
	if it.Price != 2599 || it.Stock != 0 || it.Currency != "usd" {
		t.Fatalf("price %d stock %d currency %q, want 2599, 0, usd (the default currency)", it.Price, it.Stock, it.Currency)
	}
	if m["pricePaymentId"] != nil || m["deletedAt"] != nil {
		t.Fatalf("pricePaymentId and deletedAt must be null on a new item: %s", r.Body)
	}
	created, updated := parseTime(t, it.CreatedAt), parseTime(t, it.UpdatedAt)
	if updated.Before(created) {
		t.Fatalf("updatedAt %s before createdAt %s", it.UpdatedAt, it.CreatedAt)
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("content type %q", r.Header.Get("Content-Type"))
	}

	// The row holds exactly what the answer says.
	var row struct {
		Name, Description, Currency string
		Price, Stock                int64
	}
	if err := a.db.Get(&row, `SELECT name, description, currency, price, stock FROM items WHERE id = $1`, it.ID); err != nil {
		t.Fatal(err)
	}
	if row.Name != "Desk Lamp" || row.Description != "Warm light." || row.Currency != "usd" || row.Price != 2599 || row.Stock != 0 {
		t.Fatalf("stored row %+v does not match the answer %+v", row, it)
	}

	// Every field given: the answer echoes them, and the item reads back the same.
	full := createItem(t, admin, map[string]any{
		"name": "Euro Plug", "description": "Type C adapter.", "price": 1, "currency": "eur", "stock": 1000000000,
		"pricePaymentId": "price_1PqXyZ",
	})
	if full.Currency != "eur" || full.Price != 1 || full.Stock != 1000000000 || full.PricePaymentID == nil || *full.PricePaymentID != "price_1PqXyZ" {
		t.Fatalf("full create answered %+v", full)
	}
	if got := getItem(t, admin, "admin/items", full.ID); !reflect.DeepEqual(got, full) {
		t.Fatalf("admin GET %+v differs from the create answer %+v", got, full)
	}

	// Currencies are the three of the spec; JSON null for the optional currency means absent.
	for _, cur := range []string{"usd", "brl", "eur"} {
		if got := createItem(t, admin, map[string]any{"name": "Coin " + cur, "description": "d", "price": 5, "stock": 1, "currency": cur}); got.Currency != cur {
			t.Fatalf("currency %q stored as %q", cur, got.Currency)
		}
	}
	if got := createItem(t, admin, map[string]any{"name": "Null currency", "description": "d", "price": 5, "stock": 1, "currency": nil, "pricePaymentId": nil}); got.Currency != "usd" || got.PricePaymentID != nil {
		t.Fatalf("null optionals gave currency %q pricePaymentId %v", got.Currency, got.PricePaymentID)
	}
	// Lengths count characters, not bytes: 200 two-byte characters is a valid name.
	long := strings.Repeat("é", 200)
	if got := createItem(t, admin, map[string]any{"name": long, "description": strings.Repeat("ü", 5000), "price": 5, "stock": 1}); got.Name != long {
		t.Fatal("200-character name not stored intact")
	}
}

func TestItemCreateValidation(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)

	valid := func(kv ...any) map[string]any {
		m := newItemBody("Validation Probe")
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	without := func(field string) map[string]any {
		m := newItemBody("Validation Probe")
		delete(m, field)
		return m
	}
	cases := []struct {
		name string
		body any
		want string // field=code
	}{
		{"name missing", without("name"), "name=validation.required"},
		{"name empty", valid("name", ""), "name=validation.required"},
		{"name blank", valid("name", "   "), "name=validation.required"},
		{"name one char", valid("name", "x"), "name=validation.length"},
		{"name one char after trim", valid("name", "  x  "), "name=validation.length"},
		{"name 201 chars", valid("name", strings.Repeat("n", 201)), "name=validation.length"},
		{"name 201 multibyte chars", valid("name", strings.Repeat("ñ", 201)), "name=validation.length"},
		{"name invisible", valid("name", "\u200b\u200b\u2060"), "name=validation.required"},
		{"name control character", valid("name", "Bell\u0007 Item"), "name=validation.controlCharacter"},
		{"description C1 control", valid("description", "a\u0085b\u009b"), "description=validation.controlCharacter"},
		{"name number", valid("name", 12), "name=validation.type"},
		{"name null", valid("name", nil), "name=validation.required"},
		{"description missing", without("description"), "description=validation.required"},
		{"description empty", valid("description", ""), "description=validation.required"},
		{"description 5001 chars", valid("description", strings.Repeat("d", 5001)), "description=validation.length"},
		{"description array", valid("description", []string{"a"}), "description=validation.type"},
		{"price missing", without("price"), "price=validation.required"},
		{"price null", valid("price", nil), "price=validation.required"},
		{"price zero", valid("price", 0), "price=validation.range"},
		{"price negative", valid("price", -1), "price=validation.range"},
		{"price float", valid("price", 12.5), "price=validation.type"},
		{"price string", valid("price", "1250"), "price=validation.type"},
		{"price bool", valid("price", true), "price=validation.type"},
		{"price beyond int64", `{"name":"Validation Probe","description":"d","stock":1,"price":99999999999999999999}`, "price=validation.type"},
		{"price exponent", `{"name":"Validation Probe","description":"d","stock":1,"price":1e3}`, "price=validation.type"},
		{"price 1.0", `{"name":"Validation Probe","description":"d","stock":1,"price":1.0}`, "price=validation.type"},
		{"stock missing", without("stock"), "stock=validation.required"},
		{"stock null", valid("stock", nil), "stock=validation.required"},
		{"stock negative", valid("stock", -1), "stock=validation.range"},
		{"stock float", valid("stock", 2.5), "stock=validation.type"},
		{"stock string", valid("stock", "3"), "stock=validation.type"},
		{"stock object", valid("stock", map[string]any{"n": 1}), "stock=validation.type"},
		{"currency unknown", valid("currency", "gbp"), "currency=validation.oneOf"},
		{"currency empty", valid("currency", ""), "currency=validation.oneOf"},
		{"currency number", valid("currency", 840), "currency=validation.type"},
		{"pricePaymentId empty", valid("pricePaymentId", ""), "pricePaymentId=validation.required"},
		{"pricePaymentId too long", valid("pricePaymentId", strings.Repeat("p", 256)), "pricePaymentId=validation.length"},
		{"unknown field", valid("color", "red"), "color=validation.unknownField"},
		{"read-only field", valid("id", "0193a000-0000-7000-8000-000000000001"), "id=validation.unknownField"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectValidation(t, admin.Do("POST", itemsPath, tc.body, key()...), itemsPath, tc.want)
		})
	}

	// Every invalid field is reported at once.
	expectValidation(t, admin.Do("POST", itemsPath, map[string]any{}, key()...), itemsPath,
		"name=validation.required", "description=validation.required", "price=validation.required", "stock=validation.required")
	expectValidation(t, admin.Do("POST", itemsPath,
		map[string]any{"name": "x", "description": "", "price": 0, "stock": -1, "currency": "xyz"}, key()...), itemsPath,
		"name=validation.length", "description=validation.required", "price=validation.range", "stock=validation.range", "currency=validation.oneOf")

	// Bodies that are not one JSON object.
	for _, raw := range []string{``, `   `, `{`, `{"name":"Lamp"`, `[]`, `"item"`, `null x`, `{} {}`, `{"name":"Lamp"} trailing`, `nope`} {
		admin.Do("POST", "/v1/admin/items", raw, key()...).ExpectError(t, 400, "common.errors.malformedJson")
	}

	// Nothing above was written.
	if n := a.countItems("Validation Probe"); n != 0 {
		t.Fatalf("%d invalid items were stored", n)
	}
	var total int
	if err := a.db.Get(&total, `SELECT count(*) FROM items`); err != nil {
		t.Fatal(err)
	}
	if total != len(demo.Items()) {
		t.Fatalf("%d items in the table, want only the %d demo items", total, len(demo.Items()))
	}

	// Boundaries that are valid.
	for _, body := range []map[string]any{
		valid("name", "ab", "price", 1, "stock", 0),
		valid("name", strings.Repeat("n", 200), "description", "d"),
		valid("description", strings.Repeat("d", 5000)),
		valid("pricePaymentId", strings.Repeat("p", 255)),
	} {
		createItem(t, admin, body)
	}
}

func TestItemTextWithNULIsRefused(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	// PostgreSQL text cannot hold U+0000: it must be a 400, never a 500.
	expectValidation(t, admin.Do("POST", "/v1/admin/items", `{"name":"Bad\u0000Name","description":"d","price":1,"stock":1}`, key()...), "/v1/admin/items", "name=validation.nulCharacter")
	expectValidation(t, admin.Do("POST", "/v1/admin/items", `{"name":"Good Name","description":"d\u0000","price":1,"stock":1}`, key()...), "/v1/admin/items", "description=validation.nulCharacter")
	expectValidation(t, admin.Do("POST", "/v1/admin/items", `{"name":"Good Name","description":"d","price":1,"stock":1,"pricePaymentId":"p\u0000"}`, key()...), "/v1/admin/items", "pricePaymentId=validation.nulCharacter")
	id := demo.Items()[0].ID.String()
	expectValidation(t, admin.Do("PATCH", "/v1/admin/items/"+id, `{"name":"Bad\u0000Name"}`), "/v1/admin/items/"+id, "name=validation.nulCharacter")
	expectValidation(t, admin.Do("GET", "/v1/items?name=a%00b", nil), "/v1/items", "name=validation.nulCharacter")
	expectValidation(t, admin.Do("GET", "/v1/admin/items?name=a%00b", nil), "/v1/admin/items", "name=validation.nulCharacter")
	expectValidation(t, admin.Do("GET", "/v1/admin/items?description=%00", nil), "/v1/admin/items", "description=validation.nulCharacter")
}

func TestItemPublicAndAdminViews(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	_, customer := a.signUp("viewer@example.com")
	it := createItem(t, admin, map[string]any{"name": "Tea Kettle", "description": "Boils.", "price": 4000, "stock": 3, "pricePaymentId": "price_kettle"})

	// A customer and an admin both see the public view on /v1/items, without admin fields.
	for _, c := range []struct {
		who string
		r   func() map[string]any
	}{
		{"customer", func() map[string]any { return customer.Do("GET", "/v1/items/"+it.ID, nil).Expect(t, 200).JSON(t) }},
		{"admin", func() map[string]any { return admin.Do("GET", "/v1/items/"+it.ID, nil).Expect(t, 200).JSON(t) }},
	} {
		m := c.r()
		if got := keysOf(m); !slices.Equal(got, publicItemKeys) {
			t.Fatalf("%s: public view keys %v, want %v", c.who, got, publicItemKeys)
		}
		if m["id"] != it.ID || m["name"] != "Tea Kettle" || m["price"] != float64(4000) || m["stock"] != float64(3) ||
			m["currency"] != "usd" || m["createdAt"] != it.CreatedAt || m["updatedAt"] != it.UpdatedAt {
			t.Fatalf("%s: public view %v does not match %+v", c.who, m, it)
		}
	}
	m := admin.Do("GET", "/v1/admin/items/"+it.ID, nil).Expect(t, 200).JSON(t)
	if got := keysOf(m); !slices.Equal(got, adminItemKeys) {
		t.Fatalf("admin view keys %v, want %v", got, adminItemKeys)
	}
	if m["pricePaymentId"] != "price_kettle" || m["deletedAt"] != nil {
		t.Fatalf("admin view %v", m)
	}

	// Lists use the same two views.
	pub := customer.Do("GET", "/v1/items", nil).Expect(t, 200).JSON(t)
	if got := keysOf(pub); !slices.Equal(got, []string{"hasMore", "items", "nextCursor"}) {
		t.Fatalf("list envelope keys %v", got)
	}
	for _, raw := range pub["items"].([]any) {
		if got := keysOf(raw.(map[string]any)); !slices.Equal(got, publicItemKeys) {
			t.Fatalf("public list item keys %v, want %v", got, publicItemKeys)
		}
	}
	adm := admin.Do("GET", "/v1/admin/items", nil).Expect(t, 200).JSON(t)
	for _, raw := range adm["items"].([]any) {
		if got := keysOf(raw.(map[string]any)); !slices.Equal(got, adminItemKeys) {
			t.Fatalf("admin list item keys %v, want %v", got, adminItemKeys)
		}
	}

	// Unknown and malformed ids.
	customer.Do("GET", "/v1/items/0193a000-0000-7000-8000-00000000ffff", nil).ExpectError(t, 404, "items.errors.notFound")
	admin.Do("GET", "/v1/admin/items/0193a000-0000-7000-8000-00000000ffff", nil).ExpectError(t, 404, "items.errors.notFound")
	for _, bad := range []string{"42", "not-a-uuid", "{0193a000-0000-7000-8000-000000000001}", "0193a0000000700080000000000000001"} {
		customer.Do("GET", "/v1/items/"+url.PathEscape(bad), nil).ExpectError(t, 400, "common.errors.invalidId")
		admin.Do("PATCH", "/v1/admin/items/"+url.PathEscape(bad), map[string]any{"stock": 1}).ExpectError(t, 400, "common.errors.invalidId")
		admin.Do("DELETE", "/v1/admin/items/"+url.PathEscape(bad), nil).ExpectError(t, 400, "common.errors.invalidId")
	}
}

func TestItemPatchIsPartial(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	it := createItem(t, admin, map[string]any{"name": "Stapler", "description": "Staples paper.", "price": 900, "stock": 10, "pricePaymentId": "price_st"})
	// Make the change observable in updatedAt even on a fast machine.
	a.exec(`UPDATE items SET created_at = created_at - interval '1 minute', updated_at = updated_at - interval '1 minute' WHERE id = $1`, it.ID)
	it = getItem(t, admin, "admin/items", it.ID)

	var got itemView
	admin.Do("PATCH", "/v1/admin/items/"+it.ID, map[string]any{"price": 1100}).Expect(t, 200).Decode(t, &got)
	want := it
	want.Price, want.UpdatedAt = 1100, got.UpdatedAt
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("PATCH price changed more than the price:\n got %+v\nwant %+v", got, want)
	}
	if !parseTime(t, got.UpdatedAt).After(parseTime(t, it.UpdatedAt)) {
		t.Fatalf("updatedAt %s not advanced past %s", got.UpdatedAt, it.UpdatedAt)
	}
	if got.CreatedAt != it.CreatedAt {
		t.Fatalf("createdAt changed: %s → %s", it.CreatedAt, got.CreatedAt)
	}

	// Several fields at once; null means "leave alone"; currency is normalized like on create.
	admin.Do("PATCH", "/v1/admin/items/"+it.ID, map[string]any{
		"name": " Heavy Stapler ", "description": "Staples thick paper.", "stock": 0, "currency": "brl",
		"pricePaymentId": "price_st2", "price": nil,
	}).Expect(t, 200).Decode(t, &got)
	if got.Name != "Heavy Stapler" || got.Description != "Staples thick paper." || got.Stock != 0 || got.Currency != "brl" ||
		got.Price != 1100 || got.PricePaymentID == nil || *got.PricePaymentID != "price_st2" {
		t.Fatalf("PATCH answered %+v", got)
	}
	if read := getItem(t, admin, "admin/items", it.ID); !reflect.DeepEqual(read, got) {
		t.Fatalf("admin GET %+v differs from the PATCH answer %+v", read, got)
	}

	// An empty patch changes nothing but is fine.
	var same itemView
	admin.Do("PATCH", "/v1/admin/items/"+it.ID, map[string]any{}).Expect(t, 200).Decode(t, &same)
	if same.Name != got.Name || same.Price != got.Price || same.Stock != got.Stock || same.Currency != got.Currency {
		t.Fatalf("empty PATCH changed the item: %+v → %+v", got, same)
	}

	// Invalid patches are 400s naming the field, and change nothing, even their valid fields.
	before := getItem(t, admin, "admin/items", it.ID)
	for _, tc := range []struct {
		body any
		want []string // field=code
	}{
		{map[string]any{"name": "x"}, []string{"name=validation.length"}},
		{map[string]any{"name": strings.Repeat("n", 201)}, []string{"name=validation.length"}},
		{map[string]any{"description": ""}, []string{"description=validation.required"}},
		{map[string]any{"description": strings.Repeat("d", 5001)}, []string{"description=validation.length"}},
		{map[string]any{"price": 0}, []string{"price=validation.range"}},
		{map[string]any{"price": 1.5}, []string{"price=validation.type"}},
		{map[string]any{"price": "10"}, []string{"price=validation.type"}},
		{map[string]any{"stock": -1}, []string{"stock=validation.range"}},
		{map[string]any{"stock": 0.5}, []string{"stock=validation.type"}},
		{map[string]any{"currency": "gbp"}, []string{"currency=validation.oneOf"}},
		{map[string]any{"pricePaymentId": ""}, []string{"pricePaymentId=validation.required"}},
		{map[string]any{"deletedAt": "2024-01-01T00:00:00.000Z"}, []string{"deletedAt=validation.unknownField"}},
		{map[string]any{"name": "Valid Name", "stock": 5, "price": -3}, []string{"price=validation.range"}},
		{map[string]any{"name": "Valid Name", "stock": -5, "price": -3}, []string{"price=validation.range", "stock=validation.range"}},
	} {
		expectValidation(t, admin.Do("PATCH", "/v1/admin/items/"+it.ID, tc.body), "/v1/admin/items/"+it.ID, tc.want...)
	}
	admin.Do("PATCH", "/v1/admin/items/"+it.ID, `{"stock": 1`).ExpectError(t, 400, "common.errors.malformedJson")
	admin.Do("PATCH", "/v1/admin/items/"+it.ID, ``).ExpectError(t, 400, "common.errors.malformedJson")
	if after := getItem(t, admin, "admin/items", it.ID); !reflect.DeepEqual(after, before) {
		t.Fatalf("refused patches changed the item:\n%+v\n%+v", before, after)
	}

	// Unknown items.
	admin.Do("PATCH", "/v1/admin/items/0193a000-0000-7000-8000-00000000ffff", map[string]any{"stock": 1}).ExpectError(t, 404, "items.errors.notFound")
}

func TestItemSoftDelete(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	_, customer := a.signUp("deleter@example.com")
	it := createItem(t, admin, map[string]any{"name": "Old Fax Machine", "description": "Obsolete.", "price": 10000, "stock": 2})
	keep := createItem(t, admin, map[string]any{"name": "Old Typewriter", "description": "Also obsolete.", "price": 20000, "stock": 1})

	// Warm every cache entry that the delete must retire.
	getItem(t, customer, "items", it.ID)
	getItem(t, admin, "admin/items", it.ID)
	if _, ok := findItem(listItems(t, customer, "items", "").Items, it.ID); !ok {
		t.Fatal("new item missing from the public list")
	}
	listItems(t, admin, "admin/items", "")

	r := admin.Do("DELETE", "/v1/admin/items/"+it.ID, nil).Expect(t, 204)
	if len(r.Body) != 0 {
		t.Fatalf("DELETE answered a body: %q", r.Body)
	}

	customer.Do("GET", "/v1/items/"+it.ID, nil).ExpectError(t, 404, "items.errors.notFound")
	admin.Do("GET", "/v1/items/"+it.ID, nil).ExpectError(t, 404, "items.errors.notFound")
	gone := getItem(t, admin, "admin/items", it.ID)
	if gone.DeletedAt == nil {
		t.Fatalf("admin view of a deleted item has no deletedAt: %+v", gone)
	}
	if d := parseTime(t, *gone.DeletedAt); d.Before(parseTime(t, it.CreatedAt)) {
		t.Fatalf("deletedAt %s before createdAt %s", *gone.DeletedAt, it.CreatedAt)
	}
	if gone.Name != it.Name || gone.Price != it.Price {
		t.Fatalf("the deleted item lost its data: %+v", gone)
	}

	pub := listItems(t, customer, "items", "")
	if _, ok := findItem(pub.Items, it.ID); ok {
		t.Fatal("public list still shows the deleted item")
	}
	if _, ok := findItem(pub.Items, keep.ID); !ok {
		t.Fatal("public list lost an item that was not deleted")
	}
	if n := len(listItems(t, customer, "items", "name=Old").Items); n != 1 {
		t.Fatalf("public name filter found %d items, want only the live one", n)
	}
	adm := listItems(t, admin, "admin/items", "")
	shown, ok := findItem(adm.Items, it.ID)
	if !ok || shown.DeletedAt == nil || *shown.DeletedAt != *gone.DeletedAt {
		t.Fatalf("admin list should show the deleted item with deletedAt %v; got %+v (found %v)", *gone.DeletedAt, shown, ok)
	}
	if live, _ := findItem(adm.Items, keep.ID); live.DeletedAt != nil {
		t.Fatalf("a live item has deletedAt in the admin list: %+v", live)
	}
	if n := len(listItems(t, admin, "admin/items", "name=Old").Items); n != 2 {
		t.Fatalf("admin name filter found %d items, want the deleted and the live one", n)
	}

	// A deleted item cannot be changed or deleted again; the row is kept.
	admin.Do("PATCH", "/v1/admin/items/"+it.ID, map[string]any{"stock": 5}).ExpectError(t, 404, "items.errors.notFound")
	admin.Do("DELETE", "/v1/admin/items/"+it.ID, nil).ExpectError(t, 404, "items.errors.notFound")
	admin.Do("DELETE", "/v1/admin/items/0193a000-0000-7000-8000-00000000ffff", nil).ExpectError(t, 404, "items.errors.notFound")
	if n := a.countItems("Old Fax Machine"); n != 1 {
		t.Fatalf("soft delete left %d rows, want 1", n)
	}
	if again := getItem(t, admin, "admin/items", it.ID); again.Stock != 2 || *again.DeletedAt != *gone.DeletedAt {
		t.Fatalf("refused changes touched the deleted item: %+v", again)
	}
}

func TestItemListFilters(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	_, customer := a.signUp("filter@example.com")
	cotton := createItem(t, admin, map[string]any{"name": "100% Cotton Shirt", "description": "Soft_fabric, size M.", "price": 2500, "stock": 4})
	linen := createItem(t, admin, map[string]any{"name": "Linen Shirt", "description": "Breathable fabric.", "price": 3500, "stock": 4})
	under := createItem(t, admin, map[string]any{"name": "snake_case mug", "description": "For programmers.", "price": 1500, "stock": 4})

	names := func(p itemPage) []string {
		out := make([]string, len(p.Items))
		for i, it := range p.Items {
			out[i] = it.Name
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		view, query string
		want        []string
	}{
		{"items", "name=shirt", []string{cotton.Name, linen.Name}},
		{"items", "name=SHIRT", []string{cotton.Name, linen.Name}},
		{"items", "name=" + url.QueryEscape("  linen  "), []string{linen.Name}},
		{"items", "name=" + url.QueryEscape("%"), []string{cotton.Name}},
		{"items", "name=" + url.QueryEscape("_"), []string{under.Name}},
		{"items", "name=" + url.QueryEscape(`\`), nil},
		{"items", "name=nothing-like-this", nil},
		{"items", "name=keyboard", []string{"Mechanical Keyboard"}},
		// The public list has no description filter: it is ignored, not applied.
		{"items", "name=shirt&description=breathable", []string{cotton.Name, linen.Name}},
		{"admin/items", "name=shirt", []string{cotton.Name, linen.Name}},
		{"admin/items", "description=FABRIC", []string{cotton.Name, linen.Name}},
		{"admin/items", "description=" + url.QueryEscape("_"), []string{cotton.Name}},
		{"admin/items", "description=breathable", []string{linen.Name}},
		{"admin/items", "name=cotton&description=fabric", []string{cotton.Name}},
		{"admin/items", "name=linen&description=soft", nil},
	} {
		got := names(listItems(t, customerOrAdmin(tc.view, customer, admin), tc.view, tc.query))
		want := slices.Clone(tc.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("GET /v1/%s?%s → %v, want %v", tc.view, tc.query, got, want)
		}
	}
	// An empty filter is no filter.
	if n := len(listItems(t, customer, "items", "name=").Items); n != len(demo.Items())+3 {
		t.Fatalf("empty name filter listed %d items, want %d", n, len(demo.Items())+3)
	}
	// Absurdly long filters are refused.
	expectValidation(t, customer.Do("GET", "/v1/items?name="+strings.Repeat("a", 201), nil), "/v1/items", "name=validation.length")
	expectValidation(t, admin.Do("GET", "/v1/admin/items?description="+strings.Repeat("a", 201), nil), "/v1/admin/items", "description=validation.length")
}

func TestItemBodyTooLarge(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.as(adminEmail)
	big := `{"name":"Huge","description":"` + strings.Repeat("x", httpapi.MaxBodyBytes) + `","price":1,"stock":1}`

	// Declared length over the limit.
	admin.Do("POST", itemsPath, big, key()...).ExpectError(t, 413, "common.errors.bodyTooLarge")
	admin.Do("PATCH", "/v1/admin/items/"+demoItemID(0), big).ExpectError(t, 413, "common.errors.bodyTooLarge")

	// Chunked, with no declared length: the limit is enforced while reading, both in the
	// idempotency middleware (keyed POST) and in the decoder (PATCH without a key).
	send := func(method, path string, headers ...string) testenv.Response {
		req, _ := http.NewRequest(method, admin.Base+path, io.MultiReader(strings.NewReader(big)))
		req.ContentLength = -1
		req.Header.Set("Authorization", "Bearer "+admin.Token)
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return testenv.Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	}
	k := key()
	send("POST", itemsPath, k...).ExpectError(t, 413, "common.errors.bodyTooLarge")
	send("PATCH", "/v1/admin/items/"+demoItemID(0)).ExpectError(t, 413, "common.errors.bodyTooLarge")
	if a.countItems("Huge") != 0 || a.idemRows(k[1]) != 0 {
		t.Fatal("an oversized request left a trace")
	}
	// Just under the limit is read (and then validated).
	almost := `{"name":"Huge","description":"` + strings.Repeat("x", httpapi.MaxBodyBytes-100) + `","price":1,"stock":1}`
	expectValidation(t, admin.Do("POST", itemsPath, almost, key()...), itemsPath, "description=validation.length")
}
