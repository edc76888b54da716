package lifecycle

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

// A copy of a task that carries its job's hash (copied from the real
// message) but another request is dead-lettered as a conflict whatever the
// task's state, never run in its place: not while the task waits for its
// Cloud Task (a copy numbered as that deferral would otherwise lease it and
// carry on with its own request), nor once the task finished (it would
// otherwise be acknowledged as a duplicate, leaving no trace). The task's
// own messages, and the copies the worker makes of them, run as before.
func TestConflictingCopyWithTheJobHashIsDeadLettered(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	ctx := context.Background()
	const job, hash = "job-ch", "hch"
	mk := func(key, prompt string) task.Envelope {
		e := envelope(job, key, modelTight, prompt)
		e.JobHash, e.JobTotal = hash, 2
		return e
	}
	first, real := mk("first", "one"), mk("second", "the real prompt")
	if _, _, err := f.store.CreateJob(ctx, store.NewJob{ID: job, Model: modelTight, ContentHash: hash,
		TaskIDs: []string{first.TaskID, real.TaskID}}); err != nil {
		t.Fatal(err)
	}
	want(t, f.push(first), http.StatusOK, OutSucceeded)
	want(t, f.push(real), http.StatusOK, OutDeferred)
	tk := f.cloudTask(queue.TaskName(real.TaskID, 1))
	if tk == nil {
		t.Fatal("no cloud task for deferral 1")
	}

	// A copy with another request, numbered as the awaited deferral.
	cp := mk("second", "another prompt under the same key and job hash")
	cp.Deferrals = 1
	copyData := encode(t, cp)
	want(t, f.serve(ctx, pushBodyWith(copyData, "m-copy1", 1), nil), http.StatusOK, OutForeign)
	if rec := f.record(real); rec.State != store.Waiting {
		t.Fatalf("task after the copy = %s, want still waiting for its Cloud Task", rec.State)
	}
	if n := len(f.scheduled()); n != 1 {
		t.Fatalf("%d Cloud Tasks, want 1 (the copy scheduled nothing)", n)
	}

	// The task's own Cloud Task runs it, at its slot.
	time.Sleep(time.Until(taskPermit(t, tk).At))
	want(t, f.callback(shortName(tk.Name), tk.GetHttpRequest().GetBody()), http.StatusOK, OutSucceeded)
	// Once finished, the copy again, and the task's own message again.
	want(t, f.serve(ctx, pushBodyWith(copyData, "m-copy2", 1), nil), http.StatusOK, OutForeign)
	want(t, f.serve(ctx, pushBodyWith(encode(t, real), "m-real-again", 1), nil), http.StatusOK, OutDuplicate)

	wantConflicts(t, f, real.TaskID, copyData, 2, 2)
}

// ingestJob creates a job as ingest does (every task's request fingerprint
// recorded with it, before any message exists) and returns its envelopes,
// carrying the job's hash, total and creation time.
func ingestJob(t *testing.T, f *fixture, job string, prompts map[string]string) (store.NewJob, map[string]task.Envelope) {
	t.Helper()
	nj := store.NewJob{ID: job, Model: modelOpen, ContentHash: "h-" + job}
	envs := map[string]task.Envelope{}
	for k, p := range prompts {
		e := envelope(job, k, modelOpen, p)
		e.JobHash, e.JobTotal = nj.ContentHash, len(prompts)
		nj.TaskIDs = append(nj.TaskIDs, e.TaskID)
		nj.Fingerprints = append(nj.Fingerprints, task.RequestFingerprint(e.Model, e.Request))
		envs[k] = e
	}
	rec, _, err := f.store.CreateJob(context.Background(), nj)
	if err != nil {
		t.Fatal(err)
	}
	for k, e := range envs {
		e.JobCreated = rec.CreatedAt.UTC().Format(time.RFC3339Nano)
		envs[k] = e
	}
	return nj, envs
}

// A copy with the job's hash and another request that reaches the worker
// before the task's own message does not define the task: ingest recorded
// the task's fingerprint when it created the job, so the copy is
// dead-lettered as a conflict, also after the job is resubmitted, and the
// task's own message then runs once, with one result: its own.
func TestCopyBeforeTheTaskIsDeadLettered(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	ctx := context.Background()
	nj, envs := ingestJob(t, f, "job-cf", map[string]string{"k": "the real prompt", "other": "another task"})
	real := envs["k"]
	cp := real
	cp.Request = envelope("job-cf", "k", modelOpen, "a copy's prompt under the task's key").Request
	copyData := encode(t, cp)

	want(t, f.serve(ctx, pushBodyWith(copyData, "m-copy1", 1), nil), http.StatusOK, OutForeign)
	if c := f.counts("job-cf"); c.Queued != 2 {
		t.Fatalf("counts after the copy = %+v, want both tasks queued", c)
	}
	if _, created, err := f.store.CreateJob(ctx, nj); err != nil || created {
		t.Fatalf("resubmission = %v, %v; want accepted", created, err)
	}
	want(t, f.serve(ctx, pushBodyWith(copyData, "m-copy2", 1), nil), http.StatusOK, OutForeign)

	want(t, f.push(real), http.StatusOK, OutSucceeded)
	want(t, f.serve(ctx, pushBodyWith(copyData, "m-copy3", 1), nil), http.StatusOK, OutForeign)
	want(t, f.serve(ctx, pushBodyWith(encode(t, real), "m-real-again", 1), nil), http.StatusOK, OutDuplicate)

	wantConflicts(t, f, real.TaskID, copyData, 3, 1)
	if l := line(t, f.published()[0].Data); l.Key != "k" || l.Response == nil {
		t.Errorf("result %+v, want the task's response", l)
	}
}

