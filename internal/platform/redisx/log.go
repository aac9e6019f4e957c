package redisx

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/dispatchhq/dispatch/internal/platform/logging"
)

// LogThrough has go-redis write its own lines (a dial that failed, a connection dropped) as
// the program's: one WARN message, at most once per logging.OutageEvery with the count of those
// left out. They were plain text on stderr, one per failed dial while Redis was away, outside
// the JSON the rest of the log is. go-redis's logger is one for the whole process.
func LogThrough(log *slog.Logger) {
	redis.SetLogger(clientLog{logging.Sometimes(log, logging.OutageEvery)})
}

type clientLog struct{ log *slog.Logger }

func (l clientLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}
