package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/infra/stack"
	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/limiter"
)

// PipelineOptions describe one job run through the whole local stack
// (benchmarks 1-4): ingest over HTTP, Pub/Sub (pstest) with the push loop,
// the worker over HTTP, the Cloud Tasks emulator, the Gemini stand-in and a
// real redis-server, all from infra/stack.
type PipelineOptions struct {
	// Name identifies the run ("rpm", "seed-rpm", …).
	Name string `json:"name"`
	// Policy is GEMQ_LIMIT_POLICY: "reserve" (gemq) or "seed".
	Policy string `json:"policy"`
	// Minute is the scaled quota minute (stand-in and limiter alike).
	Minute time.Duration `json:"minute"`
	// RPM, TPM, RPD are the stand-in's limits and the limiter's quota.
	RPM, TPM, RPD int64
	// Safety is the limiter's safety factor.
	Safety float64 `json:"safety"`
	// Guard is the limiter's guard time in real time (GEMQ_QUOTAS "guard").
	Guard time.Duration `json:"guard"`
	// Tasks is the job's size; MinTokens..MaxTokens the input tokens of each
	// request (uniform).
	Tasks                int `json:"tasks"`
	MinTokens, MaxTokens int
	// Latency is the stand-in's latency spec (geminisim.ParseLatency), in
	// stand-in time.
	Latency string `json:"latency"`
	// TokenSkew is the stand-in's token-count skew (0.3: ±30%).
	TokenSkew float64 `json:"token_skew"`
	// Seed makes prompts and the stand-in's choices reproducible.
	Seed uint64 `json:"seed"`
	// PushConcurrency bounds the push loop's deliveries in flight.
	PushConcurrency int `json:"push_concurrency"`
	// Timeout bounds the whole run (real time).
	Timeout time.Duration `json:"timeout"`
	// Baseline runs the worker with GEMQ_LIMITER_BASELINE=true: no learned
	// estimates, no AIMD, no quota-value lowering (gemq before issue 11).
	Baseline bool `json:"baseline,omitempty"`
	// Content is what the prompts are made of (ContentWords, ContentDigits,
	// ContentLong, ContentMixed).
	Content string `json:"content,omitempty"`
	// DSQ is the stand-in's hidden capacity (geminisim.ParseDSQ, stand-in
	// time from the job's submission); "" for none.
	DSQ string `json:"dsq,omitempty"`
	// QuotaRPM and QuotaTPM, when set, are the limits gemq is configured
	// with (GEMQ_QUOTAS) instead of the stand-in's RPM and TPM: a tier
	// mismatch.
	QuotaRPM, QuotaTPM int64 `json:",omitempty"`
	// ServiceTier is the job's service_tier ("" for the default).
	ServiceTier string `json:"service_tier,omitempty"`
	// WarmUp, when > 0, runs a job of that many tasks first on the same
	// stack, then waits a quota period and clears the stand-in's log and
	// windows: the measured job then runs on a deployment that has
	// learned Cloud Tasks' dispatch lag (the claim lead, shared through
	// Redis), as every job but a fresh deployment's first does. Nothing
	// of the warm-up job is counted.
	WarmUp int `json:"warm_up,omitempty"`
}

// Model is the model every benchmark job uses.
const Model = "gemini-2.5-flash"

