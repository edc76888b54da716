package geminisim

import (
	"time"
)

// clock maps real time onto the stand-in's own time, in which a quota minute lasts one minute. With
// Options.Minute = 2s, stand-in time runs 30× faster than real time; every window, day boundary, latency and
// retry delay is computed in stand-in time and converted only when sleeping or telling a client how long to
// wait, so scaled and unscaled runs share one code path.
type clock struct {
	now    func() time.Time // the real clock
	origin time.Time        // real time at start
	epoch  time.Time        // stand-in time at start
	factor float64          // stand-in seconds per real second
}

func newClock(now func() time.Time, minute time.Duration, start time.Time) *clock {
	if now == nil {
		now = time.Now
	}
	if minute <= 0 {
		minute = time.Minute
	}
	origin := now()
	if start.IsZero() {
		start = origin
	}
	return &clock{now: now, origin: origin, epoch: start, factor: float64(time.Minute) / float64(minute)}
}

// Now is the stand-in time.
func (c *clock) Now() time.Time {
	return c.epoch.Add(time.Duration(float64(c.now().Sub(c.origin)) * c.factor))
}

// real converts a stand-in duration to real time.
func (c *clock) real(d time.Duration) time.Duration {
	return time.Duration(float64(d) / c.factor)
}
