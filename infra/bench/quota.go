package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/infra/stack"
	"github.com/gemq-dev/gemq/internal/limiter"
)

// QuotaRow is one row of issue 11's "Must show" table: a job run under
// gemq (Gemq) and under the limiter as it was before estimates learned and
// limits adapted (Base, GEMQ_LIMITER_BASELINE), same job, same run.
type QuotaRow struct {
	// Name selects the row (gemqbench -only NAME runs both runs).
	Name string
	// Scenario describes the row; Target is the target.
	Scenario, Target string
	Gemq, Base       PipelineOptions
}

// QuotaRows returns the rows in run order. Every job goes through the
// local stack against the stand-in's independent tokenizer.
func (s Scale) QuotaRows() []QuotaRow {
	base := PipelineOptions{Policy: "reserve", Minute: s.Minute, RPD: 10_000_000, Safety: 0.95, Guard: s.Guard,
		Latency: s.Latency, Seed: 11, PushConcurrency: s.PushConcurrency}
	windows := s.QuotaBacklog
	timeout := time.Duration(windows*6)*s.Minute + time.Minute
	// TPM-bound jobs: about RPM tasks of 200-800 true tokens per window.
	tpmJob := func(content string) PipelineOptions {
		o := base
		o.RPM, o.TPM, o.Content = s.RPM*4, s.RPM*500, content
		o.Tasks, o.MinTokens, o.MaxTokens, o.Timeout = int(windows*float64(s.RPM)), 200, 800, timeout
		return o
	}
	low := tpmJob(ContentDigits)
	high := tpmJob(ContentLong)
	// Seven-letter words are 8 characters per token: keep the job's bytes
	// near the others' (ingest publishes it in one request).
	high.TPM, high.MinTokens, high.MaxTokens = s.RPM*200, 100, 300
	mixed := tpmJob(ContentMixed)
	mixed.TPM = s.RPM * 300 // EstimatorPrompt's prompts average about 300 true tokens

	// DSQ: a hidden capacity of RPM requests per minute that drops to 40%
	// for two minutes after the second, gemq configured at the full
	// capacity; the stand-in's own limits do not bind.
	dsq := base
	dsq.RPM, dsq.TPM, dsq.QuotaRPM = s.RPM*10, s.RPM*10_000, s.RPM
	dsq.DSQ = fmt.Sprintf("%d/1m;2m=0.4;4m=1", s.RPM)
	dsq.Tasks, dsq.MinTokens, dsq.MaxTokens, dsq.Timeout = int(5.2*float64(s.RPM)), 50, 150, 3*timeout

	// Tier mismatch: the real limit is 60% of the configured one, and its
	// 429s carry it as quotaValue.
	tier := base
	tier.RPM, tier.TPM, tier.QuotaRPM = s.RPM*6/10, s.RPM*1000, s.RPM
	tier.Tasks, tier.MinTokens, tier.MaxTokens, tier.Timeout = int(windows*float64(tier.RPM)), 50, 150, 3*timeout

	rows := []QuotaRow{
		{Name: "est-low", Scenario: "estimates ~2× too low (digit-heavy job)", Gemq: low,
			Target: "429s ≤ 1% of calls; Gemini calls/task ≤ 1.02; invocations/task ≤ 2.0; completion ≤ 1.10× minimum"},
		{Name: "est-high", Scenario: "estimates ~2× too high (prose of 7-letter words)", Gemq: high,
			Target: "completion ≤ 1.10× minimum"},
		{Name: "mixed", Scenario: "mixed job (prose, digits, CJK, JSON, an image part)", Gemq: mixed,
			Target: "429s ≤ 1%; no window over the real limit"},
		{Name: "dsq", Scenario: "DSQ, hidden capacity 100% → 40% → 100%", Gemq: dsq,
			Target: "≥ 90% of the hidden capacity used; 429s ≤ 3% of calls; no task dead-lettered for 429s"},
		{Name: "tier", Scenario: "tier mismatch (real limit 60% of configured)", Gemq: tier,
			Target: "converges within 2 periods; 0 429s after that"},
	}
	for i := range rows {
		r := &rows[i]
		r.Gemq.Name = r.Name
		r.Base = r.Gemq
		r.Base.Name, r.Base.Baseline = r.Name+"-base", true
	}
	return rows
}

