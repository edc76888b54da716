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
// plainEvery, and whenever the job finishes.
type progress struct {
	w        io.Writer
	tty      bool
	start    time.Time
	samples  []sample // recent (time, finished) for the rate
	lastLine time.Time
	drawn    bool
}

type sample struct {
	at       time.Time
	finished int
}

const (
	barWidth   = 28
	rateWindow = 10 * time.Second
	plainEvery = 5 * time.Second
)

func newProgress(w io.Writer, tty bool, start time.Time) *progress {
	return &progress{w: w, tty: tty, start: start}
}

// rate returns tasks finished per second over the last rateWindow.
func (p *progress) rate(now time.Time, finished int) float64 {
	p.samples = append(p.samples, sample{now, finished})
	for len(p.samples) > 2 && now.Sub(p.samples[1].at) >= rateWindow {
		p.samples = p.samples[1:]
	}
	first := p.samples[0]
	dt := now.Sub(first.at).Seconds()
	if dt <= 0 {
		return 0
	}
	return float64(finished-first.finished) / dt
}

// line renders the progress line for counts at now.
func (p *progress) line(now time.Time, c jobCounts, rate float64) string {
	done := c.finished()
	frac := 0.0
	if c.Total > 0 {
		frac = float64(done) / float64(c.Total)
	}
	filled := int(frac * barWidth)
	bar := strings.Repeat("█", filled) + strings.Repeat("░", barWidth-filled)
	eta := "–"
	if rem := c.Total - done; rem == 0 {
		eta = "0s"
	} else if rate > 0 {
		eta = fmtDuration(time.Duration(float64(rem) / rate * float64(time.Second)))
	}
	return fmt.Sprintf("%s %3.0f%% %d/%d · done %d · waiting for quota %d · running %d · queued %d · failed %d · %.1f/s · ETA %s · %s",
		bar, frac*100, done, c.Total, c.Succeeded, c.Waiting, c.Running, c.Queued, c.Failed, rate, eta,
		fmtDuration(now.Sub(p.start)))
}

// update draws counts; extra, when set, is appended (gemq run's live figures).
func (p *progress) update(now time.Time, c jobCounts, extra func() string) {
	r := p.rate(now, c.finished())
	l := p.line(now, c, r)
	if extra != nil {
		if s := extra(); s != "" {
			l += " · " + s
		}
	}
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

// finish ends the in-place line.
func (p *progress) finish(now time.Time, c jobCounts) {
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
