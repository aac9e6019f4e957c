package redisx_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/redisx"
)

// go-redis's own lines, here its failed dials to a Redis that is not there, come out as the
// program's JSON lines, and not one per dial.
func TestTheClientsLinesAreThePrograms(t *testing.T) {
	var out bytes.Buffer
	redisx.LogThrough(logging.New("worker", slog.LevelInfo, "json", &out))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1})
	defer rdb.Close()
	for range 5 {
		if err := rdb.Ping(context.Background()).Err(); err == nil {
			t.Fatal("a ping to nothing answered")
		}
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if out.Len() == 0 || len(lines) != 1 {
		t.Fatalf("%d lines for five failed dials, want one:\n%s", len(lines), out.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("not a JSON line: %s", lines[0])
	}
	if m["msg"] != "redis client" || m["level"] != "WARN" || m["service"] != "worker" ||
		!strings.Contains(m["detail"].(string), "dial") {
		t.Fatalf("line %s", lines[0])
	}
}
