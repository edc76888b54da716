// Package chaos is gemq's fault-injection suite: it runs a job through the
// real parts — the worker and ingest functions as separate gemqworker
// processes (SIGKILLable), real redis-server processes, pstest over gRPC,
// the Cloud Tasks emulator over gRPC and the Gemini stand-in over HTTP,
// with the push loop of infra/pushsub — injects one fault per scenario, and
// judges the outcome from evidence gemq does not write: the stand-in's own
// request log (what Gemini received, when, for which task) and the
// harness' own subscriptions to the results and dead-letter topics.
//
// Per scenario it reports tasks lost, tasks with more than one result,
// duplicate Gemini calls (and how many had a call in flight when a worker
// was killed), sliding windows over the real limit at Gemini's side, the
// slowest task's delay beyond its slot once the fault ended, and the job
// status the API gives against the truth from the results topic. A
// scenario passes only when issue 10's "Must show" targets hold (see
// Report.Verdict). `make chaos` runs every scenario (infra/chaos/cmd/gemqchaos);
// `make test` runs the ones listed in Short.
package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/internal/task"
)

// Scenario is one fault injected into one job.
type Scenario struct {
	// Name is short and unique (a table row, a -run filter).
	Name string
	// Fault says what is injected, for the table.
	Fault string
	// Tasks is the job's size.
	Tasks int
	// Replica starts a replica of Redis (for PromoteReplica).
	Replica bool
	// PushAttempts is the push subscription's max delivery attempts
	// (0: Terraform's default, 10).
	PushAttempts int
	// GeminiFails is true when the stand-in itself fails calls for a
	// while (5xx, 429, slowness): a task may then legitimately end failed.
	// Otherwise every task must succeed, and a failed one counts as lost.
	GeminiFails bool
	// Backoff is the longest back-off the fault can legitimately impose
	// on a task once it has ended (push retry policy, Cloud Tasks queue,
	// worker retries), in real time.
	Backoff time.Duration
	// Inject runs once the job is accepted; it injects the fault and
	// returns when the fault has ended.
	Inject func(ctx context.Context, e *Env, job string) error
	// Midnight, when set, is a Pacific midnight (stand-in and calendar
	// time) put inside the job: the stand-in starts just before it, the
	// worker's limiter reads the Pacific calendar shifted to match (the
	// test clock hook, config.EnvTestCalendarOffset), and both enforce RPD.
	Midnight time.Time
	// RPD is the requests-per-Pacific-day limit of the stand-in and of the
	// limiter's quota (0: none).
	RPD int64
}

// Report is one scenario's outcome, judged from independent evidence.
type Report struct {
	Name, Fault string
	Tasks       int
	// Lost: tasks of the job with no result on the results topic when the
	// run ended (plus, where Gemini never failed, tasks whose only result
	// is a failure), and poison messages that vanished (neither
	// dead-lettered nor recorded).
	Lost         int
	LostDetail   string
	TwoResults   int
	DeadLettered int
	// DupCalls are generateContent calls for a task after one of its calls
	// had been answered 200 or while another was in flight; DupInFlight of
	// them follow a call that was in flight when a worker was killed.
	DupCalls, DupInFlight int
	// LostAtKill counts reserved slots lost because the worker waiting for
	// them was killed: claims that came after the restart, too late for a
	// slot between the kill and the restart, and were reserved again
	// ("claim missed its slot" in the functions' log). Like a repeated
	// call, each took capacity from the window, so the ideal run gives
	// each a slot.
	LostAtKill int
	// WindowsOver are sliding windows over the real limit (safety 1) in the
	// stand-in's log.
	WindowsOver int
	// WindowsPeak describes the fullest of them ("peak rpm 24 > 20").
	WindowsPeak string
	peak        int64
	// Delay is the slowest task's delay beyond its slot after the last
	// fault ended; Allowed the target (see Run).
	Delay, Allowed time.Duration
	// JobStatus is what the job API says; Truth what the results topic
	// says; StatusOK whether they agree.
	JobStatus, Truth string
	StatusOK         bool
	// Note says more about what happened (for a Pacific-day scenario: the
	// calls Gemini received in each day).
	Note string
	// Err is a harness error (the scenario could not be run as designed).
	Err      error
	Duration time.Duration
	Log      string // the scenario's log file
}

