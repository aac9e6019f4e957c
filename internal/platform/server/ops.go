package server

import (
	"context"
	"encoding/json"
	"net/http"

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

// Ops is the handler of a background program's ops port: /health (alive while serving),
// /ready (200 only when every check passes within a second) and /metrics.
func Ops(checks map[string]func(context.Context) error, metrics http.Handler) http.Handler {
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
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
