package httpapi_test

import (
	"bytes"
	"crypto/sha256"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/idempotency"
	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/testenv"
	"github.com/dispatchhq/dispatch/internal/user"
)

var selfViewKeys = []string{"id", "name", "email", "language", "role", "createdAt", "address"}

func validAddress() map[string]any {
	return map[string]any{"line1": "Rua Augusta 100", "line2": "Apt 5", "city": "São Paulo", "state": "SP",
		"postalCode": "01305-000", "country": "BR"}
}

func withAddress(change func(m map[string]any)) map[string]any {
	m := validAddress()
	change(m)
	return m
}

func TestSignUpReturnsTheSelfView(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	resp := a.api.Do("POST", "/v1/users", map[string]any{
		"name": "  Ana Souza  ", "email": "  Ana.Souza@Example.COM ", "password": testPassword,
		"language": "pt-BR", "address": validAddress(),
	}, key()...).Expect(t, 201)
	m := resp.JSON(t)
	expectKeys(t, m, selfViewKeys...)
	if _, err := uuid.Parse(m["id"].(string)); err != nil {
		t.Fatalf("id %v is not a UUID", m["id"])
	}
	if m["name"] != "Ana Souza" || m["email"] != "ana.souza@example.com" || m["language"] != "pt-BR" || m["role"] != "user" {
		t.Fatalf("self view: %s", resp.Body)
	}
	if ts, _ := m["createdAt"].(string); !tsPattern.MatchString(ts) {
		t.Fatalf("createdAt %q is not RFC 3339 UTC with milliseconds", ts)
	}
	addr, _ := m["address"].(map[string]any)
	for k, v := range validAddress() {
		if addr[k] != v {
			t.Fatalf("address.%s = %v, want %v", k, addr[k], v)
		}
	}
	// Stored as answered, and GET /v1/users/me says the same.
	row := a.userRow(t, m["id"].(string))
	if row.Email != "ana.souza@example.com" || row.Name != "Ana Souza" || row.Role != "user" || row.Language != "pt-BR" {
		t.Fatalf("stored user: %+v", row)
	}
	if strings.Contains(row.Hash, testPassword) || !strings.HasPrefix(row.Hash, "$argon2id$") {
		t.Fatalf("password not stored as an argon2id hash: %q", row.Hash)
	}
	access, _ := a.login(t, "ANA.SOUZA@example.com", testPassword)
	me := a.api.As(access).Do("GET", "/v1/users/me", nil).Expect(t, 200).JSON(t)
	expectKeys(t, me, selfViewKeys...)
	for _, k := range selfViewKeys {
		if k != "address" && me[k] != m[k] {
			t.Fatalf("GET /me %s = %v, sign-up answered %v", k, me[k], m[k])
		}
	}

	// Without language and address: English and a null address.
	min := a.api.Do("POST", "/v1/users", map[string]any{"name": "Bo", "email": uniqueEmail("bo"), "password": testPassword, "language": nil, "address": nil}, key()...).
		Expect(t, 201).JSON(t)
	expectKeys(t, min, selfViewKeys...)
	if min["language"] != "en" || min["address"] != nil || min["role"] != "user" {
		t.Fatalf("defaults: %v", min)
	}
}

// TestFingerprintsHideThePassword: the stored fingerprint of a sign-up, whose body carries the
// password, is keyed by the server's secret: not the plain hash a reader of the table could test
// password guesses against.
func TestFingerprintsHideThePassword(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	body := `{"email":"` + uniqueEmail("fp") + `","name":"Ana Souza","password":"` + testPassword + `"}`
	k := uuid.NewString()
	a.api.Do("POST", "/v1/users", body, "Idempotency-Key", k).Expect(t, 201)
	var stored []byte
	if err := a.db.Get(&stored, `SELECT fingerprint FROM idempotency_keys WHERE key = $1`, k); err != nil {
		t.Fatal(err)
	}
	plain := sha256.Sum256([]byte("POST\n/v1/users\n" + body))
	if bytes.Equal(stored, plain[:]) || bytes.Equal(stored, idempotency.NewStore(nil, "").Fingerprint("POST", "/v1/users", []byte(body))) {
		t.Fatal("the fingerprint is a hash anyone can recompute from a guessed password")
	}
	if !bytes.Equal(stored, a.svc.Idempotency.Fingerprint("POST", "/v1/users", []byte(body))) {
		t.Fatal("the stored fingerprint is not the API's")
	}
}

