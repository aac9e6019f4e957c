package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/dispatchhq/dispatch/internal/platform/logging"
)

// Every line names time, level, msg, service and correlationId (SPEC §8): the id of its request
// or task, or an empty one for a line written outside any (start-up, a relay's loop).
func TestEveryLineHasTheFieldsSPECNames(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	log := logging.New("relay", slog.LevelInfo, "json", &out)
	ctx := context.Background()
	log.InfoContext(ctx, "outside")
	log.Info("no context at all")
	log.InfoContext(logging.With(ctx, slog.String("taskId", "t1")), "with fields, no id")
	log.InfoContext(logging.WithCorrelationID(ctx, "cid-1"), "inside")

	want := map[string]string{"outside": "", "no context at all": "", "with fields, no id": "", "inside": "cid-1"}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for _, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"time", "level", "msg", "service", "correlationId"} {
			if _, ok := m[k]; !ok {
				t.Errorf("line %s has no %s", line, k)
			}
		}
		if id, msg := m["correlationId"], m["msg"].(string); id != want[msg] {
			t.Errorf("%q: correlationId %q, want %q", msg, id, want[msg])
		}
		if strings.Count(line, `"correlationId"`) != 1 {
			t.Errorf("correlationId written more than once: %s", line)
		}
	}
}