// After Redis lost its data (the job's record and fingerprints with it),
// the task's own message is not refused: it runs, the job is re-created as
// state_lost with its creation time from the envelope, and the task's first
// lease defines it again (a copy after it is a conflict).
func TestLostFingerprintsFallBackAndKeepTheCreationTime(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	ctx := context.Background()
	_, envs := ingestJob(t, f, "job-lf", map[string]string{"k": "the real prompt", "other": "another task"})
	real := envs["k"]
	created := real.JobCreatedTime()
	time.Sleep(20 * time.Millisecond) // the loss comes visibly later
	if err := f.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	f.m.deps.Permits = limiter.New(f.rdb, f.limCfg) // an instance started after the loss (see TestStateLossIsReported)

	want(t, f.push(envs["k"]), http.StatusOK, OutSucceeded)
	j, err := f.store.GetJob(ctx, "job-lf")
	if err != nil {
		t.Fatal(err)
	}
	if j.State() != "state_lost" || j.Counts.Total != 2 || !j.CreatedAt.Equal(created) || !j.LostAt.After(created) {
		t.Fatalf("job after the loss = %s %+v created %v lost %v; want state_lost, total 2, created %v", j.State(), j.Counts,
			j.CreatedAt, j.LostAt, created)
	}
	cp := envs["k"]
	cp.Request = envelope("job-lf", "k", modelOpen, "a copy's prompt").Request
	want(t, f.push(cp), http.StatusOK, OutForeign)
	if n := len(f.generateCalls(envs["k"].TaskID)); n != 1 {
		t.Errorf("gemini calls = %d, want 1", n)
	}
}

// wantConflicts checks that the dead-letter topic holds n copies of
// copyData, each of kind conflict with its reason, that Gemini was called
// once for the task (from its own message), and that the results topic
// holds results results.
func wantConflicts(t *testing.T, f *fixture, taskID string, copyData []byte, n, results int) {
	t.Helper()
	if calls := f.generateCalls(taskID); len(calls) != 1 {
		t.Fatalf("gemini calls = %d, want 1 (the task's own message)", len(calls))
	}
	if got := len(f.published()); got != results {
		t.Fatalf("%d results, want %d (one per finished task)", got, results)
	}
	dead := f.deadLettered()
	if len(dead) != n {
		t.Fatalf("dead letters = %d, want the %d copies", len(dead), n)
	}
	for _, m := range dead {
		if m.Attributes[AttrDeadLetterKind] != string(KindConflict) || string(m.Data) != string(copyData) ||
			!strings.Contains(m.Attributes[AttrDeadLetterReason], "another model or request") {
			t.Fatalf("dead letter %q %v, want the copy's bytes, kind conflict and the reason", m.Data, m.Attributes)
		}
	}
}

// A malformed copy that carries the job's hash (a request Gemini would
// refuse, under the task's key) is dead-lettered as invalid_request and
// does not fail the task, even when it comes first: its request is not the
// one ingest recorded. The task's own message then runs it.
func TestMalformedCopyWithTheJobHashLeavesTheTask(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	_, envs := ingestJob(t, f, "job-mc", map[string]string{"k": "the real prompt"})
	real := envs["k"]
	bad := real
	bad.Request = json.RawMessage(`{"contents":[{"role":"user","parts":[{"textt":"typo"}]}]}`)
	want(t, f.serve(context.Background(), pushBodyWith(encode(t, bad), "m-bad", 1), nil), http.StatusOK, OutPoison)
	if rec := f.record(real); rec.State != store.Queued {
		t.Fatalf("task after a malformed copy with the job's hash = %s, want untouched (queued)", rec.State)
	}
	want(t, f.push(real), http.StatusOK, OutSucceeded)
	if dead := f.deadLettered(); len(dead) != 1 || dead[0].Attributes[AttrDeadLetterKind] != string(KindInvalidRequest) {
		t.Fatalf("dead letters = %v, want the copy as invalid_request", dead)
	}
}