// TestSignUpValidation checks every field rule of SPEC §3 Users, lengths in characters.
func TestSignUpValidation(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	type tc struct {
		name   string
		change func(m map[string]any)
		want   []string // field=code; nil means 201
	}
	set := func(k string, v any) func(map[string]any) { return func(m map[string]any) { m[k] = v } }
	del := func(k string) func(map[string]any) { return func(m map[string]any) { delete(m, k) } }
	addr := func(change func(map[string]any)) func(map[string]any) {
		return func(m map[string]any) { m["address"] = withAddress(change) }
	}
	// An email of exactly n characters.
	email := func(n int, r string) string {
		domain := "@example.com"
		return strings.Repeat(r, n-len([]rune(domain))) + domain
	}
	cases := []tc{
		{"valid", func(map[string]any) {}, nil},
		{"name missing", del("name"), []string{"name=validation.required"}},
		{"name empty", set("name", ""), []string{"name=validation.required"}},
		{"name blank", set("name", "   "), []string{"name=validation.required"}},
		{"name 1 char", set("name", "A"), []string{"name=validation.length"}},
		{"name 1 char after trim", set("name", "  A  "), []string{"name=validation.length"}},
		{"name 2 chars", set("name", "Al"), nil},
		{"name 2 multibyte chars", set("name", "李明"), nil},
		{"name 2 emoji", set("name", "😀😀"), nil},
		{"name 100 chars", set("name", strings.Repeat("a", 100)), nil},
		{"name 100 multibyte chars", set("name", strings.Repeat("ç", 100)), nil},
		{"name 101 chars", set("name", strings.Repeat("a", 101)), []string{"name=validation.length"}},
		{"name 101 multibyte chars", set("name", strings.Repeat("ç", 101)), []string{"name=validation.length"}},
		{"name invisible", set("name", "\u200b\u200d\u200b"), []string{"name=validation.required"}},
		{"name control character", set("name", "Ana\u001b[31m"), []string{"name=validation.controlCharacter"}},
		{"name emoji joined", set("name", "👨\u200d👩\u200d👧 Family"), nil},
		{"email zero width space", set("email", "admin\u200b@dispatch.local"), []string{"email=validation.email"}},
		{"email bidi override", set("email", "ana\u202e@example.com"), []string{"email=validation.email"}},
		{"email domain literal", set("email", "ana@[10.0.0.1]"), []string{"email=validation.email"}},
		{"email accented", set("email", "joão@exemplo.com.br"), nil},
		{"email joiner in the domain", set("email", "x@نامه\u200cنگار.ایران"), nil},
		{"email joiner in the local part", set("email", "ana\u200d@example.com"), []string{"email=validation.email"}},
		{"email joiner after a latin letter", set("email", "x@exa\u200dmple.com"), []string{"email=validation.email"}},
		{"email fullwidth letter in the domain", set("email", "ana@\uff45xample.com"), []string{"email=validation.email"}},
		{"email fullwidth letter in the local part", set("email", "\uff41na@example.com"), []string{"email=validation.email"}},
		{"email accent not composed", set("email", "joa\u0303o@exemplo.com.br"), []string{"email=validation.email"}},
		{"email dollar in the domain", set("email", "ana@exa$mple.com"), []string{"email=validation.email"}},
		{"email underscore in the domain", set("email", "ana@exa_mple.com"), []string{"email=validation.email"}},
		{"email soft hyphen in the domain", set("email", "ana@ex\u00adample.com"), []string{"email=validation.email"}},
		{"email empty domain label", set("email", "ana@example..com"), []string{"email=validation.email"}},
		{"email domain label starts with a hyphen", set("email", "ana@-example.com"), []string{"email=validation.email"}},
		{"email bad punycode", set("email", "ana@xn--zz.com"), []string{"email=validation.email"}},
		{"email punycode", set("email", "ana@xn--bcher-kva.de"), nil},
		{"email internationalized domain", set("email", "ana@bücher.de"), nil},
		{"email missing", del("email"), []string{"email=validation.required"}},
		{"email empty", set("email", ""), []string{"email=validation.required"}},
		{"email no at", set("email", "not-an-email"), []string{"email=validation.email"}},
		{"email no domain dot", set("email", "a@localhost"), []string{"email=validation.email"}},
		{"email display name", set("email", "Ana <ana@example.com>"), []string{"email=validation.email"}},
		{"email two ats", set("email", "a@b@example.com"), []string{"email=validation.email"}},
		{"email 254 chars", set("email", email(254, "a")), nil},
		{"email 255 chars", set("email", email(255, "a")), []string{"email=validation.email"}},
		{"email 254 multibyte chars", set("email", email(254, "ç")), nil},
		{"email 255 multibyte chars", set("email", email(255, "ç")), []string{"email=validation.email"}},
		{"password missing", del("password"), []string{"password=validation.required"}},
		{"password 7 chars", set("password", "1234567"), []string{"password=validation.length"}},
		{"password 8 chars", set("password", "12345678"), nil},
		{"password 8 multibyte chars", set("password", "çççççççç"), nil},
		{"password 7 multibyte chars (14 bytes)", set("password", "ççççççç"), []string{"password=validation.length"}},
		{"password 128 chars", set("password", strings.Repeat("p", 128)), nil},
		{"password 128 multibyte chars", set("password", strings.Repeat("ç", 128)), nil},
		{"password 129 chars", set("password", strings.Repeat("p", 129)), []string{"password=validation.length"}},
		{"language en", set("language", "en"), nil},
		{"language pt-BR", set("language", "pt-BR"), nil},
		{"language null", set("language", nil), nil},
		{"language pt", set("language", "pt"), []string{"language=validation.oneOf"}},
		{"language pt-br", set("language", "pt-br"), []string{"language=validation.oneOf"}},
		{"language fr", set("language", "fr"), []string{"language=validation.oneOf"}},
		{"language empty", set("language", ""), []string{"language=validation.oneOf"}},
		{"address full", set("address", validAddress()), nil},
		{"address without line2", addr(func(m map[string]any) { delete(m, "line2") }), nil},
		{"address line2 null", addr(func(m map[string]any) { m["line2"] = nil }), nil},
		{"address null", set("address", nil), nil},
		{"address empty object", set("address", map[string]any{}), []string{"address.line1=validation.required",
			"address.city=validation.required", "address.state=validation.required",
			"address.postalCode=validation.required", "address.country=validation.required"}},
		{"address line1 only", set("address", map[string]any{"line1": "Main St 1"}), []string{"address.city=validation.required",
			"address.state=validation.required", "address.postalCode=validation.required", "address.country=validation.required"}},
		{"address without country", addr(func(m map[string]any) { delete(m, "country") }), []string{"address.country=validation.required"}},
		{"address without city", addr(func(m map[string]any) { delete(m, "city") }), []string{"address.city=validation.required"}},
		{"address blank state", addr(func(m map[string]any) { m["state"] = "  " }), []string{"address.state=validation.required"}},
		{"address empty postal code", addr(func(m map[string]any) { m["postalCode"] = "" }), []string{"address.postalCode=validation.required"}},
		{"address line1 200 chars", addr(func(m map[string]any) { m["line1"] = strings.Repeat("ã", 200) }), nil},
		{"address line1 201 chars", addr(func(m map[string]any) { m["line1"] = strings.Repeat("a", 201) }), []string{"address.line1=validation.length"}},
		{"address line2 201 chars", addr(func(m map[string]any) { m["line2"] = strings.Repeat("a", 201) }), []string{"address.line2=validation.length"}},
		{"address city 100 chars", addr(func(m map[string]any) { m["city"] = strings.Repeat("ã", 100) }), nil},
		{"address city 101 chars", addr(func(m map[string]any) { m["city"] = strings.Repeat("a", 101) }), []string{"address.city=validation.length"}},
		{"address state 101 chars", addr(func(m map[string]any) { m["state"] = strings.Repeat("a", 101) }), []string{"address.state=validation.length"}},
		{"address postal code 20 chars", addr(func(m map[string]any) { m["postalCode"] = strings.Repeat("9", 20) }), nil},
		{"address postal code 21 chars", addr(func(m map[string]any) { m["postalCode"] = strings.Repeat("9", 21) }), []string{"address.postalCode=validation.length"}},
		{"address country US", addr(func(m map[string]any) { m["country"] = "US" }), nil},
		{"address country XX", addr(func(m map[string]any) { m["country"] = "XX" }), []string{"address.country=validation.country"}},
		{"address country alpha-3", addr(func(m map[string]any) { m["country"] = "BRA" }), []string{"address.country=validation.country"}},
		{"address country numeric", addr(func(m map[string]any) { m["country"] = "76" }), []string{"address.country=validation.country"}},
		{"address country name", addr(func(m map[string]any) { m["country"] = "Brazil" }), []string{"address.country=validation.country"}},
		{"every field wrong", func(m map[string]any) {
			m["name"], m["email"], m["password"], m["language"] = "x", "nope", "short", "es"
			m["address"] = map[string]any{"line1": "x", "city": "y", "state": "z", "postalCode": "1", "country": "ZZ"}
		}, []string{"name=validation.length", "email=validation.email", "password=validation.length",
			"language=validation.oneOf", "address.country=validation.country"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			body := map[string]any{"name": "Valid Name", "email": uniqueEmail("v"), "password": testPassword}
			c.change(body)
			resp := a.client(t).Do("POST", "/v1/users", body, key()...)
			if c.want == nil {
				m := resp.Expect(t, 201).JSON(t)
				expectKeys(t, m, selfViewKeys...)
				if pw, ok := body["password"].(string); ok {
					a.login(t, m["email"].(string), pw) // the account works with the password given
				}
				return
			}
			expectValidation(t, resp, "/v1/users", c.want...)
			if e, ok := body["email"].(string); ok && e != "" && a.usersWithEmail(t, e, false) != 0 {
				t.Fatalf("a refused sign-up created a user")
			}
		})
	}
}

