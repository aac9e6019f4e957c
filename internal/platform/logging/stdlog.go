package logging

import (
	"log"
	"log/slog"
	"strings"
)

// TakeStandardLog has the standard library's own lines (net/http's client on a connection its
// peer misused, for one) written as the program's: one WARN message, "go library", with the
// text in "detail", at most once per OutageEvery with the count of those left out. They were
// plain text on stderr, outside the JSON the rest of the log is and outside Loki. The standard
// logger is one for the whole process.
func TakeStandardLog(l *slog.Logger) {
	log.SetFlags(0)
	log.SetOutput(standardLines{Sometimes(l, OutageEvery)})
}

type standardLines struct{ log *slog.Logger }

func (w standardLines) Write(p []byte) (int, error) {
	w.log.Warn("go library", "detail", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
