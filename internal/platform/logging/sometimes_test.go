package logging_test

import (
	"bytes"
	"context"
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
	// Each line carries its time, as a logger gives it, so a stalled test does not move a line
	// out of the interval.
	t0 := time.Now()
	warn := func(l *slog.Logger, at time.Duration, msg string, args ...any) {
		r := slog.NewRecord(t0.Add(at), slog.LevelWarn, msg, 0)
		r.Add(args...)
		if err := l.Handler().Handle(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		warn(log, time.Duration(i)*time.Millisecond, "cache unavailable", "err", "refused")
	}
	warn(log.With("k", "v"), 10*time.Millisecond, "cache unavailable") // derived loggers share what was seen
	warn(log, 11*time.Millisecond, "denylist unavailable")
	warn(log, 12*time.Millisecond, "refused", "code", "a")
	warn(log, 13*time.Millisecond, "refused", "code", "b") // another code: another line
	warn(log, 14*time.Millisecond, "refused", "code", "a")
	warn(log, 350*time.Millisecond, "cache unavailable")

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
