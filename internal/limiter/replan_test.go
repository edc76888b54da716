package limiter

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// replanQuota: an adaptive request rate of 10 per 1s (guard 40ms: windows
// of 1040ms in the log, claims within 10ms of a slot).
const replanQuota = `{"safety": 1, "horizon": "1m", "guard": "40ms", "scopes": [
  {"project": "*", "model": "m", "dimensions": [
    {"name": "rpm", "unit": "requests", "limit": "adaptive", "start": 10, "floor": 2, "ceiling": 10, "period": "1s"}]}]}`

// held is a permit a simulated task holds, with the slot it was first
// promised.
type held struct {
	p    Permit
	slot time.Time
}

// runClaims plays the tasks: each comes back at its permit's At and
// claims, until every one is granted. It fails the test when a claim is
// neither granted nor told a later time no later than the first promise,
// and returns the grants.
func runClaims(t *testing.T, f *fixture, hs []held, until time.Time) []Event {
	t.Helper()
	var grants []Event
	for f.clock.Now().Before(until) && len(grants) < len(hs) {
		now := f.clock.Now()
		for i := range hs {
			h := &hs[i]
			if h.p.Outcome != Reserved || h.p.At.After(now) {
				continue
			}
			np := f.claim(t, h.p)
			switch {
			case np.Outcome == Granted:
				if np.At.After(h.slot) || now.Sub(np.At) > 10*time.Millisecond || np.At.Sub(now) > 10*time.Millisecond {
					t.Fatalf("claim at %v granted at %v, first promised %v", now, np.At, h.slot)
				}
				grants = append(grants, Event{At: np.At, Cost: h.p.Cost})
			case np.Outcome == Reserved && np.At.After(now) && !np.At.After(h.slot):
			default:
				t.Fatalf("claim at %v (promised %v): %+v; want granted, or told a later time no later than the promise", now, h.slot, np)
			}
			h.p = np
		}
		f.clock.Add(time.Millisecond)
	}
	if len(grants) != len(hs) {
		t.Fatalf("%d of %d tasks granted by %v", len(grants), len(hs), until)
	}
	return grants
}

func lastAt(evs []Event) time.Time {
	var l time.Time
	for _, e := range evs {
		if e.At.After(l) {
			l = e.At
		}
	}
	return l
}

// TestReplanMovesReservationsEarlier: reservations decided while a capacity
// 429 had lowered the rate are moved earlier once successes raise it
// again; each task, told to come back at its wake (before its slot), is
// granted then or told a later time, never later than its first promise,
// and never finds its slot passed (no entry is added: nothing is queued
// again). The log's windows stay within the ceiling.
func TestReplanMovesReservationsEarlier(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, replanQuota)
	if a, _ := f.l.Throttled(ctx, scopeA, Throttle429{Capacity: true}); !a.Lowered {
		t.Fatal("the capacity 429 did not lower the rate")
	}
	// Past the cooldown and the freeze (a period) that follow a decrease.
	f.clock.Add(time.Second)
	t0 := f.clock.Now()
	var hs []held
	var promised time.Time
	for i := range 40 {
		p := f.acquire(t, Cost{Requests: 1})
		if (i < 5) != (p.Outcome == Granted) {
			t.Fatalf("acquire %d at 5 per window: %+v", i, p)
		}
		if p.Outcome == Granted {
			continue
		}
		// The slot is in the permit's state; At is the wake, half way
		// there (the slot at the ceiling), for every slot more than half a
		// window ahead.
		slot := f.slot(t, p)
		if want := t0.Add(time.Duration(1040*(i/5)) * time.Millisecond); !slot.Equal(want) {
			t.Fatalf("acquire %d: slot %v, want %v", i, slot, want)
		}
		if want := t0.Add(time.Duration(520*(i/5)) * time.Millisecond); !p.At.Equal(want) {
			t.Fatalf("acquire %d: wake %v, want %v", i, p.At, want)
		}
		hs = append(hs, held{p, slot})
		promised = slot
	}
	// Successes bring the rate back to its ceiling (1 a success).
	for range 5 {
		if err := f.l.Settle(ctx, Permit{Scope: scopeA}, 1); err != nil {
			t.Fatal(err)
		}
	}
	if m, _ := f.l.Limits(ctx, scopeA); m["rpm"] != 10 {
		t.Fatalf("limits after 5 successes: %v", m)
	}
	n0 := f.meta(t)["n"]
	grants := runClaims(t, f, hs, t0.Add(10*time.Second))
	q, _ := f.l.cfg.Quota(scopeA)
	if v := CheckWindows(append(grants, Event{At: t0, Cost: Cost{Requests: 5}}), WithGuard(q)); len(v) > 0 {
		t.Fatalf("windows over the ceiling: %v", v)
	}
	if n := f.meta(t)["n"]; n != n0 {
		t.Fatalf("log entries %s -> %s: a claim found its slot passed and was queued again", n0, n)
	}
	// Re-planned at the first claim after the rise (520ms), in order, 10
	// per window, never before a wake (the 5 granted at 0 fill the first
	// window by half): every group fits at its wake, and the last five,
	// promised 7280ms and told to come back at 3640ms, are granted at
	// 3650ms (the re-plan's lower bound was 520ms + g/4).
	if l, want := lastAt(grants), t0.Add(3650*time.Millisecond); !l.Equal(want) {
		t.Fatalf("last grant %v, want %v (last promise %v): the reservations were not moved earlier as planned", l, want, promised)
	}
}

