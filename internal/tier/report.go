package tier

import (
	"maps"
	"slices"
)

// Usage is a job's tokens served at one tier.
type Usage struct {
	// Tasks is the number of tasks that succeeded at the tier.
	Tasks int64 `json:"tasks"`
	// The token sums (see Tokens).
	InputTokens  int64 `json:"input_tokens"`
	CachedTokens int64 `json:"cached_tokens"`
	OutputTokens int64 `json:"output_tokens"`
	Thinking     int64 `json:"thinking_tokens"`
	// EstimatedUSD is what they cost at the tier; 0 without a price.
	EstimatedUSD float64 `json:"estimated_usd"`
}

func (u Usage) tokens() Tokens {
	return Tokens{Input: u.InputTokens, Cached: u.CachedTokens, Output: u.OutputTokens, Thinking: u.Thinking}
}

// Report is a job's cost report: the "cost" of GET /v1/jobs/{id}.
type Report struct {
	// Tiers are the token sums and the estimated cost per serving tier.
	Tiers map[string]Usage `json:"tiers"`
	// EstimatedUSD is the sum of the tiers' estimates.
	EstimatedUSD float64 `json:"estimated_usd"`
	// AtTier is what the same tokens would cost at each tier; empty
	// without a price.
	AtTier map[string]float64 `json:"at_tier_usd"`
	// Prices are the standard prices used (US dollars per million
	// tokens); nil when the model has none configured: no estimate.
	Prices *Price `json:"prices_per_million,omitempty"`
	// Note says what the estimate leaves out.
	Note string `json:"note"`
}

// ReportNote says what a Report's estimate covers.
const ReportNote = "estimate from usageMetadata and the configured standard prices (flex and batch at 0.5x, priority at 2x, the upper end of its documented 1.75-2x); long-prompt surcharges, grounding and storage are not included"

// NewReport prices usage (by serving tier, EstimatedUSD ignored) at p; a
// nil p gives token sums only. It returns nil for no usage.
func NewReport(usage map[string]Usage, p *Price) *Report {
	if len(usage) == 0 {
		return nil
	}
	r := &Report{Tiers: make(map[string]Usage, len(usage)), AtTier: map[string]float64{}, Prices: p, Note: ReportNote}
	var all Tokens
	for _, name := range slices.Sorted(maps.Keys(usage)) {
		u := usage[name]
		n := u.tokens()
		u.EstimatedUSD = 0
		if p != nil {
			u.EstimatedUSD = Cost(*p, Tier(name), n)
			r.EstimatedUSD += u.EstimatedUSD
		}
		r.Tiers[name] = u
		all.Input, all.Cached, all.Output, all.Thinking = all.Input+n.Input, all.Cached+n.Cached, all.Output+n.Output, all.Thinking+n.Thinking
	}
	if p != nil {
		for _, t := range []Tier{Standard, Flex, Batch, Priority} {
			r.AtTier[string(t)] = Cost(*p, t, all)
		}
	}
	return r
}
