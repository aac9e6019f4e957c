package loadtest

import (
	"context"
	"fmt"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// PoolMeter reads the API's PostgreSQL pool figures from its /metrics (metrics.WatchPool), so
// that a run can say how often a request waited for a connection and for how long: once the
// pool is full, that line is most of a request's time. Against an API that does not serve the
// figures it reports nothing.
type PoolMeter struct {
	url  string
	http *http.Client
	ok   bool
}

// PoolSample is the API pool's waits so far and the seconds they took.
type PoolSample struct {
	Waits, Waited float64
}

// NewPoolMeter returns a meter on the API at base, working when its /metrics has the figures.
func NewPoolMeter(ctx context.Context, hc *http.Client, base string) *PoolMeter {
	m := &PoolMeter{url: base + "/metrics", http: hc}
	_, err := m.read(ctx)
	m.ok = err == nil
	return m
}

// Sample reads the figures now (zero when the meter does not work).
func (m *PoolMeter) Sample(ctx context.Context) PoolSample {
	if !m.ok {
		return PoolSample{}
	}
	s, err := m.read(ctx)
	if err != nil {
		m.ok = false
	}
	return s
}

func (m *PoolMeter) read(ctx context.Context) (PoolSample, error) {
	families, err := scrape(ctx, m.http, m.url)
	if err != nil {
		return PoolSample{}, err
	}
	counter := func(name string) (float64, error) {
		for _, mt := range families[name].GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "db_name" && l.GetValue() == "api" {
					return mt.GetCounter().GetValue(), nil
				}
			}
		}
		return 0, fmt.Errorf("loadtest: %s has no %s of the api's pool", m.url, name)
	}
	var s PoolSample
	if s.Waits, err = counter("go_sql_wait_count_total"); err != nil {
		return PoolSample{}, err
	}
	if s.Waited, err = counter("go_sql_wait_duration_seconds_total"); err != nil {
		return PoolSample{}, err
	}
	return s, nil
}

// Report renders the waits per unit of work (n of them) between two samples, and their mean.
func (m *PoolMeter) Report(before, after PoolSample, n int, unit string) string {
	if !m.ok || n == 0 {
		return ""
	}
	waits, waited := after.Waits-before.Waits, after.Waited-before.Waited
	mean := 0.0
	if waits > 0 {
		mean = waited / waits * 1000
	}
	return fmt.Sprintf("  API waits for a PostgreSQL connection per %s: %.2f, %.1f ms each on average (its pool's go_sql_wait_*)\n",
		unit, waits/float64(n), mean)
}

// scrape reads the metric families a program serves at url (its /metrics).
func scrape(ctx context.Context, hc *http.Client, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("loadtest: %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("loadtest: %s: %w", url, err)
	}
	return families, nil
}
