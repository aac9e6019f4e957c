// Package logging builds the slog logger of every program and carries per-request fields
// (correlation id, user, order, task) in the context so that every line written with that
// context names them.
package logging

import (
	"context"
	"io"
	"log/slog"
	"time"

	slogmulti "github.com/samber/slog-multi"
)

// New returns a logger writing JSON (or text) to w and, through slog-multi, fanning out to
// extra handlers (e.g. Loki). Every line carries service and the context's fields.
func New(service string, level slog.Level, format string, w io.Writer, extra ...slog.Handler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var next slog.Handler
	if format == "text" {
		next = slog.NewTextHandler(w, opts)
	} else {
		next = slog.NewJSONHandler(w, opts)
	}
	if len(extra) > 0 {
		next = slogmulti.Fanout(append([]slog.Handler{next}, extra...)...)
	}
	out, _ := w.(*Output)
	return slog.New(contextHandler{next: next, out: out}).With(slog.String("service", service))
}

// Discard returns a logger that writes nothing (for tools and tests that do not care).
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// contextHandler adds the context's fields to every record and, when the output is buffered,
// writes it out as soon as a WARN or worse line is logged. It is one plain wrapper because it
// runs on every request: a chain of generic middlewares cost a measurable share of a cached read.
type contextHandler struct {
	next slog.Handler
	out  *Output // nil when the output is not buffered
}

func (h contextHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle writes r with the context's fields. Every line has a correlationId (SPEC §8): empty
// on one written outside any request or task (start-up, the relay's and the caches' loops).
func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	f, _ := ctx.Value(fieldsKey{}).(*fields)
	if f == nil {
		r.AddAttrs(slog.String("correlationId", ""))
	} else {
		r.AddAttrs(slog.String("correlationId", f.correlationID))
		r.AddAttrs(f.attrs...)
	}
	err := h.next.Handle(ctx, r)
	if h.out != nil && r.Level >= slog.LevelWarn {
		_ = h.out.Flush()
	}
	return err
}

func (h contextHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return contextHandler{next: h.next.WithAttrs(attrs), out: h.out}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{next: h.next.WithGroup(name), out: h.out}
}

type fieldsKey struct{}

type fields struct {
	correlationID string
	attrs         []slog.Attr
}

func from(ctx context.Context) fields {
	if f, ok := ctx.Value(fieldsKey{}).(*fields); ok {
		return *f
	}
	return fields{}
}

// WithCorrelationID returns ctx carrying the correlation id of the current request or task.
func WithCorrelationID(ctx context.Context, id string) context.Context {
	f := from(ctx)
	f.correlationID = id
	return context.WithValue(ctx, fieldsKey{}, &f)
}

// CorrelationID returns the correlation id carried by ctx, or "".
func CorrelationID(ctx context.Context) string { return from(ctx).correlationID }

// With returns ctx carrying attrs (userId, orderId, taskId, taskType…) for every log line.
// A later value for the same key replaces the earlier one.
func With(ctx context.Context, attrs ...slog.Attr) context.Context {
	f := from(ctx)
	merged := make([]slog.Attr, 0, len(f.attrs)+len(attrs))
	for _, a := range f.attrs {
		replaced := false
		for _, b := range attrs {
			if a.Key == b.Key {
				replaced = true
				break
			}
		}
		if !replaced {
			merged = append(merged, a)
		}
	}
	f.attrs = append(merged, attrs...)
	return context.WithValue(ctx, fieldsKey{}, &f)
}

// Setup builds a program's logger from its configuration: buffered stdout (see Output), plus
// Loki when LOKI_URL is set. close writes out what is buffered; call it last.
func Setup(service string, level slog.Level, format, lokiURL string, stdout io.Writer, onDrop func()) (log *slog.Logger, close func(), err error) {
	out := NewOutput(stdout, 100*time.Millisecond)
	if lokiURL == "" {
		return New(service, level, format, out), func() { _ = out.Close() }, nil
	}
	l, err := NewLoki(lokiURL, service, level, onDrop)
	if err != nil {
		_ = out.Close()
		return nil, nil, err
	}
	return New(service, level, format, out, l.Handler(level)), func() { l.Close(); _ = out.Close() }, nil
}
