package logging

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	kitlog "github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/grafana/loki-client-go/loki"
	"github.com/prometheus/common/model"
	slogloki "github.com/samber/slog-loki/v3"
)

// LokiBuffer is how many lines may wait for shipping before new ones are dropped.
const LokiBuffer = 10000

// Loki ships log lines to a Loki server through samber/slog-loki without ever blocking the
// caller: lines wait in a bounded buffer and are dropped (and counted by onDrop) when it is
// full, so a slow or absent Loki costs requests nothing. Each line is the same JSON as on
// stdout; the only labels are service and level, so ids stay in the line and never become
// label values.
type Loki struct {
	queue  chan lokiLine
	inner  slog.Handler
	client *loki.Client
	line   *bytes.Buffer // written by the forwarder only
	onDrop func()
	done   chan struct{}
	once   sync.Once
}

type lokiLine struct {
	render slog.Handler
	rec    slog.Record
}

// NewLoki starts shipping to the Loki at base (e.g. http://loki:3100) for service.
func NewLoki(base, service string, level slog.Leveler, onDrop func()) (*Loki, error) {
	push, err := pushURL(base)
	if err != nil {
		return nil, err
	}
	cfg, err := loki.NewDefaultConfig(push)
	if err != nil {
		return nil, fmt.Errorf("loki: %w", err)
	}
	cfg.BatchWait, cfg.Timeout = time.Second, 5*time.Second
	cfg.BackoffConfig.MaxRetries, cfg.BackoffConfig.MaxBackoff = 3, 5*time.Second
	client, err := loki.NewWithLogger(cfg, lokiClientLogger())
	if err != nil {
		return nil, fmt.Errorf("loki: %w", err)
	}
	l := &Loki{
		queue: make(chan lokiLine, LokiBuffer), client: client, line: &bytes.Buffer{}, onDrop: onDrop,
		done: make(chan struct{}),
		inner: slogloki.Option{Level: slog.LevelDebug, Client: client,
			Converter: func(_ bool, _ func([]string, slog.Attr) slog.Attr, _ []slog.Attr, _ []string, r *slog.Record) model.LabelSet {
				return model.LabelSet{"service": model.LabelValue(service), "level": model.LabelValue(strings.ToLower(r.Level.String()))}
			}}.NewLokiHandler(),
	}
	go l.forward()
	return l, nil
}

func pushURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("loki: bad url %q", base)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/loki/api/v1/push"
	}
	return u.String(), nil
}

// lokiClientLogger reports the client's own trouble on stderr, never through slog (which would
// feed failures back into the shipper).
func lokiClientLogger() kitlog.Logger {
	return level.NewFilter(kitlog.NewLogfmtLogger(kitlog.NewSyncWriter(os.Stderr)), level.AllowWarn())
}

// Handler returns the slog.Handler to fan out to.
func (l *Loki) Handler(level slog.Leveler) slog.Handler {
	return &lokiHandler{l: l, level: level, render: slog.NewJSONHandler(l.line, &slog.HandlerOptions{Level: level})}
}

// forward renders and hands lines to the Loki client, one at a time.
func (l *Loki) forward() {
	defer close(l.done)
	for ln := range l.queue {
		l.line.Reset()
		if err := ln.render.Handle(context.Background(), ln.rec); err != nil {
			continue
		}
		text := strings.TrimSuffix(l.line.String(), "\n")
		_ = l.inner.Handle(context.Background(), slog.NewRecord(ln.rec.Time, ln.rec.Level, text, 0))
	}
}

// Close flushes what is buffered and stops the client.
func (l *Loki) Close() {
	l.once.Do(func() {
		close(l.queue)
		<-l.done
		l.client.Stop()
	})
}

type lokiHandler struct {
	l      *Loki
	level  slog.Leveler
	render slog.Handler // the JSON rendering, with this handler's attrs and groups
}

func (h *lokiHandler) Enabled(_ context.Context, lv slog.Level) bool { return lv >= h.level.Level() }

func (h *lokiHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.l.queue <- lokiLine{render: h.render, rec: r.Clone()}:
	default:
		if h.l.onDrop != nil {
			h.l.onDrop()
		}
	}
	return nil
}

func (h *lokiHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &lokiHandler{l: h.l, level: h.level, render: h.render.WithAttrs(attrs)}
}

func (h *lokiHandler) WithGroup(name string) slog.Handler {
	return &lokiHandler{l: h.l, level: h.level, render: h.render.WithGroup(name)}
}
