package httpapi_test

import (
	"net/http"
	"regexp"
	"testing"

	"github.com/dispatchhq/dispatch/internal/i18n"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// expectLanguage checks that an error body is rendered in lang: the message and every detail.
func expectLanguage(t *testing.T, r testenv.Response, lang string) {
	t.Helper()
	var body struct {
		Code, Message string
		Details       []detail
	}
	r.Decode(t, &body)
	if body.Code == "" {
		t.Fatalf("not an error body: %s", r.Body)
	}
	if !renders(lang, body.Code, body.Message) || renders(other(lang), body.Code, body.Message) {
		t.Fatalf("message %q is not the %s text of %s (%q)", body.Message, lang, body.Code, i18n.T(lang, body.Code, nil))
	}
	for _, d := range body.Details {
		if !renders(lang, d.Code, d.Message) || renders(other(lang), d.Code, d.Message) {
			t.Fatalf("detail %s: %q is not the %s text of %s", d.Field, d.Message, lang, d.Code)
		}
	}
}

// renders reports whether msg is lang's message for code with its placeholders filled in.
func renders(lang, code, msg string) bool {
	tmpl := i18n.T(lang, code, nil)
	pattern := "^" + regexp.MustCompile(`\\\{[A-Za-z]+\\\}`).ReplaceAllString(regexp.QuoteMeta(tmpl), ".+") + "$"
	return regexp.MustCompile(pattern).MatchString(msg)
}

func other(lang string) string {
	if lang == i18n.English {
		return i18n.Portuguese
	}
	return i18n.English
}

func TestErrorLanguageNegotiation(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	if i18n.T(i18n.English, "common.errors.validation", nil) == i18n.T(i18n.Portuguese, "common.errors.validation", nil) {
		t.Fatal("the catalogs do not differ; this test would prove nothing")
	}
	invalid := map[string]any{"name": "x", "email": "nope", "password": "short", "language": "xx"}
	signUp := func(t *testing.T, query string, headers ...string) testenv.Response {
		resp := a.client(t).Do("POST", "/v1/users"+query, invalid, append(key(), headers...)...)
		expectValidation(t, resp, "/v1/users", "name=validation.length", "email=validation.email",
			"password=validation.length", "language=validation.oneOf")
		return resp
	}
	for _, tc := range []struct {
		name, query, acceptLanguage, want string
	}{
		{"default", "", "", i18n.English},
		{"lang pt-BR", "?lang=pt-BR", "", i18n.Portuguese},
		{"lang pt", "?lang=pt", "", i18n.Portuguese},
		{"lang en", "?lang=en", "", i18n.English},
		{"Accept-Language pt", "", "pt", i18n.Portuguese},
		{"Accept-Language pt-BR", "", "pt-BR", i18n.Portuguese},
		{"Accept-Language pt-PT", "", "pt-PT", i18n.Portuguese},
		{"Accept-Language weighted", "", "fr-FR, de;q=0.9, pt;q=0.5", i18n.Portuguese},
		{"Accept-Language en first", "", "en-US, pt;q=0.5", i18n.English},
		{"lang wins over Accept-Language (en)", "?lang=en", "pt-BR", i18n.English},
		{"lang wins over Accept-Language (pt)", "?lang=pt-BR", "en", i18n.Portuguese},
		{"unknown lang", "?lang=fr", "", i18n.English},
		{"unknown Accept-Language", "", "fr, de;q=0.5", i18n.English},
		{"unknown lang falls through to Accept-Language", "?lang=klingon", "pt", i18n.Portuguese},
		{"empty lang", "?lang=", "", i18n.English},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var headers []string
			if tc.acceptLanguage != "" {
				headers = []string{"Accept-Language", tc.acceptLanguage}
			}
			expectLanguage(t, signUp(t, tc.query, headers...), tc.want)
		})
	}

	// Middleware errors are translated too.
	expectLanguage(t, a.api.Do("GET", "/v1/nowhere?lang=pt-BR", nil), i18n.Portuguese)
	expectLanguage(t, a.api.Do("GET", "/v1/users", nil, "Accept-Language", "pt"), i18n.Portuguese)
	expectLanguage(t, a.api.Do("PUT", "/v1/users", nil, "Accept-Language", "pt"), i18n.Portuguese)
}

