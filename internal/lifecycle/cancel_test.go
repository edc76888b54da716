package lifecycle

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
)

// A cancelled job's tasks end at their next delivery: a task waiting for
// its reserved slot ends failed CANCELLED when its Cloud Task comes, with
// no Gemini call, one published result, and its slot given back; a task
// never delivered before ends the same way; the job then is done.
func TestCancelledJobEndsItsTasksWithoutCalling(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	ctx := context.Background()
	e, tk, p := f.deferSecond("job-cancel")
	third := envelope("job-cancel", "third", modelTight, "three")

	j, code, err := f.store.CancelJob(ctx, "job-cancel")
	if err != nil || code != store.CancelledNow || j.State() != "cancelling" || j.CancelledAt.IsZero() {
		t.Fatalf("CancelJob = state %q, cancelled at %v, code %d, %v; want cancelling, a time, CancelledNow", j.State(), j.CancelledAt, code, err)
	}
	if _, code, _ := f.store.CancelJob(ctx, "job-cancel"); code != store.CancelledBefore {
		t.Errorf("second CancelJob = %d, want CancelledBefore", code)
	}

	// The waiting task's Cloud Task, before its slot: ended at once.
	want(t, f.callback(shortName(tk.Name), tk.GetHttpRequest().GetBody()), http.StatusOK, OutFailed)
	// A task of the job delivered for the first time: ended too.
	want(t, f.push(third), http.StatusOK, OutFailed)
	for _, x := range [][2]string{{e.TaskID, e.Key}, {third.TaskID, third.Key}} {
		if n := len(f.generateCalls(x[0])); n != 0 {
			t.Errorf("task %s: %d Gemini calls, want 0", x[1], n)
		}
	}
	rec := f.record(e)
	if rec.State != store.Failed || errorOf(t, rec.Error).Status != "CANCELLED" || errorOf(t, rec.Error).Code != 499 {
		t.Errorf("waiting task ended %s with %s, want failed CANCELLED 499", rec.State, rec.Error)
	}
	if d := cmp.Diff(store.Counts{Total: 3, Succeeded: 1, Failed: 2}, f.counts("job-cancel")); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
	if j, _ := f.store.GetJob(ctx, "job-cancel"); j.State() != "done" {
		t.Errorf("job state %q, want done once every task ended", j.State())
	}
	failed := 0
	for _, m := range f.published() {
		if l := line(t, m.Data); l.Error != nil {
			failed++
		}
	}
	if failed != 2 {
		t.Errorf("%d failed results published, want 2 (one per cancelled task)", failed)
	}
	// A finished job cannot be cancelled (nothing written).
	if _, code, _ := f.store.CancelJob(ctx, "job-cancel"); code != store.CancelledBefore {
		t.Errorf("CancelJob of the done, cancelled job = %d, want CancelledBefore", code)
	}

	// The waiting task's slot was given back: a task of another job gets it,
	// not the one after it.
	other := envelope("job-other", "k", modelTight, "four")
	want(t, f.push(other), http.StatusOK, OutDeferred)
	op := taskPermit(t, f.cloudTask(queue.TaskName(other.TaskID, 1)))
	if d := op.At.Sub(p.At); d < -time.Second || d > time.Second {
		t.Errorf("the next reservation is at %v, %v from the cancelled task's slot %v: want that slot, given back", op.At, d, p.At)
	}
}

// A job that finished cannot be cancelled, and an unknown one is not found.
func TestCancelFinishedOrUnknownJob(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	ctx := context.Background()
	want(t, f.push(envelope("job-fin", "k", modelOpen, "hi")), http.StatusOK, OutSucceeded)
	j, code, err := f.store.CancelJob(ctx, "job-fin")
	if err != nil || code != store.FinishedBefore || !j.CancelledAt.IsZero() || j.State() != "done" {
		t.Errorf("CancelJob of a finished job = %d, cancelled at %v, state %q, %v; want FinishedBefore, nothing written", code, j.CancelledAt, j.State(), err)
	}
	if _, _, err := f.store.CancelJob(ctx, "job-none"); err != store.ErrNotFound {
		t.Errorf("CancelJob of an unknown job: %v, want ErrNotFound", err)
	}
}
