package httpapi_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/httpapi"
	"github.com/dispatchhq/dispatch/internal/i18n"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// TestAHeldHandlerIsAnsweredForByItsDeadline: a handler held where its context does not reach
// (deaf to it, as one blocked in a read from a stopped PostgreSQL is) is answered for once its
// deadline and the grace after it have passed: 503 with Retry-After and the standard body in the
// request's language under its correlation id, the security headers, the connection closed after
// it, and CORS for an allowed origin. The access log records the 503, and what the handler
// writes later goes nowhere. A handler
// that began its answer in time is left to finish it, and a handler's abort still aborts.
func TestAHeldHandlerIsAnsweredForByItsDeadline(t *testing.T) {
	t.Parallel()
	const deadline = 500 * time.Millisecond
	rdb, keys, redisURL := testenv.Redis(t)
	a := startAppWith(t, httpapi.Options{Deadline: deadline}, rdb, keys, redisURL, "CORS_ORIGINS", "https://shop.example")

	t.Run("held", func(t *testing.T) {
		release, held, wrote := holding(t)
		a.srv.HandleHeld("/v1/held", false, held, wrote)
		req, err := http.NewRequest("GET", a.api.Base+"/v1/held?lang=pt-BR", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Correlation-Id", "held-request-1")
		req.Header.Set("Origin", "https://shop.example")
		res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req) // held, it would wait for release
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !res.Close {
			t.Error("the connection is kept open after answering for a held handler")
		}
		resp := testenv.Response{Status: res.StatusCode, Header: res.Header, Body: raw}
		m := expectError(t, resp, 503, "common.errors.unavailable", "/v1/held")
		if m["correlationId"] != "held-request-1" {
			t.Errorf("correlationId %v, want the request's", m["correlationId"])
		}
		if want := i18n.T("pt-BR", "common.errors.unavailable", nil); m["message"] != want {
			t.Errorf("message %q, want %q", m["message"], want)
		}
		for name, want := range map[string]string{"Retry-After": "3", "Cache-Control": "no-store",
			"X-Content-Type-Options": "nosniff", "Content-Type": "application/json; charset=utf-8",
			"Access-Control-Allow-Origin": "https://shop.example"} {
			if got := resp.Header.Get(name); got != want {
				t.Errorf("%s: %q, want %q", name, got, want)
			}
		}
		release()
		if err := <-wrote; !errors.Is(err, http.ErrHandlerTimeout) {
			t.Errorf("the handler's late write returned %v, want http.ErrHandlerTimeout", err)
		}
		testenv.Eventually(t, 10*time.Second, "the access log line of the held request", func() bool {
			for l := range strings.Lines(a.logs.String()) {
				if strings.Contains(l, `"msg":"request"`) && strings.Contains(l, `"held-request-1"`) {
					if !strings.Contains(l, `"status":503`) || !strings.Contains(l, fmt.Sprintf(`"bytes":%d`, len(raw))) {
						t.Fatalf("access log line %s, want status 503 and %d bytes (what the client got)", l, len(raw))
					}
					return true
				}
			}
			return false
		})
	})

	t.Run("held with its body unread", func(t *testing.T) {
		// The client announces a body and sends none. The answer given for the handler must not
		// read what is left of it, as net/http does before answering on a connection it keeps:
		// that read would wait here, and race the handler's own reads.
		release, held, wrote := holding(t)
		a.srv.HandleHeld("/v1/held-post", false, held, wrote)
		conn, err := net.Dial("tcp", strings.TrimPrefix(a.api.Base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "POST /v1/held-post HTTP/1.1\r\nHost: dispatch\r\nContent-Type: application/json\r\n"+
			"Content-Length: 64\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body) // to its Content-Length
		resp.Body.Close()
		expectError(t, testenv.Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}, 503, "common.errors.unavailable", "/v1/held-post")
		if !resp.Close {
			t.Error("the connection is kept open after answering for a held handler")
		}
		release()
		if err := <-wrote; !errors.Is(err, http.ErrHandlerTimeout) {
			t.Errorf("the handler's late write returned %v, want http.ErrHandlerTimeout", err)
		}
	})

	t.Run("begun", func(t *testing.T) {
		release, held, wrote := holding(t)
		a.srv.HandleHeld("/v1/begun", true, held, wrote)
		answer := make(chan testenv.Response, 1)
		go func() {
			r, err := a.api.Send("GET", "/v1/begun", nil)
			if err != nil {
				t.Error(err)
			}
			answer <- r
		}()
		// Past the deadline and its grace (a slow machine makes this check weaker, never false).
		time.Sleep(deadline + 2*time.Second)
		release()
		if r := <-answer; r.Status != 200 || string(r.Body) != "begun, ended" {
			t.Errorf("%d %q, want the handler's own answer whole", r.Status, r.Body)
		}
		if err := <-wrote; err != nil {
			t.Errorf("the handler's write returned %v", err)
		}
	})

	t.Run("aborted", func(t *testing.T) {
		a.srv.HandlePanic("/v1/aborted", http.ErrAbortHandler)
		resp, err := http.Get(a.api.Base + "/v1/aborted")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Fatalf("an aborted handler was answered %d %s", resp.StatusCode, body)
		}
		a.api.Do("GET", "/health", nil).Expect(t, 200)
	})
}

// holding returns what a held handler waits on (closed by release, or when the test ends: a
// failed test must not leave the server waiting for it) and where its write's result goes.
func holding(t *testing.T) (release func(), held <-chan struct{}, wrote chan error) {
	c := make(chan struct{})
	release = sync.OnceFunc(func() { close(c) })
	t.Cleanup(release)
	return release, c, make(chan error, 1)
}
