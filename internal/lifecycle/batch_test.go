package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/cloudtasks/apiv2/cloudtaskspb"
	"google.golang.org/genai"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/internal/batches"
	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

// fakeBatches is a handwritten Batch API: each call goes to its function
// field; it records what it was asked. (The stand-in's Batch API, driven
// by the genai client, is exercised end to end in infra/stack; here the
// point is the lifecycle's steps, including answers lost on the way.)
type fakeBatches struct {
	mu      sync.Mutex
	created map[string][]gemini.BatchEntry // by display name
	creates int
	cancels []string
	create  func(name string, entries []gemini.BatchEntry) (gemini.Batch, error)
	get     func(name string) (gemini.Batch, error)
}

func (fb *fakeBatches) CreateBatch(_ context.Context, _, displayName string, entries []gemini.BatchEntry, _ int64) (gemini.Batch, error) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	fb.creates++
	if fb.created == nil {
		fb.created = map[string][]gemini.BatchEntry{}
	}
	fb.created[displayName] = entries
	if fb.create != nil {
		return fb.create(displayName, entries)
	}
	return gemini.Batch{Name: "batches/" + displayName, DisplayName: displayName, State: string(genai.JobStatePending)}, nil
}

func (fb *fakeBatches) FindBatch(_ context.Context, displayName string) (gemini.Batch, bool, error) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	if _, ok := fb.created[displayName]; ok {
		return gemini.Batch{Name: "batches/" + displayName, DisplayName: displayName}, true, nil
	}
	return gemini.Batch{}, false, nil
}

func (fb *fakeBatches) GetBatch(_ context.Context, name string) (gemini.Batch, error) {
	if fb.get != nil {
		return fb.get(name)
	}
	return gemini.Batch{Name: name, State: string(genai.JobStateRunning)}, nil
}

func (fb *fakeBatches) CancelBatch(_ context.Context, name string) error {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	fb.cancels = append(fb.cancels, name)
	return nil
}

// entries returns what the batch named displayName was created with.
func (fb *fakeBatches) entries(displayName string) []gemini.BatchEntry {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return fb.created[displayName]
}

// succeeded answers every entry of the batch created as displayName with
// a response, except those in errs, which get an error.
func (fb *fakeBatches) succeeded(displayName string, errs map[string]bool) gemini.Batch {
	b := gemini.Batch{Name: "batches/" + displayName, State: string(genai.JobStateSucceeded), Done: true, Succeeded: true,
		Results: map[string]gemini.BatchResult{}}
	for _, e := range fb.entries(displayName) {
		if errs[e.Key] {
			b.Results[e.Key] = gemini.BatchResult{Error: &gemini.BatchError{Code: 500, Status: "INTERNAL", Message: "entry failed"}}
			continue
		}
		b.Results[e.Key] = gemini.BatchResult{Response: &gemini.Response{
			JSON:         json.RawMessage(`{"candidates":[{"content":{"parts":[{"text":"batched answer"}],"role":"model"}}],"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":3}}`),
			PromptTokens: 7, CandidatesTokens: 3}}
	}
	return b
}

// batchFixture is a fixture whose machine has the Batch tier, its collect
// window short.
func batchFixture(t *testing.T) (*fixture, *fakeBatches) {
	f := newFixture(t, fixtureOptions{})
	fb := &fakeBatches{}
	f.m.deps.Batch = BatchDeps{API: fb, Groups: batches.New(f.rdb, time.Hour), Enqueued: limiter.NewEnqueued(f.rdb), Jobs: f.store}
	f.m.opts.Batch.Collect = 50 * time.Millisecond
	f.m.opts.Batch.PollMin = 100 * time.Millisecond
	f.m.opts.Batch.PollMax = time.Second
	return f, fb
}

func batchEnvelope(jobID, key string) task.Envelope {
	e := envelope(jobID, key, modelOpen, "prompt "+key)
	e.ServiceTier = "batch"
	return e
}