// PipelineResult is what one run measured. Durations marked "stand-in" are
// in stand-in time (a quota minute lasts one minute there).
type PipelineResult struct {
	Opts PipelineOptions `json:"opts"`
	// Accepted is what ingest accepted; Succeeded/Failed the job's final
	// counts (from the job status API, only to know when it is done).
	Accepted, Succeeded, Failed int
	// Completion is from the POST to the last successful answer's finish
	// (stand-in); TMin the theoretical minimum (stand-in), Binding its
	// dimension.
	Completion, TMin time.Duration
	Binding          string
	// MedianLatency is the stand-in latency model's median (stand-in), part
	// of TMin (the last call's answer).
	MedianLatency time.Duration
	// From the stand-in's log: generateContent calls received, of which OK
	// and 429; calls for tasks already answered OK (duplicates).
	GeminiCalls, OK, Status429, Other int
	DuplicateCalls                    int
	// BatchAnswered counts the Batch API entries answered with a response
	// (the stand-in's "batchEntry" log lines), BatchFailed those answered
	// with an error or ended unanswered (expired, cancelled, failed).
	BatchAnswered, BatchFailed int
	// Peak sliding windows (1 stand-in minute) and capacities.
	PeakRPM, PeakTPM, CapRPM, CapTPM int64
	// Mean and smallest total of the complete stand-in minutes counted
	// from the first received call (see WindowRates).
	MeanRPM, MeanTPM       float64
	MinFullRPM, MinFullTPM int64
	FullWindows            int
	// WindowsRPM and WindowsTPM are those complete minutes, in order.
	WindowsRPM, WindowsTPM []int64
	// Violations found by limiter.CheckWindows over the log at safety × limit.
	Violations int
	// Invocations: worker calls (push + Cloud Tasks), Cloud Tasks created,
	// the most invocations any task had.
	WorkerCalls, WorkerTaskCalls, TasksCreated, MaxInvocations int
	// WorkerTime is the worker's handling time summed over its calls
	// (infra/stack Stats.WorkerTime, real time: what Cloud Functions bills);
	// WorkerTimeMax the longest call.
	WorkerTime, WorkerTimeMax time.Duration
	// GeminiTime is the real time the stand-in spent answering the
	// generateContent calls, summed (part of WorkerTime; see cost.go).
	GeminiTime time.Duration
	// Lags are, for each successful call made under a reservation that
	// was deferred to a Cloud Task, how long after the permit's At (the
	// reserved slot) the stand-in received the call, in real time, from
	// the worker's "task deferred" log line and the stand-in's log; sorted.
	Lags []time.Duration `json:",omitempty"`
	// SlotWait is the worker's time spent waiting in the handler for
	// reserved slots (the claim lead), summed over the "claimed the
	// reserved slot after waiting for it" log lines (real time); part of
	// WorkerTime.
	SlotWait time.Duration
	// FirstCall and LastCall are when the stand-in received the first and
	// the last generateContent, from the POST (stand-in time).
	FirstCall, LastCall time.Duration
	// Wall is the run's real time from POST to done; CPU the process's
	// (and its redis-server's) user+system CPU over the same run.
	Wall, CPU time.Duration
	// Estimate error, actual/estimate over the job's tasks against the
	// stand-in's count: of gemq's raw local estimate, and of the estimate
	// with the correction factors learned by the end of the run (the
	// baseline learns nothing: its factor is 1).
	EstRawMedian, EstRawP99, EstLearnedMedian, EstLearnedP99 float64 `json:",omitempty"`
	// Factors are the learned correction factors per kind at the end.
	Factors map[string]float64 `json:",omitempty"`
	// Late429 counts the 429s received more than two quota periods after
	// the first call; Last429 is when the last 429 was received (stand-in,
	// from the POST).
	Late429 int           `json:",omitempty"`
	Last429 time.Duration `json:",omitempty"`
	// LastOK is when the stand-in received the last call it answered OK.
	LastOK time.Duration `json:",omitempty"`
	// DSQUsed is, with a hidden capacity, the fraction of it the job used:
	// the shortest time in which the hidden capacity lets the job's
	// successful calls through from the first call, over the time they
	// took (first call to last successful call).
	DSQUsed float64 `json:",omitempty"`
	// Tiers is what the job's status reported for a run with a
	// ServiceTier: its cost and its results (see tiers.go).
	Tiers *TierOutcome `json:",omitempty"`
	// Error is set when the run did not finish.
	Error string `json:",omitempty"`
}

// quotasJSON is GEMQ_QUOTAS for o: the stand-in's limits in scaled minutes,
// the guard scaled explicitly.
func (o PipelineOptions) quotasJSON() string {
	rpm, tpm := o.RPM, o.TPM
	if o.QuotaRPM > 0 {
		rpm = o.QuotaRPM
	}
	if o.QuotaTPM > 0 {
		tpm = o.QuotaTPM
	}
	return fmt.Sprintf(`{"safety": %g, "guard": "%dms", "scopes": [{"project": "*", "model": %q, "dimensions": [
	 {"name": "rpm", "unit": "requests", "limit": %d, "period": "%dms"},
	 {"name": "tpm", "unit": "input_tokens", "limit": %d, "period": "%dms"},
	 {"name": "rpd", "unit": "requests", "limit": %d, "per": "pacific_day"}]}]}`,
		o.Safety, o.Guard.Milliseconds(), Model, rpm, o.Minute.Milliseconds(), tpm, o.Minute.Milliseconds(), o.RPD)
}

var words = strings.Fields(`quota window token request minute limiter gemini reserve sliding cloud task
	queue worker ingest publish redis script permit burst latency model answer prompt summary`)

