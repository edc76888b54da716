package metrics

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Local is an in-process reader of gemq's metrics, for the local view
// (`gemq dev`, `gemq run`): nothing is exported; Snapshot collects on
// demand. It is safe for concurrent use.
type Local struct {
	// Provider is the MeterProvider to record on (New(Provider, ...)).
	Provider *sdkmetric.MeterProvider
	reader   *sdkmetric.ManualReader
	mu       sync.Mutex
}

// NewLocal returns a Local with its own MeterProvider.
func NewLocal() *Local {
	r := sdkmetric.NewManualReader()
	return &Local{Provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(r), noExemplars), reader: r}
}

// noExemplars: gemq records no traces, and the exemplar reservoir costs
// about a third of a counter's Add.
var noExemplars = sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter)

// Snapshot is every gemq series at one instant.
type Snapshot struct {
	At     time.Time `json:"at"`
	Series []Series  `json:"series"`
}

// Series is one time series' current value: a counter's total, a gauge's
// value, a histogram's count.
type Series struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	Value  float64           `json:"value"`
}

// Snapshot collects now (running the gauges' callbacks: one limiter read
// per scope). Series are sorted by name, then labels.
func (l *Local) Snapshot(ctx context.Context) (Snapshot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var rm metricdata.ResourceMetrics
	if err := l.reader.Collect(ctx, &rm); err != nil {
		return Snapshot{}, err
	}
	s := Snapshot{At: time.Now().UTC(), Series: []Series{}}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != MeterName {
			continue
		}
		for _, m := range sm.Metrics {
			s.Series = append(s.Series, series(m)...)
		}
	}
	sort.SliceStable(s.Series, func(i, j int) bool { return s.Series[i].Name < s.Series[j].Name })
	return s, nil
}

func series(m metricdata.Metrics) []Series {
	var out []Series
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		out = points(m.Name, d.DataPoints)
	case metricdata.Sum[float64]:
		out = points(m.Name, d.DataPoints)
	case metricdata.Gauge[int64]:
		out = points(m.Name, d.DataPoints)
	case metricdata.Gauge[float64]:
		out = points(m.Name, d.DataPoints)
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			out = append(out, Series{m.Name + "_count", labels(p.Attributes.ToSlice()), float64(p.Count)})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return key(out[i].Labels) < key(out[j].Labels) })
	return out
}

func points[N int64 | float64](name string, dps []metricdata.DataPoint[N]) []Series {
	out := make([]Series, 0, len(dps))
	for _, p := range dps {
		out = append(out, Series{name, labels(p.Attributes.ToSlice()), float64(p.Value)})
	}
	return out
}

func labels(kvs []attribute.KeyValue) map[string]string {
	if len(kvs) == 0 {
		return nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

// key orders label sets: their values joined in key order.
func key(m map[string]string) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b strings.Builder
	for _, k := range ks {
		b.WriteString(k + "=" + m[k] + ";")
	}
	return b.String()
}
