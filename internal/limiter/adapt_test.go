package limiter

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestStateLossFailsSafe: after FLUSHALL a client that knew the scope's
// secret finds meta and the generation gone and treats every window as full
// for one window (a cooldown "state lost"); an idle scope whose meta merely
// expired (generation kept) starts fresh.
func TestStateLossFailsSafe(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, smallQuota)
	win := time.Second + 40*time.Millisecond
	for range 3 {
		if p := f.acquire(t, Cost{Requests: 1}); p.Outcome != Granted {
			t.Fatalf("warm-up: %+v", p)
		}
	}
	// Idle: meta and log expire, the generation stays.
	f.rdb.Del(ctx, metaKey(scopePrefix(scopeA)), logKey(scopePrefix(scopeA)))
	f.clock.Add(2 * win)
	if p := f.acquire(t, Cost{Requests: 1}); p.Outcome != Granted {
		t.Fatalf("after idle expiry: %+v, want granted", p)
	}
	// Loss: everything flushed.
	f.rdb.FlushAll(ctx)
	now := f.clock.Now()
	p := f.acquire(t, Cost{Requests: 1})
	if p.Outcome != Reserved || !p.At.Equal(now.Add(win).UTC()) || p.Reason != "cooldown: state lost" {
		t.Fatalf("after FLUSHALL: %+v, want reserved at %v for state lost", p, now.Add(win).UTC())
	}
	// Every instance sees it: a new Limiter (no secret) is held back too.
	l2 := New(f.rdb, f.l.cfg)
	l2.clock = f.clock.Now
	if p2, err := l2.Acquire(ctx, scopeA, Cost{Requests: 1}); err != nil || p2.Outcome == Granted {
		t.Fatalf("second instance after loss: %+v, %v", p2, err)
	}
}

// TestVanishedReservationNotBeforeItsSlot: a claim whose reservation
// vanished (flush) is decided again no earlier than its slot, and proves
// the loss to an instance that never saw the scope (no secret).
func TestVanishedReservationNotBeforeItsSlot(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, smallQuota)
	for range 11 {
		f.acquire(t, Cost{Requests: 1})
	}
	// Three windows ahead (and two spacings of 43ms): further than the
	// one-window fail-safe reaches.
	res := f.acquire(t, Cost{Requests: 1})
	if res.Outcome != Reserved || res.At.Sub(f.clock.Now()) != 3*(time.Second+40*time.Millisecond)+2*43*time.Millisecond {
		t.Fatalf("12th: %+v", res)
	}
	f.rdb.FlushAll(ctx)
	l2 := New(f.rdb, f.l.cfg) // a fresh instance: it cannot tell a flush from a first use
	l2.clock = f.clock.Now
	got, err := l2.Claim(ctx, res)
	if err != nil {
		t.Fatal(err)
	}
	if got.Outcome == Granted || got.At.Before(res.At) {
		t.Fatalf("claim of a vanished reservation at %v: %+v, want nothing before its slot %v", f.clock.Now(), got, res.At)
	}
	if p := f.acquire(t, Cost{Requests: 1}); p.Outcome == Granted || !strings.HasPrefix(p.Reason, "cooldown: state lost") && p.Reason != "fifo" && p.Reason != "spaced" {
		t.Fatalf("acquire after the proof of loss: %+v", p)
	}
}

