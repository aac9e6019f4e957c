package testenv

import (
	"context"
	"net"
	"net/url"
	"sync"
	"testing"

	"github.com/dispatchhq/dispatch/internal/platform/postgres"
)

// TCPProxy forwards TCP connections to a server until it is cut: then it drops every
// connection it carries and refuses new ones, as a server that went away does, until restored.
// Frozen, it keeps its connections and holds every byte, as a server that stopped answering
// (or a network cut off) does, until thawed. Tests put it between the programs and PostgreSQL
// or Redis to take the service away without touching the shared server.
type TCPProxy struct {
	Addr   string
	target string

	mu     sync.Mutex
	moving sync.RWMutex // held for reading while a chunk let through is written
	ln     net.Listener
	conns  map[net.Conn]struct{}
	flow   chan struct{} // closed while bytes are forwarded
}

// NewTCPProxy listens on a free local port and forwards to target (host:port).
func NewTCPProxy(t testing.TB, target string) *TCPProxy {
	t.Helper()
	p := &TCPProxy{target: target, conns: map[net.Conn]struct{}{}, flow: make(chan struct{})}
	close(p.flow)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.Addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.Cut)
	return p
}

// Cut drops every connection and refuses new ones.
func (p *TCPProxy) Cut() {
	p.Thaw() // bytes held for a dropped connection go nowhere
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// Freeze holds every byte from then on, in both directions, connections kept open. It returns
// once the bytes let through before it are delivered: none arrives after.
func (p *TCPProxy) Freeze() {
	p.moving.Lock() // waits for the writes of chunks let through
	defer p.moving.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flow:
		p.flow = make(chan struct{})
	default: // frozen already
	}
}

// Thaw forwards the bytes held and those that follow.
func (p *TCPProxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.flow:
	default:
		close(p.flow)
	}
}

// Restore accepts connections again on the same address.
func (p *TCPProxy) Restore(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	p.serve(ln)
}

func (p *TCPProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			go p.forward(client)
		}
	}()
}

func (p *TCPProxy) forward(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(client, server) {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		p.copy(dst, src)
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(client, server)
	<-done
	p.mu.Lock()
	for _, c := range []net.Conn{client, server} {
		c.Close()
		delete(p.conns, c)
	}
	p.mu.Unlock()
}

// track registers a forwarded pair, or closes it when the proxy was cut meanwhile.
func (p *TCPProxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

// copy forwards src to dst until either fails, each chunk held while the proxy is frozen.
func (p *TCPProxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.pass(dst, buf[:n]) {
			return
		}
		if err != nil {
			return
		}
	}
}

// pass writes b to dst once the proxy is not frozen, and reports whether it was written. The
// flow is read and the write made under moving, so that Freeze waits for a write it let through.
func (p *TCPProxy) pass(dst net.Conn, b []byte) bool {
	for {
		p.moving.RLock()
		p.mu.Lock()
		flow := p.flow
		p.mu.Unlock()
		select {
		case <-flow:
			_, err := dst.Write(b)
			p.moving.RUnlock()
			return err == nil
		default:
			p.moving.RUnlock()
			<-flow
		}
	}
}

// BehindProxy returns rawURL (a postgres:// or redis:// URL) with its host replaced by a new
// proxy to it, and the proxy.
func BehindProxy(t testing.TB, rawURL string) (string, *TCPProxy) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := NewTCPProxy(t, u.Host)
	u.Host = proxy.Addr
	return u.String(), proxy
}

// DBBehindProxy opens a pool of maxConns connections to a fresh test database through a proxy
// the test can cut or freeze.
func DBBehindProxy(t testing.TB, maxConns int) (*postgres.DB, *TCPProxy) {
	t.Helper()
	_, dbURL := DB(t)
	return PoolBehindProxy(t, dbURL, maxConns)
}

// PoolBehindProxy opens a pool of maxConns connections to the database at dbURL through a proxy
// the test can cut or freeze. When the test ends the proxy thaws, then the pool is closed.
func PoolBehindProxy(t testing.TB, dbURL string, maxConns int) (*postgres.DB, *TCPProxy) {
	t.Helper()
	proxied, proxy := BehindProxy(t, dbURL)
	db, err := postgres.Open(context.Background(), proxied, maxConns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Thaw(); db.Close() })
	return db, proxy
}
