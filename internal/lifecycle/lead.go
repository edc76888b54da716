package lifecycle

import (
	"slices"
	"sync"
	"time"
)

// leadTracker learns how late Cloud Tasks dispatches a task after its
// scheduled time (X-CloudTasks-TaskETA), so that a reservation's Cloud Task
// is due just that much before its slot: the callback then typically
// arrives a little before the slot and waits only the difference, instead
// of a fixed claim lead of idle function time. Until it has seen enough
// dispatches it answers the configured lead (conservative). It is safe for
// concurrent use.
type leadTracker struct {
	max time.Duration // the configured claim lead: never more

	mu   sync.Mutex
	lags [leadSamples]time.Duration
	n    int // samples recorded so far (the ring holds the last leadSamples)
	lead time.Duration
}

const (
	// leadSamples is how many recent dispatch lags the tracker keeps.
	leadSamples = 256
	// leadWarmup is how many it needs before it trusts them.
	leadWarmup = 32
	// leadMargin is added to the lags' 99th percentile.
	leadMargin = 50 * time.Millisecond
	// leadMin is the least lead ever used.
	leadMin = 50 * time.Millisecond
)

func newLeadTracker(max time.Duration) *leadTracker {
	return &leadTracker{max: max, lead: max}
}

// observe records one dispatch: a Cloud Task scheduled at eta arrived at now.
func (t *leadTracker) observe(eta, now time.Time) {
	if eta.IsZero() {
		return
	}
	lag := max(now.Sub(eta), 0)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lags[t.n%leadSamples] = lag
	t.n++
	if t.n < leadWarmup {
		return
	}
	recent := slices.Clone(t.lags[:min(t.n, leadSamples)])
	slices.Sort(recent)
	p99 := recent[(len(recent)*99)/100]
	t.lead = min(max(p99+leadMargin, leadMin), t.max)
}

// current is the lead to schedule a reservation's Cloud Task with.
func (t *leadTracker) current() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lead
}