// steps returns the scheduled batch steps of op, by Cloud Task name.
func (f *fixture) steps(op string) map[string][]byte {
	out := map[string][]byte{}
	for _, tk := range f.scheduled() {
		body := tk.GetHttpRequest().GetBody()
		if s, ok, err := DecodeBatchStep(body); ok && err == nil && s.Op == op {
			out[shortName(tk.GetName())] = body
		}
	}
	return out
}

// runStep delivers a batch step as Cloud Tasks would (attempt n).
func (f *fixture) runStep(name string, body []byte, attempt int) result {
	s, ok, err := DecodeBatchStep(body)
	if !ok || err != nil {
		f.t.Fatalf("not a batch step: %s (%v)", body, err)
	}
	return f.handle(context.Background(), Delivery{Source: CloudTasks, ID: name, Attempt: attempt, Data: body, Batch: &s})
}

// deleteTask removes a Cloud Task that ran (the queue is paused).
func (f *fixture) deleteTask(name string) {
	f.t.Helper()
	if err := f.ct.DeleteTask(context.Background(), &cloudtaskspb.DeleteTaskRequest{Name: testQueue + "/tasks/" + name}); err != nil {
		f.t.Fatalf("delete task %s: %v", name, err)
	}
}

// onlyStep returns the one scheduled step of op and removes it from the queue.
func (f *fixture) onlyStep(op string) (string, []byte) {
	f.t.Helper()
	s := f.steps(op)
	if len(s) != 1 {
		f.t.Fatalf("%d %s steps scheduled, want 1: %v", len(s), op, s)
	}
	for name, body := range s {
		f.deleteTask(name)
		return name, body
	}
	return "", nil
}

// groupOf returns the batch group of a scope's members (the one created).
func onlyGroup(t *testing.T, fb *fakeBatches) string {
	t.Helper()
	fb.mu.Lock()
	defer fb.mu.Unlock()
	if len(fb.created) != 1 {
		t.Fatalf("%d batches created, want 1", len(fb.created))
	}
	for g := range fb.created {
		return g
	}
	return ""
}

func TestBatchHappyPath(t *testing.T) {
	f, fb := batchFixture(t)
	envs := f.batchPush("bj", 3)
	// A duplicate push of a batched task is acknowledged, not batched again.
	if r := f.serve(context.Background(), pushBodyWith(encode(t, envs[0]), "dup", 0), nil); r.outcome != OutDuplicate {
		t.Errorf("duplicate push = %+v, want duplicate", r)
	}
	if c := f.counts("bj"); c.Waiting != 3 {
		t.Errorf("counts = %+v, want 3 waiting in their group", c)
	}
	name, body := f.onlyStep(StepSeal)
	if r := f.runStep(name, body, 0); r.outcome != OutBatchRunning {
		t.Fatalf("seal = %+v", r)
	}
	g := onlyGroup(t, fb)
	if got := fb.entries(g); len(got) != 3 || got[0].Key != envs[0].TaskID || got[2].Key != envs[2].TaskID {
		t.Fatalf("batch entries = %+v, want the 3 tasks in order, keyed by task id", got)
	}
	// Sealing again (Cloud Tasks delivers twice) creates nothing more.
	if r := f.runStep(name, body, 1); r.status != http.StatusOK || fb.creates != 1 {
		t.Errorf("second seal = %+v with %d creates, want one create", r, fb.creates)
	}
	held := f.rdb.HLen(context.Background(), limiter.Scope{Project: testProject, Model: modelOpen}.KeyPrefix()+":enqueued").Val()
	if held != 1 {
		t.Errorf("enqueued permits held = %d, want 1 while the batch runs", held)
	}
	// Running: the poll schedules the next one.
	pn, pb := f.onlyStep(StepPoll)
	if r := f.runStep(pn, pb, 0); r.outcome != OutBatchRunning {
		t.Fatalf("poll = %+v", r)
	}
	fb.get = func(string) (gemini.Batch, error) { return fb.succeeded(g, nil), nil }
	pn, pb = f.onlyStep(StepPoll)
	if r := f.runStep(pn, pb, 0); r.outcome != OutBatchSettled {
		t.Fatalf("final poll = %+v", r)
	}
	// The same poll again (a retry): nothing settles twice.
	if r := f.runStep(pn, pb, 1); r.status != http.StatusOK {
		t.Errorf("repeated poll = %+v", r)
	}
	for _, e := range envs {
		rec := f.record(e)
		if rec.State != store.Succeeded || !strings.Contains(string(rec.Response), "batched answer") || !rec.Published {
			t.Errorf("task %s = %+v, want succeeded with the batch's answer, published", e.Key, rec)
		}
	}
	if pub := f.published(); len(pub) != 3 {
		t.Errorf("%d results published, want 3 (one per task)", len(pub))
	}
	j, err := f.store.GetJob(context.Background(), "bj")
	if err != nil {
		t.Fatal(err)
	}
	if u := j.Usage["batch"]; u.Tasks != 3 || u.Input != 21 || u.Output != 9 || j.Counts.Succeeded != 3 {
		t.Errorf("job = %+v usage %+v, want 3 tasks' tokens at tier batch", j.Counts, j.Usage)
	}
	held = f.rdb.HLen(context.Background(), limiter.Scope{Project: testProject, Model: modelOpen}.KeyPrefix()+":enqueued").Val()
	if held != 0 {
		t.Errorf("enqueued permits held = %d after the batch, want 0", held)
	}
	if n := f.allGenerateCalls(); n != 0 {
		t.Errorf("%d interactive calls, want none", n)
	}
}