// TestReservationsHold: an extra charge reconciled after later
// reservations were made leaves their slots alone (they claim at the slot
// they were promised) and pushes only decisions made after it.
func TestReservationsHold(t *testing.T) {
	f := newFixture(t, smallQuota) // 100 tokens per 1s (+40ms guard)
	t0 := f.clock.Now()
	g := f.acquire(t, Cost{Requests: 1, InputTokens: 30})
	f.clock.Add(600 * time.Millisecond)
	r1 := f.acquire(t, Cost{Requests: 1, InputTokens: 30})
	r3 := f.acquire(t, Cost{Requests: 1, InputTokens: 50})
	slot := t0.Add(1040 * time.Millisecond).UTC()
	if g.Outcome != Granted || r1.Outcome != Granted || r3.Outcome != Reserved || !r3.At.Equal(slot) {
		t.Fatalf("setup: %v %v %+v", g.Outcome, r1.Outcome, r3)
	}
	before := f.acquire(t, Cost{Requests: 1, InputTokens: 10})
	// r1's call turns out to have used 60 tokens, not 30: r3's window now
	// holds 110 of 100, but r3 was promised its slot.
	if err := f.l.Reconcile(context.Background(), r1, 60); err != nil {
		t.Fatal(err)
	}
	after := f.acquire(t, Cost{Requests: 1, InputTokens: 10})
	f.clock.Set(r3.At)
	if c := f.claim(t, r3); c.Outcome != Granted || !c.At.Equal(slot) {
		t.Fatalf("r3 claimed at its slot after the extra charge: %+v, want granted at %v", c, slot)
	}
	// Decided before it: right after r3, spaced (1040ms / 3 requests / 8).
	if spaced := slot.Add(43 * time.Millisecond); !before.At.Equal(spaced) || !after.At.Equal(t0.Add(1640*time.Millisecond).UTC()) {
		t.Fatalf("10 tokens decided before the extra charge at %v (want %v), after it at %v (want once r1 leaves, %v)",
			before.At, spaced, after.At, t0.Add(1640*time.Millisecond).UTC())
	}
}

const tierQuota = `{"safety": 1, "horizon": "1m", "guard": "40ms", "scopes": [
  {"project": "*", "model": "m", "dimensions": [
    {"name": "rpm", "unit": "requests", "limit": 10, "period": "1s"},
    {"name": "tpm", "unit": "input_tokens", "limit": 1000, "period": "1s"},
    {"name": "rpd", "unit": "requests", "limit": 1000, "per": "pacific_day"}]}]}`

