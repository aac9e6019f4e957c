package logging

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// Output buffers log lines in memory and writes them out every interval or when 64 KiB have
// gathered, so that a request's access-log line costs no write system call of its own. Lines at
// WARN and above are written at once: they matter most when the process is about to fail.
// Close writes what is left.
type Output struct {
	mu   sync.Mutex
	buf  *bufio.Writer
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// NewOutput starts buffering writes to w, flushing every interval.
func NewOutput(w io.Writer, interval time.Duration) *Output {
	o := &Output{buf: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(o.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-o.stop:
				return
			case <-tick.C:
				_ = o.Flush()
			}
		}
	}()
	return o
}

// Write buffers p (one log line).
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

// Flush writes out the buffered lines.
func (o *Output) Flush() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Flush()
}

// Close stops the flusher and writes out what is left. Later writes are written out at the
// next Close or Flush only; closing twice is harmless.
func (o *Output) Close() error {
	o.once.Do(func() {
		close(o.stop)
		<-o.done
	})
	return o.Flush()
}
