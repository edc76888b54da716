package stack_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/infra/stack"
	"github.com/gemq-dev/gemq/internal/task"
)

// tierStatus is the tier and cost part of GET /v1/jobs/{id}.
type tierStatus struct {
	ServiceTier struct {
		Tier       string `json:"tier"`
		Asked      string `json:"asked"`
		Reason     string `json:"reason"`
		Downgraded int64  `json:"downgraded"`
	} `json:"service_tier"`
	Cost struct {
		Tiers map[string]struct {
			Tasks       int64 `json:"tasks"`
			InputTokens int64 `json:"input_tokens"`
		} `json:"tiers"`
		EstimatedUSD float64            `json:"estimated_usd"`
		AtTier       map[string]float64 `json:"at_tier_usd"`
	} `json:"cost"`
}

func getTierStatus(t *testing.T, s *stack.Stack, jobID string) tierStatus {
	t.Helper()
	resp, err := http.Get(s.IngestURL + "/v1/jobs/" + jobID)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ts tierStatus
	if err := json.Unmarshal(b, &ts); err != nil {
		t.Fatalf("GET job: %d %s", resp.StatusCode, b)
	}
	return ts
}

// testTiers runs a job at each interactive tier through the stack: a flex
// job through a storm of sheds, a priority job over its limit, an auto job.
// Each ends with exactly one terminal state and one result per task, and
// the job's status shows the tier and the cost.
func testTiers(t *testing.T, s *stack.Stack) {
	t.Run("flex storm of sheds", func(t *testing.T) {
		// Half of the flex calls are shed (503, not charged): every task is
		// deferred again, never failed, until it gets through.
		if err := s.ResetGemini(stack.GeminiOptions{Tiers: geminisim.Tiers{FlexShedRate: 0.5}, Seed: 11}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		keys := submitWith(t, s, "flexstorm", 120, 4, "&service_tier=flex&deadline="+deadline)
		r := waitDone(t, s, "flexstorm", len(keys), 120*time.Second)
		if r.Counts.Succeeded != len(keys) || r.Counts.Failed != 0 {
			t.Errorf("counts = %+v, want all %d succeeded (a shed is not a failure)", r.Counts, len(keys))
		}
		checkOneResultPerKey(t, keys, results(t, s, "flexstorm"))
		dead := pullResults(t, s, "flexstorm")
		for _, k := range keys {
			if m := dead[task.TaskID("flexstorm", k)]; m["outcome"] != "succeeded" {
				t.Errorf("key %s: results topic says %v, want succeeded", k, m)
			}
		}
		st := s.GeminiStandIn().Stats(safety)
		checkInvariant(t, s, st)
		if st.ByOutcome["shed"] < len(keys)/2 || st.Served["flex"] != len(keys) || st.Tasks != len(keys) {
			t.Errorf("stand-in: %d sheds, %v served, %d tasks; want at least half as many sheds as tasks (%d) and every task served once at flex",
				st.ByOutcome["shed"], st.Served, st.Tasks, len(keys))
		}
		ts := getTierStatus(t, s, "flexstorm")
		if ts.ServiceTier.Tier != "flex" || ts.Cost.Tiers["flex"].Tasks != int64(len(keys)) || ts.Cost.EstimatedUSD <= 0 ||
			ts.Cost.AtTier["flex"] != ts.Cost.EstimatedUSD || ts.Cost.AtTier["standard"] != 2*ts.Cost.EstimatedUSD {
			t.Errorf("status = %+v, want flex with every task's tokens costed at half the standard price", ts)
		}
		t.Logf("flex storm: %d sheds for %d tasks; stand-in outcomes %v; cost %+v", st.ByOutcome["shed"], len(keys), st.ByOutcome, ts.Cost)
	})

	t.Run("priority over its limit", func(t *testing.T) {
		if err := s.ResetGemini(stack.GeminiOptions{Tiers: geminisim.Tiers{PriorityRPM: 20}}); err != nil {
			t.Fatal(err)
		}
		keys := submitWith(t, s, "prio", 60, 5, "&service_tier=priority")
		r := waitDone(t, s, "prio", len(keys), 90*time.Second)
		if r.Counts.Succeeded != len(keys) {
			t.Errorf("counts = %+v", r.Counts)
		}
		lines := results(t, s, "prio")
		checkOneResultPerKey(t, keys, lines)
		st := s.GeminiStandIn().Stats(safety)
		ts := getTierStatus(t, s, "prio")
		if st.Downgrades == 0 || ts.ServiceTier.Downgraded != int64(st.Downgrades) ||
			ts.Cost.Tiers["standard"].Tasks != int64(st.Downgrades) || ts.Cost.Tiers["priority"].Tasks != int64(len(keys)-st.Downgrades) {
			t.Errorf("stand-in downgraded %d; status %+v; want the same count, each billed at standard", st.Downgrades, ts)
		}
	})

	t.Run("auto picks flex for a far deadline", func(t *testing.T) {
		if err := s.ResetGemini(stack.GeminiOptions{}); err != nil {
			t.Fatal(err)
		}
		// Under the Batch API's 24 h target: flex, not batch.
		deadline := time.Now().Add(20 * time.Hour).UTC().Format(time.RFC3339)
		keys := submitWith(t, s, "auto", 20, 6, "&service_tier=auto&deadline="+deadline)
		waitDone(t, s, "auto", len(keys), 60*time.Second)
		ts := getTierStatus(t, s, "auto")
		if ts.ServiceTier.Tier != "flex" || ts.ServiceTier.Asked != "auto" || ts.ServiceTier.Reason == "" {
			t.Errorf("service_tier = %+v, want auto's choice of flex with its reason", ts.ServiceTier)
		}
		if st := s.GeminiStandIn().Stats(1); st.Served["flex"] != len(keys) {
			t.Errorf("served %v, want %d at flex", st.Served, len(keys))
		}
	})

	t.Run("batch", func(t *testing.T) { testBatch(t, s) })
}
