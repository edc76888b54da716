package limiter

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// concurrencyQuota: a "minute" of 2s. The guard is generous (1s) because the
// test records call times on a loaded 2-core machine under -race: a call must
// be recorded within 3g/4 of its Acquire and g/2 of its Claim.
const concurrencyQuota = `{"safety": 0.95, "horizon": "3s", "guard": "1s", "scopes": [
  {"project": "*", "model": "m", "dimensions": [
    {"name": "rpm", "unit": "requests", "limit": 40, "period": "2s"},
    {"name": "tpm", "unit": "input_tokens", "limit": 6000, "period": "2s"},
    {"name": "rpd", "unit": "requests", "limit": 100000, "per": "pacific_day"}]}]}`

// TestConcurrentCallersNeverOverfillAWindow: 200 goroutines, each on its own
// connection, hammer one scope with Redis's real clock. Every admission and
// every (recorded) call time is checked against every sliding window.
func TestConcurrentCallersNeverOverfillAWindow(t *testing.T) {
	srv := redistest.Start(t)
	cfg := mustParse(t, concurrencyQuota)
	q, _ := cfg.Quota(scopeA)
	const callers = 200
	const run = 3 * time.Second
	stop := time.Now().Add(run)
	var mu sync.Mutex
	var admissions, calls []Event
	var wg sync.WaitGroup
	errc := make(chan error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 1})
			defer rdb.Close()
			l := New(rdb, cfg)
			ctx := context.Background()
			r := rand.New(rand.NewPCG(uint64(i), 1))
			for time.Now().Before(stop) {
				cost := Cost{Requests: 1, InputTokens: int64(10 + r.IntN(290))}
				p, err := l.Acquire(ctx, scopeA, cost)
				for err == nil && p.Outcome != Granted {
					if p.Outcome == Rejected || (p.Outcome == Denied && time.Now().After(stop)) {
						break // the run is over: no new waiting
					}
					time.Sleep(time.Until(p.At)) // the Cloud Task's delay
					if p.Outcome == Denied {
						p, err = l.Acquire(ctx, scopeA, cost)
					} else {
						p, err = l.Claim(ctx, p)
					}
				}
				if err != nil {
					errc <- err
					return
				}
				if p.Outcome != Granted {
					continue
				}
				callAt := time.Now() // the moment the call would leave for Gemini
				mu.Lock()
				admissions = append(admissions, Event{At: p.At, Cost: cost})
				calls = append(calls, Event{At: callAt, Cost: cost})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	// The script's own log: exact, with windows of P+g.
	if v := CheckWindows(admissions, WithGuard(q)); len(v) > 0 {
		t.Fatalf("%d admissions; %d windows of P+g overfilled, first: %v", len(admissions), len(v), v[0])
	}
	// What Gemini would see: windows of P.
	if v := CheckWindows(calls, q); len(v) > 0 {
		t.Fatalf("%d calls; %d windows overfilled, first: %v", len(calls), len(v), v[0])
	}
	// And the quota was actually used: 38 per 3s (P+g) window over the run.
	if min := int(run/(3*time.Second)) * 38; len(calls) < min {
		t.Fatalf("only %d calls, want at least %d", len(calls), min)
	}
	t.Logf("%d callers, %d calls granted", callers, len(calls))
}
