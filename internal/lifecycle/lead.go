package lifecycle

import (
	"context"
	"slices"
	"sync"
	"time"
)

// leadTracker learns how late Cloud Tasks dispatches a task after its
// scheduled time (X-CloudTasks-TaskETA), so that a reservation's Cloud Task
// is due just that much before its slot: the callback then typically
// arrives a little before the slot and waits only the difference, instead
// of a fixed claim lead of idle function time.
//
// What it learned is shared through the store (LeadStore), so an instance
// that has not yet seen enough dispatches itself — a new one, scaled from
// zero — uses the lead the fleet learned rather than the whole configured
// claim lead for every task it defers. With neither (a fresh deployment,
// or Redis forgot) it answers the configured lead: conservative, since a
// lead shorter than the lag makes callbacks late and their slots lost. It
// is safe for concurrent use.
type leadTracker struct {
	max    time.Duration // the configured claim lead: never more
	shared LeadStore     // nil: learn alone

	mu   sync.Mutex
	lags [leadSamples]time.Duration
	n    int // samples recorded so far (the ring holds the last leadSamples)
	lead time.Duration
	// saved is n when the lead was last written to the store.
	saved int
	// fleet is the lead read from the store (0: none), read at fleetAt.
	fleet   time.Duration
	fleetAt time.Time
}

// LeadStore keeps the claim lead learned by any instance (*store.Store).
type LeadStore interface {
	// DispatchLead returns the lead last saved, 0 if none.
	DispatchLead(ctx context.Context) (time.Duration, error)
	SaveDispatchLead(ctx context.Context, d time.Duration) error
}

const (
	// leadSamples is how many recent dispatch lags the tracker keeps.
	leadSamples = 256
	// leadWarmup is how many it needs before it trusts them, and how
	// many more it sees between two writes of its lead to the store.
	leadWarmup = 32
	// leadMargin is added to the lags' 99th percentile.
	leadMargin = 50 * time.Millisecond
	// leadMin is the least lead ever used.
	leadMin = 50 * time.Millisecond
	// leadFleetEvery is how often an instance that has not learned its own
	// lead reads the fleet's.
	leadFleetEvery = 30 * time.Second
)

func newLeadTracker(max time.Duration, shared LeadStore) *leadTracker {
	return &leadTracker{max: max, lead: max, shared: shared}
}

// observe records one dispatch: a Cloud Task scheduled at eta arrived at
// now. Every leadWarmup dispatches once warm, the lead is saved for the
// fleet (best effort: a failed write changes nothing here).
func (t *leadTracker) observe(ctx context.Context, eta, now time.Time) {
	if eta.IsZero() {
		return
	}
	lag := max(now.Sub(eta), 0)
	t.mu.Lock()
	t.lags[t.n%leadSamples] = lag
	t.n++
	if t.n < leadWarmup {
		t.mu.Unlock()
		return
	}
	recent := slices.Clone(t.lags[:min(t.n, leadSamples)])
	slices.Sort(recent)
	p99 := recent[(len(recent)*99)/100]
	t.lead = t.clamp(p99 + leadMargin)
	save := t.shared != nil && t.n-t.saved >= leadWarmup
	if save {
		t.saved = t.n
	}
	lead := t.lead
	t.mu.Unlock()
	if save {
		_ = t.shared.SaveDispatchLead(ctx, lead)
	}
}

// current is the lead to schedule a reservation's Cloud Task with: this
// instance's once it has seen enough dispatches, else the fleet's (read at
// most every leadFleetEvery), else the configured claim lead.
func (t *leadTracker) current(ctx context.Context, now time.Time) time.Duration {
	t.mu.Lock()
	if t.n >= leadWarmup || t.shared == nil {
		defer t.mu.Unlock()
		return t.lead
	}
	if now.Sub(t.fleetAt) < leadFleetEvery {
		defer t.mu.Unlock()
		return t.fleetOrMax()
	}
	t.fleetAt = now
	t.mu.Unlock()
	d, err := t.shared.DispatchLead(ctx)
	t.mu.Lock()
	defer t.mu.Unlock()
	if err == nil {
		t.fleet = 0
		if d > 0 {
			t.fleet = t.clamp(d)
		}
	}
	if t.n >= leadWarmup {
		return t.lead
	}
	return t.fleetOrMax()
}

func (t *leadTracker) fleetOrMax() time.Duration {
	if t.fleet > 0 {
		return t.fleet
	}
	return t.max
}

// clamp keeps a lead within [leadMin, the claim lead].
func (t *leadTracker) clamp(d time.Duration) time.Duration { return min(max(d, leadMin), t.max) }