// JobJSONL returns a Batch-API JSONL job of n requests of prose whose
// input tokens (the stand-in's count) are uniform in [minTok, maxTok], and
// the total of gemq's raw estimates of them.
func JobJSONL(n, minTok, maxTok int, seed uint64) ([]byte, int64, error) {
	body, tasks, err := ContentJob(ContentWords, n, minTok, maxTok, seed)
	var total int64
	for _, t := range tasks {
		total += t.Raw
	}
	return body, total, err
}

// JobTask is what a generated task's request is made of: gemq's local
// estimate (kind and raw tokens, gemini.EstimateKind) and the stand-in's
// independent count of it (Truth).
type JobTask struct {
	Kind       string
	Raw, Truth int64
}

// ContentJob returns a Batch-API JSONL job of n requests of content kind
// (ContentWords, ContentDigits, …) whose true sizes (the stand-in's
// independent count, what Gemini charges) are uniform in [minTok, maxTok]
// (ContentMixed's come from EstimatorPrompt), with each task's estimate and
// true count.
func ContentJob(kind string, n, minTok, maxTok int, seed uint64) ([]byte, []JobTask, error) {
	rng := rand.New(rand.NewPCG(seed, 7))
	var b bytes.Buffer
	tasks := make([]JobTask, 0, n)
	for i := range n {
		want := int64(minTok)
		if maxTok > minTok {
			want += rng.Int64N(int64(maxTok-minTok) + 1)
		}
		raw, err := jobLine(i, contentRequest(kind, i, want, rng))
		if err != nil {
			return nil, nil, err
		}
		req, err := gemini.ParseRequest(mustField(raw))
		if err != nil {
			return nil, nil, fmt.Errorf("generated request %d: %w", i, err)
		}
		k, est := gemini.EstimateKind(req)
		tasks = append(tasks, JobTask{Kind: k, Raw: est, Truth: geminisim.CountTokensIndependent(req.SystemInstruction, req.Contents)})
		b.Write(raw)
		b.WriteByte('\n')
	}
	return b.Bytes(), tasks, nil
}

func mustField(line []byte) []byte {
	var v struct {
		Request json.RawMessage `json:"request"`
	}
	json.Unmarshal(line, &v)
	return v.Request
}

// cpuTime is this process's user+system CPU plus that of its waited-for
// children (redis-server once stopped).
func cpuTime() time.Duration {
	var total time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return total
}

