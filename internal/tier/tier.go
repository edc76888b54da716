// Package tier names Gemini's service tiers as gemq's jobs and tasks use
// them, checks a job's choice, and resolves "auto": the cheapest tier
// expected to finish by a deadline.
//
// What the tiers are (https://ai.google.dev/gemini-api/docs/optimization,
// read 2026-12-02):
//   - standard: the default, full price.
//   - flex: 50% of the standard price, synchronous, best effort: a request
//     may be shed when standard traffic peaks; latency target 1–15 minutes.
//   - priority: 75% to 100% more than standard, never shed; above the
//     project's dynamic priority limit a request is served at standard
//     instead of failing (https://ai.google.dev/gemini-api/docs/priority-inference).
//     Only Tier 2 and Tier 3 projects may use it.
//   - batch: the Batch API (https://ai.google.dev/gemini-api/docs/batch-mode,
//     read 2026-12-03): 50% of the standard price, "the target turnaround
//     time is 24 hours, but in majority of cases, it is much quicker", its
//     own per-model limit of enqueued tokens. gemq groups a batch job's tasks
//     into Batch API jobs and settles each answer like an interactive one
//     (internal/lifecycle, batch.go).
//
// The tier is sent as GenerateContentRequest.serviceTier (genai's
// GenerateContentConfig.ServiceTier, google.golang.org/genai v1.77.0), and
// the tier that served a call comes back as usageMetadata.serviceTier
// (genai's UsageMetadata.ServiceTier; the Gemini API only, not Vertex AI) and
// in the x-gemini-service-tier response header.
package tier

import (
	"fmt"
	"time"
)

// Tier is a service tier, or Auto.
type Tier string

// The tiers a job or task may name.
const (
	Standard Tier = "standard"
	Flex     Tier = "flex"
	Priority Tier = "priority"
	Batch    Tier = "batch"
	// Auto picks the cheapest tier expected to finish by the deadline.
	Auto Tier = "auto"
)

// FlexLatency is the upper end of Flex's documented latency target ("1–15
// min", https://ai.google.dev/gemini-api/docs/optimization, read
// 2026-12-02): Auto picks Flex only when the deadline leaves at least this
// much beyond the time the quota needs for the job.
const FlexLatency = 15 * time.Minute

// BatchTarget is the Batch API's turnaround target ("24 hours",
// https://ai.google.dev/gemini-api/docs/batch-mode, read 2026-12-03): Auto
// picks Batch only when the deadline leaves at least this much.
const BatchTarget = 24 * time.Hour

// Parse checks a tier as given by a user: "" is Standard; standard, flex,
// priority, batch and auto are accepted.
func Parse(s string) (Tier, error) {
	switch t := Tier(s); t {
	case "":
		return Standard, nil
	case Standard, Flex, Priority, Batch, Auto:
		return t, nil
	}
	return "", fmt.Errorf("service_tier must be standard, flex, priority, batch or auto (with a deadline), got %q", s)
}

// Choice is what Auto chose and why, for the job status.
type Choice struct {
	Tier   Tier
	Reason string
}

// Choose resolves Auto for a job of tasks requests that must finish by
// deadline, now being now. perMinute is the requests per minute the job's
// model may make (0: unknown, taken as no wait for quota). Batch is chosen
// when the deadline is at least BatchTarget away (the Batch API does not
// use the interactive quota); else Flex when the deadline leaves the
// quota's time for the whole job plus FlexLatency; otherwise Standard, the fastest tier gemq may pick without
// paying more (Priority costs more and is never chosen by Auto).
func Choose(now, deadline time.Time, tasks int, perMinute int64) Choice {
	var quota time.Duration
	if perMinute > 0 && tasks > 0 {
		quota = time.Duration(float64(tasks) / float64(perMinute) * float64(time.Minute))
	}
	left := deadline.Sub(now)
	if left >= BatchTarget {
		return Choice{Tier: Batch, Reason: fmt.Sprintf("batch (50%% of the standard price): the deadline is %s away, at least the Batch API's turnaround target of %s",
			round(left), BatchTarget)}
	}
	need := quota + FlexLatency
	if left >= need {
		return Choice{Tier: Flex, Reason: fmt.Sprintf("flex (50%% of the standard price): the deadline is %s away, at least the %s the quota needs for %d request(s) plus flex's latency target of up to %s",
			round(left), round(quota), tasks, FlexLatency)}
	}
	why := fmt.Sprintf("standard: the deadline is %s away, less than the %s flex would need (%s of quota for %d request(s) plus flex's latency target of up to %s)",
		round(left), round(need), round(quota), tasks, FlexLatency)
	if left < quota {
		why += "; even standard is expected to miss it"
	}
	return Choice{Tier: Standard, Reason: why}
}

// ForTask resolves a task's tier at the worker: Auto (a task published
// straight to the topic) is Batch when the deadline is at least
// BatchTarget away, Flex when at least FlexLatency, else Standard; any other value is returned as it is.
func ForTask(t Tier, now, deadline time.Time) Tier {
	if t != Auto {
		if t == "" {
			return Standard
		}
		return t
	}
	switch left := deadline.Sub(now); {
	case deadline.IsZero():
	case left >= BatchTarget:
		return Batch
	case left >= FlexLatency:
		return Flex
	}
	return Standard
}

func round(d time.Duration) time.Duration { return d.Round(time.Second) }

// Price is a model's standard-tier price in US dollars per million tokens.
type Price struct {
	// Input is the price of an input (prompt) token not served from a cache.
	Input float64 `json:"input"`
	// Cached is the price of an input token served from a context cache.
	Cached float64 `json:"cached"`
	// Output is the price of an output token, thinking tokens included.
	Output float64 `json:"output"`
}

// Factor is what a tier costs relative to standard
// (https://ai.google.dev/gemini-api/docs/optimization, read 2026-12-02):
// flex and batch 0.5; priority "75% to 100% more", taken at 2.0, the upper
// end, so an estimate never understates it.
func Factor(t Tier) float64 {
	switch t {
	case Flex, Batch:
		return 0.5
	case Priority:
		return 2.0
	}
	return 1
}

// Tokens are token counts as usageMetadata reports them: Input is
// promptTokenCount, which includes Cached (cachedContentTokenCount); Output
// is candidatesTokenCount and Thinking thoughtsTokenCount, billed as output.
type Tokens struct {
	Input, Cached, Output, Thinking int64
}

// Cost estimates what tokens cost at tier t under standard price p, in US
// dollars.
func Cost(p Price, t Tier, n Tokens) float64 {
	fresh := max(n.Input-n.Cached, 0)
	usd := (float64(fresh)*p.Input + float64(n.Cached)*p.Cached + float64(n.Output+n.Thinking)*p.Output) / 1e6
	return usd * Factor(t)
}
