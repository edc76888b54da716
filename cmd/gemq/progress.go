package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress draws a job's progress: a bar of finished tasks, the split done /
// waiting for quota / failed, the finishing rate and the ETA. On a terminal
// it redraws one line in place; otherwise it prints a line at most every
// plainEvery, and whenever the job finishes. Failures are printed on a line
// of their own as soon as they are seen (see live).
type progress struct {
	w        io.Writer
	tty      bool
	start    time.Time
	samples  []sample // recent (time, finished) for the rate
	lastLine time.Time
	drawn    bool
	lastNote string // the last failure reason printed
}

type sample struct {
	at       time.Time
	finished int
}

// live is what gemq run knows beyond the job status API, from its own
// stack: failures as they happen, and when the last deferred task is due.
type live struct {
	// Throttled (429s), Transient (failed calls to be retried),
	// DeadLettered, with the last reason of any of them.
	Throttled, Transient, DeadLettered int
	Last                               string
	// LastSlot is when the last deferred task of the job is due (its
	// reserved slot); zero when none was deferred.
	LastSlot time.Time
	// PerMinute is how many tasks the quota admits per real minute, for
	// tasks not reserved yet (queued); 0 when unknown (the real Gemini).
	PerMinute float64
}

const (
	barWidth = 28
	// rateWindow is a quota minute at real time: at low rates a shorter
	// window sees no task finish for most of the minute.
	rateWindow = time.Minute
	plainEvery = 5 * time.Second
)

func newProgress(w io.Writer, tty bool, start time.Time) *progress {
	return &progress{w: w, tty: tty, start: start}
}

// rate returns tasks finished per second over the last rateWindow, or
// since the start when none finished within the window.
func (p *progress) rate(now time.Time, finished int) float64 {
	p.samples = append(p.samples, sample{now, finished})
	for len(p.samples) > 2 && now.Sub(p.samples[1].at) >= rateWindow {
		p.samples = p.samples[1:]
	}
	first := p.samples[0]
	if dt := now.Sub(first.at).Seconds(); dt > 0 && finished > first.finished {
		return float64(finished-first.finished) / dt
	}
	if dt := now.Sub(p.start).Seconds(); dt > 0 {
		return float64(finished) / dt
	}
	return 0
}

// eta returns the time left, from the reserved slots when lv knows them
// (the last waiting task is due at LastSlot; queued tasks, not reserved
// yet, follow at the quota's pace), else from the rate. ok is false when
// there is nothing to go on.
func eta(now time.Time, c jobCounts, rate float64, lv *live) (time.Duration, bool) {
	rem := c.Total - c.finished()
	if rem <= 0 {
		return 0, true
	}
	if lv != nil && (c.Waiting > 0 || c.Queued > 0) {
		base := max(lv.LastSlot.Sub(now), 0)
		switch {
		case c.Queued == 0 && base > 0:
			return base, true
		case c.Queued > 0 && lv.PerMinute > 0:
			return base + time.Duration(float64(c.Queued)/lv.PerMinute*float64(time.Minute)), true
		}
	}
	if rate > 0 {
		return time.Duration(float64(rem) / rate * float64(time.Second)), true
	}
	return 0, false
}

// fmtRate prints a rate per second, per minute when below one a second.
func fmtRate(r float64) string {
	if r < 1 {
		return fmt.Sprintf("%.0f/min", r*60)
	}
	return fmt.Sprintf("%.1f/s", r)
}

// line renders the progress line for counts at now.
func (p *progress) line(now time.Time, c jobCounts, rate float64, lv *live) string {
	done := c.finished()
	frac := 0.0
	if c.Total > 0 {
		frac = float64(done) / float64(c.Total)
	}
	filled := int(frac * barWidth)
	bar := strings.Repeat("█", filled) + strings.Repeat("░", barWidth-filled)
	etaS := "–"
	if d, ok := eta(now, c, rate, lv); ok {
		etaS = fmtDuration(d)
	}
	l := fmt.Sprintf("%s %3.0f%% %d/%d · done %d · waiting for quota %d · running %d · queued %d · failed %d · %s · ETA %s · %s",
		bar, frac*100, done, c.Total, c.Succeeded, c.Waiting, c.Running, c.Queued, c.Failed, fmtRate(rate), etaS,
		fmtDuration(now.Sub(p.start)))
	if lv != nil {
		l += fmt.Sprintf(" · 429s %d", lv.Throttled)
		if lv.Transient > 0 {
			l += fmt.Sprintf(" · transient errors %d", lv.Transient)
		}
		if lv.DeadLettered > 0 {
			l += fmt.Sprintf(" · dead letters %d", lv.DeadLettered)
		}
	}
	return l
}

// update draws counts; lv, when set, adds gemq run's live figures, and a
// failure not yet shown is printed on a line of its own first.
func (p *progress) update(now time.Time, c jobCounts, lv *live) {
	r := p.rate(now, c.finished())
	if lv != nil && lv.Last != "" && lv.Last != p.lastNote {
		p.lastNote = lv.Last
		p.note(fmt.Sprintf("gemq: %s (so far: 429s %d, transient errors %d, dead letters %d)",
			lv.Last, lv.Throttled, lv.Transient, lv.DeadLettered))
	}
	l := p.line(now, c, r, lv)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", l)
		p.drawn = true
		return
	}
	if p.lastLine.IsZero() || now.Sub(p.lastLine) >= plainEvery || c.finished() == c.Total {
		fmt.Fprintln(p.w, l)
		p.lastLine = now
	}
}

// note prints a line above the progress line.
func (p *progress) note(s string) {
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
	fmt.Fprintln(p.w, s)
}

// finish ends the in-place line.
func (p *progress) finish() {
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// fmtDuration prints d as 1h02m03s / 2m03s / 3.4s.
func fmtDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "–"
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm%02ds", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
}