// Failures lists the "Must show" targets the scenario missed.
func (r Report) Failures() []string {
	var f []string
	if r.Err != nil {
		f = append(f, "harness: "+r.Err.Error())
	}
	if r.Lost > 0 {
		f = append(f, fmt.Sprintf("%d lost (%s)", r.Lost, r.LostDetail))
	}
	if r.TwoResults > 0 {
		f = append(f, fmt.Sprintf("%d tasks with two results", r.TwoResults))
	}
	if n := r.DupCalls - r.DupInFlight; n > 0 {
		f = append(f, fmt.Sprintf("%d duplicate Gemini calls with no call in flight at a worker's death", n))
	}
	if r.WindowsOver > 0 {
		f = append(f, fmt.Sprintf("%d windows over the limit at Gemini (%s)", r.WindowsOver, r.WindowsPeak))
	}
	if r.Delay > r.Allowed {
		f = append(f, fmt.Sprintf("slowest task %s beyond its slot (allowed %s)", r.Delay.Round(100*time.Millisecond), r.Allowed.Round(100*time.Millisecond)))
	}
	if !r.StatusOK {
		f = append(f, fmt.Sprintf("job status %q, truth %q", r.JobStatus, r.Truth))
	}
	return f
}

// Pass reports whether every target held.
func (r Report) Pass() bool { return len(r.Failures()) == 0 }

