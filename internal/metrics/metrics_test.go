package metrics

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/redistest"
)

const quota = `{"safety": 1, "horizon": "1m", "guard": "40ms", "scopes": [
  {"project": "*", "model": "m", "dimensions": [
    {"name": "rpm", "unit": "requests", "limit": 3, "period": "10s"},
    {"name": "tpm", "unit": "input_tokens", "limit": 1000, "period": "10s"}]}]}`

var scope = limiter.Scope{Project: "p", Model: "m"}

func newLimiter(t *testing.T) (*limiter.Limiter, limiter.Config) {
	t.Helper()
	cfg, err := limiter.ParseConfig([]byte(quota))
	if err != nil {
		t.Fatal(err)
	}
	return limiter.New(redistest.Start(t).Client(t), cfg), cfg
}

// value finds one series in s.
func value(s Snapshot, name string, labels map[string]string) (float64, bool) {
	for _, x := range s.Series {
		if x.Name == name && cmp.Equal(x.Labels, labels) {
			return x.Value, true
		}
	}
	return 0, false
}

// TestLocalSnapshot records through the wrapped limiter against a real
// Redis and reads back, through the local reader, the permits by outcome
// and binding dimension, the windows' occupancy against their limits, the
// reserved slots, 429s by kind and deliveries.
func TestLocalSnapshot(t *testing.T) {
	ctx := context.Background()
	loc := NewLocal()
	lim, cfg := newLimiter(t)
	rec, err := New(loc.Provider, lim, cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := WrapLimiter(lim, rec)
	var first limiter.Permit
	for i := range 6 {
		p, err := l.Acquire(ctx, scope, limiter.Cost{Requests: 1, InputTokens: 100})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = p
		}
	}
	// A granted permit given back no longer counts; the reservation queued
	// behind it stays (the limiter does not move reservations forward).
	if err := l.Release(ctx, first); err != nil {
		t.Fatal(err)
	}
	rec.Failure(ctx, scope, gemini.Failure{Kind: gemini.QuotaPerMinute})
	rec.Failure(ctx, scope, gemini.Failure{Kind: gemini.Transient}) // not a 429
	for _, o := range []string{"succeeded", "succeeded", "deferred", "dead_letter", "poison"} {
		rec.Delivery(ctx, o)
	}
	s, err := loc.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sc := scope.String()
	for _, w := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{Permits, map[string]string{"scope": sc, "kind": "acquire", "outcome": "granted", "dimension": "none"}, 3},
		{WindowUsed, map[string]string{"scope": sc, "dimension": "rpm"}, 2},
		{WindowUsed, map[string]string{"scope": sc, "dimension": "tpm"}, 200},
		{WindowLimit, map[string]string{"scope": sc, "dimension": "rpm"}, 3},
		{WindowConfigured, map[string]string{"scope": sc, "dimension": "tpm"}, 1000},
		{ReservedSlots, map[string]string{"scope": sc}, 3},
		{Gemini429, map[string]string{"scope": sc, "kind": "quota_per_minute"}, 1},
		{Deliveries, map[string]string{"outcome": "succeeded"}, 2},
		{Terminal, map[string]string{"outcome": "succeeded"}, 2},
		{Terminal, map[string]string{"outcome": "dead_letter"}, 1},
		{DeadLetters, map[string]string{"kind": "poison"}, 1},
		{DeadLetters, map[string]string{"kind": "dead_letter"}, 1},
	} {
		if got, ok := value(s, w.name, w.labels); !ok || got != w.want {
			t.Errorf("%s%v = %v (found %v), want %v", w.name, w.labels, got, ok, w.want)
		}
	}
	// The reservations are held back by rpm, or queued behind one ("fifo",
	// "spaced"), as the milliseconds fall.
	var reservedPermits float64
	for _, x := range s.Series {
		if x.Name == Permits && x.Labels["outcome"] == "reserved" {
			reservedPermits += x.Value
			if d := x.Labels["dimension"]; d != "rpm" && d != "fifo" && d != "spaced" {
				t.Errorf("reserved permit held back by %q, want rpm, fifo or spaced", d)
			}
		}
	}
	if reservedPermits != 3 {
		t.Errorf("%v reserved permits, want 3", reservedPermits)
	}
	if v, ok := value(s, ReservedAhead, map[string]string{"scope": sc}); !ok || v < 9 || v > 11 {
		t.Errorf("%s = %v (found %v), want about one window, 10s", ReservedAhead, v, ok)
	}
	if _, ok := value(s, Gemini429, map[string]string{"scope": sc, "kind": "transient"}); ok {
		t.Error("a transient failure was counted as a 429")
	}
	// Settle records the estimate's error: 100 estimated, 80 actual.
	p, err := l.Acquire(ctx, limiter.Scope{Project: "p", Model: "m"}, limiter.Cost{Requests: 1, InputTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Settle(ctx, p, 80); err != nil {
		t.Fatal(err)
	}
	if s, err = loc.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if v, ok := value(s, EstimateError+"_count", map[string]string{"scope": sc}); !ok || v != 1 {
		t.Errorf("estimate error count = %v (found %v), want 1", v, ok)
	}
}

// TestExportToADeadEndpoint points the OTLP exporter at an endpoint that
// accepts connections and never answers, exporting every 10ms: recording
// (the only thing a task does with metrics) never waits for it, and
// shutting down is bounded by its context.
func TestExportToADeadEndpoint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			defer c.Close() // held open, never read: a hung endpoint
		}
	}()
	ctx := context.Background()
	mp, err := Export(ctx, ExportConfig{Endpoint: ln.Addr().String(), Interval: 10 * time.Millisecond,
		Timeout: 3 * time.Second, Insecure: true, Service: "worker", Project: "p", Location: "l"})
	if err != nil {
		t.Fatal(err)
	}
	lim, cfg := newLimiter(t)
	rec, err := New(mp, lim, cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := WrapLimiter(lim, rec)
	var worst time.Duration
	deadline := time.Now().Add(time.Second)
	n := 0
	for time.Now().Before(deadline) {
		start := time.Now()
		p := limiter.Permit{Scope: scope, Outcome: limiter.Reserved, Reason: "rpm"}
		rec.Permit(ctx, "acquire", p)
		rec.Delivery(ctx, "deferred")
		if n%100 == 0 {
			if _, err := l.Acquire(ctx, scope, limiter.Cost{Requests: 1}); err != nil {
				t.Fatal(err)
			}
		}
		worst = max(worst, time.Since(start))
		n++
	}
	if conns.Load() == 0 {
		t.Fatal("the exporter never connected to the dead endpoint: the test proves nothing")
	}
	// An export blocks for its 3s timeout; a recording that waited for one
	// would show it. 200ms leaves room for a loaded machine's scheduling.
	if worst > 200*time.Millisecond {
		t.Errorf("slowest recording (with a Redis Acquire every 100) took %v while the exporter hung", worst)
	}
	t.Logf("%d recordings, slowest %v, %d connections to the dead endpoint", n, worst, conns.Load())
	sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	mp.Shutdown(sctx) // an error: the final export could not finish
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v with a 500ms context", d)
	}
}
