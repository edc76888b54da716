package lifecycle

import (
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/redistest"
	"github.com/gemq-dev/gemq/internal/store"
)

// The lead starts at the configured claim lead, and once enough dispatches
// were seen it is their 99th percentile lag plus a margin, within
// [leadMin, the claim lead].
func TestLeadTrackerLearnsTheDispatchLag(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name string
		lags func(i int) time.Duration
		n    int
		want time.Duration
	}{
		{"too few to trust", func(int) time.Duration { return 10 * time.Millisecond }, leadWarmup - 1, time.Second},
		{"steady 10ms", func(int) time.Duration { return 10 * time.Millisecond }, 100, 60 * time.Millisecond},
		{"early arrivals count as no lag", func(int) time.Duration { return -time.Second }, 100, leadMin},
		{"a burst dispatched over half a second: its tail", func(i int) time.Duration { return time.Duration(i%100) * 5 * time.Millisecond }, 400,
			495*time.Millisecond + leadMargin},
		{"never more than the claim lead", func(int) time.Duration { return 5 * time.Second }, 100, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lt := newLeadTracker(time.Second, nil)
			for i := range tt.n {
				eta := base.Add(time.Duration(i) * time.Second)
				lt.observe(t.Context(), eta, eta.Add(tt.lags(i)))
			}
			lt.observe(t.Context(), time.Time{}, base) // unknown ETA: ignored
			if got := lt.current(t.Context(), base); got != tt.want {
				t.Errorf("lead = %v, want %v", got, tt.want)
			}
		})
	}
}

// An instance that has not seen enough dispatches itself uses the lead
// another instance learned, through Redis; without one (or once Redis
// forgot it) the configured claim lead. It reads the fleet's lead at most
// every leadFleetEvery.
func TestLeadTrackerSharesTheLeadThroughRedis(t *testing.T) {
	rds := redistest.Start(t)
	rdb := rds.Client(t)
	st := store.New(rdb, store.Options{})
	ctx := t.Context()
	base := time.Unix(1_800_000_000, 0)

	fresh := newLeadTracker(time.Second, st)
	if got := fresh.current(ctx, base); got != time.Second {
		t.Fatalf("nothing learned anywhere: lead %v, want the claim lead", got)
	}
	learner := newLeadTracker(time.Second, st)
	for i := range leadWarmup {
		eta := base.Add(time.Duration(i) * time.Second)
		learner.observe(ctx, eta, eta.Add(20*time.Millisecond))
	}
	if d, err := st.DispatchLead(ctx); err != nil || d != 70*time.Millisecond {
		t.Fatalf("saved lead %v, %v; want 70ms (20ms lag + the margin)", d, err)
	}
	if got := fresh.current(ctx, base.Add(time.Second)); got != time.Second {
		t.Errorf("read again within %v: lead %v, want the claim lead still", leadFleetEvery, got)
	}
	later := base.Add(leadFleetEvery + time.Second)
	if got := newLeadTracker(time.Second, st).current(ctx, later); got != 70*time.Millisecond {
		t.Errorf("a new instance: lead %v, want the fleet's 70ms", got)
	}
	if got := fresh.current(ctx, later); got != 70*time.Millisecond {
		t.Errorf("after %v: lead %v, want the fleet's 70ms", leadFleetEvery, got)
	}
	// Redis forgets: back to the claim lead at the next read.
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if got := fresh.current(ctx, later.Add(leadFleetEvery+time.Second)); got != time.Second {
		t.Errorf("after Redis forgot: lead %v, want the claim lead", got)
	}
}
