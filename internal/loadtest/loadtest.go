// Package loadtest drives a running Dispatch over HTTP and reports throughput and latency
// percentiles. It backs `dispatchctl bench`, whose figures go into docs/performance.md.
//
// Two load shapes: closed loop (N clients, each sending its next request when the last one
// answered: the maximum throughput) and open loop (requests started at a fixed rate whatever the
// answers: latency under a steady offered load, without coordinated omission).
package loadtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Result is what a run measured.
type Result struct {
	Name      string
	Requests  int
	Errors    int
	ByStatus  map[int]int
	Elapsed   time.Duration
	Latencies []time.Duration // of successful requests
	ServerCPU time.Duration   // the API process's CPU over the run, when known
}

// Throughput is successful requests per second.
func (r Result) Throughput() float64 {
	return float64(r.Requests-r.Errors) / r.Elapsed.Seconds()
}

// Percentile returns the p-th percentile latency (0 < p ≤ 100).
func (r Result) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.Latencies)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// String renders the result as one report block.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n  requests %d in %s (%.0f/s ok), errors %d, statuses %v\n", r.Name, r.Requests,
		r.Elapsed.Round(time.Millisecond), r.Throughput(), r.Errors, r.ByStatus)
	fmt.Fprintf(&b, "  latency p50 %s  p90 %s  p99 %s  max %s\n", ms(r.Percentile(50)), ms(r.Percentile(90)),
		ms(r.Percentile(99)), ms(r.Percentile(100)))
	if r.ServerCPU > 0 && r.Requests > 0 {
		fmt.Fprintf(&b, "  server CPU %s total, %.0f µs per request\n", r.ServerCPU.Round(time.Millisecond),
			float64(r.ServerCPU.Microseconds())/float64(r.Requests))
	}
	return b.String()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

// Request builds the i-th request of a run.
type Request func(ctx context.Context, i int) (*http.Request, error)

// OK decides whether a response counts as a success.
type OK func(status int) bool

// Client is a keep-alive HTTP client sized for n concurrent requests.
func Client(n int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost, t.MaxConnsPerHost = n*2, n*2, 0
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}

type recorder struct {
	mu  sync.Mutex
	res Result
}

func (r *recorder) add(status int, d time.Duration, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Requests++
	r.res.ByStatus[status]++
	if ok {
		r.res.Latencies = append(r.res.Latencies, d)
	} else {
		r.res.Errors++
	}
}

func do(ctx context.Context, c *http.Client, build Request, i int, ok OK, rec *recorder) {
	req, err := build(ctx, i)
	if err != nil {
		rec.add(-1, 0, false)
		return
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		rec.add(0, 0, false)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	rec.add(resp.StatusCode, time.Since(start), ok(resp.StatusCode))
}

// Closed runs clients concurrent loops for d.
func Closed(ctx context.Context, name string, c *http.Client, clients int, d time.Duration, build Request, ok OK) Result {
	rec := &recorder{res: Result{Name: name, ByStatus: map[int]int{}}}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		wg   sync.WaitGroup
		next = make(chan int)
	)
	go func() {
		defer close(next)
		for i := 0; ; i++ {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	start := time.Now()
	for w := 0; w < clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				do(context.WithoutCancel(ctx), c, build, i, ok, rec)
			}
		}()
	}
	wg.Wait()
	rec.res.Elapsed = time.Since(start)
	return rec.res
}

// Open starts rate requests per second for d, each in its own goroutine, and waits for them.
func Open(ctx context.Context, name string, c *http.Client, rate float64, d time.Duration, build Request, ok OK) Result {
	rec := &recorder{res: Result{Name: name, ByStatus: map[int]int{}}}
	interval := time.Duration(float64(time.Second) / rate)
	total := int(rate * d.Seconds())
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < total; i++ {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				i = total
				continue
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			do(ctx, c, build, i, ok, rec)
		}()
	}
	wg.Wait()
	rec.res.Elapsed = time.Since(start)
	return rec.res
}