// Run starts a fresh system, submits a job of sc.Tasks tasks, injects the
// fault, waits for every task's result (or a deadline), waits one lease
// more for late duplicates, and judges. logDir holds the scenario's
// directory (log file kept; "" for the system's temporary directory).
func Run(ctx context.Context, cfg Config, sc Scenario, logDir string) Report {
	began := time.Now()
	r := Report{Name: sc.Name, Fault: sc.Fault, Tasks: sc.Tasks}
	e, err := startEnv(ctx, cfg, envOptions{replica: sc.Replica, latency: baseLatency, pushAttempts: sc.PushAttempts,
		midnight: sc.Midnight, rpd: sc.RPD}, logDir)
	if err != nil {
		r.Err = err
		return r
	}
	defer e.close()
	r.Log = e.logw.Name()
	jobID := "chaos-" + sc.Name
	if err := submit(ctx, e.ingest.url(), jobID, sc.Tasks); err != nil {
		r.Err = err
		return r
	}
	submitted := time.Now()
	injected := make(chan error, 1)
	go func() {
		if sc.Inject == nil {
			injected <- nil
			return
		}
		injected <- sc.Inject(ctx, e, jobID)
	}()
	want := map[string]bool{}
	for i := range sc.Tasks {
		want[task.TaskID(jobID, Key(i))] = true
	}
	capacity := int(float64(cfg.RPM) * cfg.Safety)
	ideal := time.Duration((sc.Tasks+capacity-1)/capacity) * cfg.Minute
	lease := cfg.scaled(180 * time.Second)
	deadline := time.Now().Add(ideal + 3*lease + 30*time.Second)
	var injectErr error
	injectDone := false
	for {
		if !injectDone {
			select {
			case injectErr = <-injected:
				injectDone = true
				deadline = deadline.Add(time.Since(submitted))
			default:
			}
		}
		res, _ := e.collector.snapshot()
		got := 0
		seen := map[string]bool{}
		for _, m := range res {
			if id := m.Attributes["task_id"]; want[id] && !seen[id] {
				seen[id] = true
				got++
			}
		}
		if (injectDone && got == len(want)) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	if !injectDone {
		injectErr = <-injected
	}
	// Late duplicates come a lease later at most.
	sleepCtx(ctx, lease)
	r.Err = injectErr
	judge(ctx, e, &r, sc, jobID, want, submitted)
	r.Duration = time.Since(began)
	return r
}

// baseLatency is the stand-in's latency outside faults: 5 s of stand-in
// time (0.5 s real at the default scale), so calls are in flight when a
// worker dies.
var baseLatency = mustLatency("uniform:2s,8s")

// Key is the key of a job's i-th task.
func Key(i int) string { return fmt.Sprintf("task-%04d", i) }

// submit posts the job through ingest's API as Batch-API JSONL.
func submit(ctx context.Context, ingestURL, jobID string, n int) error {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"key":%q,"request":{"contents":[{"role":"user","parts":[{"text":"Chaos task %d: name one prime number."}]}]}}`+"\n", Key(i), i)
	}
	u := ingestURL + "/v1/jobs?job_id=" + jobID + "&model=" + model
	var last error
	for attempt := range 5 {
		if attempt > 0 {
			sleepCtx(ctx, time.Second)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b.Bytes()))
		if err != nil {
			return fmt.Errorf("http.NewRequest: %w", err)
		}
		req.Header.Set("Content-Type", "application/jsonl")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			last = fmt.Errorf("POST /v1/jobs: %w", err)
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode == http.StatusAccepted {
			return nil
		}
		last = fmt.Errorf("POST /v1/jobs: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		if resp.StatusCode < 500 {
			break
		}
	}
	return last
}

// jobStatus is GET /v1/jobs/{id}.
type jobStatus struct {
	State  string `json:"state"`
	Counts struct {
		Total     int `json:"total"`
		Succeeded int `json:"succeeded"`
		Failed    int `json:"failed"`
	} `json:"counts"`
}

func getStatus(ctx context.Context, ingestURL, jobID string) (jobStatus, error) {
	var st jobStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ingestURL+"/v1/jobs/"+jobID, nil)
	if err != nil {
		return st, fmt.Errorf("http.NewRequest: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("GET /v1/jobs/%s: %w", jobID, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /v1/jobs/%s: HTTP %d: %s", jobID, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("GET /v1/jobs/%s: %w", jobID, err)
	}
	return st, nil
}

// judge fills r from the results and dead-letter topics, the stand-in's
// log and the job API.
func judge(ctx context.Context, e *Env, r *Report, sc Scenario, jobID string, want map[string]bool, submitted time.Time) {
	results, dead := e.collector.snapshot()
	type verdict struct {
		first    time.Time
		outcomes []string
		payloads map[string]bool
	}
	per := map[string]*verdict{}
	for _, m := range results {
		id := m.Attributes["task_id"]
		if !want[id] {
			continue
		}
		v := per[id]
		if v == nil {
			v = &verdict{first: m.At, payloads: map[string]bool{}}
			per[id] = v
		}
		v.outcomes = append(v.outcomes, m.Attributes["outcome"])
		v.payloads[m.Attributes["outcome"]+"\x00"+string(m.Data)] = true
	}
	var succeeded, failed, missing, wrong int
	var arrivals []time.Time
	for id := range want {
		v := per[id]
		if v == nil {
			missing++
			continue
		}
		arrivals = append(arrivals, v.first)
		if len(v.payloads) > 1 {
			r.TwoResults++
		}
		if slices.Contains(v.outcomes, "succeeded") {
			succeeded++
		} else {
			failed++
			if !sc.GeminiFails {
				wrong++
			}
		}
	}
	for _, m := range dead {
		if env, err := task.Decode(m.Data); err == nil && env.JobID == jobID {
			r.DeadLettered++
		}
	}
	var vanished []string
	for _, p := range e.published() {
		found := false
		for _, m := range dead {
			found = found || bytes.Equal(m.Data, p.data)
		}
		if !found {
			vanished = append(vanished, p.name)
		}
	}
	r.Lost = missing + wrong + len(vanished)
	r.LostDetail = fmt.Sprintf("%d without result, %d failed though Gemini never failed them, %d poison messages vanished", missing, wrong, len(vanished))
	if len(vanished) > 0 {
		r.LostDetail += ": " + strings.Join(vanished, ", ")
	}
	r.Truth = fmt.Sprintf("%d/%d results: %d succeeded, %d failed", succeeded+failed, len(want), succeeded, failed)

	// Gemini's side.
	over := e.Gemini.Check(model, geminiLimits(e.Cfg, sc.RPD), 1)
	r.WindowsOver = len(over)
	for _, v := range over {
		if d := fmt.Sprintf("peak %s %d > %.0f", v.Dimension, v.Value, v.Limit); r.WindowsPeak == "" || v.Value > r.peak {
			r.WindowsPeak, r.peak = d, v.Value
		}
	}
	e.evMu.Lock()
	r.DupCalls, r.DupInFlight = duplicates(e.Gemini.Log(), e.killedMidCall)
	e.evMu.Unlock()
	if !sc.Midnight.IsZero() {
		r.Note = dayCounts(e.Gemini.Log(), sc.Midnight, submitted, e.midnight)
	}

	r.LostAtKill = lostAtKill(filepath.Join(e.dir, "chaos.log"), e.Events())

	// Delay beyond slot: the i-th result vs the i-th slot of an ideal run
	// (capacity per quota minute from submission), restarted at the end of
	// the last fault for the tasks not finished by then.
	faultEnd := submitted
	for _, ev := range e.Events() {
		if ev.At.After(faultEnd) {
			faultEnd = ev.At
		}
	}
	capacity := max(int(float64(e.Cfg.RPM)*e.Cfg.Safety), 1)
	sort.Slice(arrivals, func(i, j int) bool { return arrivals[i].Before(arrivals[j]) })
	n0 := 0
	for n0 < len(arrivals) && arrivals[n0].Before(faultEnd) {
		n0++
	}
	// Calls repeated because their worker died mid-call are allowed, and
	// Gemini charged them: each takes a slot before the results after it.
	// With a daily limit, the calls beyond the day's share wait for
	// Pacific midnight (in real time), then go at the window's pace.
	dayCap := int(float64(sc.RPD) * e.Cfg.Safety)
	for i, at := range arrivals {
		k := i + r.DupInFlight + r.LostAtKill
		slot := submitted.Add(time.Duration(k/capacity) * e.Cfg.Minute)
		if i >= n0 {
			if s := faultEnd.Add(time.Duration((k-n0)/capacity) * e.Cfg.Minute); s.After(slot) {
				slot = s
			}
		}
		if sc.RPD > 0 && k >= dayCap {
			if s := e.midnight.Add(time.Duration((k-dayCap)/capacity) * e.Cfg.Minute); s.After(slot) {
				slot = s
			}
		}
		r.Delay = max(r.Delay, at.Sub(slot))
	}
	// max(2 × back-off, 30 s) scaled, plus one quota minute (a sliding
	// window may still hold calls from before the fault) and 2 s of real
	// overheads the scale does not shrink (claim lead, dispatch, Gemini
	// latency, process start).
	r.Allowed = max(2*sc.Backoff, e.Cfg.scaled(30*time.Second)) + e.Cfg.Minute + 2*time.Second

	st, err := getStatus(ctx, e.ingest.url(), jobID)
	switch {
	case err != nil:
		r.JobStatus = err.Error()
	default:
		r.JobStatus = fmt.Sprintf("%s, total %d: %d succeeded, %d failed", st.State, st.Counts.Total, st.Counts.Succeeded, st.Counts.Failed)
		counts := st.Counts.Succeeded == succeeded && st.Counts.Failed == failed
		r.StatusOK = counts && missing == 0 && st.State == "done" && st.Counts.Total == len(want) ||
			counts && st.State == "state_lost"
	}
}

// duplicates counts the calls of a task beyond what a correct worker
// makes: a call after one of its calls was answered 200, a call while
// another was in flight, and a call after one that got no answer because
// its worker was killed mid-call (the client gone); inFlight counts those
// of tasks that had a call in flight when a worker was killed. A retry
// after a 5xx, a 429 or the worker's own timeout is not a duplicate.
func duplicates(log []geminiEntry, killedMidCall map[string]bool) (dups, inFlight int) {
	byTask := map[string][]geminiEntry{}
	for _, en := range log {
		if en.Method == "generateContent" && en.TaskID != "" && en.Status != http.StatusBadRequest {
			byTask[en.TaskID] = append(byTask[en.TaskID], en)
		}
	}
	for id, calls := range byTask {
		sort.Slice(calls, func(i, j int) bool { return calls[i].Received.Before(calls[j].Received) })
		for i := 1; i < len(calls); i++ {
			dup := false
			for _, prev := range calls[:i] {
				dup = dup || prev.Status == http.StatusOK || prev.Finished.After(calls[i].Received) ||
					prev.Status == 0 && killedMidCall[id]
			}
			if dup {
				dups++
				if killedMidCall[id] {
					inFlight++
				}
			}
		}
	}
	return dups, inFlight
}

type geminiEntry = geminisim.Entry

// dayCounts says how many generateContent calls Gemini received before
// and after midnight (stand-in time), and when midnight came in the job.
func dayCounts(log []geminiEntry, midnight, submitted, realMidnight time.Time) string {
	var before, after int
	for _, en := range log {
		if en.Method != "generateContent" {
			continue
		}
		if en.Received.Before(midnight) {
			before++
		} else {
			after++
		}
	}
	return fmt.Sprintf("midnight %.1f s into the job; Gemini received %d calls before it, %d after",
		realMidnight.Sub(submitted).Seconds(), before, after)
}

func geminiLimits(c Config, rpd int64) geminisim.Limits {
	return geminisim.Limits{RPM: c.RPM, TPM: c.TPM, RPD: rpd}
}

func mustLatency(spec string) geminisim.Latency {
	l, err := geminisim.ParseLatency(spec)
	if err != nil {
		panic(fmt.Sprintf("chaos: latency %q: %v", spec, err)) // a constant of this package
	}
	return l
}

// lostAtKill counts the "claim missed its slot; reserved again" lines of
// the functions' log whose slot lies between a "worker killed" event and
// the next "worker restarted": slots whose worker died waiting for them.
func lostAtKill(logPath string, events []Event) int {
	type span struct{ from, to time.Time }
	var down []span
	for i, ev := range events {
		if ev.What != "worker killed" {
			continue
		}
		end := time.Now()
		for _, nx := range events[i+1:] {
			if nx.What == "worker restarted" {
				end = nx.At
				break
			}
		}
		down = append(down, span{ev.At, end})
	}
	b, err := os.ReadFile(logPath)
	if err != nil || len(down) == 0 {
		return 0
	}
	n := 0
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.Contains(l, []byte(`"claim missed its slot; reserved again"`)) {
			continue
		}
		var m struct {
			Slot time.Time `json:"slot"`
		}
		if json.Unmarshal(l, &m) != nil {
			continue
		}
		for _, d := range down {
			if !m.Slot.Before(d.from) && !m.Slot.After(d.to) {
				n++
				break
			}
		}
	}
	return n
}