func TestBatchSealRetryFindsTheBatchALostAnswerCreated(t *testing.T) {
	f, fb := batchFixture(t)
	e := batchEnvelope("bj2", "only")
	if r := f.push(e); r.outcome != OutBatched {
		t.Fatalf("push = %+v", r)
	}
	// The batch is created, but the answer is lost on the way back.
	fb.create = func(name string, _ []gemini.BatchEntry) (gemini.Batch, error) {
		return gemini.Batch{}, &genai.APIError{Code: 503, Status: "UNAVAILABLE", Message: "connection reset"}
	}
	name, body := f.onlyStep(StepSeal)
	if r := f.runStep(name, body, 0); r.outcome != OutBatchWaiting {
		t.Fatalf("seal with a lost answer = %+v, want another seal later", r)
	}
	fb.create = nil
	name, body = f.onlyStep(StepSeal)
	if r := f.runStep(name, body, 0); r.outcome != OutBatchRunning {
		t.Fatalf("retried seal = %+v", r)
	}
	if fb.creates != 1 {
		t.Errorf("%d batches created, want 1: the retry finds the first by its display name", fb.creates)
	}
	if len(f.steps(StepPoll)) != 1 {
		t.Errorf("polls = %v, want one", f.steps(StepPoll))
	}
}

