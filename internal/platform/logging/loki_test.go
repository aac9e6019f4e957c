package logging_test

// Shipping logs to Loki (SPEC §8): a local receiver decodes what Loki's push API gets
// (snappy-compressed protobuf PushRequests). Streams carry exactly the labels service and level;
// ids stay in the line, which is the same JSON line as on stdout. A Loki that never answers
// costs the callers nothing: lines beyond the buffer are dropped and counted.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/google/uuid"
	"github.com/grafana/loki-client-go/pkg/logproto"

	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/platform/metrics"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// lokiReceiver is a stand-in for Loki's push API that keeps every entry it receives.
type lokiReceiver struct {
	URL string

	mu       sync.Mutex
	entries  []lokiEntry
	requests []string // method, path and content type of each push
	errs     []string
}

type lokiEntry struct {
	labels map[string]string
	rawSet string
	line   string
	ts     time.Time
}

func newLokiReceiver(t *testing.T) *lokiReceiver {
	rec := &lokiReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.requests = append(rec.requests, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
		if err != nil {
			rec.errs = append(rec.errs, err.Error())
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		raw, err := snappy.Decode(nil, body)
		if err != nil {
			rec.errs = append(rec.errs, "snappy: "+err.Error())
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var push logproto.PushRequest
		if err := push.Unmarshal(raw); err != nil {
			rec.errs = append(rec.errs, "protobuf: "+err.Error())
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for _, s := range push.Streams {
			labels, err := parseLabels(s.Labels)
			if err != nil {
				rec.errs = append(rec.errs, err.Error())
			}
			for _, e := range s.Entries {
				rec.entries = append(rec.entries, lokiEntry{labels: labels, rawSet: s.Labels, line: e.Line, ts: e.Timestamp})
			}
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	rec.URL = srv.URL
	return rec
}

var labelPair = regexp.MustCompile(`^([a-zA-Z_][a-zA-Z0-9_]*)=("(?:[^"\\]|\\.)*")(?:, |$)`)

// parseLabels reads a stream's label set as Loki receives it: {name="value", ...}.
func parseLabels(s string) (map[string]string, error) {
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
		return nil, &labelErr{s}
	}
	rest := s[1 : len(s)-1]
	out := map[string]string{}
	for rest != "" {
		m := labelPair.FindStringSubmatch(rest)
		if m == nil {
			return nil, &labelErr{s}
		}
		v, err := strconv.Unquote(m[2])
		if err != nil {
			return nil, &labelErr{s}
		}
		out[m[1]] = v
		rest = rest[len(m[0]):]
	}
	return out, nil
}

type labelErr struct{ set string }

func (e *labelErr) Error() string { return "malformed label set " + e.set }

func (rec *lokiReceiver) snapshot() ([]lokiEntry, []string, []string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]lokiEntry(nil), rec.entries...), append([]string(nil), rec.requests...), append([]string(nil), rec.errs...)
}

// syncWriter is an io.Writer safe for the logger and the test to share.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) lines() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(w.b.Bytes()))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func TestLokiStreamsAreLabelledByServiceAndLevelOnly(t *testing.T) {
	t.Parallel()
	rec := newLokiReceiver(t)
	var stdout syncWriter
	var drops atomic.Int64
	log, closeLog, err := logging.Setup("api", slog.LevelInfo, "json", rec.URL, &stdout, func() { drops.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	cid, userID, orderID, taskID := uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()
	ctx := logging.WithCorrelationID(context.Background(), cid)
	ctx = logging.With(ctx, slog.String("userId", userID), slog.String("orderId", orderID))

	log.InfoContext(ctx, "order created", "total", 1250)
	log.WarnContext(ctx, "payment failed", "reason", "card declined")
	log.ErrorContext(ctx, "compensation failed")
	log.DebugContext(ctx, "below the level: not shipped")
	log.With("taskId", taskID).InfoContext(ctx, "task done")
	log.WithGroup("request").InfoContext(ctx, "grouped", "route", "/v1/orders/:id")
	closeLog() // flushes

	entries, requests, errs := rec.snapshot()
	if len(errs) > 0 {
		t.Fatalf("the receiver could not decode pushes: %v", errs)
	}
	if len(requests) == 0 {
		t.Fatal("nothing was pushed to Loki")
	}
	for _, r := range requests {
		if r != "POST /loki/api/v1/push application/x-protobuf" {
			t.Fatalf("push request %q, want a protobuf POST to /loki/api/v1/push", r)
		}
	}
	if len(entries) != 5 {
		t.Fatalf("Loki received %d lines, want 5 (the debug line is below the level): %+v", len(entries), entries)
	}

	stdoutLines := stdout.lines()
	sort.Strings(stdoutLines)
	var shipped []string
	levels := map[string]string{}
	for _, e := range entries {
		if len(e.labels) != 2 || e.labels["service"] != "api" || e.labels["level"] == "" {
			t.Errorf("stream labels %s, want exactly service and level", e.rawSet)
		}
		for name, v := range e.labels {
			for _, id := range []string{cid, userID, orderID, taskID} {
				if strings.Contains(v, id) {
					t.Errorf("label %s carries an id: %s", name, e.rawSet)
				}
			}
		}
		var line map[string]any
		if err := json.Unmarshal([]byte(e.line), &line); err != nil {
			t.Fatalf("shipped line is not JSON: %v\n%s", err, e.line)
		}
		msg, _ := line["msg"].(string)
		for _, id := range []string{cid, userID, orderID} {
			if !strings.Contains(e.line, id) {
				t.Errorf("id %s missing from the line text: %s", id, e.line)
			}
		}
		// (A logger with a group nests the context's fields in the group, on stdout alike;
		// no program logs through a group.)
		if msg != "grouped" && (line["correlationId"] != cid || line["userId"] != userID || line["orderId"] != orderID || line["service"] != "api") {
			t.Errorf("ids missing from the line's fields: %s", e.line)
		}
		lvl, _ := line["level"].(string)
		if strings.ToLower(lvl) != e.labels["level"] {
			t.Errorf("stream level %q for a line of level %q", e.labels["level"], lvl)
		}
		levels[msg] = e.labels["level"]
		if msg == "task done" && line["taskId"] != taskID {
			t.Errorf("the logger's own attributes are lost: %s", e.line)
		}
		if msg == "grouped" {
			if g, _ := line["request"].(map[string]any); g == nil || g["route"] != "/v1/orders/:id" {
				t.Errorf("the group is lost: %s", e.line)
			}
		}
		if ts, err := time.Parse(time.RFC3339Nano, line["time"].(string)); err != nil || !ts.Equal(e.ts) {
			t.Errorf("entry timestamp %s, line time %v", e.ts, line["time"])
		}
		shipped = append(shipped, e.line)
	}
	sort.Strings(shipped)
	// The Loki line is the stdout line (stdout has the debug line filtered out the same way).
	if strings.Join(shipped, "\n") != strings.Join(stdoutLines, "\n") {
		t.Errorf("shipped lines differ from stdout:\nLoki:\n%s\nstdout:\n%s", strings.Join(shipped, "\n"), strings.Join(stdoutLines, "\n"))
	}
	want := map[string]string{"order created": "info", "payment failed": "warn", "compensation failed": "error", "task done": "info", "grouped": "info"}
	for msg, lvl := range want {
		if levels[msg] != lvl {
			t.Errorf("line %q in the stream of level %q, want %q", msg, levels[msg], lvl)
		}
	}
	if n := drops.Load(); n != 0 {
		t.Errorf("%d lines dropped with Loki answering", n)
	}
}

// TestLokiNeverBlocksTheCaller is not parallel: it reads dispatch_logs_dropped_total.
func TestLokiNeverBlocksTheCaller(t *testing.T) {
	var pushes atomic.Int32
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pushes.Add(1)
		select { // never answers while the test runs
		case <-hang:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close) // runs last: after the handlers were released below

	var drops atomic.Int64
	before := testenv.Metric(t, "dispatch_logs_dropped_total")
	log, closeLog, err := logging.Setup("worker", slog.LevelInfo, "json", srv.URL, io.Discard, func() {
		drops.Add(1)
		metrics.LogsDropped.Inc() // what the programs pass
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(hang); closeLog() })

	// Get the shipper stuck on a push Loki never answers.
	log.Info("first line")
	testenv.Eventually(t, 30*time.Second, "a push reached the hanging Loki", func() bool { return pushes.Load() >= 1 })

	const calls = 50000
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx := logging.WithCorrelationID(context.Background(), uuid.NewString())
		for i := range calls {
			log.InfoContext(ctx, "busy", "i", i)
		}
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute): // a failure guard, not a speed requirement
		t.Fatal("log calls blocked behind a Loki that does not answer")
	}

	n := drops.Load()
	t.Logf("%d of %d lines dropped", n, calls)
	// While the shipper is stuck, at most the buffer (and the line in the shipper's hands) can
	// be accepted; allow one more buffer's worth in case the client gave up on its push and took
	// another batch meanwhile.
	if n < calls-2*logging.LokiBuffer {
		t.Fatalf("%d of %d lines dropped, want at least %d: the buffer is not bounded", n, calls, calls-2*logging.LokiBuffer)
	}
	if got := testenv.Metric(t, "dispatch_logs_dropped_total") - before; got != float64(n) {
		t.Fatalf("dispatch_logs_dropped_total moved by %v, %d lines were dropped", got, n)
	}
}

// A line logged after the Loki shipper was closed (a goroutine still finishing at shutdown)
// must not crash the program.
func TestLokiLogAfterClose(t *testing.T) {
	t.Parallel()
	rec := newLokiReceiver(t)
	log, closeLog, err := logging.Setup("relay", slog.LevelInfo, "json", rec.URL, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("before close")
	closeLog()
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("logging after the Loki shipper closed panicked: %v", r)
			}
		}()
		log.Info("after close")
	}()
	closeLog() // closing twice is harmless
	entries, _, _ := rec.snapshot()
	if len(entries) != 1 || !strings.Contains(entries[0].line, `"msg":"before close"`) {
		t.Fatalf("Loki received %+v, want the line logged before close", entries)
	}
}

func TestLokiURLIsChecked(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"::not a url", "http://", "/just/a/path"} {
		if _, _, err := logging.Setup("api", slog.LevelInfo, "json", bad, io.Discard, nil); err == nil {
			t.Errorf("LOKI_URL %q accepted", bad)
		}
	}
	// Without LOKI_URL nothing is shipped and nothing is needed.
	var out syncWriter
	log, closeLog, err := logging.Setup("api", slog.LevelInfo, "json", "", &out, nil)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hello")
	closeLog()
	if lines := out.lines(); len(lines) != 1 || !strings.Contains(lines[0], `"service":"api"`) {
		t.Fatalf("stdout %v", lines)
	}
}
