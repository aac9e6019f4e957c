package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// cidClient returns a client sending a fresh X-Correlation-Id, and that id.
func (a *app) cidClient(t *testing.T, token string) (*testenv.Client, string) {
	t.Helper()
	cid := "cid-" + uuid.NewString()
	c := a.client(t).With("X-Correlation-Id", cid)
	if token != "" {
		c = c.As(token)
	}
	return c, cid
}

// expectOneOutboxRow asserts that the request with correlation id cid wrote exactly one outbox
// row, of type typ, and returns its payload.
func (a *app) expectOneOutboxRow(t *testing.T, cid, typ string) map[string]any {
	t.Helper()
	rows := a.outboxFor(t, cid)
	if len(rows) != 1 {
		t.Fatalf("outbox rows for %s: %d, want 1: %+v", cid, len(rows), rows)
	}
	if rows[0].Type != typ {
		t.Fatalf("outbox type %q, want %q", rows[0].Type, typ)
	}
	var p map[string]any
	if err := json.Unmarshal([]byte(rows[0].Payload), &p); err != nil {
		t.Fatalf("outbox payload: %v", err)
	}
	return p
}

func expectCustomerPayload(t *testing.T, p map[string]any, userID string) {
	t.Helper()
	expectKeys(t, p, "userId")
	if p["userId"] != userID {
		t.Fatalf("payload userId = %v, want %s", p["userId"], userID)
	}
}

