package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pb33f/jsonschema/v6"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	valerrors "github.com/pb33f/libopenapi-validator/errors"

	"github.com/dispatchhq/dispatch/api"
	"github.com/dispatchhq/dispatch/internal/auth"
	"github.com/dispatchhq/dispatch/internal/httpapi"
	"github.com/dispatchhq/dispatch/internal/order"
	"github.com/dispatchhq/dispatch/internal/payment"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// The OpenAPI document (api/openapi.json) is checked against the code: it is a valid OpenAPI
// 3.1 document; it names exactly the routes gin serves (the queue UI aside); the guards it
// documents (security, x-roles, Idempotency-Key, rate limits) are the ones the server applies;
// it is served as embedded; and real requests and responses validate against it.

// openAPIValidator parses the embedded document and builds a validator over it.
func openAPIValidator(t *testing.T) (libopenapi.Document, validator.Validator) {
	t.Helper()
	doc, err := libopenapi.NewDocument(api.OpenAPI)
	if err != nil {
		t.Fatalf("parse api/openapi.json: %v", err)
	}
	if _, err := doc.BuildV3Model(); err != nil {
		t.Fatalf("build the OpenAPI model: %v", err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("build the validator: %v", errs)
	}
	return doc, v
}

func validationErrors(errs []*valerrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "\n  - %s: %s", e.Message, e.Reason)
		if e.SpecLine > 0 {
			fmt.Fprintf(&b, " (spec line %d)", e.SpecLine)
		}
		for _, f := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "\n      %s: %s", f.FieldPath, f.Reason)
		}
	}
	return b.String()
}

// specOp is what the route and guard checks read of an operation.
type specOp struct {
	Method      string
	Path        string
	OperationID string              `json:"operationId"`
	Tags        []string            `json:"tags"`
	Summary     string              `json:"summary"`
	Description string              `json:"description"`
	Security    *[]map[string][]any `json:"security"`
	Roles       []string            `json:"x-roles"`
	Parameters  []struct {
		Ref string `json:"$ref"`
	} `json:"parameters"`
	Responses map[string]struct {
		Headers map[string]json.RawMessage `json:"headers"`
	} `json:"responses"`
}

func (o specOp) key() string { return o.Method + " " + o.Path }

// public reports an operation documented without authentication (security: []).
func (o specOp) public() bool { return o.Security != nil && len(*o.Security) == 0 }

// basicAuth reports an operation documented behind HTTP basic auth (the queue UI).
func (o specOp) basicAuth() bool {
	if o.Security == nil {
		return false
	}
	for _, req := range *o.Security {
		if _, ok := req["basicAuth"]; ok {
			return true
		}
	}
	return false
}

// idempotencyKey returns "required", "optional" or "" from the documented parameters.
func (o specOp) idempotencyKey() string {
	for _, p := range o.Parameters {
		switch p.Ref {
		case "#/components/parameters/IdempotencyKeyRequired":
			return "required"
		case "#/components/parameters/IdempotencyKeyOptional", "#/components/parameters/IdempotencyKeyRefresh":
			return "optional"
		case "#/components/parameters/IdempotencyKeyIgnored":
			return "ignored"
		}
	}
	return ""
}

var documentedRateLimit = regexp.MustCompile(`Rate limit: (\d+) requests/min`)

// rateLimit returns the documented default limit per minute, 0 for an unlimited route.
func (o specOp) rateLimit() int {
	m := documentedRateLimit.FindStringSubmatch(o.Description)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// specOps reads every operation of the document, keyed by "METHOD /path".
func specOps(t *testing.T) map[string]specOp {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatalf("api/openapi.json: %v", err)
	}
	ops := map[string]specOp{}
	for path, item := range doc.Paths {
		for method, raw := range item {
			m := strings.ToUpper(method)
			switch m {
			case "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE":
			default:
				continue // parameters, summary, description, servers
			}
			var o specOp
			if err := json.Unmarshal(raw, &o); err != nil {
				t.Fatalf("%s %s: %v", m, path, err)
			}
			o.Method, o.Path = m, path
			ops[o.key()] = o
		}
	}
	return ops
}

