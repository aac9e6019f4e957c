package logging_test

import (
	"bytes"
	"encoding/json"
	"log"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/dispatchhq/dispatch/internal/platform/logging"
)

// The standard library's lines (net/http's client writes one when a peer sends on an idle
// connection) come out as the program's JSON lines, and not one per event. It changes the
// process's standard logger, so it does not run in parallel.
func TestTheStandardLibrarysLinesAreThePrograms(t *testing.T) {
	t.Cleanup(func() { log.SetOutput(os.Stderr); log.SetFlags(log.LstdFlags) })
	var out bytes.Buffer
	logging.TakeStandardLog(logging.New("api", slog.LevelInfo, "json", &out))
	for range 3 {
		log.Printf("Unsolicited response received on idle HTTP channel starting with %q; err=%v", "HTTP/1.1 400", nil)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if out.Len() == 0 || len(lines) != 1 {
		t.Fatalf("%d lines for three, want one:\n%s", len(lines), out.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("not a JSON line: %s", lines[0])
	}
	if m["msg"] != "go library" || m["level"] != "WARN" || m["service"] != "api" ||
		m["detail"] != `Unsolicited response received on idle HTTP channel starting with "HTTP/1.1 400"; err=<nil>` {
		t.Fatalf("line %s", lines[0])
	}
}