func TestBatchPartialFailureFallsBackAndExpiryFails(t *testing.T) {
	f, fb := batchFixture(t)
	ok := batchEnvelope("bj3", "ok")
	bad := batchEnvelope("bj3", "bad")
	late := batchEnvelope("bj3", "late")
	late.Deadline = time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339Nano)
	for i, e := range []task.Envelope{ok, bad, late} {
		if r := f.serve(context.Background(), pushBodyWith(encode(t, e), fmt.Sprintf("p%d", i), 0), nil); r.outcome != OutBatched {
			t.Fatalf("push %s = %+v", e.Key, r)
		}
	}
	name, body := f.onlyStep(StepSeal)
	if r := f.runStep(name, body, 0); r.outcome != OutBatchRunning {
		t.Fatalf("seal = %+v", r)
	}
	g := onlyGroup(t, fb)
	fb.get = func(string) (gemini.Batch, error) {
		return fb.succeeded(g, map[string]bool{bad.TaskID: true, late.TaskID: true}), nil
	}
	pn, pb := f.onlyStep(StepPoll)
	if r := f.runStep(pn, pb, 0); r.outcome != OutBatchSettled {
		t.Fatalf("poll = %+v", r)
	}
	if rec := f.record(ok); rec.State != store.Succeeded {
		t.Errorf("ok = %+v", rec)
	}
	// late's deadline leaves no time for the interactive path: it fails
	// with the entry's error.
	if rec := f.record(late); rec.State != store.Failed || !strings.Contains(errorOf(t, rec.Error).Message, "entry failed") {
		t.Errorf("late = %+v, want failed with the batch entry's reason", rec)
	}
	// bad (no deadline) goes back to the interactive path at standard.
	if rec := f.record(bad); rec.State != store.Waiting {
		t.Fatalf("bad = %+v, want waiting for its interactive deferral", rec)
	}
	var fallback *cloudtaskspb.Task
	for _, tk := range f.scheduled() {
		if e, err := task.Decode(tk.GetHttpRequest().GetBody()); err == nil && e.TaskID == bad.TaskID {
			fallback = tk
		}
	}
	if fallback == nil {
		t.Fatal("no interactive deferral scheduled for the failed entry")
	}
	fe := taskBody(t, fallback)
	if fe.ServiceTier != "standard" {
		t.Errorf("fallback tier = %q, want standard", fe.ServiceTier)
	}
	if r := f.callback(shortName(fallback.GetName()), fallback.GetHttpRequest().GetBody()); r.outcome != OutSucceeded {
		t.Fatalf("fallback callback = %+v", r)
	}
	if rec := f.record(bad); rec.State != store.Succeeded || len(f.generateCalls(bad.TaskID)) != 1 {
		t.Errorf("bad = %+v after %d calls, want succeeded by one interactive call", rec, len(f.generateCalls(bad.TaskID)))
	}
	// The poll once more: every task is settled once, one result each.
	if r := f.runStep(pn, pb, 1); r.status != http.StatusOK {
		t.Errorf("repeated poll = %+v", r)
	}
	if pub := f.published(); len(pub) != 3 {
		t.Errorf("%d results published, want 3", len(pub))
	}
	j, _ := f.store.GetJob(context.Background(), "bj3")
	if j.Usage["batch"].Tasks != 1 || j.Usage["standard"].Tasks != 1 || j.Counts.Failed != 1 || !j.Done() {
		t.Errorf("job = %+v %+v, want 1 at batch, 1 at standard, 1 failed, done", j.Counts, j.Usage)
	}
}

func TestBatchExpiredFallsBackEveryEntry(t *testing.T) {
	f, fb := batchFixture(t)
	envs := f.batchPush("bj4", 2)
	name, body := f.onlyStep(StepSeal)
	f.runStep(name, body, 0)
	fb.get = func(n string) (gemini.Batch, error) {
		return gemini.Batch{Name: n, State: string(genai.JobStateExpired), Done: true, Reason: "the batch ended JOB_STATE_EXPIRED"}, nil
	}
	pn, pb := f.onlyStep(StepPoll)
	if r := f.runStep(pn, pb, 0); r.outcome != OutBatchSettled {
		t.Fatalf("poll = %+v", r)
	}
	for _, e := range envs {
		if rec := f.record(e); rec.State != store.Waiting {
			t.Errorf("%s = %+v, want waiting for its interactive deferral", e.Key, rec)
		}
	}
	n := 0
	for _, tk := range f.scheduled() {
		if e, err := task.Decode(tk.GetHttpRequest().GetBody()); err == nil && e.ServiceTier == "standard" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d interactive deferrals, want 2", n)
	}
}

