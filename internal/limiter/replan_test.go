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

// play plays the tasks: each comes back at its permit's At and claims,
// until every one is granted, and returns the grants (grants[i] that of
// hs[i]). A claim must be granted within 10ms of its slot or told a later
// time; with promised, the test also fails when a grant or a time told
// lies after the task's first promise (hs[i].slot).
func play(t *testing.T, f *fixture, hs []held, until time.Time, promised bool) []Event {
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
			late := promised && np.At.After(h.slot)
			switch {
			case np.Outcome == Granted && !late && now.Sub(np.At) <= 10*time.Millisecond && np.At.Sub(now) <= 10*time.Millisecond:
				grants[i] = Event{At: np.At, Cost: h.p.Cost}
				done++
			case np.Outcome == Reserved && np.At.After(now) && !late:
			default:
				t.Fatalf("claim at %v (promised %v): %+v; want granted at the slot, or told a later time (no later than the promise: %t)", now, h.slot, np, promised)
			}
			h.p = np
		}
		f.clock.Add(time.Millisecond)
	}
	if done != len(hs) {
		t.Fatalf("%d of %d tasks granted by %v", done, len(hs), until)
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
// 429 had lowered the rate are paced (one every window/8 = 130ms, not 8 at
// once) and moved earlier once successes raise it again; each task, told
// to come back at its wake (before its slot), is granted then or told a
// later time, never later than its first promise, and never finds its slot
// passed (no entry is added: nothing is queued again). The log's windows
// stay within the ceiling.
func TestReplanMovesReservationsEarlier(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, replanQuota)
	if a, _ := f.l.Throttled(ctx, scopeA, Throttle429{Capacity: true}); !a.Lowered {
		t.Fatal("the capacity 429 did not lower the rate")
	}
	// Past the cooldown that follows a decrease.
	f.clock.Add(time.Second)
	t0 := f.clock.Now()
	var hs []held
	var promised time.Time
	for i := range 40 {
		p := f.acquire(t, Cost{Requests: 1})
		if (i == 0) != (p.Outcome == Granted) {
			t.Fatalf("acquire %d paced at 8 per window: %+v", i, p)
		}
		if p.Outcome == Granted {
			continue
		}
		// The slot is in the permit's state; At is the wake, 80% of the
		// way there (the slot at the ceiling), for every slot more than
		// half a window ahead.
		slot := f.slot(t, p)
		if want := t0.Add(time.Duration(130*i) * time.Millisecond); !slot.Equal(want) {
			t.Fatalf("acquire %d: slot %v, want %v (paced)", i, slot, want)
		}
		wake := slot
		if 130*i > 520 {
			wake = t0.Add(time.Duration(104*i) * time.Millisecond)
		}
		if !p.At.Equal(wake) {
			t.Fatalf("acquire %d: wake %v, want %v", i, p.At, wake)
		}
		hs = append(hs, held{p, slot})
		promised = slot
	}
	// Successes bring the rate back to its ceiling (1 a success).
	for range 2 {
		if err := f.l.Settle(ctx, Permit{Scope: scopeA}, 1); err != nil {
			t.Fatal(err)
		}
	}
	if m, _ := f.l.Limits(ctx, scopeA); m["rpm"] != 10 {
		t.Fatalf("limits after 2 successes: %v", m)
	}
	n0 := f.meta(t)["n"]
	grants := play(t, f, hs, t0.Add(10*time.Second), true)
	q, _ := f.l.cfg.Quota(scopeA)
	if v := CheckWindows(append(grants, Event{At: t0, Cost: Cost{Requests: 1}}), WithGuard(q)); len(v) > 0 {
		t.Fatalf("windows over the ceiling: %v", v)
	}
	if n := f.meta(t)["n"]; n != n0 {
		t.Fatalf("log entries %s -> %s: a claim found its slot passed and was queued again", n0, n)
	}
	// Re-planned at the first claim after the rise, in order, 10 per
	// window at the ceiling (no longer paced), never before a wake: the
	// last task, promised 5070ms and told to come back at 4056ms, is
	// granted then.
	if l, want := lastAt(grants), t0.Add(4056*time.Millisecond); !l.Equal(want) {
		t.Fatalf("last grant %v, want %v (last promise %v): the reservations were not moved earlier as planned", l, want, promised)
	}
}

