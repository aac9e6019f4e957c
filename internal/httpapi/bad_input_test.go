package httpapi_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/demo"
	"github.com/dispatchhq/dispatch/internal/platform/server"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// bodyRoute is a route of this suite that reads a JSON body.
type bodyRoute struct {
	method, path string
	token        string
	headers      func() []string
	valid        string // a body the route accepts
}

func (a *app) bodyRoutes(t *testing.T) []bodyRoute {
	t.Helper()
	admin := a.demoAccount(t, "admin@dispatch.local")
	acc := a.provision(t, auth.RoleUser)
	target := a.provision(t, auth.RoleUser)
	none := func() []string { return nil }
	return []bodyRoute{
		{"POST", "/v1/auth/login", "", none, `{"email":"` + acc.Email + `","password":"` + acc.Password + `"}`},
		{"POST", "/v1/users", "", key, `{"name":"Valid","email":"` + uniqueEmail("bad") + `","password":"password123"}`},
		{"PATCH", "/v1/users/me", acc.Access, none, `{"name":"Valid Name"}`},
		{"POST", "/v1/admin/users", admin.Access, key, `{"name":"Valid","email":"` + uniqueEmail("bad") + `","password":"password123","role":"user"}`},
		{"PATCH", "/v1/admin/users/" + target.ID, admin.Access, none, `{"name":"Valid Name"}`},
	}
}

// TestMalformedBodies: every body route refuses bad JSON with a 400 and the standard body.
func TestMalformedBodies(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	deep := strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000)
	malformed := map[string]string{
		"empty":            ``,
		"whitespace":       "  \n\t ",
		"truncated":        `{"name":"Valid"`,
		"not json":         `hello`,
		"single quotes":    `{'name':'Valid'}`,
		"trailing comma":   `{"name":"Valid Name",}`,
		"trailing garbage": "%s x",
		"two objects":      "%s{}",
		"trailing object":  "%s %s",
		"array":            `[]`,
		"array of object":  "[%s]",
		"string":           `"name"`,
		"number":           `42`,
		"boolean":          `true`,
		"deep nesting":     deep,
		"bad escape":       `{"name":"\x"}`,
		"comment":          "/* hi */ %s",
		"NaN":              `{"name":NaN}`,
		"control char":     "{\"name\":\"a\x01b\"}",
	}
	for _, r := range a.bodyRoutes(t) {
		for name, raw := range malformed {
			t.Run(r.method+" "+r.path+"/"+name, func(t *testing.T) {
				t.Parallel()
				body := strings.ReplaceAll(raw, "%s", r.valid)
				resp := a.client(t).As(r.token).Do(r.method, r.path, body, r.headers()...)
				expectError(t, resp, 400, "common.errors.malformedJson", r.path)
			})
		}
		// The valid body really is accepted (so the refusals above are about the syntax).
		t.Run(r.method+" "+r.path+"/valid", func(t *testing.T) {
			if resp := a.client(t).As(r.token).Do(r.method, r.path, r.valid, r.headers()...); resp.Status >= 300 {
				t.Fatalf("valid body refused: %d %s", resp.Status, resp.Body)
			}
		})
	}
}