// estimateErrors records actual/estimate over the job's tasks: of the raw
// estimate, and of the estimate with the factors learned by the end of the
// run, read from the stack's Redis as the worker's limiter sees them.
func (r *PipelineResult) estimateErrors(ctx context.Context, st *stack.Stack, tasks []JobTask) error {
	factors := map[string]float64{}
	if !r.Opts.Baseline {
		cfg, err := limiter.ParseConfig([]byte(r.Opts.quotasJSON()))
		if err != nil {
			return err
		}
		rdb := redis.NewClient(&redis.Options{Addr: st.RedisAddr})
		defer rdb.Close()
		lim := limiter.New(rdb, cfg)
		for _, t := range tasks {
			if _, ok := factors[t.Kind]; !ok {
				f, err := lim.Factor(ctx, limiter.Scope{Project: st.Project, Model: Model}, t.Kind)
				if err != nil {
					return err
				}
				factors[t.Kind] = f
			}
		}
		r.Factors = factors
	}
	var raw, learned []float64
	for _, t := range tasks {
		f := 1.0
		if !r.Opts.Baseline {
			f = factors[t.Kind]
		}
		raw = append(raw, float64(t.Truth)/float64(max(t.Raw, 1)))
		learned = append(learned, float64(t.Truth)/math.Ceil(float64(t.Raw)*f))
	}
	r.EstRawMedian, r.EstRawP99 = ratioQuantile(raw, 0.5), ratioQuantile(raw, 0.99)
	r.EstLearnedMedian, r.EstLearnedP99 = ratioQuantile(learned, 0.5), ratioQuantile(learned, 0.99)
	return nil
}

// dsqUsed is the fraction of the hidden capacity d a job used: the
// shortest time in which d lets ok calls through from the first call (a
// client that sends whenever the sliding window has room, the first
// window's burst included), over the time the job's calls took (first
// call to last successful call). Times are stand-in time from the
// submission, where d's steps count from.
func dsqUsed(d geminisim.DSQ, ok int, first, last time.Duration) float64 {
	if ok == 0 || last <= first {
		return 0
	}
	win := d.Window
	if win <= 0 {
		win = time.Minute
	}
	const step = 50 * time.Millisecond
	var sent []time.Duration
	t := first
	for {
		for len(sent) < ok {
			i := sort.Search(len(sent), func(j int) bool { return sent[j] > t-win })
			if int64(len(sent)-i) >= d.Capacity(t) {
				break
			}
			sent = append(sent, t)
		}
		if len(sent) == ok {
			break
		}
		t += step
	}
	return float64(t-first) / float64(last-first)
}

// QuotaSection renders the rows: per row the target, gemq's and the
// baseline's figures from the same run, and PASS or MISS on gemq's.
func QuotaSection(rows []QuotaRow, results map[string]PipelineResult, command string) Section {
	var out []Row
	for _, q := range rows {
		g, okG := results[q.Gemq.Name]
		b, okB := results[q.Base.Name]
		if !okG || !okB {
			continue
		}
		pass, value := quotaVerdict(q.Name, g)
		met := "MISS"
		if pass {
			met = "PASS"
		}
		_, bvalue := quotaVerdict(q.Name, b)
		out = append(out, Row{Metric: q.Scenario, Value: "gemq: " + value + "<br>before issue 11: " + bvalue, Target: q.Target, Met: met})
		out = append(out, Info(q.Name+": estimate error actual/estimate (median, p99)", fmt.Sprintf("raw characters/4: %.2f, %.2f; learned by the end (gemq): %.2f, %.2f; factors %s",
			g.EstRawMedian, g.EstRawP99, g.EstLearnedMedian, g.EstLearnedP99, factorList(g.Factors))))
		out = append(out, Info(q.Name+": runs", fmt.Sprintf("gemq: %s<br>before issue 11: %s", runLine(g), runLine(b))))
	}
	return Section{ID: "quota-truth", Title: "Quota truth: estimate error and adaptive limits, gemq against the limiter before issue 11 (same jobs, same run)",
		Command: command, Rows: out, Notes: []string{
			"Each row runs one job twice through the whole local stack, against the Gemini stand-in's independent tokenizer (`geminisim.IndependentTokens`, not gemq's estimator): once as gemq runs (`GEMQ_LIMITER_BASELINE` unset) and once with `GEMQ_LIMITER_BASELINE=true` (`limiter.WithoutAdaptation`: the raw characters/4 estimate, no learned factors, no AIMD, no quota-value lowering — the limiter before issue 11; reservations, reconciles, the shared per-minute cool-down and per-task back-off stay). PASS/MISS judges gemq's figures against the issue's target.",
			"Figures from the stand-in's log, in stand-in time. 429s are a share of all generateContent calls received; calls/task and invocations/task are per succeeded task (invocations: pushes + Cloud Task callbacks, counted before the worker); completion over the theoretical minimum of the stand-in's real limits (as in the utilisation sections). Estimate error: actual/estimate over the job's tasks, actual = the stand-in's count, estimate = characters/4 (raw) or raw × the factor learned for the task's kind at the end of the run (so it is the error after learning, not what the first tasks were charged).",
			"DSQ: the stand-in admits at most the hidden capacity per sliding minute (RPM at full, 40% of it from minute 2 to minute 4 after the submission) and answers 429 without details beyond it; gemq is configured with the full capacity. \"Hidden capacity used\" = the shortest time in which the hidden capacity lets the job's successful calls through from the first call, over the time they took. Tier mismatch: the stand-in enforces 60% of the RPM gemq is configured with and its 429s carry that limit as `quotaValue`; converged = no 429 more than two periods after the first call.",
		}}
}