// TestReplanOnAFallMovesReservationsLater: a capacity 429 that lowers the
// rate from 10 to 8 a window decides the reservations ahead again, in
// order, paced at the lowered rate (one every 130ms) and never before
// their slots: the tasks come at their old slots, are told the new ones
// and are granted there; no window holds more than 8 of them, nothing is
// queued again, and the next decision comes after them.
func TestReplanOnAFallMovesReservationsLater(t *testing.T) {
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
			hs = append(hs, held{p, p.At})
		}
	}
	f.clock.Add(500 * time.Millisecond)
	if a, _ := f.l.Throttled(ctx, scopeA, Throttle429{Capacity: true}); !a.Lowered {
		t.Fatal("the capacity 429 did not lower the rate")
	}
	if p := f.acquire(t, Cost{Requests: 1}); p.Outcome != Reserved || !f.slot(t, p).Equal(t0.Add(3640*time.Millisecond)) {
		t.Fatalf("acquire after the decrease: %+v, want reserved after the re-planned queue at 3640ms", p)
	}
	n0 := f.meta(t)["n"]
	// The first task's slot holds; the second, coming at its old slot (at
	// the ceiling, reservations are spaced: 13ms after the first), is told
	// the new one, its reservation holding (Early), not decided again.
	f.clock.Set(hs[0].slot)
	p0 := f.claim(t, hs[0].p)
	if p0.Outcome != Granted || !p0.At.Equal(t0.Add(1040*time.Millisecond)) {
		t.Fatalf("claim of the first reservation: %+v, want granted at 1040ms", p0)
	}
	first := Event{At: p0.At, Cost: p0.Cost}
	f.clock.Set(hs[1].slot)
	if !hs[1].slot.Equal(t0.Add(1053 * time.Millisecond)) {
		t.Fatalf("second reservation at %v, want 1053ms (spaced 13ms)", hs[1].slot.Sub(t0))
	}
	if p := f.claim(t, hs[1].p); p.Outcome != Reserved || !p.Early || !p.At.Equal(t0.Add(1170*time.Millisecond)) {
		t.Fatalf("claim at the old slot: %+v, want told its new slot 1170ms, early", p)
	} else {
		hs[1].p = p
	}
	grants := append([]Event{first}, play(t, f, hs[1:], t0.Add(10*time.Second), false)...)
	for i, g := range grants {
		if want := t0.Add(time.Duration(1040+130*i) * time.Millisecond); !g.At.Equal(want) {
			t.Fatalf("task %d (promised %v) granted at %v, want %v", i, hs[i].slot.Sub(t0), g.At.Sub(t0), want.Sub(t0))
		}
	}
	for i, g := range grants {
		n := 0
		for _, h := range grants {
			if h.At.After(g.At.Add(-1040*time.Millisecond)) && !h.At.After(g.At) {
				n++
			}
		}
		if n > 8 {
			t.Fatalf("the window ending at grant %d (%v) holds %d, over the lowered 8", i, g.At.Sub(t0), n)
		}
	}
	if n := f.meta(t)["n"]; n != n0 {
		t.Fatalf("log entries %s -> %s: a reservation was queued again", n0, n)
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

// TestReplanRewritesAWholeLog: a re-plan that moves the first entry of a
// log trimmed up to it writes the whole log again (DEL, RPUSH): the
// entries keep their indices (every permit still finds its own), the log
// keeps its expiry, and the tasks are granted at their new slots.
func TestReplanRewritesAWholeLog(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, `{"safety": 1, "horizon": "1m", "guard": "40ms", "scopes": [
  {"project": "*", "model": "m", "dimensions": [
    {"name": "rpm", "unit": "requests", "limit": "adaptive", "start": 100, "floor": 2, "ceiling": 100, "period": "1s"}]}]}`)
	t0 := f.clock.Now()
	for i := range 70 {
		if p := f.acquire(t, Cost{Requests: 1}); p.Outcome != Granted {
			t.Fatalf("acquire %d: %+v", i, p)
		}
	}
	if err := f.l.Cooldown(ctx, scopeA, t0.Add(5*time.Second), "test"); err != nil {
		t.Fatal(err)
	}
	// Two seconds on, the 70 entries are out of every window: the next
	// append trims them, and the reservations start the log.
	f.clock.Add(2 * time.Second)
	var hs []held
	for i := range 30 {
		// From the cooldown's end, spaced: 1/8 of 1040ms / 100, 1ms.
		p := f.acquire(t, Cost{Requests: 1})
		if p.Outcome != Reserved || !p.At.Equal(t0.Add(5*time.Second+time.Duration(i)*time.Millisecond)) {
			t.Fatalf("acquire %d during the cooldown: %+v, want reserved at its end + %dms", i, p, i)
		}
		hs = append(hs, held{p, p.At})
	}
	if m := f.meta(t); m["b"] != "70" {
		t.Fatalf("log starts at index %s, want 70 (the granted entries trimmed)", m["b"])
	}
	// A capacity 429 lowers the rate; a longer cooldown moves even the
	// first reservation: the re-plan rewrites the whole log.
	if a, _ := f.l.Throttled(ctx, scopeA, Throttle429{Capacity: true}); !a.Lowered {
		t.Fatal("the capacity 429 did not lower the rate")
	}
	if err := f.l.Cooldown(ctx, scopeA, t0.Add(6*time.Second), "test"); err != nil {
		t.Fatal(err)
	}
	last := f.acquire(t, Cost{Requests: 1})
	// 80 a window, paced: one every 13ms from the cooldown's end.
	if s := f.slot(t, last); !s.Equal(t0.Add(6*time.Second + 30*13*time.Millisecond)) {
		t.Fatalf("acquire after the re-plan: slot %v, want after the 30 re-planned at 13ms", s.Sub(t0))
	}
	key := logKey(scopePrefix(scopeA))
	if n := f.rdb.LLen(ctx, key).Val(); n != 31 {
		t.Fatalf("log holds %d entries, want 31", n)
	}
	if ttl := f.rdb.PTTL(ctx, key).Val(); ttl <= 0 {
		t.Fatalf("log TTL %v after the rewrite: it would never expire", ttl)
	}
	grants := play(t, f, hs, t0.Add(10*time.Second), false)
	for i, g := range grants {
		if want := t0.Add(6*time.Second + time.Duration(13*i)*time.Millisecond); !g.At.Equal(want) {
			t.Fatalf("task %d granted at %v, want %v", i, g.At.Sub(t0), want.Sub(t0))
		}
	}
}

