package limiter

import (
	"context"
	"encoding/binary"
	"math"
	"testing"
	"time"
)

// replanBenchQuota: an adaptive rate of 100 requests per second, so that a
// queue of 4,000 reservations reaches about 50 s ahead.
const replanBenchQuota = `{"safety": 1, "horizon": "1h", "guard": "40ms", "scopes": [
  {"project": "*", "model": "m", "dimensions": [
    {"name": "rpm", "unit": "requests", "limit": "adaptive", "start": 100, "floor": 2, "ceiling": 100, "period": "1s"},
    {"name": "tpm", "unit": "input_tokens", "limit": "adaptive", "start": 100000, "floor": 2000, "ceiling": 100000, "period": "1s"}]}]}`

// replanQueue is how many reservations lie ahead when the re-plan runs: the
// script re-plans at most 4,096.
const replanQueue = 4000

// BenchmarkReplan times, from the client, the acquire whose script
// re-plans a queue of reservations ahead once an adaptive limit is back at
// its ceiling, against a plain acquire behind the same queue: a re-plan
// runs inside one Acquire or Claim, and blocks Redis while it runs.
//
//	go test -run '^$' -bench Replan -benchtime 10x ./internal/limiter
func BenchmarkReplan(b *testing.B) {
	ctx := context.Background()
	cost := Cost{Requests: 1, InputTokens: 500}
	setup := func() (*Limiter, *fakeClock, func() float64) {
		rdb := startRedis(b)
		clock := &fakeClock{t: time.UnixMilli(1_780_000_000_000)}
		l := New(rdb, mustParse(b, replanBenchQuota))
		l.clock = clock.Now
		if a, err := l.Throttled(ctx, scopeA, Throttle429{Capacity: true}); err != nil || !a.Lowered {
			b.Fatalf("throttled = %+v, %v", a, err)
		}
		clock.Add(time.Second) // past the cooldown
		for range replanQueue {
			if _, err := l.Acquire(ctx, scopeA, cost); err != nil {
				b.Fatal(err)
			}
		}
		for range 25 { // back to the ceiling: one request a success
			if err := l.Settle(ctx, Permit{Scope: scopeA}, 500); err != nil {
				b.Fatal(err)
			}
		}
		last := func() float64 {
			row, err := rdb.LIndex(ctx, logKey(scopePrefix(scopeA)), -1).Bytes()
			if err != nil || len(row) < 8 {
				b.Fatalf("log: %v", err)
			}
			return math.Float64frombits(binary.LittleEndian.Uint64(row))
		}
		return l, clock, last
	}
	var replan, plain time.Duration
	var moved float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		l, _, last := setup()
		before := last()
		b.StartTimer()
		t0 := time.Now()
		if _, err := l.Acquire(ctx, scopeA, cost); err != nil {
			b.Fatal(err)
		}
		replan += time.Since(t0)
		b.StopTimer()
		// The acquire re-planned: the queue's last reservation moved
		// earlier although one more was appended after it.
		after := last()
		if after >= before {
			b.Fatalf("no re-plan: the last slot was %v ms, now %v ms", before, after)
		}
		moved += (before - after) / 1000
		t1 := time.Now()
		if _, err := l.Acquire(ctx, scopeA, cost); err != nil {
			b.Fatal(err)
		}
		plain += time.Since(t1)
	}
	b.ReportMetric(float64(replan.Microseconds())/float64(b.N), "µs/replan")
	b.ReportMetric(float64(plain.Microseconds())/float64(b.N), "µs/plain-acquire")
	b.ReportMetric(moved/float64(b.N), "s-earlier")
}
