package lifecycle

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

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

	dead := f.deadLettered()
	if len(dead) != 2 {
		t.Fatalf("dead letters = %d, want the two copies", len(dead))
	}
	for _, m := range dead {
		if m.Attributes[AttrDeadLetterKind] != string(KindConflict) || string(m.Data) != string(copyData) ||
			!strings.Contains(m.Attributes[AttrDeadLetterReason], "another model or request") {
			t.Fatalf("dead letter %q %v, want the copy's bytes, kind conflict and the reason", m.Data, m.Attributes)
		}
	}
	if calls := f.generateCalls(real.TaskID); len(calls) != 1 {
		t.Fatalf("gemini calls = %d, want 1 (the task's own message)", len(calls))
	}
	if n := len(f.published()); n != 2 {
		t.Fatalf("%d results, want one per task", n)
	}
}
