// Package server runs HTTP servers with graceful shutdown and serves the readiness checks
// every program exposes.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// New returns an http.Server with timeouts suited to a JSON API. A request must have arrived
// whole within 20 s, so that its handler, still within its own deadline (25 s for the API), can
// answer a body that came too late; the answer must be written within 30 s.
func New(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr: addr, Handler: h,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 20 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second,
		MaxHeaderBytes: 64 << 10,
	}
}

// Stop is how a server stops once its context ends.
type Stop struct {
	// Drain keeps serving this long first, each connection closed after its next answer, so
	// that a load balancer that has not yet seen /ready fail loses no request and its clients'
	// next connections go elsewhere. Zero: no drain.
	Drain time.Duration
	// Timeout is how long in-flight requests then get to finish.
	Timeout time.Duration
	// Draining, when not nil, is called once every later answer closes its connection, before
	// the drain: the moment for /ready to start failing.
	Draining func()
}

// Serve listens on srv.Addr until ctx ends, then drains and stops accepting, and lets in-flight
// requests finish (stop). ready, when not nil, receives the bound address.
func Serve(ctx context.Context, srv *http.Server, stop Stop, log *slog.Logger, ready func(net.Addr)) error {
	if srv.ErrorLog == nil { // net/http's own lines as the program's, not plain text on stderr
		srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	}
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", srv.Addr, err)
	}
	if ready != nil {
		ready(ln.Addr())
	}
	log.Info("listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	srv.SetKeepAlivesEnabled(false) // also closes the idle connections
	if stop.Draining != nil {
		stop.Draining()
	}
	if stop.Drain > 0 {
		log.Info("draining before the shutdown", "addr", ln.Addr().String(), "drain", stop.Drain.String())
		select {
		case err := <-errc:
			return err
		case <-time.After(stop.Drain):
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stop.Timeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown %s: %w", srv.Addr, err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Check runs readiness checks concurrently, each within one second, and returns the names of
// those that failed. A check still running at the second counts as failed and is not waited
// for: a server that stopped answering without closing its connections (frozen, cut off) can
// hold a driver's call long past its context, and readiness must answer all the same.
func Check(ctx context.Context, checks map[string]func(context.Context) error) []string {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(checks)) // a check that ends late sends without a reader
	for name, check := range checks {
		go func() { results <- result{name, check(ctx)} }()
	}
	pending := make(map[string]bool, len(checks))
	for name := range checks {
		pending[name] = true
	}
	var failed []string
	for len(pending) > 0 {
		select {
		case r := <-results:
			delete(pending, r.name)
			if r.err != nil {
				failed = append(failed, r.name)
			}
		case <-ctx.Done():
			for name := range pending {
				failed = append(failed, name)
			}
			return failed
		}
	}
	return failed
}