// TestOutboxRowsOnSuccess: each user change and each login writes its outbox row, tagged with the
// request's correlation id.
func TestOutboxRowsOnSuccess(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.demoAccount(t, "admin@dispatch.local")

	t.Run("sign-up", func(t *testing.T) {
		c, cid := a.cidClient(t, "")
		resp := c.Do("POST", "/v1/users", map[string]any{"name": "Outbox", "email": uniqueEmail("ob"), "password": testPassword}, key()...).Expect(t, 201)
		if resp.Header.Get("X-Correlation-Id") != cid {
			t.Fatalf("correlation id not echoed: %q", resp.Header.Get("X-Correlation-Id"))
		}
		expectCustomerPayload(t, a.expectOneOutboxRow(t, cid, "payment:customer:create"), resp.JSON(t)["id"].(string))
	})
	t.Run("admin create", func(t *testing.T) {
		c, cid := a.cidClient(t, admin.Access)
		resp := c.Do("POST", "/v1/admin/users", map[string]any{"name": "Outbox", "email": uniqueEmail("ob"), "password": testPassword, "role": "delivery"}, key()...).Expect(t, 201)
		expectCustomerPayload(t, a.expectOneOutboxRow(t, cid, "payment:customer:create"), resp.JSON(t)["id"].(string))
	})
	t.Run("update me", func(t *testing.T) {
		acc := a.provision(t, auth.RoleUser)
		c, cid := a.cidClient(t, acc.Access)
		c.Do("PATCH", "/v1/users/me", map[string]any{"name": "Updated"}).Expect(t, 200)
		expectCustomerPayload(t, a.expectOneOutboxRow(t, cid, "payment:customer:update"), acc.ID)
	})
	t.Run("password change", func(t *testing.T) {
		acc := a.provision(t, auth.RoleUser)
		c, cid := a.cidClient(t, acc.Access)
		c.Do("PATCH", "/v1/users/me", map[string]any{"password": "another-password", "currentPassword": acc.Password}).Expect(t, 200)
		expectCustomerPayload(t, a.expectOneOutboxRow(t, cid, "payment:customer:update"), acc.ID)
	})
	t.Run("admin update", func(t *testing.T) {
		target := a.provision(t, auth.RoleUser)
		c, cid := a.cidClient(t, admin.Access)
		c.Do("PATCH", "/v1/admin/users/"+target.ID, map[string]any{"role": "shipper"}).Expect(t, 200)
		expectCustomerPayload(t, a.expectOneOutboxRow(t, cid, "payment:customer:update"), target.ID)
	})
	t.Run("delete me", func(t *testing.T) {
		acc := a.provision(t, auth.RoleUser)
		c, cid := a.cidClient(t, acc.Access)
		c.Do("DELETE", "/v1/users/me", nil).Expect(t, 204)
		expectCustomerPayload(t, a.expectOneOutboxRow(t, cid, "payment:customer:delete"), acc.ID)
	})
	t.Run("admin delete", func(t *testing.T) {
		target := a.provision(t, auth.RoleFinancial)
		c, cid := a.cidClient(t, admin.Access)
		c.Do("DELETE", "/v1/admin/users/"+target.ID, nil).Expect(t, 204)
		expectCustomerPayload(t, a.expectOneOutboxRow(t, cid, "payment:customer:delete"), target.ID)
	})
	t.Run("login", func(t *testing.T) {
		acc := a.provision(t, auth.RoleUser)
		c, cid := a.cidClient(t, "")
		var pair struct{ UserID string }
		c.Do("POST", "/v1/auth/login", map[string]string{"email": acc.Email, "password": acc.Password}).Expect(t, 200).Decode(t, &pair)
		p := a.expectOneOutboxRow(t, cid, "notify:user")
		expectKeys(t, p, "userId", "event", "data")
		if p["userId"] != acc.ID || pair.UserID != acc.ID || p["event"] != "auth.login" {
			t.Fatalf("login notification payload: %v", p)
		}
		data, _ := p["data"].(map[string]any)
		if data["ip"] != "127.0.0.1" {
			t.Fatalf("login notification ip = %v", data["ip"])
		}
		// RFC 3339 UTC with milliseconds, like every timestamp of the API (SPEC §1).
		if at, err := time.Parse("2006-01-02T15:04:05.000Z", data["at"].(string)); err != nil || time.Since(at) > time.Minute {
			t.Fatalf("login notification at = %v (%v)", data["at"], err)
		}
	})
	t.Run("X-Request-Id", func(t *testing.T) {
		acc := a.provision(t, auth.RoleUser)
		rid := "req-" + uuid.NewString()
		resp := a.client(t).Do("POST", "/v1/auth/login", map[string]string{"email": acc.Email, "password": acc.Password}, "X-Request-Id", rid).Expect(t, 200)
		if resp.Header.Get("X-Correlation-Id") != rid {
			t.Fatalf("X-Request-Id not used as the correlation id: %q", resp.Header.Get("X-Correlation-Id"))
		}
		a.expectOneOutboxRow(t, rid, "notify:user")
		// Also when X-Correlation-Id is sent but cannot be used.
		rid = "req-" + uuid.NewString()
		resp = a.client(t).Do("POST", "/v1/auth/login", map[string]string{"email": acc.Email, "password": acc.Password},
			"X-Correlation-Id", "bad\tid", "X-Request-Id", rid).Expect(t, 200)
		if resp.Header.Get("X-Correlation-Id") != rid {
			t.Fatalf("X-Request-Id not used beside an unusable X-Correlation-Id: %q", resp.Header.Get("X-Correlation-Id"))
		}
	})
	t.Run("no correlation id sent", func(t *testing.T) {
		acc := a.provision(t, auth.RoleUser)
		for _, sent := range []string{"", strings.Repeat("x", 129), "bad\tid"} {
			resp := a.client(t).Do("POST", "/v1/auth/login", map[string]string{"email": acc.Email, "password": acc.Password}, "X-Correlation-Id", sent).Expect(t, 200)
			cid := resp.Header.Get("X-Correlation-Id")
			if _, err := uuid.Parse(cid); err != nil {
				t.Fatalf("sent %q: generated correlation id %q is not a UUID", sent, cid)
			}
			a.expectOneOutboxRow(t, cid, "notify:user")
		}
	})
}