func TestBatchWaitsForTheEnqueuedTokenLimit(t *testing.T) {
	f, fb := batchFixture(t)
	f.m.opts.Batch.EnqueuedTokens = 1000
	scope := limiter.Scope{Project: testProject, Model: modelOpen}
	// Another group holds the whole limit.
	if _, err := limiter.NewEnqueued(f.rdb).Acquire(context.Background(), scope, "other", 1000, 1000, time.Hour); err != nil {
		t.Fatal(err)
	}
	if r := f.push(batchEnvelope("bj5", "w")); r.outcome != OutBatched {
		t.Fatalf("push = %+v", r)
	}
	name, body := f.onlyStep(StepSeal)
	if r := f.runStep(name, body, 0); r.outcome != OutBatchWaiting {
		t.Fatalf("seal = %+v, want it to wait for the enqueued-token limit", r)
	}
	if fb.creates != 0 {
		t.Fatalf("%d batches created while the limit was held", fb.creates)
	}
	if err := limiter.NewEnqueued(f.rdb).Release(context.Background(), scope, "other"); err != nil {
		t.Fatal(err)
	}
	name, body = f.onlyStep(StepSeal)
	if r := f.runStep(name, body, 0); r.outcome != OutBatchRunning || fb.creates != 1 {
		t.Fatalf("seal after release = %+v (%d creates)", r, fb.creates)
	}
}

func TestBatchStepDecoding(t *testing.T) {
	s := BatchStep{Op: StepPoll, Project: "p", Model: "m", Group: "g"}
	got, ok, err := DecodeBatchStep(EncodeBatchStep(s))
	if !ok || err != nil || got != s {
		t.Errorf("round trip = %+v %v %v", got, ok, err)
	}
	if _, ok, _ := DecodeBatchStep(encode(t, batchEnvelope("j", "k"))); ok {
		t.Error("a task envelope decoded as a batch step")
	}
	if _, ok, err := DecodeBatchStep([]byte(`{"gemq_batch":{"op":"nuke","project":"p","model":"m","group":"g"}}`)); !ok || err == nil {
		t.Errorf("bad op: ok %v err %v, want a malformed step", ok, err)
	}
}

// batchPush pushes n batch-tier tasks of job (message ids job-i).
func (f *fixture) batchPush(job string, n int) []task.Envelope {
	f.t.Helper()
	var envs []task.Envelope
	for i := range n {
		e := batchEnvelope(job, fmt.Sprintf("k%d", i))
		envs = append(envs, e)
		if r := f.serve(context.Background(), pushBodyWith(encode(f.t, e), fmt.Sprintf("%s-%d", job, i), 0), nil); r.outcome != OutBatched {
			f.t.Fatalf("push %s = %+v, want batched", e.Key, r)
		}
	}
	return envs
}

func (f *fixture) cancelJob(job string) {
	f.t.Helper()
	if _, _, err := f.store.CancelJob(context.Background(), job); err != nil {
		f.t.Fatalf("cancel %s: %v", job, err)
	}
}

func TestBatchCancelledMidBatch(t *testing.T) {
	f, fb := batchFixture(t)
	gone := f.batchPush("bc-gone", 2)
	kept := f.batchPush("bc-kept", 2)
	name, body := f.onlyStep(StepSeal)
	if r := f.runStep(name, body, 0); r.outcome != OutBatchRunning {
		t.Fatalf("seal = %+v", r)
	}
	g := onlyGroup(t, fb)
	f.cancelJob("bc-gone")
	// The next poll ends the cancelled job's tasks at once; the batch,
	// which still serves another job, runs on.
	pn, pb := f.onlyStep(StepPoll)
	if r := f.runStep(pn, pb, 0); r.outcome != OutBatchRunning {
		t.Fatalf("poll = %+v", r)
	}
	for _, e := range gone {
		if rec := f.record(e); rec.State != store.Failed || errorOf(t, rec.Error).Status != "CANCELLED" || !rec.Published {
			t.Errorf("%s = %+v, want failed CANCELLED, published", e.Key, rec)
		}
	}
	for _, e := range kept {
		if rec := f.record(e); rec.State != store.Waiting {
			t.Errorf("%s = %+v, want still batched", e.Key, rec)
		}
	}
	if len(fb.cancels) != 0 {
		t.Errorf("batch cancelled %v while another job's tasks are in it", fb.cancels)
	}
	if j, _ := f.store.GetJob(context.Background(), "bc-gone"); !j.Done() {
		t.Errorf("cancelled job = %+v, want done", j.Counts)
	}
	// The batch ends: the other job's tasks succeed, the cancelled ones
	// keep their one terminal state.
	fb.get = func(string) (gemini.Batch, error) { return fb.succeeded(g, nil), nil }
	pn, pb = f.onlyStep(StepPoll)
	if r := f.runStep(pn, pb, 0); r.outcome != OutBatchSettled {
		t.Fatalf("final poll = %+v", r)
	}
	for _, e := range kept {
		if rec := f.record(e); rec.State != store.Succeeded {
			t.Errorf("%s = %+v, want succeeded", e.Key, rec)
		}
	}
	for _, e := range gone {
		if rec := f.record(e); rec.State != store.Failed {
			t.Errorf("%s = %+v, want still failed CANCELLED", e.Key, rec)
		}
	}
	if pub := f.published(); len(pub) != 4 {
		t.Errorf("%d results published, want 4 (one per task)", len(pub))
	}
}