func TestEmailUniqueness(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	signUp := func(t *testing.T, email string) map[string]any {
		return a.client(t).Do("POST", "/v1/users", map[string]any{"name": "Dup", "email": email, "password": testPassword}, key()...).JSON(t)
	}
	first := a.client(t).Do("POST", "/v1/users", map[string]any{"name": "Dup", "email": "dup@example.com", "password": testPassword}, key()...).
		Expect(t, 201).JSON(t)
	for _, email := range []string{"dup@example.com", "DUP@EXAMPLE.COM", "Dup@Example.Com", "  dup@example.com  ", "ADMIN@dispatch.local"} {
		resp := a.api.Do("POST", "/v1/users", map[string]any{"name": "Dup", "email": email, "password": testPassword}, key()...)
		expectError(t, resp, 409, "users.errors.emailAlreadyExists", "/v1/users")
	}
	if n := a.usersWithEmail(t, "dup@example.com", false); n != 1 {
		t.Fatalf("%d users with the email, want 1", n)
	}

	// Admin create and both updates obey the same rule.
	admin := a.demoAccount(t, "admin@dispatch.local")
	resp := a.api.As(admin.Access).Do("POST", "/v1/admin/users", map[string]any{"name": "Dup", "email": "DUP@example.com", "password": testPassword}, key()...)
	expectError(t, resp, 409, "users.errors.emailAlreadyExists", "/v1/admin/users")
	other := a.signUpAccount(t, nil)
	resp = a.api.As(other.Access).Do("PATCH", "/v1/users/me", map[string]any{"email": "Dup@Example.com"})
	expectError(t, resp, 409, "users.errors.emailAlreadyExists", "/v1/users/me")
	resp = a.api.As(admin.Access).Do("PATCH", "/v1/admin/users/"+other.ID, map[string]any{"email": " DUP@example.com"})
	expectError(t, resp, 409, "users.errors.emailAlreadyExists", "/v1/admin/users/"+other.ID)
	if a.userRow(t, other.ID).Email != other.Email {
		t.Fatal("a refused email change was stored")
	}
	// Setting one's own email again (in another case) is not a conflict.
	a.api.As(other.Access).Do("PATCH", "/v1/users/me", map[string]any{"email": strings.ToUpper(other.Email)}).Expect(t, 200)
	if a.userRow(t, other.ID).Email != other.Email {
		t.Fatalf("email not stored lower-cased: %q", a.userRow(t, other.ID).Email)
	}

	// A deleted user's email is free again, for sign-up and for updates.
	access, _ := a.login(t, "dup@example.com", testPassword)
	a.api.As(access).Do("DELETE", "/v1/users/me", nil).Expect(t, 204)
	again := signUp(t, "DUP@example.com")
	if again["id"] == nil || again["id"] == first["id"] || again["email"] != "dup@example.com" {
		t.Fatalf("re-registration after delete: %v", again)
	}
	a.login(t, "dup@example.com", testPassword)
	gone := a.signUpAccount(t, nil)
	a.api.As(gone.Access).Do("DELETE", "/v1/users/me", nil).Expect(t, 204)
	a.api.As(other.Access).Do("PATCH", "/v1/users/me", map[string]any{"email": gone.Email}).Expect(t, 200)
	if n := a.usersWithEmail(t, "dup@example.com", true); n != 1 {
		t.Fatalf("%d live users with the email, want 1", n)
	}
}

func TestPublicUserListAndView(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	viewer := a.signUpAccount(t, nil)
	c := a.api.As(viewer.Access)
	mk := func(name string) string {
		var u struct{ ID string }
		a.api.Do("POST", "/v1/users", map[string]any{"name": name, "email": uniqueEmail("list"), "password": testPassword}, key()...).
			Expect(t, 201).Decode(t, &u)
		return u.ID
	}
	alice, bob, carol, pct := mk("Alice Wonderland"), mk("BOB aLiCe"), mk("Carol"), mk("100% Cotton")

	list := c.Do("GET", "/v1/users?limit=100", nil).Expect(t, 200)
	var page struct {
		Items      []map[string]any
		NextCursor any
		HasMore    bool
	}
	list.Decode(t, &page)
	if len(page.Items) != 5+5 || page.HasMore || page.NextCursor != nil {
		t.Fatalf("list: %d items, hasMore %v, nextCursor %v", len(page.Items), page.HasMore, page.NextCursor)
	}
	for _, it := range page.Items {
		expectKeys(t, it, "id", "name", "createdAt") // never email, role or address
	}

	for q, want := range map[string][]string{
		"alice":   {alice, bob},
		"ALICE":   {alice, bob},
		"lIcE w":  {alice},
		"carol":   {carol},
		"%":       {pct},
		"_":       nil,
		"nobody":  nil,
		" carol ": {carol},
	} {
		got := listIDs(t, c.Do("GET", "/v1/users?limit=100&name="+url.QueryEscape(q), nil).Expect(t, 200))
		slices.Sort(got)
		want = slices.Clone(want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("?name=%q: got %v, want %v", q, got, want)
		}
	}

	// Public view of one user.
	m := c.Do("GET", "/v1/users/"+alice, nil).Expect(t, 200).JSON(t)
	expectKeys(t, m, "id", "name", "createdAt")
	if m["id"] != alice || m["name"] != "Alice Wonderland" || !tsPattern.MatchString(m["createdAt"].(string)) {
		t.Fatalf("public view: %v", m)
	}
	missing := uuid.NewString()
	expectError(t, c.Do("GET", "/v1/users/"+missing, nil), 404, "users.errors.notFound", "/v1/users/"+missing)

	// A deleted user leaves the lists and its id answers 404.
	gone := a.signUpAccount(t, map[string]any{"name": "Alice Gone"})
	a.api.As(gone.Access).Do("DELETE", "/v1/users/me", nil).Expect(t, 204)
	if ids := listIDs(t, c.Do("GET", "/v1/users?limit=100&name=alice", nil)); slices.Contains(ids, gone.ID) {
		t.Fatal("deleted user still listed")
	}
	expectError(t, c.Do("GET", "/v1/users/"+gone.ID, nil), 404, "users.errors.notFound", "/v1/users/"+gone.ID)
}