// TestReplanMovesReservationsLater: a capacity 429 that lowers the rate
// moves the reservations not yet due at the next decision later, in their
// order, instead of granting them at the old rate or queueing them again
// behind the others: from the decrease on, no window holds more than the
// lowered capacity.
func TestReplanMovesReservationsLater(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, replanQuota)
	t0 := f.clock.Now()
	var hs []held
	for i := range 30 {
		p := f.acquire(t, Cost{Requests: 1})
		if (i < 10) != (p.Outcome == Granted) {
			t.Fatalf("acquire %d: %+v", i, p)
		}
		if p.Outcome == Reserved {
			if s := f.slot(t, p); !s.Equal(p.At) {
				t.Fatalf("at the ceiling the wake %v is not the slot %v", p.At, s)
			}
			hs = append(hs, held{p, t0.Add(time.Duration(1040*(i/10)) * time.Millisecond)})
		}
	}
	f.clock.Add(500 * time.Millisecond)
	if a, _ := f.l.Throttled(ctx, scopeA, Throttle429{Capacity: true}); !a.Lowered {
		t.Fatal("the capacity 429 did not lower the rate")
	}
	// The next decision re-plans: the 20 reservations ahead move later, 5
	// per window, and the new one comes after them.
	if p := f.acquire(t, Cost{Requests: 1}); p.Outcome != Reserved || !f.slot(t, p).Equal(t0.Add(5*1040*time.Millisecond)) {
		t.Fatalf("acquire after the decrease: %+v, slot %v, want %v", p, f.slot(t, p), t0.Add(5*1040*time.Millisecond))
	}
	n0 := f.meta(t)["n"]
	grants := playAll(t, f, hs, t0.Add(10*time.Second))
	q, _ := f.l.cfg.Quota(scopeA)
	q = WithGuard(q)
	q.Dimensions[0].Adaptive, q.Dimensions[0].Limit = nil, 5
	if v := CheckWindows(grants, q); len(v) > 0 {
		t.Fatalf("windows over the lowered capacity 5 after the decrease: %v", v)
	}
	if n := f.meta(t)["n"]; n != n0 {
		t.Fatalf("log entries %s -> %s: a reservation was queued again instead of moved", n0, n)
	}
}

// slot reads the slot a Reserved permit was decided at, from its state.
func (f *fixture) slot(t *testing.T, p Permit) time.Time {
	t.Helper()
	pv, err := f.rdb.Get(context.Background(), permitKey(scopePrefix(scopeA), p.ID)).Result()
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(pv, "|")
	at, err := strconv.ParseInt(parts[1], 10, 64)
	if parts[0] != "r" || err != nil {
		t.Fatalf("permit state %q", pv)
	}
	return time.UnixMilli(at).UTC()
}