// TestWakeCountsTheRateTheQueueWasDecidedAt: while the rate is lowered, a
// task is told to come back at the share of its wait the queue ahead would
// take at the ceiling. The queue ahead was decided at 80 a window; the rate
// has since climbed 7.5% to 86 (too little to re-plan): the new task's wake
// is 80% of its wait, not 86%, so that a re-plan that moves the queue
// earlier can move it too, instead of leaving it alone at the back.
func TestWakeCountsTheRateTheQueueWasDecidedAt(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, `{"safety": 1, "horizon": "1m", "guard": "40ms", "scopes": [
  {"project": "*", "model": "m", "dimensions": [
    {"name": "rpm", "unit": "requests", "limit": "adaptive", "start": 100, "floor": 10, "ceiling": 100, "period": "1s"}]}]}`)
	if a, _ := f.l.Throttled(ctx, scopeA, Throttle429{Capacity: true}); !a.Lowered {
		t.Fatal("the capacity 429 did not lower the rate")
	}
	f.clock.Add(time.Second) // past the cooldown that follows the decrease
	for range 200 {
		f.acquire(t, Cost{Requests: 1})
	}
	for range 3 {
		if err := f.l.Settle(ctx, Permit{Scope: scopeA}, 1); err != nil {
			t.Fatal(err)
		}
	}
	if m, _ := f.l.Limits(ctx, scopeA); m["rpm"] != 86 {
		t.Fatalf("limits after 3 successes: %v, want rpm 86", m)
	}
	p := f.acquire(t, Cost{Requests: 1})
	slot, now := f.slot(t, p), f.clock.Now()
	if slot.Sub(now) < time.Second {
		t.Fatalf("slot %v ahead, want more than half a window (the queue of 200 at 80 a window)", slot.Sub(now))
	}
	want := now.Add(time.Duration(0.8*float64(slot.Sub(now).Milliseconds())) * time.Millisecond).Truncate(time.Millisecond)
	if !p.At.Equal(want) {
		t.Fatalf("wake %v after now (slot %v), want %v: 80%% of the wait", p.At.Sub(now), slot.Sub(now), want.Sub(now))
	}
}