func TestBatchEveryJobCancelledCancelsTheBatch(t *testing.T) {
	f, fb := batchFixture(t)
	envs := f.batchPush("bc-all", 3)
	name, body := f.onlyStep(StepSeal)
	f.runStep(name, body, 0)
	f.cancelJob("bc-all")
	pn, pb := f.onlyStep(StepPoll)
	if r := f.runStep(pn, pb, 0); r.outcome != OutBatchRunning {
		t.Fatalf("poll = %+v", r)
	}
	if len(fb.cancels) != 1 {
		t.Fatalf("batch cancels = %v, want the batch cancelled once its every task was", fb.cancels)
	}
	fb.get = func(n string) (gemini.Batch, error) {
		return gemini.Batch{Name: n, State: string(genai.JobStateCancelled), Done: true, Reason: "the batch ended JOB_STATE_CANCELLED"}, nil
	}
	pn, pb = f.onlyStep(StepPoll)
	if r := f.runStep(pn, pb, 0); r.outcome != OutBatchSettled {
		t.Fatalf("poll after cancel = %+v", r)
	}
	for _, e := range envs {
		if rec := f.record(e); rec.State != store.Failed || errorOf(t, rec.Error).Status != "CANCELLED" {
			t.Errorf("%s = %+v, want failed CANCELLED", e.Key, rec)
		}
	}
	if pub := f.published(); len(pub) != 3 {
		t.Errorf("%d results published, want 3", len(pub))
	}
	if n := len(f.scheduled()); n != 0 {
		t.Errorf("%d Cloud Tasks left, want none (no fallback for cancelled tasks)", n)
	}
}

func TestBatchCancelledBeforeTheSealIsNeverSent(t *testing.T) {
	f, fb := batchFixture(t)
	envs := f.batchPush("bc-early", 2)
	f.cancelJob("bc-early")
	name, body := f.onlyStep(StepSeal)
	if r := f.runStep(name, body, 0); r.outcome != OutBatchSettled {
		t.Fatalf("seal = %+v, want the group settled without a batch", r)
	}
	if fb.creates != 0 {
		t.Errorf("%d batches created for a cancelled job", fb.creates)
	}
	for _, e := range envs {
		if rec := f.record(e); rec.State != store.Failed || errorOf(t, rec.Error).Status != "CANCELLED" {
			t.Errorf("%s = %+v, want failed CANCELLED", e.Key, rec)
		}
	}
}