// TestOutboxNothingOnFailure: a request that fails writes no outbox row and changes nothing.
func TestOutboxNothingOnFailure(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.demoAccount(t, "admin@dispatch.local")
	acc := a.provision(t, auth.RoleUser)
	before := a.userRow(t, acc.ID)
	super := a.demoAccount(t, "superadmin@dispatch.local")

	type tc struct {
		name   string
		token  string
		method string
		path   string
		body   any
		status int
		code   string
		email  string // when set, no live user may have it afterwards beyond want
	}
	dupEmail := strings.ToUpper(acc.Email)
	cases := []tc{
		{"sign-up duplicate email", "", "POST", "/v1/users", map[string]any{"name": "Dup", "email": dupEmail, "password": testPassword}, 409, "users.errors.emailAlreadyExists", ""},
		{"sign-up invalid", "", "POST", "/v1/users", map[string]any{"name": "D", "email": "fresh-invalid@example.com", "password": testPassword}, 400, "common.errors.validation", "fresh-invalid@example.com"},
		{"sign-up malformed", "", "POST", "/v1/users", `{"name":"Dup","email":"fresh-malformed@example.com","password":"password123"`, 400, "common.errors.malformedJson", "fresh-malformed@example.com"},
		{"admin create duplicate", admin.Access, "POST", "/v1/admin/users", map[string]any{"name": "Dup", "email": dupEmail, "password": testPassword}, 409, "users.errors.emailAlreadyExists", ""},
		{"admin create admin", admin.Access, "POST", "/v1/admin/users", map[string]any{"name": "Dup", "email": "fresh-admin@example.com", "password": testPassword, "role": "admin"}, 403, "users.errors.roleNotAllowed", "fresh-admin@example.com"},
		{"update invalid", acc.Access, "PATCH", "/v1/users/me", map[string]any{"name": "Valid Name", "email": "broken"}, 400, "common.errors.validation", ""},
		{"update email taken", acc.Access, "PATCH", "/v1/users/me", map[string]any{"name": "Valid Name", "email": "ADMIN@dispatch.local"}, 409, "users.errors.emailAlreadyExists", ""},
		{"update wrong password", acc.Access, "PATCH", "/v1/users/me", map[string]any{"name": "Valid Name", "password": "new-password", "currentPassword": "wrong-password"}, 403, "users.errors.wrongPassword", ""},
		{"update missing current password", acc.Access, "PATCH", "/v1/users/me", map[string]any{"password": "new-password"}, 403, "users.errors.wrongPassword", ""},
		{"admin update above level", admin.Access, "PATCH", "/v1/admin/users/" + super.ID, map[string]any{"name": "Nope"}, 403, "users.errors.insufficientLevel", ""},
		{"admin update role too high", admin.Access, "PATCH", "/v1/admin/users/" + acc.ID, map[string]any{"name": "Valid Name", "role": "admin"}, 403, "users.errors.roleNotAllowed", ""},
		{"admin update unknown user", admin.Access, "PATCH", "/v1/admin/users/" + uuid.NewString(), map[string]any{"name": "Nobody"}, 404, "users.errors.notFound", ""},
		{"admin update email taken", admin.Access, "PATCH", "/v1/admin/users/" + acc.ID, map[string]any{"email": "shipper@dispatch.local"}, 409, "users.errors.emailAlreadyExists", ""},
		{"admin delete above level", admin.Access, "DELETE", "/v1/admin/users/" + admin.ID, nil, 403, "users.errors.insufficientLevel", ""},
		{"admin delete unknown user", admin.Access, "DELETE", "/v1/admin/users/" + uuid.NewString(), nil, 404, "users.errors.notFound", ""},
		{"login wrong password", "", "POST", "/v1/auth/login", map[string]string{"email": acc.Email, "password": "wrong-password"}, 401, "auth.errors.invalidCredentials", ""},
		{"login unknown email", "", "POST", "/v1/auth/login", map[string]string{"email": "nobody@example.com", "password": "wrong-password"}, 401, "auth.errors.invalidCredentials", ""},
	}
	sessions := a.liveSessions(t, acc.ID)
	total := a.outboxCount(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl, cid := a.cidClient(t, c.token)
			var headers []string
			if c.method == "POST" && strings.HasSuffix(c.path, "users") {
				headers = key()
			}
			expectError(t, cl.Do(c.method, c.path, c.body, headers...), c.status, c.code, c.path)
			if rows := a.outboxFor(t, cid); len(rows) != 0 {
				t.Fatalf("a failed request wrote outbox rows: %+v", rows)
			}
			if c.email != "" && a.usersWithEmail(t, c.email, false) != 0 {
				t.Fatal("a failed request created a user")
			}
		})
	}
	if n := a.outboxCount(t); n != total {
		t.Fatalf("outbox grew from %d to %d rows over failed requests", total, n)
	}
	if after := a.userRow(t, acc.ID); after != before {
		t.Fatalf("failed requests changed the user:\n%+v\n%+v", before, after)
	}
	if a.usersWithEmail(t, acc.Email, false) != 1 {
		t.Fatal("duplicate user stored")
	}
	if n := a.liveSessions(t, acc.ID); n != sessions {
		t.Fatalf("failed requests changed sessions: %d → %d", sessions, n)
	}
	a.api.As(acc.Access).Do("GET", "/v1/users/me", nil).Expect(t, 200)
}

