package tasksemu

import (
	"testing"
	"time"

	"cloud.google.com/go/cloudtasks/apiv2/cloudtaskspb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The example in the RetryConfig.max_doublings documentation: min 10s, max 300s,
// 3 doublings → 10s, 20s, 40s, 80s, 160s, 240s, 300s, 300s.
func TestBackoffFollowsTheDocumentedExample(t *testing.T) {
	rc := &cloudtaskspb.RetryConfig{MinBackoff: durationpb.New(10 * time.Second), MaxBackoff: durationpb.New(300 * time.Second), MaxDoublings: 3}
	want := []time.Duration{10, 20, 40, 80, 160, 240, 300, 300}
	for k, w := range want {
		if got := backoff(rc, k+1); got != w*time.Second {
			t.Errorf("retry %d: %v, want %v", k+1, got, w*time.Second)
		}
	}
	if got := backoff(rc, 1000); got != 300*time.Second {
		t.Errorf("retry 1000: %v, want the cap", got)
	}
}

func TestExhausted(t *testing.T) {
	rc := func(attempts int32, d time.Duration) *cloudtaskspb.RetryConfig {
		return &cloudtaskspb.RetryConfig{MaxAttempts: attempts, MaxRetryDuration: durationpb.New(d)}
	}
	for _, c := range []struct {
		rc       *cloudtaskspb.RetryConfig
		attempts int
		since    time.Duration
		want     bool
	}{
		{rc(3, 0), 2, time.Hour, false},
		{rc(3, 0), 3, 0, true},
		{rc(3, time.Minute), 3, time.Second, false}, // both limits must be reached
		{rc(3, time.Minute), 3, time.Minute, true},
		{rc(-1, time.Minute), 50, time.Minute, true},
		{rc(-1, 0), 1e6, 1e6 * time.Hour, false},
	} {
		if got := exhausted(c.rc, c.attempts, c.since); got != c.want {
			t.Errorf("exhausted(%v, %d, %v) = %v, want %v", c.rc, c.attempts, c.since, got, c.want)
		}
	}
}