func sortedOps(ops map[string]specOp) []specOp {
	out := make([]specOp, 0, len(ops))
	for _, o := range ops {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out
}

var ginParam = regexp.MustCompile(`[:*]([A-Za-z0-9_]+)`)

// openAPIPath turns a gin route template into the OpenAPI form: /:id → /{id}.
func openAPIPath(p string) string { return ginParam.ReplaceAllString(p, "{$1}") }

func TestOpenAPIDocumentIsValid31(t *testing.T) {
	doc, v := openAPIValidator(t)
	if got := doc.GetVersion(); got != "3.1.0" {
		t.Fatalf("openapi version %q, want 3.1.0", got)
	}
	if ok, errs := v.ValidateDocument(); !ok {
		t.Fatalf("api/openapi.json is not a valid OpenAPI 3.1 document:%s", validationErrors(errs))
	}

	// The OpenAPI meta-schema does not descend into Schema Objects: compile each component schema
	// as JSON Schema 2020-12 (the 3.1 dialect), which checks it against the draft's meta-schema.
	raw, err := jsonschema.UnmarshalJSON(bytes.NewReader(api.OpenAPI))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource("openapi.json", raw); err != nil {
		t.Fatal(err)
	}
	schemas, _ := raw.(map[string]any)["components"].(map[string]any)["schemas"].(map[string]any)
	if len(schemas) == 0 {
		t.Fatal("no component schemas")
	}
	for name := range schemas {
		if _, err := c.Compile("openapi.json#/components/schemas/" + name); err != nil {
			t.Errorf("schema %s is not valid JSON Schema 2020-12: %v", name, err)
		}
	}

	ids := map[string]string{}
	for _, o := range sortedOps(specOps(t)) {
		if o.OperationID == "" || o.Summary == "" || len(o.Tags) == 0 {
			t.Errorf("%s: needs an operationId, a summary and a tag", o.key())
		}
		if prev, dup := ids[o.OperationID]; dup {
			t.Errorf("operationId %q used by %s and %s", o.OperationID, prev, o.key())
		}
		ids[o.OperationID] = o.key()
		success := false
		for status := range o.Responses {
			success = success || strings.HasPrefix(status, "2")
		}
		if !success {
			t.Errorf("%s: no success response documented", o.key())
		}
		if (o.Method == "GET" || o.Method == "DELETE") && o.idempotencyKey() != "" {
			t.Errorf("%s: Idempotency-Key documented on a %s", o.key(), o.Method)
		}
	}
}

// The timeline's event types the document lists are the ones the code writes (a requeued
// task's entry was missing from it).
func TestOpenAPITimelineTypesAreTheCodes(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas struct {
				TimelineEvent struct {
					Properties struct {
						Type struct {
							Enum []string `json:"enum"`
						} `json:"type"`
					} `json:"properties"`
				} `json:"TimelineEvent"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	got, want := doc.Components.Schemas.TimelineEvent.Properties.Type.Enum, order.EventTypes()
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("TimelineEvent.type enum %v, the code writes %v", got, want)
	}
}

// TestOpenAPIDocumentsEveryRoute walks gin's route table: every route but the queue UI is in
// the document, and the document names no route the engine does not serve.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	a := newApp(t)
	served := map[string]bool{}
	for _, r := range a.srv.Engine().Routes() {
		if r.Path == httpapi.QueueUIPath && r.Method != http.MethodGet || strings.HasPrefix(r.Path, httpapi.QueueUIPath+"/") {
			continue // the UI's own API and actions, under its page
		}
		served[r.Method+" "+openAPIPath(r.Path)] = true
	}
	if len(served) < 40 {
		t.Fatalf("only %d routes served; is the route table empty?", len(served))
	}
	ops := specOps(t)
	var missing, extra []string
	for k := range served {
		if _, ok := ops[k]; !ok {
			missing = append(missing, k)
		}
	}
	for k := range ops {
		if !served[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("routes missing from api/openapi.json:\n  %s", strings.Join(missing, "\n  "))
	}
	if len(extra) > 0 {
		t.Errorf("documented but not served:\n  %s", strings.Join(extra, "\n  "))
	}
}

// TestOpenAPIServedAsEmbedded: GET /openapi.json answers the embedded bytes as JSON.
func TestOpenAPIServedAsEmbedded(t *testing.T) {
	a := newApp(t)
	resp := a.api.Do("GET", "/openapi.json", nil).Expect(t, 200)
	if !bytes.Equal(resp.Body, api.OpenAPI) {
		t.Fatalf("GET /openapi.json (%d bytes) differs from the embedded document (%d bytes)", len(resp.Body), len(api.OpenAPI))
	}
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", resp.Header.Get("Content-Type"))
	}
	if !json.Valid(resp.Body) {
		t.Fatal("GET /openapi.json is not valid JSON")
	}
}

// concretePath fills every path parameter with a fresh UUID.
func concretePath(p string) string {
	return regexp.MustCompile(`\{[^}]+\}`).ReplaceAllStringFunc(p, func(string) string { return uuid.NewString() })
}

// errorCode returns the code of an error body ("" for anything else).
func errorCode(body []byte) string {
	var e struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Code
}

// TestOpenAPIGuardsMatchTheServer probes every documented operation: documented security is
// enforced (401 without a token) and public operations do not ask for one; x-roles are exactly
// the roles that pass the route's role guard; the documented Idempotency-Key (required,
// optional, absent) is the middleware the route has.
func TestOpenAPIGuardsMatchTheServer(t *testing.T) {
	a := newApp(t)
	ops := sortedOps(specOps(t))

	tokens := map[auth.Role]string{}
	for _, role := range auth.Roles {
		tokens[role] = a.provision(t, role).Access
	}
	super := tokens[auth.RoleSuperadmin]

	// send probes op as a caller that passes its authentication and role guards. Operations
	// that would end the caller's session or account get a throwaway account.
	send := func(o specOp, headers ...string) (int, string) {
		t.Helper()
		c := a.client(t)
		switch {
		case o.key() == "POST /v1/auth/refresh":
			c = c.As(a.provision(t, auth.RoleUser).Refresh)
		case o.key() == "POST /v1/auth/logout" || o.key() == "DELETE /v1/users/me":
			c = c.As(a.provision(t, auth.RoleUser).Access)
		case !o.public():
			c = c.As(super)
		}
		r := c.Do(o.Method, concretePath(o.Path), nil, headers...)
		return r.Status, errorCode(r.Body)
	}

	for _, o := range ops {
		// Security.
		r := a.client(t).Do(o.Method, concretePath(o.Path), nil)
		switch {
		case o.public():
			if r.Status == 401 {
				t.Errorf("%s: documented public, answered 401 without a token: %s", o.key(), r.Body)
			}
		case o.basicAuth():
			if r.Status != 401 || errorCode(r.Body) != "auth.errors.basicAuth" || r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: documented behind basic auth, answered %d without credentials: %s", o.key(), r.Status, r.Body)
			}
		case r.Status != 401 || errorCode(r.Body) != "auth.errors.unauthenticated":
			t.Errorf("%s: documented secured, answered %d without a token: %s", o.key(), r.Status, r.Body)
		}

		// Roles.
		if !o.public() && o.key() != "POST /v1/auth/refresh" {
			for _, role := range auth.Roles {
				if o.key() == "POST /v1/auth/logout" || o.key() == "DELETE /v1/users/me" {
					continue // not role-guarded (checked by the secured/public probe); would end the session
				}
				r := a.client(t).As(tokens[role]).Do(o.Method, concretePath(o.Path), nil)
				forbidden := r.Status == 403 && errorCode(r.Body) == "auth.errors.forbidden"
				documented := len(o.Roles) == 0 || containsString(o.Roles, string(role))
				if forbidden == documented {
					t.Errorf("%s as %s: answered %d %s, documented roles %v", o.key(), role, r.Status, errorCode(r.Body), o.Roles)
				}
			}
		}

		// Idempotency-Key.
		tooLong := strings.Repeat("k", 256)
		switch o.idempotencyKey() {
		case "required":
			if st, code := send(o); st != 400 || code != "common.errors.idempotencyKeyRequired" {
				t.Errorf("%s: Idempotency-Key documented required; without it: %d %s", o.key(), st, code)
			}
			if st, code := send(o, "Idempotency-Key", tooLong); st != 400 || code != "common.errors.idempotencyKeyInvalid" {
				t.Errorf("%s: invalid Idempotency-Key answered %d %s", o.key(), st, code)
			}
		case "ignored":
			if st, code := send(o, "Idempotency-Key", tooLong); st != 400 || code != "common.errors.idempotencyKeyInvalid" {
				t.Errorf("%s: Idempotency-Key documented ignored, an invalid one answered %d %s", o.key(), st, code)
			}
		case "optional":
			if st, code := send(o); code == "common.errors.idempotencyKeyRequired" {
				t.Errorf("%s: Idempotency-Key documented optional; without it: %d %s", o.key(), st, code)
			}
			if st, code := send(o, "Idempotency-Key", tooLong); st != 400 || code != "common.errors.idempotencyKeyInvalid" {
				t.Errorf("%s: Idempotency-Key documented optional, an invalid one answered %d %s", o.key(), st, code)
			}
		default:
			if st, code := send(o, "Idempotency-Key", tooLong); code == "common.errors.idempotencyKeyInvalid" {
				t.Errorf("%s: Idempotency-Key not documented, but an invalid one answered %d %s", o.key(), st, code)
			}
		}
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestOpenAPIRateLimitsMatchTheServer: with rate limiting on and the default limits, an
// operation sends X-RateLimit-* headers exactly when the document says it is limited, with the
// documented limit; the documented success responses declare those headers.
func TestOpenAPIRateLimitsMatchTheServer(t *testing.T) {
	a := newApp(t, "RATE_LIMIT_ENABLED", "true", "RATE_LIMITS", "")
	for _, o := range sortedOps(specOps(t)) {
		want := o.rateLimit()
		r := a.client(t).Do(o.Method, concretePath(o.Path), nil)
		got, _ := strconv.Atoi(r.Header.Get("X-RateLimit-Limit"))
		if got != want {
			t.Errorf("%s: X-RateLimit-Limit %q, documented limit %d", o.key(), r.Header.Get("X-RateLimit-Limit"), want)
		}
		for status, resp := range o.Responses {
			if !strings.HasPrefix(status, "2") {
				continue
			}
			if _, declared := resp.Headers["X-RateLimit-Limit"]; declared != (want > 0) {
				t.Errorf("%s %s: X-RateLimit-Limit declared %v, limited %v", o.key(), status, declared, want > 0)
			}
			_, replay := resp.Headers["Idempotent-Replayed"]
			if honoured := o.idempotencyKey() == "required" || o.idempotencyKey() == "optional"; replay != honoured {
				t.Errorf("%s %s: Idempotent-Replayed declared %v, Idempotency-Key %q", o.key(), status, replay, o.idempotencyKey())
			}
		}
	}
}

// exchange is one real request and its response, kept for validation.
type exchange struct {
	method, path string
	reqHeader    http.Header
	reqBody      []byte
	status       int
	respHeader   http.Header
	respBody     []byte
}

// call sends a request to the app and records it. body is JSON-encoded unless it is a string
// or []byte (sent as is) or nil (no body).
func (a *app) call(t *testing.T, method, path, token string, body any, headers ...string) exchange {
	t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, a.api.Base+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
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
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return exchange{method: method, path: path, reqHeader: req.Header, reqBody: raw,
		status: resp.StatusCode, respHeader: resp.Header, respBody: out}
}

func (x exchange) request(base string) *http.Request {
	req, _ := http.NewRequest(x.method, base+x.path, bytes.NewReader(x.reqBody))
	req.Header = x.reqHeader.Clone()
	return req
}

func (x exchange) response(req *http.Request) *http.Response {
	return &http.Response{StatusCode: x.status, Header: x.respHeader.Clone(), Request: req,
		Body: io.NopCloser(bytes.NewReader(x.respBody)), ContentLength: int64(len(x.respBody))}
}

// conforms fails the test unless the exchange has status want and its response (and, with
// checkRequest, its request) validates against the document.
func conforms(t *testing.T, v validator.Validator, base string, x exchange, want int, checkRequest bool) {
	t.Helper()
	if x.status != want {
		t.Fatalf("%s %s: status %d, want %d\n%s", x.method, x.path, x.status, want, x.respBody)
	}
	if checkRequest {
		if ok, errs := v.ValidateHttpRequestSync(x.request(base)); !ok {
			t.Errorf("%s %s: the request does not match the document:%s", x.method, x.path, validationErrors(errs))
		}
	}
	req := x.request(base)
	if ok, errs := v.ValidateHttpResponse(req, x.response(req)); !ok {
		t.Errorf("%s %s → %d: the response does not match the document:%s\n%s", x.method, x.path, x.status,
			validationErrors(errs), x.respBody)
	}
}

func expectJSONField(t *testing.T, x exchange, field, want string) {
	t.Helper()
	var m map[string]any
	decodeInto(t, x, &m)
	if m[field] != want {
		t.Fatalf("%s %s: %s is %v, want %s", x.method, x.path, field, m[field], want)
	}
}

func decodeInto(t *testing.T, x exchange, v any) {
	t.Helper()
	if err := json.Unmarshal(x.respBody, v); err != nil {
		t.Fatalf("%s %s: %v\n%s", x.method, x.path, err, x.respBody)
	}
}

// TestOpenAPIResponsesMatchTheCode drives a customer's and the staff's main flows and
// validates every request and response against the document, so that neither the schemas nor
// the documented statuses and headers can drift from the code.
func TestOpenAPIResponsesMatchTheCode(t *testing.T) {
	_, v := openAPIValidator(t)
	a := newApp(t)
	base := a.api.Base
	ok := func(x exchange, want int) { t.Helper(); conforms(t, v, base, x, want, true) }
	// refused requests are not valid by construction: only their responses are checked.
	refused := func(x exchange, want int) { t.Helper(); conforms(t, v, base, x, want, false) }
	idem := func() []string { return []string{"Idempotency-Key", uuid.NewString()} }

	// Operations.
	ok(a.call(t, "GET", "/health", "", nil), 200)
	// Not ready while a dependency is slow to answer, which a loaded machine may be now and then.
	var ready exchange
	testenv.Eventually(t, 20*time.Second, "/ready answers 200", func() bool {
		ready = a.call(t, "GET", "/ready", "", nil)
		return ready.status == 200
	})
	ok(ready, 200)
	ok(a.call(t, "GET", "/metrics", "", nil), 200)
	ok(a.call(t, "GET", "/openapi.json", "", nil), 200)

	// Sign-up, its replay, a refused one, login and the account.
	email := uniqueEmail("openapi")
	signUp := map[string]any{"name": "Ana Customer", "email": email, "password": testPassword, "language": "pt-BR",
		"address": map[string]any{"line1": "Rua A, 1", "line2": nil, "city": "São Paulo", "state": "SP",
			"postalCode": "01000-000", "country": "br"}}
	key := idem()
	ok(a.call(t, "POST", "/v1/users", "", signUp, key...), 201)
	replay := a.call(t, "POST", "/v1/users", "", signUp, key...)
	ok(replay, 201)
	if replay.respHeader.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replayed sign-up lacks Idempotent-Replayed: true")
	}
	refused(a.call(t, "POST", "/v1/users", "", map[string]any{"name": "X", "email": "nope", "password": "short", "nickname": "x"}, idem()...), 400)
	refused(a.call(t, "POST", "/v1/users", "", map[string]any{"name": "A", "email": "bad", "password": "short"}, idem()...), 400)
	refused(a.call(t, "POST", "/v1/users", "", signUp, idem()...), 409)
	refused(a.call(t, "POST", "/v1/users", "", map[string]any{"name": "Other", "email": uniqueEmail("x"), "password": testPassword}, key...), 422)
	refused(a.call(t, "POST", "/v1/auth/login", "", map[string]any{"email": email, "password": "wrong-password"}), 401)

	login := a.call(t, "POST", "/v1/auth/login", "", map[string]any{"email": email, "password": testPassword})
	ok(login, 200)
	var pair struct{ AccessToken, RefreshToken, UserID string }
	decodeInto(t, login, &pair)
	customer := pair.AccessToken
	ok(a.call(t, "GET", "/v1/users/me", customer, nil), 200)
	ok(a.call(t, "PATCH", "/v1/users/me", customer, map[string]any{"name": "Ana C.", "language": "en"}, idem()...), 200)
	refused(a.call(t, "PATCH", "/v1/users/me", customer, map[string]any{"password": "new-password-1"}), 403)
	ok(a.call(t, "GET", "/v1/users?limit=2", customer, nil), 200)
	ok(a.call(t, "GET", "/v1/users/"+pair.UserID, customer, nil), 200)
	refused(a.call(t, "GET", "/v1/users/not-a-uuid", customer, nil), 400)
	refused(a.call(t, "GET", "/v1/users/me", "", nil), 401)
	refused(a.call(t, "GET", "/v1/users/"+uuid.NewString(), customer, nil), 404)
	refused(a.call(t, "GET", "/v1/admin/users", customer, nil), 403)
	refused(a.call(t, "GET", "/v1/users?cursor=garbage", customer, nil), 400)

	// Catalog.
	admin := a.as("admin@dispatch.local").Token
	items := a.call(t, "GET", "/v1/items?limit=5", customer, nil)
	ok(items, 200)
	ok(a.call(t, "GET", "/v1/items?name=a", customer, nil), 200)
	item := a.call(t, "POST", "/v1/admin/items", admin, map[string]any{"name": "OpenAPI mug", "description": "A mug.",
		"price": 1250, "currency": "usd", "stock": 10, "pricePaymentId": "price_123"}, idem()...)
	ok(item, 201)
	var it struct{ ID string }
	decodeInto(t, item, &it)
	ok(a.call(t, "GET", "/v1/items/"+it.ID, customer, nil), 200)
	ok(a.call(t, "GET", "/v1/admin/items/"+it.ID, admin, nil), 200)
	ok(a.call(t, "GET", "/v1/admin/items?limit=3&description=mug", admin, nil), 200)
	ok(a.call(t, "PATCH", "/v1/admin/items/"+it.ID, admin, map[string]any{"stock": 20, "pricePaymentId": nil}), 200)
	refused(a.call(t, "POST", "/v1/admin/items", admin, map[string]any{"name": "Mug", "description": "A mug.", "price": 0, "stock": 1}, idem()...), 400)

	// Users, by staff.
	staff := a.call(t, "POST", "/v1/admin/users", admin, map[string]any{"name": "New Shipper", "email": uniqueEmail("shipper"),
		"password": testPassword, "role": "shipper"}, idem()...)
	ok(staff, 201)
	var st struct{ ID string }
	decodeInto(t, staff, &st)
	ok(a.call(t, "GET", "/v1/admin/users?role=shipper&limit=2", admin, nil), 200)
	ok(a.call(t, "GET", "/v1/admin/users/"+st.ID, admin, nil), 200)
	ok(a.call(t, "PATCH", "/v1/admin/users/"+st.ID, admin, map[string]any{"role": "delivery"}), 200)
	refused(a.call(t, "POST", "/v1/admin/users", admin, map[string]any{"name": "Boss", "email": uniqueEmail("boss"),
		"password": testPassword, "role": "superadmin"}, idem()...), 403)
	ok(a.call(t, "DELETE", "/v1/admin/users/"+st.ID, admin, nil), 204)

	// An order, its payment by webhook, its timeline, a cancel and the admin views.
	order := a.call(t, "POST", "/v1/orders", customer, map[string]any{"items": []any{map[string]any{"itemId": it.ID, "quantity": 2}}}, idem()...)
	ok(order, 201)
	var o struct {
		ID       string
		Total    int64
		Currency string
		Payment  struct{ PaymentIntentID string }
	}
	decodeInto(t, order, &o)
	refused(a.call(t, "POST", "/v1/orders", customer, map[string]any{"items": []any{map[string]any{"itemId": it.ID, "quantity": 1000}}}, idem()...), 409)
	refused(a.call(t, "POST", "/v1/orders", customer, map[string]any{"items": []any{map[string]any{"itemId": uuid.NewString(), "quantity": 1}}}, idem()...), 404)
	ok(a.call(t, "GET", "/v1/orders/"+o.ID, customer, nil), 200)
	ok(a.call(t, "GET", "/v1/orders/me?status=PENDING&limit=5", customer, nil), 200)

	event := payment.TestEvent{Type: payment.EventIntentSucceeded, PaymentIntentID: o.Payment.PaymentIntentID,
		OrderID: o.ID, Amount: o.Total, Currency: o.Currency}.Build()
	sig := payment.Sign(event, a.cfg.StripeWebhookSecret, time.Now())
	ok(a.call(t, "POST", "/stripe/webhook", "", event, "Stripe-Signature", sig), 200)
	refused(a.call(t, "POST", "/stripe/webhook", "", event, "Stripe-Signature", "t=1,v1=bad"), 400)

	financial := a.as("financial@dispatch.local").Token
	ok(a.call(t, "GET", "/v1/orders/"+o.ID+"/events", customer, nil), 200)
	ok(a.call(t, "GET", "/v1/admin/orders?userId="+pair.UserID, financial, nil), 200)
	ok(a.call(t, "GET", "/v1/admin/orders/"+o.ID, financial, nil), 200)
	refused(a.call(t, "PATCH", "/v1/admin/orders/"+o.ID+"/ship", a.as("shipper@dispatch.local").Token,
		map[string]any{"trackingNumber": "TRK1", "carrier": "UPS"}), 409)
	refused(a.call(t, "DELETE", "/v1/admin/orders/"+o.ID, admin, nil), 409)
	ok(a.call(t, "PATCH", "/v1/admin/orders/"+o.ID+"/cancel", financial, map[string]any{"reason": "customer asked"}, idem()...), 202)
	refused(a.call(t, "PATCH", "/v1/admin/orders/"+o.ID+"/refund", financial, nil), 409)
	refused(a.call(t, "GET", "/v1/orders/"+uuid.NewString(), customer, nil), 404)
	// The worker's part, run in-process: the cancel refunds the captured payment.
	ctx := testenv.Context(t)
	if err := a.svc.Orders.Cancel(ctx, uuid.MustParse(o.ID), "worker", "customer asked"); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	canceled := a.call(t, "GET", "/v1/orders/"+o.ID, customer, nil)
	ok(canceled, 200)
	expectJSONField(t, canceled, "status", "CANCELED")
	ok(a.call(t, "GET", "/v1/orders/"+o.ID+"/events?limit=50", financial, nil), 200)
	ok(a.call(t, "DELETE", "/v1/admin/orders/"+o.ID, admin, nil), 204)

	// A second order along the fulfilment path: paid, processed, shipped, delivered, refunded.
	second := a.call(t, "POST", "/v1/orders", customer, map[string]any{"items": []any{map[string]any{"itemId": it.ID, "quantity": 1}}}, idem()...)
	ok(second, 201)
	decodeInto(t, second, &o)
	event = payment.TestEvent{Type: payment.EventIntentSucceeded, PaymentIntentID: o.Payment.PaymentIntentID,
		OrderID: o.ID, Amount: o.Total, Currency: o.Currency}.Build()
	ok(a.call(t, "POST", "/stripe/webhook", "", event, "Stripe-Signature", payment.Sign(event, a.cfg.StripeWebhookSecret, time.Now())), 200)
	if err := a.svc.Orders.Process(ctx, uuid.MustParse(o.ID)); err != nil {
		t.Fatalf("process: %v", err)
	}
	ok(a.call(t, "PATCH", "/v1/admin/orders/"+o.ID+"/ship", a.as("shipper@dispatch.local").Token,
		map[string]any{"trackingNumber": "TRK-1", "carrier": "UPS"}, idem()...), 200)
	ok(a.call(t, "PATCH", "/v1/admin/orders/"+o.ID+"/deliver", a.as("delivery@dispatch.local").Token, nil), 200)
	ok(a.call(t, "PATCH", "/v1/admin/orders/"+o.ID, admin, map[string]any{"status": "REFUNDED", "reason": "damaged"}), 202)
	if err := a.svc.Orders.Refund(ctx, uuid.MustParse(o.ID), "worker", "damaged"); err != nil {
		t.Fatalf("refund: %v", err)
	}
	refunded := a.call(t, "GET", "/v1/admin/orders/"+o.ID, financial, nil)
	ok(refunded, 200)
	expectJSONField(t, refunded, "status", "REFUNDED")
	refused(a.call(t, "PATCH", "/v1/admin/orders/"+o.ID, admin, map[string]any{"status": "SHIPPED", "trackingNumber": "T", "carrier": "C"}), 409)
	refused(a.call(t, "PATCH", "/v1/admin/orders/"+o.ID, admin, map[string]any{"status": "LOST"}), 400)

	// Notifications (written by the worker; stored here directly).
	if _, err := a.svc.Notifications.Deliver(ctx, 0, time.Time{}, uuid.MustParse(pair.UserID), "order.paid",
		map[string]any{"orderId": o.ID, "number": 1, "total": o.Total, "currency": o.Currency, "status": "PAID"}); err != nil {
		t.Fatal(err)
	}
	notes := a.call(t, "GET", "/v1/notifications?unread=true", customer, nil)
	ok(notes, 200)
	var page struct{ Items []struct{ ID string } }
	decodeInto(t, notes, &page)
	if len(page.Items) == 0 {
		t.Fatalf("no notification listed: %s", notes.respBody)
	}
	ok(a.call(t, "GET", "/v1/notifications/unread/count", customer, nil), 200)
	ok(a.call(t, "GET", "/v1/notifications/has-new", customer, nil), 200)
	ok(a.call(t, "PATCH", "/v1/notifications/"+page.Items[0].ID+"/read", customer, nil, idem()...), 200)
	ok(a.call(t, "PATCH", "/v1/notifications/read-all", customer, nil), 200)
	refused(a.call(t, "PATCH", "/v1/notifications/"+uuid.NewString()+"/read", customer, nil), 404)

	// The end of the session and the account.
	ok(a.call(t, "DELETE", "/v1/admin/items/"+it.ID, admin, nil), 204)
	refresh := a.call(t, "POST", "/v1/auth/refresh", pair.RefreshToken, nil)
	ok(refresh, 200)
	decodeInto(t, refresh, &pair)
	ok(a.call(t, "POST", "/v1/auth/logout", pair.AccessToken, nil), 204)
	refused(a.call(t, "POST", "/v1/auth/refresh", pair.RefreshToken, nil), 401)
	access, _ := a.login(t, email, testPassword)
	ok(a.call(t, "DELETE", "/v1/users/me", access, nil), 204)

}