// TestBatchFileInputThroughTheStandIn runs a group through the stand-in's
// Batch API with the genai client (the worker's gemini.Client), its input
// over the inline limit: uploaded as a JSONL file, answered as a responses
// file, each line mapped back to its task by its key.
func TestBatchFileInputThroughTheStandIn(t *testing.T) {
	f, _ := batchFixture(t)
	f.m.deps.Batch.API = f.gem
	f.m.opts.Batch.InlineBytes = 1 // every group goes as a file
	f.sim.SetBatch(geminisim.Batch{PendingFor: 10 * time.Millisecond, RunFor: 50 * time.Millisecond})
	envs := f.batchPush("bf", 3)
	name, body := f.onlyStep(StepSeal)
	if r := f.runStep(name, body, 0); r.outcome != OutBatchRunning {
		t.Fatalf("seal = %+v", r)
	}
	var uploads int
	for _, e := range f.sim.Log() {
		if strings.HasPrefix(e.Method, "files.upload") {
			uploads++
		}
	}
	if uploads == 0 {
		t.Errorf("no file uploaded; log methods: %v", logMethods(f.sim.Log()))
	}
	for try := 0; ; try++ {
		time.Sleep(100 * time.Millisecond)
		pn, pb := f.onlyStep(StepPoll)
		r := f.runStep(pn, pb, 0)
		if r.outcome == OutBatchSettled {
			break
		}
		if try == 20 {
			t.Fatalf("batch not settled after %d polls: %+v", try, r)
		}
	}
	for _, e := range envs {
		if rec := f.record(e); rec.State != store.Succeeded || !strings.Contains(string(rec.Response), "candidates") {
			t.Errorf("%s = %+v, want succeeded with the stand-in's answer", e.Key, rec)
		}
	}
	if st := f.sim.Stats(1); st.Batch == nil || st.Batch.Entries["ok"] != 3 || st.AnsweredTasks != 3 {
		t.Errorf("stand-in batch stats %+v, answered %d", st.Batch, st.AnsweredTasks)
	}
}

func logMethods(log []geminisim.Entry) []string {
	var out []string
	for _, e := range log {
		out = append(out, e.Method)
	}
	return out
}

// failingPublisher refuses every publish.
type failingPublisher struct{}

func (failingPublisher) Publish(context.Context, []queue.Message) error {
	return errors.New("results topic unavailable")
}

func TestBatchSettlePassRepeatedWhenResultsCannotBePublished(t *testing.T) {
	f, fb := batchFixture(t)
	envs := f.batchPush("bp", 3)
	name, body := f.onlyStep(StepSeal)
	f.runStep(name, body, 0)
	g := onlyGroup(t, fb)
	fb.get = func(string) (gemini.Batch, error) { return fb.succeeded(g, nil), nil }
	f.m.deps.Results = failingPublisher{}
	pn, pb := f.onlyStep(StepPoll)
	if r := f.runStep(pn, pb, 0); r.outcome != OutBatchRunning {
		t.Fatalf("poll with the results topic down = %+v, want another poll scheduled", r)
	}
	for _, e := range envs {
		if rec := f.record(e); rec.State != store.Succeeded || rec.Published {
			t.Fatalf("%s = %+v, want succeeded (written before the publish), not published", e.Key, rec)
		}
	}
	f.m.deps.Results = f.pub
	pn, pb = f.onlyStep(StepPoll)
	if r := f.runStep(pn, pb, 0); r.outcome != OutBatchSettled {
		t.Fatalf("next poll = %+v", r)
	}
	if pub := f.published(); len(pub) != 3 {
		t.Errorf("%d results published, want 3 (one per task)", len(pub))
	}
	for _, e := range envs {
		if rec := f.record(e); !rec.Published {
			t.Errorf("%s not marked published", e.Key)
		}
	}
	j, _ := f.store.GetJob(context.Background(), "bp")
	if j.Usage["batch"].Tasks != 3 {
		t.Errorf("batch usage = %+v, want 3 tasks counted once", j.Usage["batch"])
	}
}

