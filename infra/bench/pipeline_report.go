package bench

import (
	"fmt"
	"time"
)

func minutes(d time.Duration) string { return fmt.Sprintf("%.2f min", d.Minutes()) }

func perTask(n, tasks int) float64 { return float64(n) / float64(max(tasks, 1)) }

// UtilisationSection renders benchmark 1 for one run (stand-in time).
func UtilisationSection(r PipelineResult, title, command string) Section {
	o := r.Opts
	ratio := r.Completion.Seconds() / r.TMin.Seconds()
	rows := []Row{
		Info("job", fmt.Sprintf("%d tasks (%d–%d input tokens), limits %d RPM / %d TPM / %d RPD, safety %.2f, minute = %v real (×%.0f), guard %v real, latency %s",
			r.Accepted, o.MinTokens, o.MaxTokens, o.RPM, o.TPM, o.RPD, o.Safety, o.Minute, float64(time.Minute)/float64(o.Minute), o.Guard, o.Latency)),
		Check("completion time / theoretical minimum", fmt.Sprintf("%s / %s = %.3f (binding: %s)", minutes(r.Completion), minutes(r.TMin), ratio, r.Binding),
			"≤ 1.03", ratio <= 1.03),
		Info("requests per minute achieved (mean of full minutes)", fmt.Sprintf("%.1f = %.3f × safety×limit (%d), %.3f × limit; lowest full window %d (%d full windows)",
			r.MeanRPM, r.MeanRPM/float64(r.CapRPM), r.CapRPM, r.MeanRPM/float64(o.RPM), r.MinFullRPM, r.FullWindows)),
		Info("input tokens per minute achieved (mean of full minutes)", fmt.Sprintf("%.0f = %.3f × safety×limit (%d), %.3f × limit; lowest full window %d",
			r.MeanTPM, r.MeanTPM/float64(r.CapTPM), r.CapTPM, r.MeanTPM/float64(o.TPM), r.MinFullTPM)),
		Check("peak sliding-minute requests", fmt.Sprintf("%d (safety×limit %d, limit %d)", r.PeakRPM, r.CapRPM, o.RPM), "≤ safety × limit", r.PeakRPM <= r.CapRPM),
		Check("peak sliding-minute input tokens", fmt.Sprintf("%d (safety×limit %d, limit %d)", r.PeakTPM, r.CapTPM, o.TPM), "≤ safety × limit", r.PeakTPM <= r.CapTPM),
		Check("windows over safety × limit (limiter.CheckWindows on the log)", fmt.Sprintf("%d", r.Violations), "0", r.Violations == 0),
		Check("tasks succeeded", fmt.Sprintf("%d / %d (failed %d)", r.Succeeded, r.Accepted, r.Failed), "all", r.Succeeded == r.Accepted && r.Accepted > 0),
	}
	return Section{ID: "util-" + o.Name, Title: title, Command: command, Rows: rows, Notes: []string{
		"All figures come from the Gemini stand-in's request log, in stand-in time (where a quota minute lasts one minute). " +
			"Theoretical minimum = (⌈U / ⌊safety × limit⌋⌉ − 1) × 1 min + the latency model's median, for the binding dimension (U = tasks for RPM, the input tokens charged for the successful calls for TPM): " +
			"the first window's burst is counted (⌊safety × limit⌋ calls at once at t = 0), so it is a lower bound no limiter can beat; completion time runs from the POST to ingest to the end of the last successful answer. " +
			"Achieved per minute: the run is cut into consecutive minutes from the first call; the mean and the lowest of the complete ones are shown. The peak is the largest total in any sliding window (x − 1 min, x] over the instants the stand-in received the calls.",
	}}
}