// TestThrottledByQuotaValue: a 429 whose quotaValue is below the configured
// limit lowers that dimension for every instance, with one warning.
func TestThrottledByQuotaValue(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, tierQuota)
	var logs, defaults bytes.Buffer
	WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))(f.l)
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&defaults, nil)))
	defer slog.SetDefault(prev)
	sig := Throttle429{QuotaID: "GenerateRequestsPerMinutePerProjectPerModel", QuotaValue: 6}
	for i := range 3 {
		a, err := f.l.Throttled(ctx, scopeA, sig)
		if err != nil {
			t.Fatal(err)
		}
		if a.Lowered != (i == 0) || a.Dimension != "rpm" || a.Configured != 10 || a.Observed != 6 {
			t.Fatalf("Throttled #%d: %+v", i, a)
		}
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 || !strings.Contains(logs.String(), "quota_id=GenerateRequestsPerMinutePerProjectPerModel") ||
		!strings.Contains(logs.String(), "configured=10 observed=6") {
		t.Fatalf("want one warning naming the quota id, configured and observed; got %d:\n%s", n, logs.String())
	}
	if a, _ := f.l.Throttled(ctx, scopeA, Throttle429{QuotaID: "GenerateRequestsPerDayPerProjectPerModel", QuotaValue: 2000}); a.Lowered {
		t.Fatal("a quota value above the configured limit lowered it")
	}
	// A lower value again is a change: one more warning, naming it.
	if a, _ := f.l.Throttled(ctx, scopeA, Throttle429{QuotaID: "GenerateRequestsPerMinutePerProjectPerModel", QuotaValue: 5}); !a.Lowered {
		t.Fatal("a quota value below the effective limit did not lower it")
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 2 || !strings.Contains(logs.String(), "configured=10 observed=5") {
		t.Fatalf("want a second warning for the second change; got %d:\n%s", n, logs.String())
	}
	if defaults.Len() != 0 {
		t.Fatalf("the limiter logged to slog.Default:\n%s", defaults.String())
	}
	l2 := New(f.rdb, f.l.cfg)
	l2.clock = f.clock.Now
	granted := 0
	for range 10 {
		p, err := l2.Acquire(ctx, scopeA, Cost{Requests: 1})
		if err != nil {
			t.Fatal(err)
		}
		if p.Outcome == Granted {
			granted++
		}
	}
	if granted != 5 {
		t.Fatalf("another instance granted %d in one window, want the observed 5", granted)
	}
	lim, _ := l2.Limits(ctx, scopeA)
	if lim["rpm"] != 5 || lim["tpm"] != 1000 {
		t.Fatalf("Limits = %v", lim)
	}
}

const adaptiveQuota = `{"safety": 1, "horizon": "1m", "guard": "40ms", "scopes": [
  {"project": "*", "model": "m", "dimensions": [
    {"name": "rpm", "unit": "requests", "limit": "adaptive", "start": 50, "floor": 10, "ceiling": 100, "period": "1s"},
    {"name": "tpm", "unit": "input_tokens", "limit": 10000, "period": "1s"}]}]}`

// TestAIMD: capacity 429s decrease every sliding dimension multiplicatively
// (once per holdoff, never below the floor), successes raise it by a fixed step each
// up to the ceiling; all instances share the state.
func TestAIMD(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, adaptiveQuota)
	lim := func(l *Limiter) map[string]float64 {
		t.Helper()
		m, err := l.Limits(ctx, scopeA)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := lim(f.l); m["rpm"] != 50 || m["tpm"] != 10000 {
		t.Fatalf("start: %v", m)
	}
	capacity := Throttle429{Capacity: true}
	if a, _ := f.l.Throttled(ctx, scopeA, capacity); !a.Lowered {
		t.Fatal("first capacity 429 did not lower")
	}
	if a, _ := f.l.Throttled(ctx, scopeA, capacity); a.Lowered {
		t.Fatal("a second 429 within the holdoff lowered again")
	}
	if m := lim(f.l); m["rpm"] != 40 || m["tpm"] != 8000 {
		t.Fatalf("after one decrease: %v, want rpm 40, tpm 8000", m)
	}
	// The decrease paused the scope for the holdoff, for every instance.
	if p := f.acquire(t, Cost{Requests: 1, InputTokens: 1}); p.Outcome != Reserved || p.Reason != "cooldown: capacity 429" ||
		!p.At.Equal(f.clock.Now().Add(250*time.Millisecond).UTC()) {
		t.Fatalf("acquire right after the decrease: %+v, want reserved after the holdoff (250ms)", p)
	}
	// A success raises at once (no freeze after a decrease: while the rate
	// is lowered admissions are paced, so an overshoot costs one 429).
	f.clock.Add(10 * time.Millisecond)
	if err := f.l.Settle(ctx, Permit{Scope: scopeA}, 1); err != nil {
		t.Fatal(err)
	}
	if m := lim(f.l); m["rpm"] != 42 || m["tpm"] != 8200 {
		t.Fatalf("a success right after the decrease: %v, want rpm 42, tpm 8200", m)
	}
	for range 20 {
		f.clock.Add(250 * time.Millisecond)
		f.l.Throttled(ctx, scopeA, capacity)
	}
	if m := lim(f.l); m["rpm"] != 10 || m["tpm"] != 1000 {
		t.Fatalf("after many decreases: %v, want the floors 10 and a tenth of 10000", m)
	}
	l2 := New(f.rdb, f.l.cfg)
	l2.clock = f.clock.Now
	f.clock.Add(time.Second)
	for range 25 {
		p, err := l2.Acquire(ctx, scopeA, Cost{Requests: 1, InputTokens: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := l2.Settle(ctx, p, 1); err != nil {
			t.Fatal(err)
		}
	}
	// Each success adds aimdIncrease (2) requests per window, and as much
	// of every other dimension in proportion to its ceiling: from the
	// floors 10 and 1000, 25 successes climb to 60 and 6000.
	if m := lim(f.l); m["rpm"] != 60 || m["tpm"] != 6000 {
		t.Fatalf("after 25 successes: %v, want rpm 60, tpm 6000", m)
	}
	for range 2000 {
		l2.Settle(ctx, Permit{Scope: scopeA}, 1)
	}
	if m := lim(f.l); m["rpm"] != 100 || m["tpm"] != 10000 {
		t.Fatalf("after many successes: %v, want the ceilings", m)
	}
}

// TestEstimatesLearn: the factor starts conservative, converges to the
// actual/raw ratio (biased high by its spread), is shared through Redis,
// and memory stays bounded in kinds.
func TestEstimatesLearn(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, tierQuota)
	c, err := f.l.Estimate(ctx, scopeA, "digits", 100)
	if err != nil || c.InputTokens != 125 || c.Estimate == nil || *c.Estimate != (Estimate{"digits", 100}) {
		t.Fatalf("unlearned estimate: %+v, %v", c, err)
	}
	for i := range 30 {
		c, _ := f.l.Estimate(ctx, scopeA, "digits", 100)
		p, err := f.l.Acquire(ctx, scopeA, c)
		if err != nil {
			t.Fatal(err)
		}
		actual := int64(190 + 20*(i%2)) // 2× with ±5% spread
		if err := f.l.Settle(ctx, p, actual); err != nil {
			t.Fatal(err)
		}
		f.clock.Add(200 * time.Millisecond)
	}
	c, _ = f.l.Estimate(ctx, scopeA, "digits", 100)
	if c.InputTokens < 200 || c.InputTokens > 240 {
		t.Fatalf("learned estimate of 2× content: %d, want within [200, 240]", c.InputTokens)
	}
	l2 := New(f.rdb, f.l.cfg)
	if c2, _ := l2.Estimate(ctx, scopeA, "digits", 100); c2.InputTokens != c.InputTokens {
		t.Fatalf("another instance estimates %d, want the shared %d", c2.InputTokens, c.InputTokens)
	}
	if c3, _ := l2.Estimate(ctx, scopeA, "prose", 100); c3.InputTokens != 125 {
		t.Fatalf("an unlearned kind: %d, want the start factor", c3.InputTokens)
	}
	for _, k := range strings.Fields("a b c d e f g h i j k l m n o p q r s") {
		f.l.Settle(ctx, Permit{Scope: scopeA, Cost: Cost{Estimate: &Estimate{Kind: k, Raw: 10}}}, 10)
	}
	if n := f.rdb.HLen(ctx, estKey(scopePrefix(scopeA))).Val(); n != maxKinds {
		t.Fatalf("%d kinds stored, want at most %d", n, maxKinds)
	}
	if _, err := f.l.Estimate(ctx, scopeA, "Bad kind", 1); err == nil {
		t.Fatal("invalid kind accepted")
	}
}

// TestWithoutAdaptation: the benchmarks' baseline learns nothing, adapts to
// no 429 and estimates with the raw count, while reconciling as before.
func TestWithoutAdaptation(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, tierQuota)
	WithoutAdaptation()(f.l)
	for range 8 {
		c, err := f.l.Estimate(ctx, scopeA, "digits", 10)
		if err != nil {
			t.Fatal(err)
		}
		if c.InputTokens != 10 || c.Estimate != nil {
			t.Fatalf("Estimate = %+v, want the raw 10 tokens and nothing to learn from", c)
		}
		p := f.acquire(t, c)
		if err := f.l.Settle(ctx, p, 40); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := f.rdb.Exists(ctx, estKey(scopePrefix(scopeA))).Result(); n != 0 {
		t.Fatal("the baseline learned a correction")
	}
	for _, sig := range []Throttle429{{Capacity: true}, {QuotaID: "GenerateRequestsPerMinutePerProjectPerModel", QuotaValue: 3}} {
		if a, err := f.l.Throttled(ctx, scopeA, sig); err != nil || a.Lowered {
			t.Fatalf("Throttled(%+v) = %+v, %v; want nothing changed", sig, a, err)
		}
	}
	if m, _ := f.l.Limits(ctx, scopeA); m["rpm"] != 10 || m["tpm"] != 1000 {
		t.Fatalf("Limits = %v, want the configuration", m)
	}
	// Settle still reconciled: 8 × 40 tokens are charged, so 1000 - 320 remain.
	if p := f.acquire(t, Cost{Requests: 1, InputTokens: 681}); p.Outcome == Granted {
		t.Fatalf("681 tokens granted after 320 were reconciled against a 1000 limit: %+v", p)
	}
}
