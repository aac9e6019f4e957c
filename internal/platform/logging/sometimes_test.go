package logging_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/platform/logging"
)

// TestSometimes: a message repeated within the interval is written once; the next line of it
// written after the interval counts the ones left out; other messages are not held back.
func TestSometimes(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	log := logging.Sometimes(logging.New("api", slog.LevelInfo, "json", &out), 300*time.Millisecond)
	for range 5 {
		log.Warn("cache unavailable", "err", "refused")
	}
	log.With("k", "v").Warn("cache unavailable") // derived loggers share what was seen
	log.Warn("denylist unavailable")
	log.Warn("refused", "code", "a")
	log.Warn("refused", "code", "b") // another code: another line
	log.Warn("refused", "code", "a")
	time.Sleep(350 * time.Millisecond)
	log.Warn("cache unavailable")

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		lines = append(lines, rec)
	}
	if len(lines) != 5 {
		t.Fatalf("%d lines, want 5:\n%s", len(lines), out.String())
	}
	want := []struct {
		msg        string
		suppressed any
	}{{"cache unavailable", nil}, {"denylist unavailable", nil}, {"refused", nil}, {"refused", nil}, {"cache unavailable", float64(5)}}
	for i, w := range want {
		if lines[i]["msg"] != w.msg || lines[i]["suppressed"] != w.suppressed {
			t.Errorf("line %d: %v, want msg %q, suppressed %v", i, lines[i], w.msg, w.suppressed)
		}
	}
}
