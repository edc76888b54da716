package lifecycle

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

// withTier sets an envelope's tier and deadline.
func withTier(e task.Envelope, tier string, deadline time.Time) task.Envelope {
	e.ServiceTier = tier
	if !deadline.IsZero() {
		e.Deadline = deadline.UTC().Format(time.RFC3339Nano)
	}
	return e
}

// nextDeferral returns the body of the task's Cloud Task for deferral n.
func nextDeferral(t *testing.T, f *fixture, e task.Envelope, n int) task.Envelope {
	t.Helper()
	for _, tk := range f.scheduled() {
		if shortName(tk.Name) == queue.TaskName(e.TaskID, n) {
			return taskBody(t, tk)
		}
	}
	t.Fatalf("no cloud task for deferral %d", n)
	return task.Envelope{}
}

func TestFlexShedDeferredNotFailed(t *testing.T) {
	f := newFixture(t, fixtureOptions{sim: geminisim.Options{Tiers: geminisim.Tiers{FlexShedRate: 1}},
		opts: Options{MaxAttempts: 2, CapacityBase: 10 * time.Millisecond, CapacityMax: 10 * time.Millisecond}})
	e := withTier(envelope("job-flex", "k", modelOpen, "one"), "flex", time.Now().Add(time.Hour))
	want(t, f.push(e), http.StatusOK, OutDeferred)
	// More sheds than MaxAttempts: none counts as a failed attempt.
	for n := 1; n <= 3; n++ {
		next := nextDeferral(t, f, e, n)
		if next.Attempt != 0 || next.ServiceTier != "flex" {
			t.Fatalf("deferral %d: attempt %d tier %q, want 0 and flex", n, next.Attempt, next.ServiceTier)
		}
		want(t, f.callback(queue.TaskName(e.TaskID, n), encode(t, next)), http.StatusOK, OutDeferred)
	}
	// Gemini recovers: the task succeeds at flex, once.
	f.sim.SetTiers(geminisim.Tiers{})
	want(t, f.callback(queue.TaskName(e.TaskID, 4), encode(t, nextDeferral(t, f, e, 4))), http.StatusOK, OutSucceeded)
	calls := f.generateCalls(e.TaskID)
	if len(calls) != 5 || calls[4].Tier != "flex" || calls[4].ServedTier != "flex" {
		t.Fatalf("calls = %+v, want 4 sheds then one served at flex", calls)
	}
	j, err := f.store.GetJob(t.Context(), e.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if u := j.Usage["flex"]; u.Tasks != 1 || u.Input != calls[4].InputTokens || u.Output == 0 || len(j.Usage) != 1 {
		t.Errorf("usage = %+v, want one flex task with the served call's tokens", j.Usage)
	}
	if d := cmp.Diff(store.Counts{Total: 1, Succeeded: 1}, j.Counts); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
	if msgs := f.published(); len(msgs) != 1 || msgs[0].Attributes[attrOutcome] != OutSucceeded {
		t.Errorf("published = %v, want one success", msgs)
	}
}

func TestFlexShedPastTheDeadlineFails(t *testing.T) {
	f := newFixture(t, fixtureOptions{sim: geminisim.Options{Tiers: geminisim.Tiers{FlexShedRate: 1}},
		opts: Options{CapacityBase: time.Minute, CapacityMax: time.Minute}})
	e := withTier(envelope("job-flex-late", "k", modelOpen, "one"), "flex", time.Now().Add(30*time.Second))
	want(t, f.push(e), http.StatusOK, OutFailed)
	rec := f.record(e)
	if eo := errorOf(t, rec.Error); rec.State != store.Failed || eo.Code != 504 || !strings.Contains(eo.Message, "deadline") {
		t.Fatalf("record = %s %s, want a deadline failure", rec.State, rec.Error)
	}
	if n := len(f.scheduled()); n != 0 {
		t.Errorf("scheduled = %d, want none", n)
	}
}

func TestStandardIs503StillAFailedAttempt(t *testing.T) {
	// A shed is flex's: at standard a 503 stays a transient failure.
	f := newFixture(t, fixtureOptions{sim: geminisim.Options{Faults: geminisim.Faults{Error503: 1}}})
	e := envelope("job-std", "k", modelOpen, "one")
	want(t, f.push(e), http.StatusOK, OutDeferred)
	if next := nextDeferral(t, f, e, 1); next.Attempt != 1 {
		t.Errorf("attempt = %d, want 1", next.Attempt)
	}
}

func TestPriorityDowngradeRecorded(t *testing.T) {
	f := newFixture(t, fixtureOptions{sim: geminisim.Options{Tiers: geminisim.Tiers{PriorityRPM: 1}}})
	a := withTier(envelope("job-prio", "a", modelOpen, "one"), "priority", time.Time{})
	b := withTier(envelope("job-prio", "b", modelOpen, "two"), "priority", time.Time{})
	want(t, f.push(a), http.StatusOK, OutSucceeded)
	want(t, f.push(b), http.StatusOK, OutSucceeded)
	j, err := f.store.GetJob(t.Context(), "job-prio")
	if err != nil {
		t.Fatal(err)
	}
	if j.Downgraded != 1 || j.Usage["priority"].Tasks != 1 || j.Usage["standard"].Tasks != 1 {
		t.Errorf("job: downgraded %d, usage %+v; want 1, one task at each tier", j.Downgraded, j.Usage)
	}
	msgs := f.published()
	var downgraded int
	for _, m := range msgs {
		if l := line(t, m.Data); l.Downgrade != nil {
			downgraded++
			if *l.Downgrade != (store.Downgrade{Asked: "priority", Served: "standard"}) {
				t.Errorf("downgrade = %+v", *l.Downgrade)
			}
		}
	}
	if downgraded != 1 || f.record(b).Line().Downgrade == nil {
		t.Errorf("%d published lines carry the downgrade, stored line %+v; want 1 and it", downgraded, f.record(b).Line())
	}
}

func TestAutoTaskResolvedByDeadline(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	far := withTier(envelope("job-auto", "far", modelOpen, "one"), "auto", time.Now().Add(time.Hour))
	near := withTier(envelope("job-auto", "near", modelOpen, "two"), "auto", time.Now().Add(time.Minute))
	want(t, f.push(far), http.StatusOK, OutSucceeded)
	want(t, f.push(near), http.StatusOK, OutSucceeded)
	if c := f.generateCalls(far.TaskID); len(c) != 1 || c[0].Tier != "flex" {
		t.Errorf("far deadline: calls %+v, want one at flex", c)
	}
	if c := f.generateCalls(near.TaskID); len(c) != 1 || c[0].Tier != "standard" {
		t.Errorf("near deadline: calls %+v, want one at standard", c)
	}
}
