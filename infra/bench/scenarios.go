package bench

import (
	"fmt"
	"time"
)

// Scale are the knobs shared by the pipeline scenarios.
type Scale struct {
	// Minute is the scaled quota minute.
	Minute time.Duration
	// RPM is the RPM-bound job's limit; the TPM-bound job's token limit is
	// RPM × 500 tokens (its tasks average 500).
	RPM int64
	// Backlog is the job size in per-minute quotas (≥ 10).
	Backlog float64
	// Guard is the limiter's guard (real time).
	Guard time.Duration
	// Latency is the stand-in's latency spec (stand-in time).
	Latency string
	// PushConcurrency bounds the push loop.
	PushConcurrency int
	// QuotaBacklog is the size of the quota rows' estimate-error and
	// tier jobs in per-minute quotas (QuotaRows).
	QuotaBacklog float64
	// WarmUp is the size of the warm-up job run before each of Scenarios'
	// jobs, in per-minute quotas (0: none, the measured job is a fresh
	// deployment's first): enough over one window that some 30+ tasks are
	// deferred, so the worker learns Cloud Tasks' dispatch lag (its claim
	// lead) as a deployment that has run before has.
	WarmUp float64
}

// DefaultScale is what `make bench` runs.
var DefaultScale = Scale{Minute: 6 * time.Second, RPM: 300, Backlog: 10, Guard: 100 * time.Millisecond,
	Latency: "lognormal:median=2s,sigma=0.5,max=20s", PushConcurrency: 64, QuotaBacklog: 4, WarmUp: 2.5}

// Scenarios returns the pipeline runs of benchmarks 1-4, by name, in run
// order.
func (s Scale) Scenarios() []PipelineOptions {
	base := PipelineOptions{Policy: "reserve", Minute: s.Minute, RPD: 10_000_000, Safety: 0.95, Guard: s.Guard,
		Latency: s.Latency, Seed: 1, PushConcurrency: s.PushConcurrency, WarmUp: int(s.WarmUp * float64(s.RPM))}
	tasks := int(s.Backlog * float64(s.RPM))
	timeout := time.Duration(s.Backlog*4)*s.Minute + time.Minute

	rpm := base
	rpm.Name, rpm.RPM, rpm.TPM = "rpm", s.RPM, s.RPM*1000 // 50-150 tokens per task: TPM never binds
	rpm.Tasks, rpm.MinTokens, rpm.MaxTokens, rpm.Timeout = tasks, 50, 150, timeout

	tpm := base
	tpm.Name, tpm.RPM, tpm.TPM = "tpm", s.RPM*4, s.RPM*500
	// Average 500 tokens: ≈ RPM tasks per window, so the backlog in tokens
	// is Backlog × TPM.
	tpm.Tasks, tpm.MinTokens, tpm.MaxTokens, tpm.Timeout = int(float64(tasks)*1.02), 200, 800, timeout

	skew := tpm
	skew.Name, skew.TokenSkew, skew.Seed = "tpm-skew30", 0.3, 2

	seed := rpm
	seed.Name, seed.Policy, seed.Timeout = "seed-rpm", "seed", 3*timeout
	seedTPM := tpm
	seedTPM.Name, seedTPM.Policy, seedTPM.Timeout = "seed-tpm", "seed", 3*timeout
	return []PipelineOptions{rpm, tpm, skew, seed, seedTPM}
}

// Scenario returns the scenario named name (of Scenarios, or a run of
// QuotaRows).
func (s Scale) Scenario(name string) (PipelineOptions, error) {
	for _, o := range append(s.Scenarios(), s.TierScenarios()...) {
		if o.Name == name {
			return o, nil
		}
	}
	for _, q := range s.QuotaRows() {
		for _, o := range []PipelineOptions{q.Gemq, q.Base} {
			if o.Name == name {
				return o, nil
			}
		}
	}
	return PipelineOptions{}, fmt.Errorf("no scenario %q", name)
}
