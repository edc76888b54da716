package lifecycle

import (
	"testing"
	"time"
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
			lt := newLeadTracker(time.Second)
			for i := range tt.n {
				eta := base.Add(time.Duration(i) * time.Second)
				lt.observe(eta, eta.Add(tt.lags(i)))
			}
			lt.observe(time.Time{}, base) // unknown ETA: ignored
			if got := lt.current(); got != tt.want {
				t.Errorf("lead = %v, want %v", got, tt.want)
			}
		})
	}
}
