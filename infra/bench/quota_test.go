package bench

import (
	"math"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/infra/geminisim"
)

// TestDSQUsed: the ideal client sends the window's capacity at once, then
// as the sliding window frees room; a job that took that long used all of
// the hidden capacity, one that took twice as long half of it, and a step
// down stretches the ideal.
func TestDSQUsed(t *testing.T) {
	full := geminisim.DSQ{Requests: 10, Window: time.Minute}
	first := 5 * time.Second
	// 30 calls at 10 per minute: bursts at +0, +1m, +2m.
	if got := dsqUsed(full, 30, first, first+2*time.Minute); math.Abs(got-1) > 0.01 {
		t.Fatalf("job as fast as the capacity allows: used %.3f, want 1", got)
	}
	if got := dsqUsed(full, 30, first, first+4*time.Minute); math.Abs(got-0.5) > 0.01 {
		t.Fatalf("job twice as slow: used %.3f, want 0.5", got)
	}
	// Half the capacity from 30 s on: 10 at +0, 5 at +1m, +2m, +3m, +4m.
	half := geminisim.DSQ{Requests: 10, Window: time.Minute, Steps: []geminisim.DSQStep{{After: 35 * time.Second, Fraction: 0.5}}}
	if got := dsqUsed(half, 30, first, first+4*time.Minute); math.Abs(got-1) > 0.01 {
		t.Fatalf("job as fast as the stepped capacity allows: used %.3f, want 1", got)
	}
}
