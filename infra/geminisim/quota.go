package geminisim

import (
	"time"
	_ "time/tzdata" // America/Los_Angeles must resolve on machines without zoneinfo
)

// pacific is the time zone of the Gemini API's daily quota reset.
var pacific = mustLoad("America/Los_Angeles")

func mustLoad(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		// Unreachable: time/tzdata is embedded. Fall back to a fixed offset rather than panic.
		return time.FixedZone("PST", -8*3600)
	}
	return loc
}

// pacificDay is the America/Los_Angeles calendar date of t, e.g. "2025-03-09".
func pacificDay(t time.Time) string { return t.In(pacific).Format(time.DateOnly) }

// nextPacificMidnight is the first instant of the Pacific calendar day after t's (DST included).
func nextPacificMidnight(t time.Time) time.Time {
	lt := t.In(pacific)
	return time.Date(lt.Year(), lt.Month(), lt.Day()+1, 0, 0, 0, 0, pacific)
}

// Dimension names a quota dimension.
type Dimension string

// The dimensions the stand-in enforces.
const (
	RPM Dimension = "rpm" // requests per minute
	TPM Dimension = "tpm" // input tokens per minute
	RPD Dimension = "rpd" // requests per Pacific calendar day
)

// Limits are one model's quotas. Zero means unlimited for that dimension.
type Limits struct {
	RPM int64 `json:"rpm,omitempty"`
	TPM int64 `json:"tpm,omitempty"`
	RPD int64 `json:"rpd,omitempty"`
}

func (l Limits) of(d Dimension) int64 {
	switch d {
	case RPM:
		return l.RPM
	case TPM:
		return l.TPM
	}
	return l.RPD
}

type event struct {
	at     time.Time
	tokens int64
}

// window holds one model's admitted requests of the last minute and of the current Pacific day. Admission is
// strict: a request at t is admitted only if, counting it, the requests (tokens) received in (t-1m, t] do
// not exceed the limit, so every sliding window of one minute stays within the limit.
type window struct {
	events   []event // admitted in the last minute, oldest first
	tokens   int64   // sum of events' tokens
	day      string
	dayCount int64
}

func (w *window) trim(now time.Time) {
	i := 0
	for i < len(w.events) && !now.Before(w.events[i].at.Add(time.Minute)) {
		w.tokens -= w.events[i].tokens
		i++
	}
	w.events = w.events[i:]
	if d := pacificDay(now); d != w.day {
		w.day, w.dayCount = d, 0
	}
}

// check returns the violated dimensions and the earliest stand-in time at which a request of this cost
// would fit all of them (zero if none is violated).
func (w *window) check(now time.Time, tokens int64, lim Limits) (violated []Dimension, retryAt time.Time) {
	w.trim(now)
	later := func(t time.Time) {
		if t.After(retryAt) {
			retryAt = t
		}
	}
	if lim.RPM > 0 && int64(len(w.events))+1 > lim.RPM {
		violated = append(violated, RPM)
		// The request fits once all but RPM-1 of the current events have left the window.
		later(w.events[int64(len(w.events))-lim.RPM].at.Add(time.Minute))
	}
	if lim.TPM > 0 && w.tokens+tokens > lim.TPM {
		violated = append(violated, TPM)
		if tokens > lim.TPM {
			later(now.Add(time.Minute)) // never fits; tell the client to wait a full window
		} else {
			sum := w.tokens
			for _, e := range w.events {
				sum -= e.tokens
				if sum+tokens <= lim.TPM {
					later(e.at.Add(time.Minute))
					break
				}
			}
		}
	}
	if lim.RPD > 0 && w.dayCount+1 > lim.RPD {
		violated = append(violated, RPD)
		later(nextPacificMidnight(now))
	}
	return violated, retryAt
}

func (w *window) charge(now time.Time, tokens int64) {
	w.events = append(w.events, event{at: now, tokens: tokens})
	w.tokens += tokens
	w.dayCount++
}