// RunPipeline starts a local stack, submits the job, waits until every task
// has finished, and analyses the stand-in's log. It starts a Stack, so it can
// run only once per process (see infra/stack); gemqbench runs each scenario in
// a child process.
func RunPipeline(ctx context.Context, o PipelineOptions, logw io.Writer) (PipelineResult, error) {
	res := PipelineResult{Opts: o}
	lat, err := geminisim.ParseLatency(o.Latency)
	if err != nil {
		return res, fmt.Errorf("latency: %w", err)
	}
	res.MedianLatency = lat.Median
	if lat.Kind == "fixed" {
		res.MedianLatency = lat.Fixed
	}
	body, tasks, err := ContentJob(o.Content, o.Tasks, o.MinTokens, o.MaxTokens, o.Seed)
	if err != nil {
		return res, err
	}
	dsq, err := geminisim.ParseDSQ(o.DSQ)
	if err != nil {
		return res, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	logDir, err := os.MkdirTemp("", "gemqbench-fn")
	if err != nil {
		return res, fmt.Errorf("log dir: %w", err)
	}
	if os.Getenv("GEMQBENCH_KEEP") == "" {
		defer os.RemoveAll(logDir)
	} else {
		fmt.Fprintln(logw, "gemqbench: keeping", logDir)
	}
	fnLog := filepath.Join(logDir, "functions.log")
	st, err := stack.Start(ctx, stack.Options{
		Getenv: func(string) string { return "" }, // never the user's REDIS_ADDR, keys or emulators
		Log:    logw,
		Model:  Model,
		Minute: o.Minute, RPM: o.RPM, TPM: o.TPM, RPD: o.RPD, Safety: o.Safety,
		Gemini: stack.GeminiOptions{Latency: lat, TokenSkew: o.TokenSkew, Seed: o.Seed, DSQ: dsq},
		Env: map[string]string{
			"GEMQ_LIMIT_POLICY":     o.Policy,
			"GEMQ_LIMITER_BASELINE": fmt.Sprint(o.Baseline),
			"GEMQ_QUOTAS":           o.quotasJSON(),
			"GEMQ_LOG_FILE":         fnLog, // parsed for the reserved slots (Lags)
		},
		Push: stack.PushOptions{Concurrency: o.PushConcurrency},
	})
	if err != nil {
		return res, fmt.Errorf("stack start: %w", err)
	}
	defer st.Close()
	sim := st.GeminiStandIn()

	jobID := "bench-" + o.Name
	if o.WarmUp > 0 {
		if err := warmUp(ctx, st.IngestURL, o, body); err != nil {
			return res, err
		}
		sim.Reset()
	}
	if dsq != nil {
		sim.Reset() // the hidden capacity's steps count from the submission
	}
	statsBefore := st.Stats()
	perBefore, _ := st.WorkerInvocations() // the warm-up job's tasks
	cpu0, wall0 := cpuTime(), time.Now()
	submitted := sim.Now()
	// The stand-in's clock is linear in real time: this pair maps one onto
	// the other (factor: stand-in seconds per real second).
	factor := float64(time.Minute) / float64(o.Minute)
	toReal := func(t time.Time) time.Time {
		return wall0.Add(time.Duration(float64(t.Sub(submitted)) / factor))
	}
	if res.Accepted, err = submitJob(ctx, st.IngestURL, jobID, tierQuery(o.ServiceTier), body); err != nil {
		return res, err
	}

	for {
		done, s, f, err := jobStatus(ctx, st.IngestURL, jobID)
		if err != nil {
			res.Error = err.Error()
			break
		}
		res.Succeeded, res.Failed = s, f
		if done {
			break
		}
		select {
		case <-ctx.Done():
			res.Error = fmt.Sprintf("timed out after %v with %d/%d succeeded", o.Timeout, s, res.Accepted)
		case <-time.After(100 * time.Millisecond):
			continue
		}
		break
	}
	res.Wall = time.Since(wall0)
	if err := res.estimateErrors(ctx, st, tasks); err != nil {
		fmt.Fprintf(logw, "gemqbench: learned factors: %v\n", err)
	}
	if o.ServiceTier != "" {
		res.Tiers = tierOutcome(ctx, st.IngestURL, jobID, logw)
	}
	stats := since(st.Stats(), statsBefore)
	perTask, _ := st.WorkerInvocations()
	log := sim.Log()
	st.Close()
	res.CPU = cpuTime() - cpu0
	res.WorkerCalls, res.WorkerTaskCalls = int(stats.WorkerCalls), int(stats.WorkerTaskCalls)
	res.WorkerTime, res.WorkerTimeMax = stats.WorkerTime, stats.WorkerTimeMax
	if o.Policy == "reserve" {
		slots, wait, err := reservedSlots(fnLog, jobID)
		res.SlotWait = wait
		if err != nil {
			fmt.Fprintf(logw, "gemqbench: reserved slots: %v\n", err)
		}
		res.Lags = slotLags(log, slots, toReal)
	}
	res.TasksCreated = stats.Tasks.Created
	for id, n := range perTask {
		if _, warm := perBefore[id]; !warm {
			res.MaxInvocations = max(res.MaxInvocations, n)
		}
	}
	res.GeminiTime = geminiRealTime(log, factor)
	res.analyse(log, submitted)
	if dir := os.Getenv("GEMQBENCH_TIMELINE"); dir != "" {
		if f, err := os.Create(dir + "/" + o.Name + ".txt"); err == nil {
			timeline(f, log, submitted)
			f.Close()
		}
	}
	if dsq != nil {
		res.DSQUsed = dsqUsed(*dsq, res.OK, res.FirstCall, res.LastOK)
	}
	if res.Error != "" {
		return res, fmt.Errorf("%s: %s", o.Name, res.Error)
	}
	return res, nil
}

// since is what the counters the benchmarks use (worker calls and time,
// Cloud Tasks created) grew by from b to a; the longest call is a's.
func since(a, b stack.Stats) stack.Stats {
	a.WorkerCalls -= b.WorkerCalls
	a.WorkerTaskCalls -= b.WorkerTaskCalls
	a.WorkerTime -= b.WorkerTime
	a.Tasks.Created -= b.Tasks.Created
	return a
}

// warmUp runs a job of o.WarmUp tasks (the first of the measured job's
// lines, under another job id) to its end, then waits a quota period and a
// guard so that the measured job starts on empty quota windows.
func warmUp(ctx context.Context, base string, o PipelineOptions, body []byte) error {
	lines := bytes.SplitAfter(body, []byte("\n"))
	lines = lines[:min(o.WarmUp, len(lines))]
	id := "warmup-" + o.Name
	if _, err := submitJob(ctx, base, id, tierQuery(o.ServiceTier), bytes.Join(lines, nil)); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	for {
		done, _, _, err := jobStatus(ctx, base, id)
		if err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		if done {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("warm-up: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("warm-up: %w", ctx.Err())
	case <-time.After(o.Minute + o.Guard + 500*time.Millisecond):
		return nil
	}
}

func jobStatus(ctx context.Context, base, id string) (done bool, succeeded, failed int, err error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/jobs/"+id, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, 0, 0, fmt.Errorf("job status: %w", err)
	}
	defer resp.Body.Close()
	var js struct {
		State  string `json:"state"`
		Counts struct {
			Succeeded int `json:"succeeded"`
			Failed    int `json:"failed"`
		} `json:"counts"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&js); err != nil {
		return false, 0, 0, fmt.Errorf("job status: %s: %w", resp.Status, err)
	}
	return js.State == "done", js.Counts.Succeeded, js.Counts.Failed, nil
}

// reservedSlots reads the functions' JSON log and returns, per task, the
// slot (Permit.At) of its last deferral when that deferral carried a
// reservation ("reserved": true), in real time, and the total time handlers
// waited for reserved slots.
func reservedSlots(path, jobID string) (map[string]time.Time, time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("open functions log: %w", err)
	}
	defer f.Close()
	slots := map[string]time.Time{}
	var waited time.Duration
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.Contains(line, []byte(`"claimed the reserved slot after waiting for it"`)) {
			var w struct {
				Waited string `json:"waited"`
				JobID  string `json:"job_id"`
			}
			if json.Unmarshal(line, &w) == nil && w.JobID == jobID {
				if d, err := time.ParseDuration(w.Waited); err == nil {
					waited += d
				}
			}
			continue
		}
		if !bytes.Contains(line, []byte(`"task deferred"`)) {
			continue
		}
		var e struct {
			Msg      string    `json:"message"` // Cloud Logging's name (internal/logging)
			TaskID   string    `json:"task_id"`
			JobID    string    `json:"job_id"`
			At       time.Time `json:"at"`
			Reserved bool      `json:"reserved"`
		}
		if json.Unmarshal(line, &e) != nil || e.Msg != "task deferred" || e.TaskID == "" || e.JobID != jobID {
			continue
		}
		if e.Reserved {
			slots[e.TaskID] = e.At
		} else {
			delete(slots, e.TaskID)
		}
	}
	return slots, waited, sc.Err()
}

// slotLags returns, sorted, how long after its reserved slot the stand-in
// received each successful call of a task in slots (real time).
func slotLags(log []geminisim.Entry, slots map[string]time.Time, toReal func(time.Time) time.Time) []time.Duration {
	var lags []time.Duration
	for _, e := range log {
		if e.Method != "generateContent" || e.Status != http.StatusOK {
			continue
		}
		if at, ok := slots[e.TaskID]; ok {
			lags = append(lags, toReal(e.Received).Sub(at))
		}
	}
	slices.Sort(lags)
	return lags
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// analyse computes every figure from the stand-in's log (stand-in time).
func (r *PipelineResult) analyse(log []geminisim.Entry, submitted time.Time) {
	o := r.Opts
	var rpm, tpm []Sample
	var events []limiter.Event
	okTasks := map[string]bool{}
	var lastOK time.Time
	var tokensOK int64
	for _, e := range log {
		if e.Method == "batchEntry" {
			// A batch's answer: it completes its task like a call would.
			if e.Status == http.StatusOK {
				r.BatchAnswered++
				lastOK = latest(lastOK, e.Finished)
			} else {
				r.BatchFailed++
			}
			continue
		}
		if e.Method != "generateContent" {
			continue
		}
		if d := e.Received.Sub(submitted); r.GeminiCalls == 0 || d < r.FirstCall {
			r.FirstCall = d
		}
		r.LastCall = max(r.LastCall, e.Received.Sub(submitted))
		r.GeminiCalls++
		if okTasks[e.TaskID] {
			r.DuplicateCalls++
		}
		switch e.Status {
		case http.StatusOK:
			r.OK++
			okTasks[e.TaskID] = true
			tokensOK += e.InputTokens
			if e.Finished.After(lastOK) {
				lastOK = e.Finished
			}
			r.LastOK = max(r.LastOK, e.Received.Sub(submitted))
		case http.StatusTooManyRequests:
			r.Status429++
			r.Last429 = max(r.Last429, e.Received.Sub(submitted))
		default:
			r.Other++
		}
		if e.Charged {
			rpm = append(rpm, Sample{e.Received, 1})
			tpm = append(tpm, Sample{e.Received, e.InputTokens})
			events = append(events, limiter.Event{At: e.Received, Cost: limiter.Cost{Requests: 1, InputTokens: e.InputTokens}})
		}
	}
	if !lastOK.IsZero() {
		r.Completion = lastOK.Sub(submitted)
	}
	for _, e := range log {
		if e.Method == "generateContent" && e.Status == http.StatusTooManyRequests && e.Received.Sub(submitted) > r.FirstCall+2*time.Minute {
			r.Late429++
		}
	}
	r.CapRPM, r.CapTPM = Capacity(o.RPM, o.Safety), Capacity(o.TPM, o.Safety)
	tr := TheoreticalMin(int64(r.OK), r.CapRPM, time.Minute)
	tt := TheoreticalMin(tokensOK, r.CapTPM, time.Minute)
	r.TMin, r.Binding = tr, "rpm"
	if tt > tr {
		r.TMin, r.Binding = tt, "tpm"
	}
	r.TMin += r.MedianLatency
	r.PeakRPM, _ = PeakWindow(rpm, time.Minute)
	r.PeakTPM, _ = PeakWindow(tpm, time.Minute)
	fullR, _ := WindowRates(rpm, time.Minute)
	fullT, _ := WindowRates(tpm, time.Minute)
	r.FullWindows = len(fullR)
	r.WindowsRPM, r.WindowsTPM = fullR, fullT
	r.MeanRPM, r.MinFullRPM = meanMin(fullR)
	r.MeanTPM, r.MinFullTPM = meanMin(fullT)
	q := limiter.Quota{Safety: o.Safety, Dimensions: []limiter.Dimension{
		{Name: "rpm", Unit: limiter.Requests, Limit: o.RPM, Period: time.Minute},
		{Name: "tpm", Unit: limiter.InputTokens, Limit: o.TPM, Period: time.Minute},
		{Name: "rpd", Unit: limiter.Requests, Limit: o.RPD, Per: limiter.PacificDay},
	}}
	r.Violations = len(limiter.CheckWindows(events, q))
}

// WriteJSON writes r to path (the child process's answer to gemqbench).
func (r PipelineResult) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// meanMin returns the mean and the minimum of xs (0, 0 for none).
func meanMin(xs []int64) (float64, int64) {
	if len(xs) == 0 {
		return 0, 0
	}
	var sum int64
	lo := xs[0]
	for _, x := range xs {
		sum += x
		lo = min(lo, x)
	}
	return float64(sum) / float64(len(xs)), lo
}

// submitJob POSTs a JSONL job to ingest at base and returns how many
// requests it accepted; anything but 202 is an error quoting the answer.
func submitJob(ctx context.Context, base, jobID, query string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/jobs?model="+Model+"&job_id="+jobID+query, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("submit: %w", err)
	}
	req.Header.Set("Content-Type", "application/jsonl")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("submit: %w", err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var accepted struct {
		Accepted int `json:"accepted"`
	}
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(rb, &accepted) != nil {
		return 0, fmt.Errorf("submit: %s: %.300s", resp.Status, rb)
	}
	return accepted.Accepted, nil
}

// timeline prints, per 10 stand-in seconds from the submission, the calls
// the stand-in answered ok and with 429 (GEMQBENCH_TIMELINE=1; analysis).
func timeline(w io.Writer, log []geminisim.Entry, submitted time.Time) {
	step := 10 * time.Second
	if d, err := time.ParseDuration(os.Getenv("GEMQBENCH_STEP")); err == nil {
		step = d
	}
	ok, q := map[int]int{}, map[int]int{}
	last := 0
	for _, e := range log {
		if e.Method != "generateContent" {
			continue
		}
		b := int(e.Received.Sub(submitted) / step)
		if e.Status == 200 {
			ok[b]++
		} else if e.Status == 429 {
			q[b]++
		}
		last = max(last, b)
	}
	for b := 0; b <= last; b++ {
		fmt.Fprintf(w, "timeline %5.1fmin ok %4d 429 %3d\n", float64(b)*step.Minutes(), ok[b], q[b])
	}
}