// playAll plays the tasks as runClaims does, accepting any later time a
// claim tells (a slot moved later or given back), and returns the grants,
// grants[i] that of hs[i].
func playAll(t *testing.T, f *fixture, hs []held, until time.Time) []Event {
	t.Helper()
	grants := make([]Event, len(hs))
	done := 0
	for f.clock.Now().Before(until) && done < len(hs) {
		now := f.clock.Now()
		for i := range hs {
			h := &hs[i]
			if h.p.Outcome != Reserved || h.p.At.After(now) {
				continue
			}
			np := f.claim(t, h.p)
			switch {
			case np.Outcome == Granted:
				grants[i] = Event{At: np.At, Cost: h.p.Cost}
				done++
			case np.Outcome == Reserved && np.At.After(now):
			default:
				t.Fatalf("claim at %v: %+v", now, np)
			}
			h.p = np
		}
		f.clock.Add(time.Millisecond)
	}
	if done != len(hs) {
		t.Fatalf("%d of %d granted", done, len(hs))
	}
	return grants
}

// TestReplanServesEarlyWakesFirst: tasks that gave their slot back to the
// cooldown of a capacity 429 come back when it ends and are re-planned
// first, in the order of wakes, instead of behind every reservation
// decided before them (whose tasks come back later).
func TestReplanServesEarlyWakesFirst(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, replanQuota)
	t0 := f.clock.Now()
	var hs []held
	for i := range 40 {
		p := f.acquire(t, Cost{Requests: 1})
		if (i < 10) != (p.Outcome == Granted) {
			t.Fatalf("acquire %d: %+v", i, p)
		}
		if p.Outcome == Reserved {
			hs = append(hs, held{p, p.At})
		}
	}
	f.clock.Set(t0.Add(1040 * time.Millisecond))
	for i := range 2 {
		if np := f.claim(t, hs[i].p); np.Outcome != Granted {
			t.Fatalf("claim %d at its slot: %+v", i, np)
		}
	}
	if a, _ := f.l.Throttled(ctx, scopeA, Throttle429{Capacity: true}); !a.Lowered {
		t.Fatal("the capacity 429 did not lower the rate")
	}
	// The other 8 of the slot meet the cooldown: they give their slot back
	// and are told to come back when it ends.
	cd := t0.Add(1290 * time.Millisecond)
	var back []held
	for i := 2; i < 10; i++ {
		np := f.claim(t, hs[i].p)
		if np.Outcome != Reserved || !np.At.Equal(cd) {
			t.Fatalf("claim %d during the cooldown: %+v, want reserved, back at %v", i, np, cd)
		}
		back = append(back, held{np, np.At})
	}
	rest := append(back, hs[10:]...)
	grants := playAll(t, f, rest, t0.Add(20*time.Second))
	// At 5 per window, the window from 1040ms holds the 2 granted there:
	// 3 fit at the cooldown's end (+g/4), 2 once those 2 leave (2080ms)
	// and 3 once the first 3 leave (2340ms), all before the 20 reservations
	// stretched from 2080ms on, whose tasks come back later.
	got := map[time.Duration]int{}
	for _, g := range grants[:8] {
		got[g.At.Sub(t0)]++
	}
	if got[1300*time.Millisecond] != 3 || got[2080*time.Millisecond] != 2 || got[2340*time.Millisecond] != 3 {
		t.Fatalf("the 8 that gave their slot back were granted at %v; want 3 at 1.3s, 2 at 2.08s, 3 at 2.34s", got)
	}
	q, _ := f.l.cfg.Quota(scopeA)
	q = WithGuard(q)
	q.Dimensions[0].Adaptive, q.Dimensions[0].Limit = nil, 5
	if v := CheckWindows(append(grants, Event{At: t0.Add(1040 * time.Millisecond), Cost: Cost{Requests: 2}}), q); len(v) > 0 {
		t.Fatalf("windows over the lowered capacity 5 after the decrease: %v", v)
	}
}
