package lifecycle

import (
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/internal/config"
)

func workerEnv(kv ...string) func(string) string {
	m := map[string]string{
		"REDIS_ADDR":           "127.0.0.1:1",
		"GOOGLE_CLOUD_PROJECT": testProject,
		"GEMQ_QUOTAS":          quotaJSON,
		"GEMQ_TASKS_QUEUE":     testQueue,
		"GEMQ_WORKER_URL":      "http://127.0.0.1:1/",
		"GEMINI_API_KEY":       apiKey,
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestOptionsFromConfig(t *testing.T) {
	cfg, err := config.LoadFor(config.Worker, workerEnv(
		"GEMQ_RETRY_BASE", "300ms", "GEMQ_RETRY_MAX", "20s",
		"GEMQ_CAPACITY_BACKOFF_BASE", "2s", "GEMQ_CAPACITY_BACKOFF_MAX", "1m",
		"GEMQ_MAX_ATTEMPTS", "4", "GEMQ_GEMINI_TIMEOUT", "30s",
		"GEMQ_SEED_BACKOFF_BASE", "20ms", "GEMQ_SEED_BACKOFF_MAX", "2s", "GEMQ_CLAIM_LEAD", "1500ms",
	))
	if err != nil {
		t.Fatal(err)
	}
	got := OptionsFrom(cfg).withDefaults()
	want := Options{}.withDefaults()
	want.Project = testProject
	want.RetryBase, want.RetryMax = 300*time.Millisecond, 20*time.Second
	want.CapacityBase, want.CapacityMax = 2*time.Second, time.Minute
	want.MaxAttempts = 4
	want.GeminiTimeout, want.Lease = 30*time.Second, 90*time.Second
	want.SeedBase, want.SeedMax = 20*time.Millisecond, 2*time.Second
	want.ClaimLead = 1500 * time.Millisecond
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("options (-want +got):\n%s", d)
	}

	// The configuration's defaults are the machine's.
	cfg, err = config.LoadFor(config.Worker, workerEnv())
	if err != nil {
		t.Fatal(err)
	}
	want = Options{Project: testProject}.withDefaults()
	if d := cmp.Diff(want, OptionsFrom(cfg).withDefaults()); d != "" {
		t.Errorf("default options (-want +got):\n%s", d)
	}
}

// TestBackoffOptions checks that the configured back-offs set when the Cloud
// Task of a retry is scheduled: base·2^0 with equal jitter, in [base/2, base].
func TestBackoffOptions(t *testing.T) {
	tests := []struct {
		name string
		sim  geminisim.Options
		opts Options
		d    time.Duration
	}{
		{"transient", geminisim.Options{Faults: geminisim.Faults{Error503: 1}},
			Options{RetryBase: 40 * time.Second, RetryMax: time.Hour}, 40 * time.Second},
		{"429 without details", geminisim.Options{CapacityRate: 1},
			Options{CapacityBase: 3 * time.Minute, CapacityMax: time.Hour}, 3 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, fixtureOptions{sim: tt.sim, opts: tt.opts})
			e := envelope("job-backoff", "k", modelOpen, "one")
			before := time.Now()
			want(t, f.push(e), http.StatusOK, OutDeferred)
			after := time.Now()
			tks := f.scheduled()
			if len(tks) != 1 {
				t.Fatalf("scheduled = %d Cloud Tasks, want 1", len(tks))
			}
			at := tks[0].GetScheduleTime().AsTime()
			if lo, hi := before.Add(tt.d/2-time.Second), after.Add(tt.d+time.Second); at.Before(lo) || at.After(hi) {
				t.Errorf("retry scheduled %v after the push, want between %v and %v", at.Sub(before), tt.d/2, tt.d)
			}
		})
	}
}
