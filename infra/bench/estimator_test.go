package bench

import (
	"context"
	"testing"

	"github.com/gemq-dev/gemq/internal/redistest"
)

// TestEstimatorLearns: the raw characters/4 estimate is about half (or
// less) of the stand-in's count for digit rows and JSON, and the learned
// estimate, once warm, is not low for any kind at the median.
func TestEstimatorLearns(t *testing.T) {
	srv := redistest.Start(t)
	r, err := RunEstimator(context.Background(), srv.Addr, 60, 15)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"digits", "code"} {
		if m := ratioQuantile(r.Raw[k], 0.5); m < 1.8 {
			t.Errorf("%s: raw actual/estimate median %.2f, want ≥ 1.8 (the stand-in is not gemq's estimator)", k, m)
		}
	}
	for _, k := range EstimatorKinds {
		if m := ratioQuantile(r.Warm[k], 0.5); m > 1.0 || m < 0.5 {
			t.Errorf("%s: learned actual/estimate median %.2f, want in [0.5, 1.0]", k, m)
		}
	}
	for _, row := range r.Section("test").Rows {
		t.Logf("%s: %s %s", row.Metric, row.Value, row.Met)
	}
}