// TestWrongTypesAndUnknownFields: a 400 common.errors.validation naming the field.
func TestWrongTypesAndUnknownFields(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	type tc struct {
		body string
		want string // field=code
	}
	routes := a.bodyRoutes(t)
	cases := map[string][]tc{
		"/v1/auth/login": {
			{`{"email":5,"password":"x"}`, "email=validation.type"},
			{`{"email":"a@b.co","password":["x"]}`, "password=validation.type"},
			{`{"email":"a@b.co","password":"x","remember":true}`, "remember=validation.unknownField"},
			{`{"email":"admin@dispatch.local","password":"wrong","password":"admin12345"}`, "password=validation.duplicateField"},
		},
		"/v1/users": {
			{`{"name":5,"email":"a@b.co","password":"password123"}`, "name=validation.type"},
			{`{"name":"Valid","email":{"x":1},"password":"password123"}`, "email=validation.type"},
			{`{"name":"Valid","email":"a@b.co","password":12345678}`, "password=validation.type"},
			{`{"name":"Valid","email":"a@b.co","password":"password123","language":1}`, "language=validation.type"},
			{`{"name":"Valid","email":"a@b.co","password":"password123","address":"Main St"}`, "address=validation.type"},
			{`{"name":"Valid","email":"a@b.co","password":"password123","address":{"line1":1}}`, "address.line1=validation.type"},
			{`{"name":"Valid","email":"a@b.co","password":"password123","role":"admin"}`, "role=validation.unknownField"},
			{`{"name":"Valid","email":"a@b.co","password":"password123","Name":"x"}`, ""},
			{`{"nmae":"Valid","email":"a@b.co","password":"password123"}`, "nmae=validation.unknownField"},
		},
		"/v1/users/me": {
			{`{"name":true}`, "name=validation.type"},
			{`{"address":[]}`, "address=validation.type"},
			{`{"currentPassword":1,"password":"password123"}`, "currentPassword=validation.type"},
			{`{"id":"` + uuid.NewString() + `"}`, "id=validation.unknownField"},
			{`{"address":{"line1":"a","city":"b","state":"c","postalCode":"d","country":"BR","zip":"1"}}`, "address.zip=validation.unknownField"},
		},
		"/v1/admin/users": {
			{`{"name":"Valid","email":"a@b.co","password":"password123","role":5}`, "role=validation.type"},
			{`{"name":"Valid","email":"a@b.co","password":"password123","isAdmin":true}`, "isAdmin=validation.unknownField"},
		},
		"admin patch": {
			{`{"role":["admin"]}`, "role=validation.type"},
			{`{"deletedAt":null}`, "deletedAt=validation.unknownField"},
		},
	}
	for _, r := range routes {
		name := r.path
		if strings.HasPrefix(r.path, "/v1/admin/users/") {
			name = "admin patch"
		}
		for _, c := range cases[name] {
			t.Run(r.method+" "+name+"/"+c.body, func(t *testing.T) {
				t.Parallel()
				resp := a.client(t).As(r.token).Do(r.method, r.path, c.body, r.headers()...)
				if c.want == "" {
					// Go's decoder matches keys case-insensitively; a duplicate in another case is
					// still a valid object, never a 5xx.
					if resp.Status >= 500 {
						t.Fatalf("status %d", resp.Status)
					}
					return
				}
				expectValidation(t, resp, r.path, c.want)
			})
		}
	}
}

// chunked hides a reader's length so the request is sent without Content-Length.
type chunked struct{ io.Reader }

func TestBodyTooLarge(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	const limit = 1 << 20
	// A valid sign-up padded with whitespace to exactly n bytes.
	padded := func(n int) []byte {
		b := []byte(`{"name":"Large","email":"` + uniqueEmail("big") + `","password":"password123"}`)
		return append(b, bytes.Repeat([]byte(" "), n-len(b))...)
	}
	send := func(t *testing.T, method, path, token string, body io.Reader, length int64, headers ...string) testenv.Response {
		t.Helper()
		req, err := http.NewRequest(method, a.api.Base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = length
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return testenv.Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	}

	// Exactly 1 MiB is accepted; one byte more is refused, declared or streamed.
	a.api.Do("POST", "/v1/users", padded(limit), key()...).Expect(t, 201)
	expectError(t, a.api.Do("POST", "/v1/users", padded(limit+1), key()...), 413, "common.errors.bodyTooLarge", "/v1/users")
	expectError(t, send(t, "POST", "/v1/users", "", chunked{bytes.NewReader(padded(limit + 1))}, -1, key()...), 413, "common.errors.bodyTooLarge", "/v1/users")
	expectError(t, send(t, "POST", "/v1/users", "", chunked{bytes.NewReader(padded(5 * limit))}, -1, key()...), 413, "common.errors.bodyTooLarge", "/v1/users")
	a.api.Do("POST", "/v1/users", padded(limit), key()...).Expect(t, 201) // still serving

	acc := a.provision(t, auth.RoleUser)
	admin := a.demoAccount(t, "admin@dispatch.local")
	big := `{"name":"` + strings.Repeat("a", limit) + `"}`
	for _, r := range []struct{ method, path, token string }{
		{"POST", "/v1/auth/login", ""},
		{"PATCH", "/v1/users/me", acc.Access},
		{"POST", "/v1/admin/users", admin.Access},
		{"PATCH", "/v1/admin/users/" + acc.ID, admin.Access},
	} {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			headers := key()
			expectError(t, send(t, r.method, r.path, r.token, strings.NewReader(big), int64(len(big)), headers...), 413, "common.errors.bodyTooLarge", r.path)
			expectError(t, send(t, r.method, r.path, r.token, chunked{strings.NewReader(big)}, -1, headers...), 413, "common.errors.bodyTooLarge", r.path)
		})
	}
	if a.userRow(t, acc.ID).Name != "Test user" {
		t.Fatal("an oversized update was applied")
	}
}