// WasteSection renders benchmarks 2 and 3 over several runs.
func WasteSection(rs []PipelineResult, command string) (Section, Section) {
	var waste, inv []Row
	for _, r := range rs {
		n := r.Succeeded
		calls := perTask(r.GeminiCalls, n)
		rate := float64(r.Status429) / float64(max(r.GeminiCalls, 1))
		label := fmt.Sprintf("%s (%s", r.Opts.Name, r.Opts.Policy)
		if r.Opts.TokenSkew > 0 {
			label += fmt.Sprintf(", estimates off by up to ±%.0f%%", r.Opts.TokenSkew*100)
		} else {
			label += ", exact estimates"
		}
		label += ")"
		if r.Opts.Policy == "seed" {
			waste = append(waste, Info(label+": Gemini calls per completed task", fmt.Sprintf("%.3f (%d calls, %d ok)", calls, r.GeminiCalls, r.OK)),
				Info(label+": 429s", fmt.Sprintf("%d (%.2f%% of calls)", r.Status429, 100*rate)))
			inv = append(inv, Info(label+": worker invocations per task", fmt.Sprintf("%.3f (max %d)", perTask(r.WorkerCalls, n), r.MaxInvocations)),
				Info(label+": Cloud Tasks created per task", fmt.Sprintf("%.3f", perTask(r.TasksCreated, n))),
				Info(label+": stack CPU-seconds per task", fmt.Sprintf("%.4f", r.CPU.Seconds()/float64(max(n, 1)))))
			continue
		}
		target, ok := "0", r.Status429 == 0
		if r.Opts.TokenSkew > 0 {
			target, ok = "< 0.5% of calls", rate < 0.005
		}
		waste = append(waste,
			Check(label+": Gemini calls per completed task", fmt.Sprintf("%.3f (%d calls, %d ok, %d duplicates)", calls, r.GeminiCalls, r.OK, r.DuplicateCalls), "≤ 1.01", calls <= 1.01),
			Check(label+": 429s", fmt.Sprintf("%d (%.2f%% of calls)", r.Status429, 100*rate), target, ok),
			Check(label+": every task succeeded", fmt.Sprintf("%d / %d", r.Succeeded, r.Accepted), "all", r.Succeeded == r.Accepted && r.Accepted > 0),
			Info(label+": peak sliding-minute input tokens", fmt.Sprintf("%d (safety×limit %d, limit %d; %d windows over safety×limit)", r.PeakTPM, r.CapTPM, r.Opts.TPM, r.Violations)))
		inv = append(inv,
			Check(label+": worker invocations per task", fmt.Sprintf("%.3f (max %d for one task; %d via Cloud Tasks)", perTask(r.WorkerCalls, n), r.MaxInvocations, r.WorkerTaskCalls),
				"≤ 2.0", perTask(r.WorkerCalls, n) <= 2 && r.MaxInvocations <= 2),
			Info(label+": Cloud Tasks created per task", fmt.Sprintf("%.3f", perTask(r.TasksCreated, n))),
			Info(label+": stack CPU-seconds per task", fmt.Sprintf("%.4f (whole in-process stack + redis-server, %v wall)", r.CPU.Seconds()/float64(max(n, 1)), r.Wall.Round(time.Second))))
	}
	return Section{ID: "waste", Title: "429s and waste", Command: command, Rows: waste, Notes: []string{
			"Counted in the stand-in's log: every generateContent it received (whatever its answer) per task that succeeded; a duplicate is a call for a task that had already been answered OK. With skew, the stand-in charges (and reports in usageMetadata) each request's tokens times a random factor in [0.7, 1.3], so gemq's local estimate is off and only reconciliation keeps the windows right.",
		}}, Section{ID: "invocations", Title: "Invocations", Command: command, Rows: inv, Notes: []string{
			"Worker invocations are counted by the local stack's front server before the worker (push deliveries + Cloud Task callbacks); Cloud Tasks created by the emulator. " +
				"Function-seconds per task are not reported yet: the stack does not expose per-invocation durations (requested). Stack CPU-seconds per task is the benchmark process's user+system CPU (ingest, push loop, worker, Cloud Tasks emulator, stand-in) plus redis-server's, over the run, per succeeded task: an upper bound on the worker's own CPU.",
		}}
}

// SeedSection renders benchmark 4: gemq against the seed's policy on the
// same job in the same run.
func SeedSection(g, s PipelineResult, command string) Section {
	ratio := func(a, b float64) string {
		if b == 0 {
			return "n/a (seed 0)"
		}
		return fmt.Sprintf("%.3f", a/b)
	}
	gi, si := perTask(g.WorkerCalls, g.Succeeded), perTask(s.WorkerCalls, s.Succeeded)
	gc, sc := perTask(g.GeminiCalls, g.Succeeded), perTask(s.GeminiCalls, s.Succeeded)
	rows := []Row{
		Info("completion time (gemq, seed)", fmt.Sprintf("%s, %s (seed: %d/%d succeeded)", minutes(g.Completion), minutes(s.Completion), s.Succeeded, s.Accepted)),
		Info("gemq/seed completion time", ratio(g.Completion.Seconds(), s.Completion.Seconds())),
		Check("gemq/seed worker invocations per task", fmt.Sprintf("%s (%.3f vs %.3f)", ratio(gi, si), gi, si), "gemq below seed", gi < si),
		Info("gemq/seed Gemini calls per task", fmt.Sprintf("%s (%.3f vs %.3f)", ratio(gc, sc), gc, sc)),
		Info("gemq/seed 429s", fmt.Sprintf("%s (%d vs %d)", ratio(float64(g.Status429), float64(s.Status429)), g.Status429, s.Status429)),
		Info("seed: peak sliding-minute requests", fmt.Sprintf("%d (safety×limit %d, limit %d; %d windows over)", s.PeakRPM, s.CapRPM, s.Opts.RPM, s.Violations)),
	}
	return Section{ID: "seed", Title: "gemq against the seed's deny-and-retry policy (same job, same run)", Command: command, Rows: rows, Notes: []string{
		"The seed policy is the worker's GEMQ_LIMIT_POLICY=seed: the same limiter, but a permit is granted or refused; a refused task gives its reservation back and is re-queued through Cloud Tasks with an exponential, jittered delay (base 1 s, cap 1 min, real time); 429s are retried the same way without a shared cool-down. Everything else (ingest, Pub/Sub, worker, Cloud Tasks, stand-in) is shared. " +
			"Note: the worker's seed delays are not scaled with the quota minute, so in a scaled run they are relatively longer than in real time (a 1 s base is 10 s of stand-in time at ×10).",
	}}
}