// quotaVerdict judges one run against its row's target and formats it.
func quotaVerdict(name string, r PipelineResult) (bool, string) {
	n := max(r.Succeeded, 1)
	rate := float64(r.Status429) / float64(max(r.GeminiCalls, 1))
	calls, inv := perTask(r.GeminiCalls, n), perTask(r.WorkerCalls, n)
	ratio := r.Completion.Seconds() / math.Max(r.TMin.Seconds(), 1e-9)
	all := r.Succeeded == r.Accepted && r.Accepted > 0 && r.Error == ""
	switch name {
	case "est-low":
		return all && rate <= 0.01 && calls <= 1.02 && inv <= 2.0 && ratio <= 1.10,
			fmt.Sprintf("429s %.2f%%, calls/task %.3f, invocations/task %.3f (max %d), completion %.3f× minimum", 100*rate, calls, inv, r.MaxInvocations, ratio)
	case "est-high":
		return all && ratio <= 1.10, fmt.Sprintf("completion %.3f× minimum (429s %.2f%%)", ratio, 100*rate)
	case "mixed":
		over := r.PeakTPM > r.Opts.TPM || r.PeakRPM > r.Opts.RPM
		return all && rate <= 0.01 && !over, fmt.Sprintf("429s %.2f%%, peak minute %d tokens (real limit %d), %d requests (limit %d)",
			100*rate, r.PeakTPM, r.Opts.TPM, r.PeakRPM, r.Opts.RPM)
	case "dsq":
		return all && r.DSQUsed >= 0.90 && rate <= 0.03 && r.Failed == 0,
			fmt.Sprintf("hidden capacity used %.3f, 429s %.2f%% (%d of %d calls), failed %d", r.DSQUsed, 100*rate, r.Status429, r.GeminiCalls, r.Failed)
	case "tier":
		return all && r.Late429 == 0, fmt.Sprintf("last 429 %.1f periods after the first call, %d 429s after two periods (%d in all, %.2f%%)",
			(r.Last429 - r.FirstCall).Minutes(), r.Late429, r.Status429, 100*rate)
	}
	return false, "unknown row"
}

func runLine(r PipelineResult) string {
	n := max(r.Succeeded, 1)
	s := fmt.Sprintf("%d/%d succeeded, %d failed; %d calls (%d 429s), %.3f invocations/task (max %d); completion %s (minimum %s)",
		r.Succeeded, r.Accepted, r.Failed, r.GeminiCalls, r.Status429, perTask(r.WorkerCalls, n), r.MaxInvocations,
		minutes(r.Completion), minutes(r.TMin))
	if r.Error != "" {
		s += "; " + r.Error
	}
	return s
}

func factorList(f map[string]float64) string {
	if len(f) == 0 {
		return "none"
	}
	var ks []string
	for k := range f {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	s := ""
	for i, k := range ks {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s %.2f", k, f[k])
	}
	return s
}
