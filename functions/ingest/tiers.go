package ingest

import (
	"time"

	"github.com/gemq-dev/gemq/internal/job"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/tier"
)

// newJob is the store's record of a built job.
func newJob(j *job.Job, taskIDs []string) store.NewJob {
	nj := store.NewJob{ID: j.ID, Model: j.Model, ContentHash: j.Hash, TaskIDs: taskIDs, Fingerprints: j.Fingerprints(),
		Tier: string(j.Tiers.Chosen), Deadline: j.Tiers.Deadline}
	if j.Tiers.Asked != j.Tiers.Chosen {
		nj.AskedTier, nj.TierReason = string(j.Tiers.Asked), j.Tiers.Reason
	}
	return nj
}

// tierView is the "service_tier" of GET /v1/jobs/{id}.
type tierView struct {
	// Tier is the tier the job's tasks call at.
	Tier string `json:"tier"`
	// Asked is "auto" when gemq chose Tier, Reason why.
	Asked  string `json:"asked,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Deadline is the job's deadline, if it has one.
	Deadline *time.Time `json:"deadline,omitempty"`
	// Downgraded counts the tasks Gemini served at another tier than asked
	// (priority over its limit is served at standard).
	Downgraded int64 `json:"downgraded,omitempty"`
}

// tierViewOf is the job's tier settings, nil for a job without any.
func tierViewOf(j store.Job) *tierView {
	if j.Tier == "" && j.Downgraded == 0 {
		return nil
	}
	v := &tierView{Tier: j.Tier, Asked: j.AskedTier, Reason: j.TierReason, Downgraded: j.Downgraded}
	if v.Tier == "" {
		v.Tier = string(tier.Standard)
	}
	if !j.Deadline.IsZero() {
		d := j.Deadline
		v.Deadline = &d
	}
	return v
}

// costOf is the job's cost report, nil while no task has succeeded.
func costOf(j store.Job, prices map[string]tier.Price) *tier.Report {
	usage := make(map[string]tier.Usage, len(j.Usage))
	for name, u := range j.Usage {
		usage[name] = tier.Usage{Tasks: u.Tasks, InputTokens: u.Input, CachedTokens: u.Cached, OutputTokens: u.Output, Thinking: u.Thinking}
	}
	var p *tier.Price
	if pr, ok := prices[j.Model]; ok {
		p = &pr
	}
	return tier.NewReport(usage, p)
}