// TestSavedLanguage: without ?lang or Accept-Language, a signed-in user reads errors in the
// language saved on the account.
func TestSavedLanguage(t *testing.T) {
	t.Parallel()
	a := newApp(t)
	pt := a.signUpAccount(t, map[string]any{"language": "pt-BR"})
	en := a.signUpAccount(t, nil)

	var pair struct{ Language string }
	a.api.Do("POST", "/v1/auth/login", map[string]string{"email": pt.Email, "password": pt.Password}).Expect(t, 200).Decode(t, &pair)
	if pair.Language != "pt-BR" {
		t.Fatalf("login language = %q", pair.Language)
	}

	bad := "/v1/users/not-a-uuid"
	expectLanguage(t, a.api.As(pt.Access).Do("GET", bad, nil), i18n.Portuguese)
	expectLanguage(t, a.api.As(en.Access).Do("GET", bad, nil), i18n.English)
	// A request's own choice wins over the saved language.
	expectLanguage(t, a.api.As(pt.Access).Do("GET", bad+"?lang=en", nil), i18n.English)
	expectLanguage(t, a.api.As(pt.Access).Do("GET", bad, nil, "Accept-Language", "en"), i18n.English)
	expectLanguage(t, a.api.As(en.Access).Do("GET", bad, nil, "Accept-Language", "pt"), i18n.Portuguese)
	// Validation details and domain errors follow the saved language.
	resp := a.api.As(pt.Access).Do("PATCH", "/v1/users/me", map[string]any{"name": "x"})
	expectValidation(t, resp, "/v1/users/me", "name=validation.length")
	expectLanguage(t, resp, i18n.Portuguese)
	if d := details(t, resp); d[0].Message != i18n.T(i18n.Portuguese, "validation.length", map[string]any{"min": 2, "max": 100}) {
		t.Fatalf("detail message %q", d[0].Message)
	}
	expectLanguage(t, a.api.As(pt.Access).Do("PATCH", "/v1/users/me", map[string]any{"password": "new-password-1"}), i18n.Portuguese)
	// A type is named in words of the reader's language, not as JSON's.
	for lang, want := range map[string]string{"pt-BR": "deve ser do tipo texto", "en": "must be of type string"} {
		resp := a.api.As(pt.Access).Do("PATCH", "/v1/users/me?lang="+lang, map[string]any{"name": 5})
		expectValidation(t, resp, "/v1/users/me", "name=validation.type")
		if d := details(t, resp); d[0].Message != want {
			t.Fatalf("%s type detail %q, want %q", lang, d[0].Message, want)
		}
	}
	resp = a.api.As(pt.Access).Do("GET", "/v1/notifications?unread=yes", nil)
	if d := details(t, resp); len(d) != 1 || d[0].Message != "deve ser do tipo booleano" {
		t.Fatalf("boolean filter details %+v", d)
	}

	// An admin who saved pt-BR reads domain errors with parameters in Portuguese.
	admin := a.demoAccount(t, "admin@dispatch.local")
	a.api.As(admin.Access).Do("PATCH", "/v1/users/me", map[string]any{"language": "pt-BR"}).Expect(t, 200)
	// The next request already reads the new language (the PATCH's own authentication had
	// cached the old one for a second).
	r := a.api.As(admin.Access).Do("GET", bad, nil)
	if r.Status != http.StatusBadRequest || r.JSON(t)["message"] != i18n.T(i18n.Portuguese, "common.errors.invalidId", nil) {
		t.Fatalf("right after the change: %d %s", r.Status, r.Body)
	}
	resp = a.api.As(admin.Access).Do("POST", "/v1/admin/users", map[string]any{"name": "Role", "email": uniqueEmail("r"), "password": testPassword, "role": "admin"}, key()...)
	expectError(t, resp, 403, "users.errors.roleNotAllowed", "/v1/admin/users")
	expectLanguage(t, resp, i18n.Portuguese)
}
