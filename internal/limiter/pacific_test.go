package limiter

import (
	"context"
	"testing"
	"time"
)

// dayQuota: 2 requests per Pacific day, guard 40ms (blackout 30ms before
// midnight, 10ms after), horizon 15m.
const dayQuota = `{"safety": 1, "horizon": "15m", "guard": "40ms", "scopes": [
  {"project": "*", "model": "m", "dimensions": [
    {"name": "rpd", "unit": "requests", "limit": 2, "per": "pacific_day"}]}]}`

func TestPacificDayLengths(t *testing.T) {
	for _, tc := range []struct {
		day  time.Time
		want time.Duration
	}{
		{pacificTime(2026, 3, 8, 12, 0, 0), 23 * time.Hour},  // spring forward
		{pacificTime(2026, 11, 1, 12, 0, 0), 25 * time.Hour}, // fall back
		{pacificTime(2026, 6, 1, 12, 0, 0), 24 * time.Hour},
	} {
		start, end := PacificDayStart(tc.day, 0), PacificDayStart(tc.day, 1)
		if got := end.Sub(start); got != tc.want {
			t.Errorf("%s: day is %v long, want %v", tc.day.Format("2006-01-02"), got, tc.want)
		}
	}
}

// TestPacificMidnight exhausts the daily quota just before midnight on an
// ordinary day and on both 2026 DST switch days, without waiting: the next
// request is reserved for just after the next Pacific midnight, which the
// script finds from the boundaries Go computed.
func TestPacificMidnight(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   time.Time // a time late in the day
		next time.Time // the next Pacific midnight
	}{
		{"ordinary", pacificTime(2026, 6, 15, 23, 50, 0), time.Date(2026, 6, 16, 7, 0, 0, 0, time.UTC)},
		{"eve of spring forward", pacificTime(2026, 3, 7, 23, 50, 0), time.Date(2026, 3, 8, 8, 0, 0, 0, time.UTC)},
		{"spring forward day (23h)", pacificTime(2026, 3, 8, 23, 50, 0), time.Date(2026, 3, 9, 7, 0, 0, 0, time.UTC)},
		{"eve of fall back", pacificTime(2026, 10, 31, 23, 50, 0), time.Date(2026, 11, 1, 7, 0, 0, 0, time.UTC)},
		{"fall back day (25h)", pacificTime(2026, 11, 1, 23, 50, 0), time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, dayQuota)
			f.clock.Set(tc.at)
			ctx := context.Background()
			for range 2 {
				if p := f.acquire(t, Cost{Requests: 1}); p.Outcome != Granted {
					t.Fatalf("%+v", p)
				}
			}
			want := tc.next.Add(10 * time.Millisecond) // midnight + early tolerance
			p := f.acquire(t, Cost{Requests: 1})
			if p.Outcome != Reserved || !p.At.Equal(want) || p.Reason != "rpd" {
				t.Fatalf("got %+v, want reserved at %v", p, want)
			}
			// The reservation counts in the new day's key.
			key := dayField("rpd", PacificDayStart(tc.next, 0))
			if n, _ := f.rdb.HGet(ctx, metaKey(scopePrefix(scopeA)), key).Int(); n != 1 {
				t.Fatalf("%s = %d, want 1", key, n)
			}
			// With the new day full too, the next fit is a day later: denied.
			f.acquire(t, Cost{Requests: 1})
			d := f.acquire(t, Cost{Requests: 1})
			if d.Outcome != Denied || d.At.After(PacificDayStart(tc.next, 1).Add(-15*time.Minute+10*time.Millisecond)) {
				t.Fatalf("got %+v, want denied until at most a horizon before the following midnight", d)
			}
			// Claiming the reservation after midnight is on time.
			f.clock.Set(p.At)
			if g := f.claim(t, p); g.Outcome != Granted {
				t.Fatalf("claim after midnight: %+v", g)
			}
		})
	}
}

// TestMidnightBlackout: a call admitted in the last moments of a day could
// reach Gemini after midnight and count in the other day, so none is.
func TestMidnightBlackout(t *testing.T) {
	f := newFixture(t, dayQuota)
	midnight := time.Date(2026, 11, 2, 8, 0, 0, 0, time.UTC)
	f.clock.Set(midnight.Add(-20 * time.Millisecond))
	p := f.acquire(t, Cost{Requests: 1})
	if want := midnight.Add(10 * time.Millisecond); p.Outcome != Reserved || !p.At.Equal(want) {
		t.Fatalf("got %+v, want reserved at %v", p, want)
	}
	f.clock.Set(midnight.Add(-31 * time.Millisecond))
	if p := f.acquire(t, Cost{Requests: 1}); p.Outcome != Reserved {
		// FIFO: queued behind the reservation above.
		t.Fatalf("got %+v", p)
	}
}

// TestShiftCalendar: with Redis TIME as "now" (no test clock) and the
// calendar shifted so that the end of the 23-hour (2027-03-14) or 25-hour
// (2027-11-07) Pacific day, or an ordinary midnight, is 30 s of real time
// away, a spent daily quota reserves the next request for 30 s from now
// (plus the early tolerance), in the new day's counter: the boundaries are
// the shifted calendar's, moved back into real time.
func TestShiftCalendar(t *testing.T) {
	for _, tc := range []struct {
		name     string
		midnight time.Time // the Pacific midnight ending the day
	}{
		{"ordinary", time.Date(2027, 1, 15, 8, 0, 0, 0, time.UTC)},
		{"spring forward day (23h)", time.Date(2027, 3, 15, 7, 0, 0, 0, time.UTC)},
		{"fall back day (25h)", time.Date(2027, 11, 8, 8, 0, 0, 0, time.UTC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb := startRedis(t)
			real := time.Now()
			shift := tc.midnight.Sub(real.Add(30 * time.Second))
			l := New(rdb, mustParse(t, dayQuota)).ShiftCalendar(shift)
			ctx := context.Background()
			for range 2 {
				if p, err := l.Acquire(ctx, scopeA, Cost{Requests: 1}); err != nil || p.Outcome != Granted {
					t.Fatalf("%+v, %v", p, err)
				}
			}
			p, err := l.Acquire(ctx, scopeA, Cost{Requests: 1})
			want := tc.midnight.Add(-shift).Add(10 * time.Millisecond)
			if err != nil || p.Outcome != Reserved || p.Reason != "rpd" || !p.At.Equal(want.Truncate(time.Millisecond)) {
				t.Fatalf("got %+v, %v; want reserved for rpd at %v (the shifted midnight in real time)", p, err, want)
			}
			key := dayField("rpd", tc.midnight.Add(-shift).Truncate(time.Millisecond))
			if n, _ := rdb.HGet(ctx, metaKey(scopePrefix(scopeA)), key).Int(); n != 1 {
				t.Fatalf("%s = %d, want 1", key, n)
			}
		})
	}
}
