package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Client drives an HTTP API in tests: JSON in, status, headers and body out.
type Client struct {
	t       testing.TB
	Base    string
	Token   string
	Headers map[string]string
	HTTP    *http.Client
}

// NewClient returns a client for the API at base. A request stuck for a minute fails its test
// rather than hanging the package until its timeout.
func NewClient(t testing.TB, base string) *Client {
	return &Client{t: t, Base: strings.TrimRight(base, "/"), HTTP: &http.Client{Timeout: time.Minute}}
}

// As returns a copy of c sending token as its bearer token.
func (c *Client) As(token string) *Client {
	cp := *c
	cp.Token = token
	return &cp
}

// With returns a copy of c sending an extra header on every request.
func (c *Client) With(name, value string) *Client {
	cp := *c
	cp.Headers = map[string]string{}
	for k, v := range c.Headers {
		cp.Headers[k] = v
	}
	cp.Headers[name] = value
	return &cp
}

// Response is a received answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends a request. body is sent as is when it is a string or []byte, else JSON-encoded;
// nil sends no body. headers are name, value pairs. An error fails the test.
func (c *Client) Do(method, path string, body any, headers ...string) Response {
	c.t.Helper()
	r, err := c.Send(method, path, body, headers...)
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}

// Send sends a request like Do but returns its error instead of failing the test: for
// goroutines, where t.Fatal would end only the goroutine and could leave the test waiting on
// an answer that never comes. The response read so far comes with a body read's error.
func (c *Client) Send(method, path string, body any, headers ...string) (Response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return Response{}, fmt.Errorf("encode body: %w", err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.Base+path, rd)
	if err != nil {
		return Response{}, fmt.Errorf("new request: %w", err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	for k, v := range c.Headers {
		req.Header.Set(k, v)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	r := Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	if err != nil {
		return r, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	return r, nil
}

// JSON decodes the body as an object.
func (r Response) JSON(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response is not a JSON object (status %d): %v\n%s", r.Status, err, r.Body)
	}
	return m
}

// Decode decodes the body into v.
func (r Response) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode response (status %d): %v\n%s", r.Status, err, r.Body)
	}
}

// Expect fails the test unless the status is want.
func (r Response) Expect(t testing.TB, want int) Response {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status %d, want %d\n%s", r.Status, want, r.Body)
	}
	return r
}

// ExpectError fails the test unless the response is the standard error body with status and
// code.
func (r Response) ExpectError(t testing.TB, status int, code string) map[string]any {
	t.Helper()
	r.Expect(t, status)
	m := r.JSON(t)
	if m["success"] != false || m["code"] != code || m["statusCode"] != float64(status) {
		t.Fatalf("error body: want code %q status %d, got\n%s", code, status, r.Body)
	}
	for _, k := range []string{"error", "message", "correlationId", "timestamp", "path"} {
		if s, _ := m[k].(string); s == "" {
			t.Fatalf("error body lacks %q:\n%s", k, r.Body)
		}
	}
	return m
}