func TestInvalidPathIDs(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.demoAccount(t, "admin@dispatch.local")
	valid := uuid.NewString()
	for _, id := range []string{
		"123", "not-a-uuid", "me",
		strings.ReplaceAll(valid, "-", ""),
		"{" + valid + "}",
		"urn:uuid:" + valid,
		valid + "0",
		valid[:35],
		strings.Replace(valid, valid[:1], "g", 1),
		"%20" + valid,
		"%C3%A9",
		"%FF",
		"%C3%28",
		"%00",
		"00000000-0000-0000-0000-00000000000%00",
	} {
		for _, r := range []struct{ method, prefix string }{
			{"GET", "/v1/users/"},
			{"GET", "/v1/admin/users/"},
			{"PATCH", "/v1/admin/users/"},
			{"DELETE", "/v1/admin/users/"},
		} {
			if r.prefix == "/v1/users/" && id == "me" {
				continue // a route of its own
			}
			t.Run(r.method+" "+r.prefix+id, func(t *testing.T) {
				t.Parallel()
				for _, headers := range [][]string{nil, key()} { // PATCH honours an optional Idempotency-Key
					resp := a.client(t).As(admin.Access).Do(r.method, r.prefix+id, `{"name":"Never Applied"}`, headers...)
					body := resp.ExpectError(t, 400, "common.errors.invalidId")
					if !strings.HasPrefix(body["path"].(string), r.prefix) {
						t.Fatalf("path %v", body["path"])
					}
				}
			})
		}
	}
	// An upper-case UUID is still a UUID.
	expectError(t, a.api.As(admin.Access).Do("GET", "/v1/users/"+strings.ToUpper(valid), nil), 404, "users.errors.notFound", "/v1/users/"+strings.ToUpper(valid))
}

func TestUnknownRoutesAndMethods(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.demoAccount(t, "admin@dispatch.local")
	for _, path := range []string{"/", "/v1", "/v1/nope", "/v2/users", "/v1/users/me/extra", "/v1/users/" + uuid.NewString() + "/orders",
		"/v1/admin", "/v1/auth", "/v1/auth/signup", "/health/x", "/v1/admin/users/" + uuid.NewString() + "/role",
		"/v1/items/", "/v1/users/me/", "/v1/orders/"} { // a trailing slash is another path, not a redirect
		for _, c := range []*testenv.Client{a.client(t), a.client(t).As(admin.Access)} {
			expectError(t, c.Do("GET", path, nil), 404, "common.errors.routeNotFound", path)
		}
		expectError(t, a.api.Do("POST", path, `{}`), 404, "common.errors.routeNotFound", path)
	}
	for _, r := range []struct{ method, path string }{
		{"DELETE", "/v1/users"}, {"PATCH", "/v1/users"}, {"PUT", "/v1/users"},
		{"PUT", "/v1/users/me"}, {"POST", "/v1/users/me"},
		{"GET", "/v1/auth/login"}, {"PUT", "/v1/auth/login"}, {"GET", "/v1/auth/refresh"}, {"DELETE", "/v1/auth/logout"},
		{"POST", "/v1/users/" + uuid.NewString()}, {"PUT", "/v1/admin/users/" + uuid.NewString()},
		{"DELETE", "/v1/admin/users"}, {"PATCH", "/v1/admin/users"},
		{"POST", "/health"}, {"DELETE", "/ready"},
	} {
		for _, c := range []*testenv.Client{a.client(t), a.client(t).As(admin.Access)} {
			expectError(t, c.Do(r.method, r.path, `{}`), 405, "common.errors.methodNotAllowed", r.path)
		}
	}
}

