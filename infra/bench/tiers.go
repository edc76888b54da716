package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/gemq-dev/gemq/internal/tier"
)

// TierOutcome is what a job run at a service tier reported: its cost
// report (GET /v1/jobs/{id}) and its results (GET /v1/jobs/{id}/results).
type TierOutcome struct {
	Cost *tier.Report `json:"cost"`
	// ResultLines is the number of result lines, DistinctKeys the keys
	// among them.
	ResultLines, DistinctKeys int
}

// tierQuery is the submit URL's service_tier parameter (after the job id).
func tierQuery(t string) string {
	if t == "" {
		return ""
	}
	return "&service_tier=" + url.QueryEscape(t)
}

// tierOutcome reads a finished job's cost and results; failures are logged
// and leave the figures out.
func tierOutcome(ctx context.Context, base, jobID string, logw io.Writer) *TierOutcome {
	out := &TierOutcome{}
	get := func(path string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		return http.DefaultClient.Do(req)
	}
	resp, err := get("/v1/jobs/" + jobID)
	if err == nil {
		var js struct {
			Cost *tier.Report `json:"cost"`
		}
		err = json.NewDecoder(resp.Body).Decode(&js)
		resp.Body.Close()
		out.Cost = js.Cost
	}
	if err != nil {
		fmt.Fprintf(logw, "gemqbench: job cost: %v\n", err)
	}
	resp, err = get("/v1/jobs/" + jobID + "/results")
	if err != nil {
		fmt.Fprintf(logw, "gemqbench: job results: %v\n", err)
		return out
	}
	defer resp.Body.Close()
	keys := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 8<<20)
	for sc.Scan() {
		var l struct {
			Key string `json:"key"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out.ResultLines++
			keys[l.Key] = true
		}
	}
	out.DistinctKeys = len(keys)
	return out
}

// TierScenarios are the service tier runs: the same job, smaller than the
// utilisation runs (Backlog/4 quota minutes), at standard, flex and batch.
// The batch run's stand-in keeps its Batch API defaults (pending 30 s,
// running 2 min, stand-in time) and the stack's collect window and polls
// (60 s, 30 s to 10 min, scaled like the minute).
func (s Scale) TierScenarios() []PipelineOptions {
	tasks := int(s.Backlog / 4 * float64(s.RPM))
	o := PipelineOptions{Policy: "reserve", Minute: s.Minute, RPD: 10_000_000, Safety: 0.95, Guard: s.Guard,
		Latency: s.Latency, Seed: 3, PushConcurrency: s.PushConcurrency, RPM: s.RPM, TPM: s.RPM * 1000,
		Tasks: tasks, MinTokens: 50, MaxTokens: 150, Timeout: time.Duration(s.Backlog)*s.Minute + time.Minute}
	std, flex, batch := o, o, o
	std.Name, std.ServiceTier = "tier-standard", "standard"
	flex.Name, flex.ServiceTier = "tier-flex", "flex"
	batch.Name, batch.ServiceTier = "tier-batch", "batch"
	batch.Timeout += 10 * s.Minute
	return []PipelineOptions{std, flex, batch}
}

// TierSection compares one job run at standard, flex and batch (batch nil:
// not run).
func TierSection(std, flex PipelineResult, batch *PipelineResult, command string) Section {
	var rows []Row
	cost := func(r PipelineResult) float64 {
		if r.Tiers == nil || r.Tiers.Cost == nil {
			return 0
		}
		return r.Tiers.Cost.EstimatedUSD
	}
	runs := []PipelineResult{std, flex}
	if batch != nil {
		runs = append(runs, *batch)
	}
	for _, r := range runs {
		label := r.Opts.ServiceTier
		lost := r.Accepted - r.Succeeded - r.Failed
		lines, keys := 0, 0
		if r.Tiers != nil {
			lines, keys = r.Tiers.ResultLines, r.Tiers.DistinctKeys
		}
		calls := perTask(r.GeminiCalls, r.Succeeded)
		rows = append(rows,
			Info(label+": estimated cost", fmt.Sprintf("$%.4f for %d tasks", cost(r), r.Succeeded)),
			Info(label+": completion", fmt.Sprintf("%s (stand-in time; %v real)", minutes(r.Completion), r.Wall.Round(time.Second))),
			Check(label+": tasks lost", fmt.Sprintf("%d of %d accepted (%d succeeded, %d failed)", lost, r.Accepted, r.Succeeded, r.Failed), "0", lost == 0 && r.Accepted > 0),
			Check(label+": results per task", fmt.Sprintf("%d lines for %d keys, %d tasks", lines, keys, r.Accepted), "1", lines == r.Accepted && keys == r.Accepted))
		if label == "batch" {
			rows = append(rows, Info(label+": Batch API answers", fmt.Sprintf("%d entries answered, %d not; %d interactive calls (fallbacks)",
				r.BatchAnswered, r.BatchFailed, r.GeminiCalls)))
			continue
		}
		rows = append(rows, Check(label+": Gemini calls per task", fmt.Sprintf("%.3f (%d calls: %d ok, %d 429s, %d other failures; %d duplicates)",
			calls, r.GeminiCalls, r.OK, r.Status429, r.Other, r.DuplicateCalls), "≤ 1.02", calls <= 1.02 && r.Succeeded > 0))
	}
	ratio := cost(flex) / max(cost(std), 1e-12)
	rows = append(rows, Check("flex cost / standard cost (same job, same run)", fmt.Sprintf("%.3f", ratio), "≤ 0.5", cost(std) > 0 && ratio <= 0.5+1e-9))
	if batch != nil {
		ratio := cost(*batch) / max(cost(std), 1e-12)
		rows = append(rows, Check("batch cost / standard cost (same job, same run)", fmt.Sprintf("%.3f", ratio), "≤ 0.5", cost(std) > 0 && ratio <= 0.5+1e-9))
	}
	return Section{ID: "tiers", Title: "Service tiers: standard vs flex vs batch", Command: command, Rows: rows, Notes: []string{
		"The same job (the RPM-bound job's prompts, a quarter of its size) is submitted once with service_tier=standard, once with flex and once with batch, each through its own local stack; the stand-in sheds no flex request here (the flex storm is an end-to-end test, infra/stack), and its Batch API answers every entry (pending 30 s, running 2 min, stand-in time). " +
			"Estimated cost is the job status's cost report: the tokens the stand-in reported in usageMetadata (input, cached, output, thinking), summed per job and serving tier by the terminal writes, priced at the default price table (internal/config, gemini-2.5-flash) with flex and batch at 0.5x. " +
			"Tasks lost = accepted - succeeded - failed from the job status; results per task from GET /v1/jobs/{id}/results; Gemini calls from the stand-in's log (batch entries are not calls; a batch's completion is its last answered entry). " +
			"Completion of standard and flex is not a tier effect here (the stand-in serves both alike): the runs are sequential on a shared machine; batch's is the collect window, the batch's pending and running time and the poll back-off.",
	}}
}
