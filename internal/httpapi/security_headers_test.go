package httpapi_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/dispatchhq/dispatch/internal/testenv"
)

// TestSecurityHeaders: every response, success or error, carries nosniff and no-store (tokens
// and personal data must not be kept by browsers or shared caches) and may not be framed.
func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	a := newApp(t, "CORS_ORIGINS", "https://shop.example")
	access, refresh := a.login(t, "admin@dispatch.local", "admin12345")
	admin := a.api.As(access)
	for name, resp := range map[string]testenv.Response{
		"login":            a.api.Do("POST", "/v1/auth/login", map[string]string{"email": "admin@dispatch.local", "password": "admin12345"}).Expect(t, 200),
		"refresh":          a.api.As(refresh).Do("POST", "/v1/auth/refresh", nil).Expect(t, 200),
		"me":               admin.Do("GET", "/v1/users/me", nil).Expect(t, 200),
		"admin user list":  admin.Do("GET", "/v1/admin/users", nil).Expect(t, 200),
		"notifications":    admin.Do("GET", "/v1/notifications", nil).Expect(t, 200),
		"items":            admin.Do("GET", "/v1/items", nil).Expect(t, 200),
		"401":              a.api.Do("GET", "/v1/users/me", nil).Expect(t, 401),
		"404 order":        admin.Do("GET", "/v1/orders/"+uuid.NewString(), nil).Expect(t, 404),
		"404 route":        a.api.Do("GET", "/nowhere", nil).Expect(t, 404),
		"405":              a.api.Do("PUT", "/v1/users/me", nil).Expect(t, 405),
		"400":              admin.Do("PATCH", "/v1/users/me", "null").Expect(t, 400),
		"CORS preflight":   a.api.Do("OPTIONS", "/v1/users/me", nil, "Origin", "https://shop.example", "Access-Control-Request-Method", "GET").Expect(t, 204),
		"health":           a.api.Do("GET", "/health", nil).Expect(t, 200),
		"metrics":          a.api.Do("GET", "/metrics", nil).Expect(t, 200),
		"queue UI refusal": a.api.Do("GET", "/admin/queues", nil).Expect(t, 401),
	} {
		for k, want := range map[string]string{
			"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s (%d): %s = %q, want %q", name, resp.Status, k, got, want)
			}
		}
	}
}
