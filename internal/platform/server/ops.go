package server

import (
	"context"
	"encoding/json"
	"net/http"
	httppprof "net/http/pprof"
	"time"

	"github.com/redis/go-redis/v9"
)

// Pinger is what answers a readiness check of a dependency.
type Pinger interface {
	PingContext(ctx context.Context) error
}

// Dependencies are the readiness checks every program shares: PostgreSQL and Redis answer.
func Dependencies(db Pinger, rdb redis.UniversalClient) map[string]func(context.Context) error {
	return map[string]func(context.Context) error{
		"postgres": db.PingContext,
		"redis":    func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
	}
}

// OpsServer is the server of a program's ops port (Ops). Its write timeout leaves room for a
// CPU profile's default 30 s.
func OpsServer(addr string, checks map[string]func(context.Context) error, metrics http.Handler, pprof bool) *http.Server {
	srv := New(addr, Ops(checks, metrics, pprof))
	srv.WriteTimeout = 2 * time.Minute
	return srv
}

// Ops is the handler of a program's ops port: /health (alive while serving), /ready (200 only
// when every check passes within a second), /metrics, and with pprof the Go profiles under
// /debug/pprof/ (opt-in: a heap profile shows memory contents).
func Ops(checks map[string]func(context.Context) error, metrics http.Handler, pprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		if failed := Check(r.Context(), checks); len(failed) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "failed": failed})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready"})
	})
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	if pprof {
		mux.HandleFunc("GET /debug/pprof/", httppprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", httppprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", httppprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", httppprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", httppprof.Trace)
	}
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
