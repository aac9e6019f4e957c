package server_test

import (
	"context"
	"io"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
	"github.com/dispatchhq/dispatch/internal/platform/server"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// A readiness check answers even when PostgreSQL stops answering without closing its
// connections (a frozen server, a cut network): the ping on an open connection outlives its
// context there (the driver's cancel request gets no answer either), and readiness used to wait
// for it, so /ready hung instead of answering 503.
func TestCheckAnswersWhileTheDatabaseHangs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, dbURL := testenv.DB(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newFreezer(t, u.Host)
	u.Host = proxy.addr
	db, err := postgres.Open(ctx, u.String(), 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	checks := map[string]func(context.Context) error{
		"postgres": db.PingContext,
		"other":    func(context.Context) error { return nil },
	}
	if failed := server.Check(ctx, checks); len(failed) != 0 {
		t.Fatalf("checks failed before the freeze: %v", failed)
	}

	proxy.freeze()
	t.Cleanup(proxy.thaw) // lets the hung ping end
	answered := make(chan []string, 1)
	go func() { answered <- server.Check(ctx, checks) }()
	select {
	case failed := <-answered:
		if !slices.Equal(failed, []string{"postgres"}) {
			t.Fatalf("failed checks %v, want [postgres]", failed)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Check still waits for a database that stopped answering")
	}
}

// freezer forwards TCP connections to a server until frozen: then it holds every byte, as a
// server that stopped answering without closing its connections.
type freezer struct {
	addr   string
	mu     sync.Mutex
	frozen chan struct{} // closed while thawed
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f := &freezer{addr: ln.Addr().String(), frozen: make(chan struct{})}
	close(f.frozen)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); s.Close() })
			go f.pipe(c, s)
			go f.pipe(s, c)
		}
	}()
	return f
}

func (f *freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		f.mu.Lock()
		gate := f.frozen
		f.mu.Unlock()
		<-gate
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				dst.Close()
			}
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = make(chan struct{})
}

func (f *freezer) thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.frozen:
	default:
		close(f.frozen)
	}
}