// TestHostileInputNeverCauses500: text the database cannot store (NUL) and bytes that are
// not UTF-8 are refused naming the field, whatever the field; odd headers are a client's
// problem, never a 500.
// TestMalformedQueryStrings: a query Go cannot parse (a bad percent escape, a semicolon, more
// than 10,000 parameters) is refused, where reading it dropped the pairs it could not parse and
// answered as if the filter or cursor had not been sent.
func TestMalformedQueryStrings(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.demoAccount(t, "admin@dispatch.local")
	for _, c := range []struct{ path, query string }{
		{"/v1/items", "cursor=abc%"},
		{"/v1/items", "limit=500%zz"},
		{"/v1/items", "limit=500;x=1"},
		{"/v1/items", "limit=500" + strings.Repeat("&a", 10_000)},
		{"/v1/admin/orders", "status=PAID%"},
	} {
		r := a.api.As(admin.Access).Do("GET", c.path+"?"+c.query, nil)
		expectError(t, r, http.StatusBadRequest, "common.errors.malformedQuery", c.path)
	}
	// Escapes that parse are read as before.
	a.api.As(admin.Access).Do("GET", "/v1/admin/orders?status=%50AID", nil).Expect(t, http.StatusOK)
	r := a.api.As(admin.Access).Do("GET", "/v1/items?limit=500%21", nil)
	r.ExpectError(t, http.StatusBadRequest, "common.errors.validation")
}