func TestUpdateMe(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	acc := a.signUpAccount(t, nil)
	c := a.api.As(acc.Access)

	m := c.Do("PATCH", "/v1/users/me", map[string]any{"name": "  New Name ", "email": " New.Mail@Example.com ",
		"language": "pt-BR", "address": validAddress()}).Expect(t, 200).JSON(t)
	expectKeys(t, m, selfViewKeys...)
	newEmail := "new.mail@example.com"
	if m["name"] != "New Name" || m["email"] != newEmail || m["language"] != "pt-BR" || m["address"] == nil || m["id"] != acc.ID {
		t.Fatalf("patched: %v", m)
	}
	me := c.Do("GET", "/v1/users/me", nil).Expect(t, 200).JSON(t)
	if me["name"] != "New Name" || me["email"] != newEmail || me["language"] != "pt-BR" {
		t.Fatalf("GET /me after PATCH: %v", me)
	}
	// Non-credential changes keep the session; login works with the new email only.
	a.login(t, newEmail, testPassword)
	expectError(t, a.api.Do("POST", "/v1/auth/login", map[string]string{"email": acc.Email, "password": testPassword}),
		401, "auth.errors.invalidCredentials", "/v1/auth/login")

	// Absent and null fields are left alone; the address is replaced whole.
	c.Do("PATCH", "/v1/users/me", map[string]any{}).Expect(t, 200)
	m = c.Do("PATCH", "/v1/users/me", map[string]any{"name": nil, "email": nil, "language": nil, "address": nil}).Expect(t, 200).JSON(t)
	if m["name"] != "New Name" || m["email"] != newEmail || m["address"] == nil {
		t.Fatalf("null fields changed the user: %v", m)
	}
	m = c.Do("PATCH", "/v1/users/me", map[string]any{"address": map[string]any{"line1": "1 Main St", "city": "Springfield",
		"state": "IL", "postalCode": "62701", "country": "US"}}).Expect(t, 200).JSON(t)
	addr := m["address"].(map[string]any)
	if addr["line1"] != "1 Main St" || addr["line2"] != nil || addr["country"] != "US" {
		t.Fatalf("address not replaced whole: %v", addr)
	}

	// Invalid updates change nothing.
	before := a.userRow(t, acc.ID)
	for name, tc := range map[string]struct {
		body map[string]any
		want []string
	}{
		"name":          {map[string]any{"name": "x"}, []string{"name=validation.length"}},
		"blank name":    {map[string]any{"name": "   "}, []string{"name=validation.required"}},
		"email":         {map[string]any{"email": "nope"}, []string{"email=validation.email"}},
		"empty email":   {map[string]any{"email": ""}, []string{"email=validation.required"}},
		"language":      {map[string]any{"language": "de"}, []string{"language=validation.oneOf"}},
		"address":       {map[string]any{"address": map[string]any{"line1": "x"}}, []string{"address.city=validation.required", "address.state=validation.required", "address.postalCode=validation.required", "address.country=validation.required"}},
		"short pw":      {map[string]any{"password": "short", "currentPassword": testPassword}, []string{"password=validation.length"}},
		"mixed":         {map[string]any{"name": "Fine Name", "email": "bad"}, []string{"email=validation.email"}},
		"valid and bad": {map[string]any{"language": "en", "address": map[string]any{"line1": "x", "city": "y", "state": "z", "postalCode": "1", "country": "QQ"}}, []string{"address.country=validation.country"}},
	} {
		t.Run(name, func(t *testing.T) {
			expectValidation(t, a.client(t).As(acc.Access).Do("PATCH", "/v1/users/me", tc.body), "/v1/users/me", tc.want...)
		})
	}
	if after := a.userRow(t, acc.ID); after != before {
		t.Fatalf("refused updates changed the user:\n%+v\n%+v", before, after)
	}

	// The role cannot be set through /me (no self-promotion): it is an unknown field.
	expectValidation(t, c.Do("PATCH", "/v1/users/me", map[string]any{"role": "admin"}), "/v1/users/me", "role=validation.unknownField")
	if a.userRow(t, acc.ID).Role != "user" {
		t.Fatal("role changed through /me")
	}
}

// An account made before today's email rules keeps an email they refuse. Its client may send
// that email back with the rest of the profile: only an email that changes must pass the rules
// (a refused one still 400). The admin's update reads it the same way.
func TestAnEmailFromBeforeTheRulesMaySendItselfBack(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	acc := a.signUpAccount(t, nil)
	legacy := "ana@ｂücher.de" // a fullwidth letter in the domain: refused at sign-up now
	if _, err := a.db.Exec(`UPDATE users SET email = $2 WHERE id = $1`, acc.ID, legacy); err != nil {
		t.Fatal(err)
	}
	c := a.api.As(acc.Access)
	m := c.Do("PATCH", "/v1/users/me", map[string]any{"name": "Kept Mail", "email": legacy}).Expect(t, 200).JSON(t)
	if m["name"] != "Kept Mail" || m["email"] != legacy {
		t.Fatalf("patched: %v", m)
	}
	admin := a.demoAccount(t, "admin@dispatch.local")
	a.api.As(admin.Access).Do("PATCH", "/v1/admin/users/"+acc.ID, map[string]any{"language": "pt-BR", "email": strings.ToUpper(legacy)}).
		Expect(t, 200)

	// A change to another email the rules refuse is refused, before a password is checked, and
	// named with the update's other faults; the account's own is never named.
	before := a.userRow(t, acc.ID)
	expectValidation(t, c.Do("PATCH", "/v1/users/me", map[string]any{"email": "bob@ｂücher.de"}), "/v1/users/me", "email=validation.email")
	expectValidation(t, c.Do("PATCH", "/v1/users/me", map[string]any{"email": "bob@ｂücher.de", "password": "another-pass-1",
		"currentPassword": "not-the-password"}), "/v1/users/me", "email=validation.email")
	expectValidation(t, a.api.As(admin.Access).Do("PATCH", "/v1/admin/users/"+acc.ID, map[string]any{"email": "bob@ｂücher.de"}),
		"/v1/admin/users/"+acc.ID, "email=validation.email")
	expectValidation(t, c.Do("PATCH", "/v1/users/me", map[string]any{"name": "x", "email": "bob@ｂücher.de"}), "/v1/users/me",
		"name=validation.length", "email=validation.email")
	expectValidation(t, c.Do("PATCH", "/v1/users/me", map[string]any{"name": "x", "email": legacy}), "/v1/users/me",
		"name=validation.length")
	if after := a.userRow(t, acc.ID); after != before {
		t.Fatalf("refused updates changed the user:\n%+v\n%+v", before, after)
	}
}

