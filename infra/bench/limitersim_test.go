package bench

import (
	"context"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/redistest"
)

// TestLimiterSimHoldsAtTheCalls runs the 1,000-instance simulation small:
// 40 instances, two windows of backlog, and judges the windows at the
// instants the instances call Gemini (and over the admissions). It fails when
// the property breaks; the guard (300ms on a 2s minute) leaves a loaded
// machine room to resume a granted goroutine in time.
func TestLimiterSimHoldsAtTheCalls(t *testing.T) {
	srv := redistest.Start(t)
	o := DefaultSimOptions(srv.Addr)
	o.Instances, o.RPM, o.Minute, o.Guard, o.Windows = 40, 300, 2*time.Second, 300*time.Millisecond, 2
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := RunLimiterSim(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.CallPeak == 0 || r.Tasks != 2*int(r.Capacity) {
		t.Fatalf("the simulation did not run: %+v", r)
	}
	if err := r.Err(); err != nil {
		t.Fatalf("%v (peak at the calls %d / %d, %d late grants)", err, r.CallPeak, r.Capacity, r.LateCalls)
	}
	t.Logf("%d tasks, peak %d / %d at the calls, span %v (minimum %v), %d late grants", r.Tasks, r.CallPeak, r.Capacity, r.Span, r.TMin, r.LateCalls)
}
