package logging_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dispatchhq/dispatch/internal/platform/logging"
	"github.com/dispatchhq/dispatch/internal/testenv"
)

// syncBuffer is a bytes.Buffer safe for the flusher goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestOutputBuffersInfoAndFlushesWarnings(t *testing.T) {
	var dst syncBuffer
	out := logging.NewOutput(&dst, time.Hour) // no periodic flush during the test
	log := logging.New("test", -4, "json", out)

	log.Info("first")
	if dst.String() != "" {
		t.Fatalf("an info line was written at once: %q", dst.String())
	}
	log.WarnContext(logging.WithCorrelationID(context.Background(), "cid-1"), "second")
	got := dst.String()
	if !strings.Contains(got, `"msg":"first"`) || !strings.Contains(got, `"msg":"second"`) || !strings.Contains(got, `"correlationId":"cid-1"`) {
		t.Fatalf("a warning did not write out the buffer: %q", got)
	}
	log.Info("third")
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dst.String(), `"msg":"third"`) {
		t.Fatal("Close did not write out the buffer")
	}
	if err := out.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestOutputFlushesPeriodically(t *testing.T) {
	var dst syncBuffer
	out := logging.NewOutput(&dst, 10*time.Millisecond)
	defer out.Close()
	logging.New("test", 0, "json", out).Info("later")
	testenv.Eventually(t, 5*time.Second, "the periodic flush writes the line", func() bool {
		return strings.Contains(dst.String(), `"msg":"later"`)
	})
}