func TestHostileInputNeverCauses500(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.demoAccount(t, "admin@dispatch.local")
	acc := a.provision(t, auth.RoleUser)
	nul := `a\u0000b`
	// want is "" for success, else the expected field=code of a 400 validation error.
	bodies := []struct{ method, path, token, body, want string }{
		{"POST", "/v1/users", "", `{"name":"` + nul + `","email":"nul1@example.com","password":"password123"}`, "name=validation.nulCharacter"},
		{"POST", "/v1/users", "", `{"name":"Valid","email":"nul2\u0000@example.com","password":"password123"}`, "email=validation.nulCharacter"},
		{"POST", "/v1/users", "", `{"name":"Valid","email":"nul3@example.com","password":"pass\u0000word123"}`, "password=validation.nulCharacter"},
		{"POST", "/v1/users", "", `{"name":"Valid","email":"nul4@example.com","password":"password123","address":{"line1":"` + nul + `","city":"c","state":"s","postalCode":"1","country":"BR"}}`, "address.line1=validation.nulCharacter"},
		{"POST", "/v1/users", "", `{"name":"Valid","email":"nul5@example.com","password":"password123","address":{"line1":"l","line2":"` + nul + `","city":"c","state":"s","postalCode":"1","country":"BR"}}`, "address.line2=validation.nulCharacter"},
		{"POST", "/v1/users", "", `{"name":"Valid","email":"nul6@example.com","password":"password123","address":{"line1":"l","city":"` + nul + `","state":"s","postalCode":"1","country":"BR"}}`, "address.city=validation.nulCharacter"},
		{"POST", "/v1/users", "", `{"name":"Valid","email":"nul7@example.com","password":"password123","address":{"line1":"l","city":"c","state":"` + nul + `","postalCode":"1","country":"BR"}}`, "address.state=validation.nulCharacter"},
		{"POST", "/v1/users", "", `{"name":"Valid","email":"nul8@example.com","password":"password123","address":{"line1":"l","city":"c","state":"s","postalCode":"` + nul + `","country":"BR"}}`, "address.postalCode=validation.nulCharacter"},
		{"POST", "/v1/users", "", `{"name":"Valid","email":"nul9@example.com","password":"password123","address":{"line1":"l","city":"c","state":"s","postalCode":"1","country":"B\u0000"}}`, "address.country=validation.nulCharacter"},
		{"POST", "/v1/users", "", `{"name":"Valid","email":"nul10@example.com","password":"password123","language":"` + nul + `"}`, "language=validation.nulCharacter"},
		{"POST", "/v1/auth/login", "", `{"email":"` + nul + `@example.com","password":"password123"}`, "email=validation.nulCharacter"},
		{"POST", "/v1/auth/login", "", `{"email":"admin@dispatch.local","password":"` + nul + `"}`, "password=validation.nulCharacter"},
		{"PATCH", "/v1/users/me", acc.Access, `{"name":"` + nul + `"}`, "name=validation.nulCharacter"},
		{"PATCH", "/v1/users/me", acc.Access, `{"email":"x` + nul + `@example.com"}`, "email=validation.nulCharacter"},
		{"POST", "/v1/admin/users", admin.Access, `{"name":"` + nul + `","email":"nul11@example.com","password":"password123"}`, "name=validation.nulCharacter"},
		{"POST", "/v1/admin/users", admin.Access, `{"name":"Valid","email":"nul12@example.com","password":"password123","role":"` + nul + `"}`, "role=validation.nulCharacter"},
		{"PATCH", "/v1/admin/users/" + acc.ID, admin.Access, `{"name":"` + nul + `"}`, "name=validation.nulCharacter"},
		// Bytes that are not UTF-8 inside JSON strings are refused, not stored as U+FFFD.
		{"POST", "/v1/users", "", "{\"name\":\"\xff\xfe\",\"email\":\"utf1@example.com\",\"password\":\"password123\"}", "name=validation.utf8"},
		{"PATCH", "/v1/users/me", acc.Access, "{\"name\":\"ok \xc3\x28 name\"}", "name=validation.utf8"},
	}
	for _, b := range bodies {
		t.Run(b.method+" "+b.path+" "+b.body, func(t *testing.T) {
			var headers []string
			if b.method == "POST" && strings.HasSuffix(b.path, "users") {
				headers = key()
			}
			resp := a.client(t).As(b.token).Do(b.method, b.path, b.body, headers...)
			if b.want == "" {
				if resp.Status != 200 && resp.Status != 201 {
					t.Fatalf("status %d: %s", resp.Status, resp.Body)
				}
				return
			}
			expectValidation(t, resp, b.path, b.want)
		})
	}
	if a.usersWithEmail(t, "nul1@example.com", false) != 0 || strings.Contains(a.userRow(t, acc.ID).Name, "\x00") {
		t.Fatal("text with NUL stored")
	}

	// Query filters: text the database cannot compare is a 400, never a 500.
	for _, tc := range []struct{ path, code string }{
		{"/v1/users?name=%00", "common.errors.validation"},
		{"/v1/users?name=a%00b", "common.errors.validation"},
		{"/v1/users?name=%FF", "common.errors.validation"},
		{"/v1/users?name=%C3%28", "common.errors.validation"},
		{"/v1/users?name=" + strings.Repeat("a", 201), "common.errors.validation"},
		{"/v1/users?name=%25%5F%5C", ""},
		{"/v1/users?email=%00&role=%FF", ""}, // the public list has no such filters
		{"/v1/admin/users?name=%00", "common.errors.validation"},
		{"/v1/admin/users?name=%FF", "common.errors.validation"},
		{"/v1/admin/users?email=%00", "common.errors.validation"},
		{"/v1/admin/users?email=%FE%FF", "common.errors.validation"},
		{"/v1/admin/users?role=%00", "common.errors.validation"},
		{"/v1/admin/users?role=%FF", "common.errors.validation"},
		{"/v1/admin/users?email=" + strings.Repeat("%C3%A9", 201), "common.errors.validation"},
		{"/v1/admin/users?email=%C3%A9", ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp := a.client(t).As(admin.Access).Do("GET", tc.path, nil)
			if tc.code == "" {
				resp.Expect(t, 200)
				return
			}
			path := tc.path[:strings.IndexByte(tc.path, '?')]
			expectError(t, resp, 400, tc.code, path)
		})
	}

	// The User-Agent is stored with the session: cut at its byte limit without splitting a
	// character, and bytes that are not UTF-8 are replaced.
	for name, ua := range map[string]string{
		"long multibyte": strings.Repeat("€", 600),
		"latin-1":        "Mozilla/5.0 (caf\xe9)",
		"long":           strings.Repeat("a", 5000),
	} {
		t.Run("User-Agent "+name, func(t *testing.T) {
			var pair struct{ UserID string }
			a.client(t).Do("POST", "/v1/auth/login", map[string]string{"email": acc.Email, "password": acc.Password}, "User-Agent", ua).
				Expect(t, 200).Decode(t, &pair)
			var stored string
			if err := a.db.Get(&stored, `SELECT user_agent FROM sessions WHERE user_id = $1 ORDER BY created_at DESC LIMIT 1`, pair.UserID); err != nil {
				t.Fatal(err)
			}
			if len(stored) == 0 || len(stored) > 512 || !utf8.ValidString(stored) {
				t.Fatalf("stored user agent: %d bytes, valid UTF-8 %v", len(stored), utf8.ValidString(stored))
			}
			if utf8.ValidString(ua) && !strings.HasPrefix(ua, stored) {
				t.Fatalf("stored user agent is not a prefix of the sent one: %q", stored)
			}
		})
	}
}

