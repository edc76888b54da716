package geminisim

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// DSQ is a hidden capacity in front of a model's quotas, the way Vertex AI serves Gemini 2.x and later
// under Dynamic Shared Quota: no per-project number is published, and when the shared pool is short a
// request gets 429 RESOURCE_EXHAUSTED without QuotaFailure or RetryInfo. The stand-in admits at most
// Fraction(t) × Requests requests per sliding Window (stand-in time) per model, Fraction stepping along
// Steps; requests beyond it are answered 429 and not charged.
type DSQ struct {
	// Requests per Window at full capacity (Fraction 1).
	Requests int64 `json:"requests"`
	// Window is the sliding window (default 1m of stand-in time).
	Window time.Duration `json:"window"`
	// Steps change the capacity over time; before the first step (and without steps) it is full.
	Steps []DSQStep `json:"steps,omitempty"`
}

// DSQStep sets the capacity to Fraction × DSQ.Requests from After (stand-in time since New or Reset).
type DSQStep struct {
	After    time.Duration `json:"after"`
	Fraction float64       `json:"fraction"`
}

// ParseDSQ parses "REQUESTS/WINDOW[;AFTER=FRACTION...]", e.g. "60/10s;1m=0.4;2m=1" (60 requests per 10 s,
// 40% of it from the first minute, full again from the second). "" is nil.
func ParseDSQ(spec string) (*DSQ, error) {
	if spec == "" {
		return nil, nil
	}
	parts := strings.Split(spec, ";")
	rs, ws, ok := strings.Cut(parts[0], "/")
	if !ok {
		return nil, fmt.Errorf("geminisim dsq %q: want REQUESTS/WINDOW[;AFTER=FRACTION...]", spec)
	}
	n, err := strconv.ParseInt(rs, 10, 64)
	if err != nil || n < 1 {
		return nil, fmt.Errorf("geminisim dsq %q: requests %q must be a positive integer", spec, rs)
	}
	w, err := time.ParseDuration(ws)
	if err != nil || w <= 0 {
		return nil, fmt.Errorf("geminisim dsq %q: window %q must be a positive duration", spec, ws)
	}
	d := &DSQ{Requests: n, Window: w}
	for _, p := range parts[1:] {
		as, fs, ok := strings.Cut(p, "=")
		a, err1 := time.ParseDuration(as)
		f, err2 := strconv.ParseFloat(fs, 64)
		if !ok || err1 != nil || err2 != nil || a < 0 || f < 0 || f > 1 {
			return nil, fmt.Errorf("geminisim dsq %q: step %q must be AFTER=FRACTION with a duration and a fraction in [0, 1]", spec, p)
		}
		if len(d.Steps) > 0 && a <= d.Steps[len(d.Steps)-1].After {
			return nil, fmt.Errorf("geminisim dsq %q: steps must be in increasing order of time", spec)
		}
		d.Steps = append(d.Steps, DSQStep{After: a, Fraction: f})
	}
	return d, nil
}

// Capacity is the hidden capacity (requests per Window) at elapsed stand-in time since the start.
func (d DSQ) Capacity(elapsed time.Duration) int64 {
	f := 1.0
	for _, s := range d.Steps {
		if elapsed >= s.After {
			f = s.Fraction
		}
	}
	return int64(math.Floor(f*float64(d.Requests) + 1e-9))
}

// dsqState is the DSQ's sliding log per model; the Server's mutex guards it.
type dsqState struct {
	cfg   DSQ
	start time.Time
	recv  map[string][]time.Time // admitted requests within the last window, oldest first
}

func newDSQState(d DSQ, start time.Time) *dsqState {
	if d.Window <= 0 {
		d.Window = time.Minute
	}
	return &dsqState{cfg: d, start: start, recv: map[string][]time.Time{}}
}

// admit reports whether a request of model at now fits the hidden capacity, and counts it if so.
func (s *dsqState) admit(model string, now time.Time) bool {
	q := s.recv[model]
	i := 0
	for i < len(q) && !q[i].After(now.Add(-s.cfg.Window)) {
		i++
	}
	q = q[i:]
	if int64(len(q)) >= s.cfg.Capacity(now.Sub(s.start)) {
		s.recv[model] = q
		return false
	}
	s.recv[model] = append(q, now)
	return true
}