// sabotageOutbox makes every insert into the test database's outbox fail until the returned
// function is called: the change the row belongs to must fail with it.
func (a *app) sabotageOutbox(t *testing.T) (restore func()) {
	t.Helper()
	for _, q := range []string{
		`CREATE FUNCTION outbox_sabotage() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'sabotage: outbox refused'; END $$`,
		`CREATE TRIGGER outbox_sabotage BEFORE INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_sabotage()`,
	} {
		if _, err := a.db.Exec(q); err != nil {
			t.Fatalf("sabotage: %v", err)
		}
	}
	return func() {
		if _, err := a.db.Exec(`DROP TRIGGER outbox_sabotage ON outbox; DROP FUNCTION outbox_sabotage()`); err != nil {
			t.Fatalf("restore: %v", err)
		}
	}
}

// TestOutboxSameTransaction: when the outbox row cannot be written, the change it announces is
// rolled back too — the user, session or revocation never exists without its row.
func TestOutboxSameTransaction(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	admin := a.demoAccount(t, "admin@dispatch.local")
	acc := a.provision(t, auth.RoleUser)
	target := a.provision(t, auth.RoleUser)
	before, targetBefore := a.userRow(t, acc.ID), a.userRow(t, target.ID)
	sessions, targetSessions := a.liveSessions(t, acc.ID), a.liveSessions(t, target.ID)
	email := uniqueEmail("atomic")
	restore := a.sabotageOutbox(t)

	internal := func(t *testing.T, resp testenv.Response, path string) {
		t.Helper()
		expectError(t, resp, 500, "common.errors.internal", path)
		if strings.Contains(string(resp.Body), "sabotage") || strings.Contains(string(resp.Body), "outbox") {
			t.Fatalf("500 leaks internals: %s", resp.Body)
		}
	}
	internal(t, a.api.Do("POST", "/v1/users", map[string]any{"name": "Atomic", "email": email, "password": testPassword}, key()...), "/v1/users")
	internal(t, a.api.As(admin.Access).Do("POST", "/v1/admin/users", map[string]any{"name": "Atomic", "email": email, "password": testPassword}, key()...), "/v1/admin/users")
	internal(t, a.api.Do("POST", "/v1/auth/login", map[string]string{"email": acc.Email, "password": acc.Password}), "/v1/auth/login")
	internal(t, a.api.As(acc.Access).Do("PATCH", "/v1/users/me", map[string]any{"name": "Never Stored"}), "/v1/users/me")
	internal(t, a.api.As(acc.Access).Do("PATCH", "/v1/users/me", map[string]any{"password": "never-stored", "currentPassword": acc.Password}), "/v1/users/me")
	internal(t, a.api.As(acc.Access).Do("DELETE", "/v1/users/me", nil), "/v1/users/me")
	internal(t, a.api.As(admin.Access).Do("PATCH", "/v1/admin/users/"+target.ID, map[string]any{"role": "shipper"}), "/v1/admin/users/"+target.ID)
	internal(t, a.api.As(admin.Access).Do("DELETE", "/v1/admin/users/"+target.ID, nil), "/v1/admin/users/"+target.ID)

	if a.usersWithEmail(t, email, false) != 0 {
		t.Fatal("user stored without its outbox row")
	}
	if after := a.userRow(t, acc.ID); after != before {
		t.Fatalf("user changed without its outbox row:\n%+v\n%+v", before, after)
	}
	if after := a.userRow(t, target.ID); after != targetBefore {
		t.Fatalf("target changed without its outbox row:\n%+v\n%+v", targetBefore, after)
	}
	if n := a.liveSessions(t, acc.ID); n != sessions {
		t.Fatalf("sessions of the user: %d → %d without outbox rows", sessions, n)
	}
	if n := a.liveSessions(t, target.ID); n != targetSessions {
		t.Fatalf("sessions of the target: %d → %d without outbox rows", targetSessions, n)
	}
	// The rolled-back revocations did not reach the denylist either.
	a.api.As(acc.Access).Do("GET", "/v1/users/me", nil).Expect(t, 200)
	a.api.As(target.Access).Do("GET", "/v1/users/me", nil).Expect(t, 200)

	// With the outbox back, the same requests succeed.
	restore()
	a.api.Do("POST", "/v1/users", map[string]any{"name": "Atomic", "email": email, "password": testPassword}, key()...).Expect(t, 201)
	a.api.As(acc.Access).Do("PATCH", "/v1/users/me", map[string]any{"name": "Stored Now"}).Expect(t, 200)
}