// TestPasswordChangesAreLimitedPerSession: a session's password changes are counted before
// their check, against the login limit, whichever IP they come from: past it, even the right
// password is refused (429) until the window ends, a burst included; the same account's other
// sessions and its other changes go on.
func TestPasswordChangesAreLimitedPerSession(t *testing.T) {
	t.Parallel()
	a := newApp(t, "RATE_LIMIT_ENABLED", "true", "RATE_LIMITS", "login=3", "TRUSTED_PROXIES", "127.0.0.1/8,::1/128")
	acc := a.signUpAccount(t, nil)
	hash := a.userRow(t, acc.ID).Hash
	from := func(ip, token string, body map[string]any) testenv.Response {
		return a.api.As(token).Do("PATCH", "/v1/users/me", body, "X-Forwarded-For", ip)
	}
	guess := func(i int) map[string]any {
		return map[string]any{"password": "brand-new-pass", "currentPassword": "guess-" + strconv.Itoa(i)}
	}
	for i := 0; i < 3; i++ {
		expectError(t, from("203.0.113."+strconv.Itoa(i+1), acc.Access, guess(i)), 403, "users.errors.wrongPassword", "/v1/users/me")
	}
	r := from("198.51.100.9", acc.Access, map[string]any{"password": "brand-new-pass", "currentPassword": testPassword})
	expectError(t, r, 429, "common.errors.rateLimited", "/v1/users/me")
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
	}
	if l, rem := r.Header.Get("X-RateLimit-Limit"), r.Header.Get("X-RateLimit-Remaining"); l != "3" || rem != "0" {
		t.Fatalf("the 429's X-RateLimit-Limit %q, Remaining %q; want this limit's: 3, 0", l, rem)
	}
	if a.userRow(t, acc.ID).Hash != hash {
		t.Fatal("a refused password change changed the user")
	}
	from("198.51.100.9", acc.Access, map[string]any{"name": "Still Editable"}).Expect(t, 200)

	// A burst on another session: no more than the limit reach the password check.
	burst, _ := a.login(t, acc.Email, testPassword)
	answers := make(chan int, 8)
	for i := range 8 {
		go func() {
			r, err := a.api.As(burst).Send("PATCH", "/v1/users/me", guess(10+i), "X-Forwarded-For", "203.0.113.50")
			if err != nil {
				t.Error(err)
			}
			answers <- r.Status // 0 after an error: every goroutine answers
		}()
	}
	checked := 0
	for range 8 {
		switch st := <-answers; st {
		case 403:
			checked++
		case 429:
		case 0: // its goroutine reported the error
		default:
			t.Errorf("burst answered %d", st)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if checked != 3 {
		t.Fatalf("%d of a burst of 8 reached the password check, want 3", checked)
	}

	// The owner's own session is not locked out by the others.
	owner, _ := a.login(t, acc.Email, testPassword)
	from("198.51.100.10", owner, map[string]any{"password": "brand-new-pass", "currentPassword": testPassword}).Expect(t, 200)
}

func TestPasswordChange(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	acc := a.signUpAccount(t, nil)
	access2, refresh2 := a.login(t, acc.Email, testPassword) // a second session
	c := a.api.As(acc.Access)
	hash := a.userRow(t, acc.ID).Hash

	for name, body := range map[string]map[string]any{
		"missing current":   {"password": "brand-new-pass"},
		"null current":      {"password": "brand-new-pass", "currentPassword": nil},
		"wrong current":     {"password": "brand-new-pass", "currentPassword": "not-my-password"},
		"empty current":     {"password": "brand-new-pass", "currentPassword": ""},
		"new as current":    {"password": "brand-new-pass", "currentPassword": "brand-new-pass"},
		"with other fields": {"name": "Should Not Stick", "password": "brand-new-pass", "currentPassword": "nope-nope"},
	} {
		t.Run(name, func(t *testing.T) {
			expectError(t, a.client(t).As(acc.Access).Do("PATCH", "/v1/users/me", body), 403, "users.errors.wrongPassword", "/v1/users/me")
		})
	}
	if row := a.userRow(t, acc.ID); row.Hash != hash || row.Name != "Customer" {
		t.Fatal("a refused password change changed the user")
	}
	if a.liveSessions(t, acc.ID) != 2 {
		t.Fatal("a refused password change revoked sessions")
	}
	c.Do("GET", "/v1/users/me", nil).Expect(t, 200)

	// The right current password: 200, and every session of the user ends at once.
	c.Do("PATCH", "/v1/users/me", map[string]any{"password": "brand-new-pass", "currentPassword": testPassword}).Expect(t, 200)
	for _, tok := range []string{acc.Access, access2} {
		expectError(t, a.api.As(tok).Do("GET", "/v1/users/me", nil), 401, "auth.errors.invalidToken", "/v1/users/me")
	}
	for _, tok := range []string{acc.Refresh, refresh2} {
		expectError(t, a.api.As(tok).Do("POST", "/v1/auth/refresh", nil), 401, "auth.errors.invalidToken", "/v1/auth/refresh")
	}
	if n := a.liveSessions(t, acc.ID); n != 0 {
		t.Fatalf("%d live sessions after a password change", n)
	}
	expectError(t, a.api.Do("POST", "/v1/auth/login", map[string]string{"email": acc.Email, "password": testPassword}),
		401, "auth.errors.invalidCredentials", "/v1/auth/login")
	a.login(t, acc.Email, "brand-new-pass")
}

// The password work of a change (argon2id, twice) runs before its transaction: a wrong
// current password is refused while another transaction holds the user's row, and a right one
// checked against a hash that changed before the change could lock the row is refused too.
func TestPasswordChangeHashesOutsideItsTransaction(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	acc := a.signUpAccount(t, nil)
	ctx := testenv.Context(t)
	hold := func() *postgres.Tx { return a.holdUser(t, acc.ID) }
	lockWaiters := func() int { return a.rowLockWaiters(t) }
	change := func(current string) <-chan testenv.Response {
		done := make(chan testenv.Response, 1)
		c := a.client(t).As(acc.Access)
		go func() {
			r, err := c.Send("PATCH", "/v1/users/me", map[string]any{"password": "brand-new-pass", "currentPassword": current})
			if err != nil {
				t.Error(err)
			}
			done <- r // always: the test waits for it
		}()
		return done
	}

	tx := hold()
	done := change("not-my-password")
	for answered := false; !answered; {
		select {
		case r := <-done:
			expectError(t, r, 403, "users.errors.wrongPassword", "/v1/users/me")
			answered = true
		default:
			if lockWaiters() > 0 {
				t.Fatal("a wrong current password waited for the user's row lock")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// The right current password, checked before the row is free; meanwhile the holder sets
	// another hash, so the one checked against is no longer the user's.
	done = change(testPassword)
	testenv.Eventually(t, 30*time.Second, "the change waits for the user's row", func() bool { return lockWaiters() > 0 })
	if _, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = password_hash || 'x' WHERE id = $1`, acc.ID); err != nil {
		t.Fatal(err)
	}
	set := a.userRow(t, acc.ID).Hash + "x" // read outside tx: the hash before it
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	expectError(t, <-done, 403, "users.errors.wrongPassword", "/v1/users/me")
	if got := a.userRow(t, acc.ID).Hash; got != set {
		t.Fatalf("password hash %q after a change checked against an older one, want %q", got, set)
	}
}

// TestLoginRacingAChangeOfTheUser: a login whose password check overlaps a change of the user
// (its password, its deletion, its role) opens no session the change did not see. The change
// is held open on the user's row until the login waits for it.
func TestLoginRacingAChangeOfTheUser(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	ctx := testenv.Context(t)
	race := func(t *testing.T, change string) (account, testenv.Response) {
		acc := a.signUpAccount(t, nil)
		tx := a.holdUser(t, acc.ID)
		done := make(chan testenv.Response, 1)
		c := a.client(t)
		go func() {
			r, err := c.Send("POST", "/v1/auth/login", map[string]string{"email": acc.Email, "password": acc.Password})
			if err != nil {
				t.Error(err)
			}
			done <- r
		}()
		testenv.Eventually(t, 30*time.Second, "the login waits for the user's row", func() bool { return a.rowLockWaiters(t) > 0 })
		if _, err := tx.ExecContext(ctx, change, acc.ID); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		return acc, <-done
	}

	for name, change := range map[string]string{
		"password": `UPDATE users SET password_hash = password_hash || 'x' WHERE id = $1`,
		"deletion": `UPDATE users SET deleted_at = now() WHERE id = $1`,
	} {
		t.Run(name, func(t *testing.T) {
			acc, r := race(t, change)
			expectError(t, r, 401, "auth.errors.invalidCredentials", "/v1/auth/login")
			if n := a.liveSessions(t, acc.ID); n != 1 { // the sign-up's
				t.Fatalf("%d live sessions after a login that raced a %s change, want 1", n, name)
			}
		})
	}

	// A role changed meanwhile leaves the password right: the login goes on with the new role.
	t.Run("role", func(t *testing.T) {
		_, r := race(t, `UPDATE users SET role = 'financial' WHERE id = $1`)
		if r.Status != 200 {
			t.Fatalf("login racing a role change: %d %s, want 200", r.Status, r.Body)
		}
		var pair struct{ AccessToken string }
		r.Decode(t, &pair)
		a.client(t).As(pair.AccessToken).Do("GET", "/v1/admin/orders", nil).Expect(t, 200)
	})
}

func TestDeleteMe(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	acc := a.signUpAccount(t, nil)
	access2, refresh2 := a.login(t, acc.Email, testPassword)
	viewer := a.signUpAccount(t, nil)
	admin := a.demoAccount(t, "admin@dispatch.local")

	resp := a.api.As(acc.Access).Do("DELETE", "/v1/users/me", nil).Expect(t, 204)
	if len(resp.Body) != 0 {
		t.Fatalf("204 with a body: %q", resp.Body)
	}
	for _, tok := range []string{acc.Access, access2} {
		expectError(t, a.api.As(tok).Do("GET", "/v1/users/me", nil), 401, "auth.errors.invalidToken", "/v1/users/me")
		expectError(t, a.api.As(tok).Do("DELETE", "/v1/users/me", nil), 401, "auth.errors.invalidToken", "/v1/users/me")
	}
	for _, tok := range []string{acc.Refresh, refresh2} {
		expectError(t, a.api.As(tok).Do("POST", "/v1/auth/refresh", nil), 401, "auth.errors.invalidToken", "/v1/auth/refresh")
	}
	expectError(t, a.api.Do("POST", "/v1/auth/login", map[string]string{"email": acc.Email, "password": testPassword}),
		401, "auth.errors.invalidCredentials", "/v1/auth/login")
	if slices.Contains(listIDs(t, a.api.As(viewer.Access).Do("GET", "/v1/users?limit=100", nil)), acc.ID) {
		t.Fatal("deleted user in the public list")
	}
	if slices.Contains(listIDs(t, a.api.As(admin.Access).Do("GET", "/v1/admin/users?limit=100", nil)), acc.ID) {
		t.Fatal("deleted user in the admin list")
	}
	expectError(t, a.api.As(viewer.Access).Do("GET", "/v1/users/"+acc.ID, nil), 404, "users.errors.notFound", "/v1/users/"+acc.ID)
	expectError(t, a.api.As(admin.Access).Do("GET", "/v1/admin/users/"+acc.ID, nil), 404, "users.errors.notFound", "/v1/admin/users/"+acc.ID)
	expectError(t, a.api.As(admin.Access).Do("PATCH", "/v1/admin/users/"+acc.ID, map[string]any{"name": "Zombie"}), 404, "users.errors.notFound", "/v1/admin/users/"+acc.ID)
	expectError(t, a.api.As(admin.Access).Do("DELETE", "/v1/admin/users/"+acc.ID, nil), 404, "users.errors.notFound", "/v1/admin/users/"+acc.ID)
	if row := a.userRow(t, acc.ID); !row.Deleted {
		t.Fatal("user row not soft-deleted")
	}
}

func TestAdminCreateUser(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.demoAccount(t, "admin@dispatch.local")
	super := a.demoAccount(t, "superadmin@dispatch.local")
	create := func(t *testing.T, actor account, role any) (resp testenv.Response, email string) {
		t.Helper()
		email = uniqueEmail("adm")
		body := map[string]any{"name": "  Created User ", "email": strings.ToUpper(email), "password": testPassword}
		if role != nil {
			body["role"] = role
		}
		return a.client(t).As(actor.Access).Do("POST", "/v1/admin/users", body, key()...), email
	}

	// The role defaults to user; the admin view is the self view plus updatedAt.
	resp, email := create(t, admin, nil)
	m := resp.Expect(t, 201).JSON(t)
	expectKeys(t, m, append(slices.Clone(selfViewKeys), "updatedAt")...)
	if m["role"] != "user" || m["email"] != email || m["name"] != "Created User" || m["language"] != "en" {
		t.Fatalf("admin-created user: %v", m)
	}

	type tc struct {
		actor   account
		role    string
		status  int
		code    string
		allowed bool
	}
	cases := map[string]tc{}
	for _, r := range []string{"user", "shipper", "delivery", "financial"} {
		cases["admin creates "+r] = tc{admin, r, 201, "", true}
		cases["superadmin creates "+r] = tc{super, r, 201, "", true}
	}
	cases["admin creates admin"] = tc{admin, "admin", 403, "users.errors.roleNotAllowed", false}
	cases["admin creates superadmin"] = tc{admin, "superadmin", 403, "users.errors.roleNotAllowed", false}
	cases["superadmin creates admin"] = tc{super, "admin", 201, "", true}
	cases["superadmin creates superadmin"] = tc{super, "superadmin", 403, "users.errors.roleNotAllowed", false}
	cases["unknown role"] = tc{super, "root", 400, "common.errors.validation", false}
	cases["empty role"] = tc{admin, "", 400, "common.errors.validation", false}
	cases["role in wrong case"] = tc{admin, "Shipper", 400, "common.errors.validation", false}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			resp, email := create(t, c.actor, c.role)
			if c.allowed {
				if m := resp.Expect(t, 201).JSON(t); m["role"] != c.role {
					t.Fatalf("role = %v, want %s", m["role"], c.role)
				}
				if a.usersWithEmail(t, email, true) != 1 {
					t.Fatal("user not stored")
				}
				return
			}
			body := expectError(t, resp, c.status, c.code, "/v1/admin/users")
			if c.code == "users.errors.roleNotAllowed" && !strings.Contains(body["message"].(string), c.role) {
				t.Errorf("message does not name the role: %v", body["message"])
			}
			if c.status == 400 {
				expectValidation(t, resp, "/v1/admin/users", "role=validation.oneOf")
			}
			if a.usersWithEmail(t, email, false) != 0 {
				t.Fatal("a refused create stored a user")
			}
		})
	}

	// A created staff user gets exactly its role's access.
	t.Run("created shipper works", func(t *testing.T) {
		resp, email := create(t, admin, "shipper")
		resp.Expect(t, 201)
		access, _ := a.login(t, email, testPassword)
		me := a.client(t).As(access).Do("GET", "/v1/users/me", nil).Expect(t, 200).JSON(t)
		if me["role"] != "shipper" {
			t.Fatalf("role %v", me["role"])
		}
		expectError(t, a.client(t).As(access).Do("GET", "/v1/admin/users", nil), 403, "auth.errors.forbidden", "/v1/admin/users")
	})
}

// TestAdminLevelRules: an actor changes or deletes only users strictly below its level and
// assigns only roles strictly below its own (SPEC §2).
func TestAdminLevelRules(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	actors := map[string]account{
		"admin":      a.demoAccount(t, "admin@dispatch.local"),
		"superadmin": a.demoAccount(t, "superadmin@dispatch.local"),
	}
	level := map[string]int{"superadmin": 99, "admin": 10, "shipper": 2, "delivery": 2, "financial": 2, "user": 1}
	roles := []string{"user", "shipper", "delivery", "financial", "admin", "superadmin"}

	for actorRole, actor := range actors {
		for _, targetRole := range roles {
			allowed := level[actorRole] > level[targetRole]
			t.Run(actorRole+" patches "+targetRole, func(t *testing.T) {
				t.Parallel()
				target := a.provision(t, auth.Role(targetRole))
				path := "/v1/admin/users/" + target.ID
				resp := a.client(t).As(actor.Access).Do("PATCH", path, map[string]any{"name": "Patched Name", "language": "pt-BR"})
				if allowed {
					m := resp.Expect(t, 200).JSON(t)
					if m["name"] != "Patched Name" || m["language"] != "pt-BR" || m["role"] != targetRole {
						t.Fatalf("patched: %v", m)
					}
					// Not a credential change: the target's session lives on.
					a.client(t).As(target.Access).Do("GET", "/v1/users/me", nil).Expect(t, 200)
					return
				}
				expectError(t, resp, 403, "users.errors.insufficientLevel", path)
				if a.userRow(t, target.ID).Name == "Patched Name" {
					t.Fatal("refused patch was stored")
				}
			})
			t.Run(actorRole+" deletes "+targetRole, func(t *testing.T) {
				t.Parallel()
				target := a.provision(t, auth.Role(targetRole))
				path := "/v1/admin/users/" + target.ID
				resp := a.client(t).As(actor.Access).Do("DELETE", path, nil)
				if allowed {
					resp.Expect(t, 204)
					if !a.userRow(t, target.ID).Deleted {
						t.Fatal("not deleted")
					}
					expectError(t, a.client(t).As(target.Access).Do("GET", "/v1/users/me", nil), 401, "auth.errors.invalidToken", "/v1/users/me")
					return
				}
				expectError(t, resp, 403, "users.errors.insufficientLevel", path)
				if a.userRow(t, target.ID).Deleted {
					t.Fatal("refused delete was stored")
				}
				a.client(t).As(target.Access).Do("GET", "/v1/users/me", nil).Expect(t, 200)
			})
			for _, newRole := range roles {
				ok := allowed && level[actorRole] > level[newRole]
				t.Run(actorRole+" sets "+targetRole+" to "+newRole, func(t *testing.T) {
					t.Parallel()
					target := a.provision(t, auth.Role(targetRole))
					path := "/v1/admin/users/" + target.ID
					resp := a.client(t).As(actor.Access).Do("PATCH", path, map[string]any{"role": newRole, "name": "Role Changed"})
					if ok {
						if m := resp.Expect(t, 200).JSON(t); m["role"] != newRole {
							t.Fatalf("role = %v, want %s", m["role"], newRole)
						}
						if got := a.userRow(t, target.ID).Role; got != newRole {
							t.Fatalf("stored role %s", got)
						}
						return
					}
					code := "users.errors.roleNotAllowed"
					if !allowed {
						code = "users.errors.insufficientLevel"
					}
					expectError(t, resp, 403, code, path)
					if row := a.userRow(t, target.ID); row.Role != targetRole || row.Name == "Role Changed" {
						t.Fatalf("refused role change stored: %+v", row)
					}
				})
			}
		}
	}

	// An actor cannot change or delete itself through the admin routes (same level).
	for role, actor := range actors {
		path := "/v1/admin/users/" + actor.ID
		expectError(t, a.api.As(actor.Access).Do("PATCH", path, map[string]any{"name": "Me Myself"}), 403, "users.errors.insufficientLevel", path)
		expectError(t, a.api.As(actor.Access).Do("DELETE", path, nil), 403, "users.errors.insufficientLevel", path)
		if a.userRow(t, actor.ID).Deleted {
			t.Fatalf("%s deleted itself", role)
		}
	}
	// Reading any user is not a change: admins may read those above them.
	a.api.As(actors["admin"].Access).Do("GET", "/v1/admin/users/"+actors["superadmin"].ID, nil).Expect(t, 200)
	missing := uuid.NewString()
	expectError(t, a.api.As(actors["admin"].Access).Do("PATCH", "/v1/admin/users/"+missing, map[string]any{"name": "Nobody"}),
		404, "users.errors.notFound", "/v1/admin/users/"+missing)
}

// TestAdminCredentialChangesRevokeSessions: a role or password change by an admin ends the
// target's sessions at once; any other change does not.
func TestAdminCredentialChangesRevokeSessions(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.demoAccount(t, "admin@dispatch.local")

	t.Run("role change", func(t *testing.T) {
		target := a.provision(t, auth.RoleUser)
		access2, refresh2 := a.login(t, target.Email, target.Password)
		path := "/v1/admin/users/" + target.ID
		a.client(t).As(admin.Access).Do("PATCH", path, map[string]any{"role": "financial"}).Expect(t, 200)
		for _, tok := range []string{target.Access, access2} {
			expectError(t, a.client(t).As(tok).Do("GET", "/v1/users/me", nil), 401, "auth.errors.invalidToken", "/v1/users/me")
		}
		for _, tok := range []string{target.Refresh, refresh2} {
			expectError(t, a.client(t).As(tok).Do("POST", "/v1/auth/refresh", nil), 401, "auth.errors.invalidToken", "/v1/auth/refresh")
		}
		// A new login carries the new role.
		access, _ := a.login(t, target.Email, target.Password)
		if me := a.client(t).As(access).Do("GET", "/v1/users/me", nil).Expect(t, 200).JSON(t); me["role"] != "financial" {
			t.Fatalf("role after change: %v", me["role"])
		}
		// The admin's own session is untouched.
		a.client(t).As(admin.Access).Do("GET", "/v1/admin/users", nil).Expect(t, 200)
	})
	t.Run("demoting staff", func(t *testing.T) {
		target := a.provision(t, auth.RoleAdmin)
		super := a.demoAccount(t, "superadmin@dispatch.local")
		a.client(t).As(target.Access).Do("GET", "/v1/admin/users", nil).Expect(t, 200)
		a.client(t).As(super.Access).Do("PATCH", "/v1/admin/users/"+target.ID, map[string]any{"role": "user"}).Expect(t, 200)
		expectError(t, a.client(t).As(target.Access).Do("GET", "/v1/admin/users", nil), 401, "auth.errors.invalidToken", "/v1/admin/users")
	})
	t.Run("same role", func(t *testing.T) {
		target := a.provision(t, auth.RoleShipper)
		a.client(t).As(admin.Access).Do("PATCH", "/v1/admin/users/"+target.ID, map[string]any{"role": "shipper"}).Expect(t, 200)
		a.client(t).As(target.Access).Do("GET", "/v1/users/me", nil).Expect(t, 200)
	})
	t.Run("password set by admin", func(t *testing.T) {
		target := a.provision(t, auth.RoleUser)
		a.client(t).As(admin.Access).Do("PATCH", "/v1/admin/users/"+target.ID, map[string]any{"password": "set-by-admin"}).Expect(t, 200)
		expectError(t, a.client(t).As(target.Access).Do("GET", "/v1/users/me", nil), 401, "auth.errors.invalidToken", "/v1/users/me")
		expectError(t, a.client(t).Do("POST", "/v1/auth/login", map[string]string{"email": target.Email, "password": target.Password}),
			401, "auth.errors.invalidCredentials", "/v1/auth/login")
		a.login(t, target.Email, "set-by-admin")
	})
	t.Run("other fields", func(t *testing.T) {
		target := a.provision(t, auth.RoleUser)
		a.client(t).As(admin.Access).Do("PATCH", "/v1/admin/users/"+target.ID, map[string]any{"name": "Other Name",
			"email": uniqueEmail("moved"), "language": "pt-BR", "address": validAddress()}).Expect(t, 200)
		a.client(t).As(target.Access).Do("GET", "/v1/users/me", nil).Expect(t, 200)
	})
	t.Run("validation", func(t *testing.T) {
		target := a.provision(t, auth.RoleUser)
		path := "/v1/admin/users/" + target.ID
		expectValidation(t, a.client(t).As(admin.Access).Do("PATCH", path, map[string]any{"role": "king", "name": "x", "password": "short"}),
			path, "role=validation.oneOf", "name=validation.length", "password=validation.length")
		expectValidation(t, a.client(t).As(admin.Access).Do("PATCH", path, map[string]any{"currentPassword": testPassword}),
			path, "currentPassword=validation.unknownField")
		a.client(t).As(target.Access).Do("GET", "/v1/users/me", nil).Expect(t, 200)
	})
}

func TestAdminListFilters(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.demoAccount(t, "admin@dispatch.local")
	c := a.api.As(admin.Access)
	mk := func(name, email string, role auth.Role) string {
		u, err := a.svc.Users.Provision(t.Context(), signUpOf(name, email), role)
		if err != nil {
			t.Fatal(err)
		}
		return u.ID.String()
	}
	zed := mk("Zed Shipper", "zed.ship@corp.example", auth.RoleShipper)
	zoe := mk("Zoe Customer", "zoe@shop.example", auth.RoleUser)
	zack := mk("Zack Financial", "zack@corp.example", auth.RoleFinancial)
	gone := mk("Zelda Gone", "zelda@corp.example", auth.RoleUser)
	if _, err := a.db.Exec(`UPDATE users SET deleted_at = now() WHERE id = $1`, gone); err != nil {
		t.Fatal(err)
	}
	demoShipper := a.demoAccount(t, "shipper@dispatch.local").ID

	all := c.Do("GET", "/v1/admin/users?limit=100", nil).Expect(t, 200)
	var page struct{ Items []map[string]any }
	all.Decode(t, &page)
	if len(page.Items) != 5+3 {
		t.Fatalf("admin list has %d users, want 8", len(page.Items))
	}
	for _, it := range page.Items {
		expectKeys(t, it, append(slices.Clone(selfViewKeys), "updatedAt")...)
	}

	for q, want := range map[string][]string{
		"name=z":                     {zed, zoe, zack},
		"name=ZE":                    {zed},
		"email=CORP.example":         {zed, zack},
		"email=zoe@":                 {zoe},
		"role=shipper":               {zed, demoShipper},
		"role=financial&name=zack":   {zack},
		"role=user":                  {zoe},
		"role=shipper&email=corp":    {zed},
		"role=delivery&name=nothing": nil,
		"email=%25":                  nil,
	} {
		got := listIDs(t, c.Do("GET", "/v1/admin/users?limit=100&"+q, nil).Expect(t, 200))
		slices.Sort(got)
		want = slices.Clone(want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("?%s: got %v, want %v", q, got, want)
		}
	}
	for _, bad := range []string{"root", "Admin", "users", "%20"} {
		resp := c.Do("GET", "/v1/admin/users?role="+bad, nil)
		if bad == "%20" { // a blank filter is no filter
			resp.Expect(t, 200)
			continue
		}
		expectValidation(t, resp, "/v1/admin/users", "role=validation.oneOf")
	}
	// The public list ignores the admin filters (and never shows emails).
	viewer := a.signUpAccount(t, nil)
	pub := listIDs(t, a.api.As(viewer.Access).Do("GET", "/v1/users?limit=100&role=shipper&email=corp", nil).Expect(t, 200))
	if len(pub) != 5+3+1 {
		t.Fatalf("public list with admin filters: %d users", len(pub))
	}
}

func signUpOf(name, email string) user.SignUp {
	return user.SignUp{Name: name, Email: email, Password: demo.Password}
}
