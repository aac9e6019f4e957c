package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A stripe-mock that exits at once (its port taken meanwhile) is reported with what it said,
// not waited for until the deadline, and tried again.
func TestStripeMockThatExitsIsReportedAtOnce(t *testing.T) {
	dir := t.TempDir()
	bin, runs := filepath.Join(dir, "stripe-mock"), filepath.Join(dir, "runs")
	script := "#!/bin/sh\necho run >> " + runs + "\necho 'listen tcp: address already in use' >&2\nexit 1\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := startStripeMock(bin)
	if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("error %v, want the exit and what it said", err)
	}
	if b, _ := os.ReadFile(runs); strings.Count(string(b), "run") != 3 {
		t.Fatalf("started %d times, want 3", strings.Count(string(b), "run"))
	}
}