// TestRoutesWithoutABodyRefuseOne: a route that takes no body accepts none or an empty object,
// and refuses anything else as every route refuses what it does not know (SPEC §1), before it
// changes anything: the session is not rotated or ended, nothing is marked read.
func TestRoutesWithoutABodyRefuseOne(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	acc := a.provision(t, auth.RoleUser)
	shipped := a.provision(t, auth.RoleDelivery)
	admin, _ := a.login(t, "admin@dispatch.local", demo.Password)
	for _, r := range []struct {
		method, path string
		token        func() string // a fresh one for each request
	}{
		{"POST", "/v1/auth/refresh", func() string { _, refresh := a.login(t, acc.Email, acc.Password); return refresh }},
		{"POST", "/v1/auth/logout", func() string { access, _ := a.login(t, acc.Email, acc.Password); return access }},
		{"PATCH", "/v1/notifications/read-all", func() string { return acc.Access }},
		{"PATCH", "/v1/notifications/" + uuid.NewString() + "/read", func() string { return acc.Access }},
		{"PATCH", "/v1/admin/orders/" + uuid.NewString() + "/deliver", func() string { return shipped.Access }},
		{"DELETE", "/v1/users/me", func() string { return a.provision(t, auth.RoleUser).Access }},
		{"DELETE", "/v1/admin/users/" + uuid.NewString(), func() string { return admin }},
		{"DELETE", "/v1/admin/items/" + uuid.NewString(), func() string { return admin }},
		{"DELETE", "/v1/admin/orders/" + uuid.NewString(), func() string { return admin }},
	} {
		for _, body := range []string{`{"x":1}`, `{"x":`, `[]`, `"x"`} {
			resp := a.client(t).As(r.token()).Do(r.method, r.path, body)
			if resp.Status != 400 {
				t.Errorf("%s %s with %s: %d %s, want 400", r.method, r.path, body, resp.Status, resp.Body)
			}
		}
		for _, body := range []string{``, `{}`, ` { } `, `null`} { // null is none, as for a field
			if resp := a.client(t).As(r.token()).Do(r.method, r.path, body); resp.Status == 400 || resp.Status >= 500 {
				t.Errorf("%s %s with %q: %d %s, want it accepted", r.method, r.path, body, resp.Status, resp.Body)
			}
		}
	}
	// A refused delete deleted nothing.
	a.client(t).As(acc.Access).Do("DELETE", "/v1/users/me", `{"confirm":false}`).ExpectError(t, 400, "common.errors.validation")
	a.client(t).As(acc.Access).Do("GET", "/v1/users/me", nil).Expect(t, 200)
	// The refused logout and refresh left the account's sessions alone.
	if n := a.liveSessions(t, acc.ID); n != 1+2*4+4 {
		t.Errorf("%d live sessions, want %d (the account's own, 8 of the refused requests and 4 refreshed)", n, 1+2*4+4)
	}
}

// TestABodyThatArrivesTooLateIs408: a request whose body has not arrived when the server's read
// deadline passes (a slow client, or a request that first waited on an outage) is a 408 with the
// standard body, on the keyed, unkeyed and webhook paths alike, not a malformed body. The
// server's timeouts (a tenth of server.New's) leave the time to write it.
func TestABodyThatArrivesTooLateIs408(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	hs := httptest.NewUnstartedServer(a.srv.Handler())
	timeouts := server.New("", nil)
	hs.Config.ReadTimeout, hs.Config.WriteTimeout = timeouts.ReadTimeout/10, timeouts.WriteTimeout/10
	hs.Start()
	t.Cleanup(hs.Close)
	acc := a.provision(t, auth.RoleUser)
	for _, r := range []struct{ method, path, token, key string }{
		{"POST", "/v1/orders", acc.Access, uuid.NewString()},
		{"PATCH", "/v1/users/me", acc.Access, ""},
		{"POST", "/stripe/webhook", "", ""},
	} {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			conn, err := net.Dial("tcp", hs.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			head := r.method + " " + r.path + " HTTP/1.1\r\nHost: dispatch\r\nContent-Type: application/json\r\nContent-Length: 64\r\n"
			if r.token != "" {
				head += "Authorization: Bearer " + r.token + "\r\n"
			}
			if r.key != "" {
				head += "Idempotency-Key: " + r.key + "\r\n"
			}
			if _, err := io.WriteString(conn, head+"\r\n"); err != nil { // and no body
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			expectError(t, testenv.Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}, 408, "common.errors.bodyTimedOut", r.path)
		})
	}
	var n int
	if err := a.db.Get(&n, `SELECT count(*) FROM orders WHERE user_id = $1`, acc.ID); err != nil || n != 0 {
		t.Fatalf("%d orders placed by a request whose body never came (%v)", n, err)
	}
}