// TestBatchCreateRefused429SealsAgainLater: the stand-in refuses the batch
// over its enqueued-token limit (429 RESOURCE_EXHAUSTED, as the Batch API
// does); the seal comes back later under a new name, and creates it once the
// limit allows.
func TestBatchCreateRefused429SealsAgainLater(t *testing.T) {
	f, _ := batchFixture(t)
	f.m.deps.Batch.API = f.gem
	f.sim.SetBatch(geminisim.Batch{EnqueuedTokens: 1, PendingFor: 10 * time.Millisecond, RunFor: 20 * time.Millisecond})
	envs := f.batchPush("b429", 2)
	name, body := f.onlyStep(StepSeal)
	if r := f.runStep(name, body, 0); r.outcome != OutBatchWaiting {
		t.Fatalf("seal refused 429 = %+v, want another seal later", r)
	}
	if st := f.sim.Stats(1); st.Batch == nil || st.Batch.Refused["enqueued_tokens"] != 1 || st.Batch.Created != 0 {
		t.Fatalf("stand-in batch stats %+v, want one create refused for enqueued tokens", st.Batch)
	}
	f.sim.SetBatch(geminisim.Batch{PendingFor: 10 * time.Millisecond, RunFor: 20 * time.Millisecond})
	name, body = f.onlyStep(StepSeal)
	if r := f.runStep(name, body, 0); r.outcome != OutBatchRunning {
		t.Fatalf("seal again = %+v", r)
	}
	for try := 0; ; try++ {
		time.Sleep(50 * time.Millisecond)
		pn, pb := f.onlyStep(StepPoll)
		if r := f.runStep(pn, pb, 0); r.outcome == OutBatchSettled {
			break
		}
		if try == 40 {
			t.Fatal("batch not settled")
		}
	}
	for _, e := range envs {
		if rec := f.record(e); rec.State != store.Succeeded {
			t.Errorf("%s = %+v, want succeeded", e.Key, rec)
		}
	}
	if st := f.sim.Stats(1); st.Batch.Created != 1 || st.AnsweredTasks != 2 {
		t.Errorf("stand-in: %d batches created, %d tasks answered; want 1 and 2", st.Batch.Created, st.AnsweredTasks)
	}
}

// TestBatchEnqueuedTokensUseTheLearnedEstimate: a batched task counts
// against the Batch API's enqueued-token limit with the estimate an
// interactive call would reserve (the learned correction of its content's
// kind), not raw characters/4: a digit-heavy job whose raw estimate is a
// third of the truth would otherwise overfill the limit.
func TestBatchEnqueuedTokensUseTheLearnedEstimate(t *testing.T) {
	f, _ := batchFixture(t)
	ctx := context.Background()
	scope := limiter.Scope{Project: testProject, Model: modelOpen}
	// Teach the scope that digits are three times their raw estimate.
	for i := 0; i < 6; i++ {
		cost, err := f.lim.Estimate(ctx, scope, gemini.KindDigits, 100)
		if err != nil {
			t.Fatal(err)
		}
		p, err := f.lim.Acquire(ctx, scope, cost)
		if err != nil || p.Outcome != limiter.Granted {
			t.Fatalf("acquire = %+v, %v", p, err)
		}
		if err := f.lim.Settle(ctx, p, 300); err != nil {
			t.Fatal(err)
		}
	}
	var digits []string
	for i := 0; i < 200; i++ {
		digits = append(digits, fmt.Sprint(i%10))
	}
	e := envelope("bjd", "d", modelOpen, strings.Join(digits, ","))
	e.ServiceTier = "batch"
	req, err := gemini.ParseRequest(e.Request)
	if err != nil {
		t.Fatal(err)
	}
	kind, raw := gemini.EstimateKind(req)
	want, err := f.lim.Estimate(ctx, scope, kind, raw)
	if err != nil {
		t.Fatal(err)
	}
	if kind != gemini.KindDigits || want.InputTokens < 2*raw {
		t.Fatalf("estimate of the digit prompt: kind %s, %d tokens from raw %d: the scope did not learn", kind, want.InputTokens, raw)
	}
	if r := f.push(e); r.outcome != OutBatched {
		t.Fatalf("push = %+v", r)
	}
	hint, _ := f.m.openGroups.Load(scope)
	g, err := f.m.deps.Batch.Groups.Get(ctx, scope, hint.(string))
	if err != nil {
		t.Fatal(err)
	}
	if g.Entries != 1 || g.Tokens != want.InputTokens {
		t.Errorf("group = %d entries, %d tokens; want 1 entry of %d tokens (the learned estimate, raw %d)", g.Entries, g.Tokens, want.InputTokens, raw)
	}
}
