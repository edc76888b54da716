package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"

	"cloud.google.com/go/cloudtasks/apiv2/cloudtaskspb"
	"cloud.google.com/go/pubsub/v2/pstest"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/internal/config"
	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

func want(t *testing.T, got result, status int, outcome string) {
	t.Helper()
	if got.status != status || got.outcome != outcome {
		t.Fatalf("answer = %d %q, want %d %q", got.status, got.outcome, status, outcome)
	}
}

func TestSuccessWritesOncePublishesOnce(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	e := envelope("job-ok", "k1", modelOpen, "hello there")

	want(t, f.push(e), http.StatusOK, OutSucceeded)

	rec := f.record(e)
	if rec.State != store.Succeeded || len(rec.Response) == 0 {
		t.Fatalf("record = %+v, want succeeded with a response", rec)
	}
	if n := len(f.generateCalls(e.TaskID)); n != 1 {
		t.Fatalf("gemini calls = %d, want 1", n)
	}
	msgs := f.published()
	if len(msgs) != 1 {
		t.Fatalf("published %d messages, want 1", len(msgs))
	}
	wantAttrs := map[string]string{attrJobID: e.JobID, attrTaskID: e.TaskID, attrOutcome: OutSucceeded}
	if d := cmp.Diff(wantAttrs, msgs[0].Attributes); d != "" {
		t.Errorf("attributes (-want +got):\n%s", d)
	}
	l := line(t, msgs[0].Data)
	if l.Key != "k1" || len(l.Response) == 0 || l.Error != nil {
		t.Errorf("published line = %s", msgs[0].Data)
	}
	var resp struct {
		UsageMetadata struct{ PromptTokenCount int64 } `json:"usageMetadata"`
	}
	json.Unmarshal(l.Response, &resp)
	if resp.UsageMetadata.PromptTokenCount == 0 {
		t.Errorf("response has no usageMetadata.promptTokenCount: %s", l.Response)
	}
	if d := cmp.Diff(store.Counts{Total: 1, Succeeded: 1}, f.counts(e.JobID)); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
	if tks := f.scheduled(); len(tks) != 0 {
		t.Errorf("scheduled %d cloud tasks, want none", len(tks))
	}
}

func TestDuplicatesSequential(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	e := envelope("job-dup", "k1", modelOpen, "say it once")
	want(t, f.push(e), http.StatusOK, OutSucceeded)
	for range 3 {
		want(t, f.push(e), http.StatusOK, OutDuplicate)
	}
	if n := len(f.generateCalls(e.TaskID)); n != 1 {
		t.Fatalf("gemini calls = %d, want 1", n)
	}
	if n := len(f.published()); n != 1 {
		t.Fatalf("published = %d, want 1", n)
	}
	if d := cmp.Diff(store.Counts{Total: 1, Succeeded: 1}, f.counts(e.JobID)); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
}

func TestDuplicatesConcurrent(t *testing.T) {
	f := newFixture(t, fixtureOptions{sim: geminisim.Options{Latency: geminisim.Latency{Kind: "fixed", Fixed: 300 * time.Millisecond}}})
	e := envelope("job-dup", "k1", modelOpen, "say it once, concurrently")
	const n = 8
	var wg sync.WaitGroup
	got := make([]result, n)
	for i := range n {
		wg.Go(func() { got[i] = f.push(e) })
	}
	wg.Wait()
	byOutcome := map[string]int{}
	for _, r := range got {
		if r.status != http.StatusOK {
			t.Errorf("answer %d %q, want 200", r.status, r.outcome)
		}
		byOutcome[r.outcome]++
	}
	if byOutcome[OutSucceeded] != 1 || byOutcome[OutHeld]+byOutcome[OutDuplicate] != n-1 {
		t.Fatalf("outcomes = %v, want one succeeded and the rest held or duplicate", byOutcome)
	}
	if c := len(f.generateCalls(e.TaskID)); c != 1 {
		t.Fatalf("gemini calls = %d, want 1", c)
	}
	if c := len(f.published()); c != 1 {
		t.Fatalf("published = %d, want 1", c)
	}
	if d := cmp.Diff(store.Counts{Total: 1, Succeeded: 1}, f.counts(e.JobID)); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
	// Deliveries that found the task held share one lease check; when it
	// comes back, the task is done and nothing more happens.
	tks := f.scheduled()
	if byOutcome[OutHeld] > 0 && len(tks) != 1 {
		t.Fatalf("lease checks scheduled = %d, want 1", len(tks))
	}
	for _, tk := range tks {
		if got, want := shortName(tk.Name), leaseCheckName(e); got != want {
			t.Errorf("lease check name = %s, want %s", got, want)
		}
		if d := time.Until(tk.ScheduleTime.AsTime()); d < f.m.firstLease() {
			t.Errorf("lease check due in %v, want after the holder's lease (%v)", d, f.m.firstLease())
		}
		want(t, f.callback(shortName(tk.Name), tk.GetHttpRequest().GetBody()), http.StatusOK, OutDuplicate)
	}
	if c := len(f.generateCalls(e.TaskID)); c != 1 {
		t.Fatalf("gemini calls after the lease check = %d, want 1", c)
	}
}

// A lease check that finds the task still running under a dead lease (its
// holder was killed without a trace) takes it over and completes it.
func TestLeaseCheckTakesOverADeadLease(t *testing.T) {
	f := newFixture(t, fixtureOptions{opts: Options{Lease: 300 * time.Millisecond, GeminiTimeout: 200 * time.Millisecond}})
	e := envelope("job-dead", "k1", modelOpen, "the first holder dies")
	// The "dead" holder: leased, then nothing.
	if res, err := f.store.LeaseTask(context.Background(), store.RefOf(e), store.LeaseRequest{Holder: "dead-holder", TTL: 300 * time.Millisecond}); err != nil || res.Outcome != store.Applied {
		t.Fatalf("lease = %+v, %v", res, err)
	}
	want(t, f.push(e), http.StatusOK, OutHeld)
	tks := f.scheduled()
	if len(tks) != 1 {
		t.Fatalf("scheduled %d cloud tasks, want 1 lease check", len(tks))
	}
	if f.allGenerateCalls() != 0 {
		t.Fatal("gemini called while the task was held")
	}
	time.Sleep(600 * time.Millisecond) // the dead lease (300 ms) has surely expired
	want(t, f.callback(shortName(tks[0].Name), tks[0].GetHttpRequest().GetBody()), http.StatusOK, OutSucceeded)
	if rec := f.record(e); rec.State != store.Succeeded {
		t.Fatalf("state = %s, want succeeded", rec.State)
	}
	if c := len(f.published()); c != 1 {
		t.Fatalf("published = %d, want 1", c)
	}
}

func TestPoison(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	t.Run("garbage", func(t *testing.T) {
		want(t, f.serve(context.Background(), []byte("{not json"), nil), http.StatusOK, OutPoison)
		want(t, f.serve(context.Background(), pushBody([]byte("not an envelope")), nil), http.StatusOK, OutPoison)
		want(t, f.serve(context.Background(), []byte(`{"subscription":"s"}`), nil), http.StatusOK, OutPoison)
		want(t, f.callback("some-task", []byte(`{"v":1}`)), http.StatusOK, OutPoison)
	})
	t.Run("attributable", func(t *testing.T) {
		// A valid job, key and model, but the request is not an object.
		raw := []byte(`{"v":1,"job_id":"job-poison","key":"k1","model":"gemini-2.5-flash","request":[1,2]}`)
		want(t, f.serve(context.Background(), pushBody(raw), nil), http.StatusOK, OutPoison)
		e := envelope("job-poison", "k1", modelOpen, "")
		rec := f.record(e)
		if rec.State != store.Failed || errorOf(t, rec.Error).Code != 400 || !strings.Contains(errorOf(t, rec.Error).Message, "request") {
			t.Fatalf("record = %+v %s, want failed 400 naming the field", rec, rec.Error)
		}
		msgs := f.published()
		if len(msgs) != 1 || msgs[0].Attributes[attrOutcome] != OutFailed {
			t.Fatalf("published = %v, want one failed result", msgs)
		}
		if d := cmp.Diff(store.Counts{Total: 1, Failed: 1}, f.counts("job-poison")); d != "" {
			t.Errorf("counts (-want +got):\n%s", d)
		}
	})
	if f.allGenerateCalls() != 0 {
		t.Fatal("gemini called for poison")
	}
	if n := len(f.scheduled()); n != 0 {
		t.Fatalf("scheduled %d cloud tasks for poison", n)
	}
}

// A valid envelope whose request Gemini would refuse: its task fails with
// 400 naming the field, without a call, and a copy is dead-lettered; a
// malformed copy of a task of an ingest job (no job hash) leaves that task
// alone, while its own message (carrying the job's hash) fails it.
func TestInvalidRequestFailsWithoutCall(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	e := envelope("job-bad", "k1", modelOpen, "x")
	e.Request = json.RawMessage(`{"contents":[{"role":"user","parts":[{"textt":"typo"}]}]}`)
	want(t, f.push(e), http.StatusOK, OutPoison)
	rec := f.record(e)
	if eo := errorOf(t, rec.Error); rec.State != store.Failed || eo.Code != 400 || eo.Status != "INVALID_ARGUMENT" || !strings.Contains(eo.Message, "textt") {
		t.Fatalf("record = %s %s", rec.State, rec.Error)
	}
	if dead := f.deadLettered(); len(dead) != 1 || dead[0].Attributes[AttrDeadLetterKind] != string(KindInvalidRequest) {
		t.Fatalf("dead letters = %v, want one invalid_request copy", dead)
	}

	in := envelope("job-ingested", "k1", modelOpen, "y")
	if _, _, err := f.store.CreateJob(context.Background(), store.NewJob{ID: in.JobID, Model: modelOpen, ContentHash: "h", TaskIDs: []string{in.TaskID}}); err != nil {
		t.Fatal(err)
	}
	in.Request = e.Request
	want(t, f.push(in), http.StatusOK, OutPoison)
	if rec := f.record(in); rec.State != store.Queued {
		t.Fatalf("an ingest task after a malformed copy = %s, want untouched (queued)", rec.State)
	}
	in.JobHash, in.JobTotal = "h", 1
	want(t, f.serve(context.Background(), pushBodyWith(encode(t, in), "m-own", 1), nil), http.StatusOK, OutPoison)
	if rec := f.record(in); rec.State != store.Failed {
		t.Fatalf("an ingest task after its own invalid message = %s, want failed", rec.State)
	}
	if f.allGenerateCalls() != 0 {
		t.Fatal("gemini called for an invalid request")
	}
}

func TestRejectedAndUnknownModelFailPermanently(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	big := envelope("job-rej", "big", modelSmall, strings.Repeat("many words here ", 100))
	want(t, f.push(big), http.StatusOK, OutFailed)
	if eo := errorOf(t, f.record(big).Error); eo.Code != 400 || !strings.Contains(eo.Message, "tpm") {
		t.Errorf("rejected error = %+v", eo)
	}
	unknown := envelope("job-rej", "unknown", "no-such-model", "hi")
	want(t, f.push(unknown), http.StatusOK, OutFailed)
	if eo := errorOf(t, f.record(unknown).Error); !strings.Contains(eo.Message, "no quota") {
		t.Errorf("unknown model error = %+v", eo)
	}
	if f.allGenerateCalls() != 0 {
		t.Fatal("gemini called")
	}
	if d := cmp.Diff(store.Counts{Total: 2, Failed: 2}, f.counts("job-rej")); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
	if n := len(f.published()); n != 2 {
		t.Errorf("published = %d, want 2", n)
	}
}

// Reserved: the task goes to Cloud Tasks a claim lead before its slot,
// carrying the permit; arriving earlier than the lead it is deferred again
// to the same slot; arriving on time it claims the slot and runs, without
// asking the limiter for a new one.
func TestReservationDeferAndClaim(t *testing.T) {
	const lead = 500 * time.Millisecond
	f := newFixture(t, fixtureOptions{opts: Options{ClaimLead: lead}})
	first := envelope("job-res", "first", modelTight, "one")
	second := envelope("job-res", "second", modelTight, "two")
	want(t, f.push(first), http.StatusOK, OutSucceeded)

	before := time.Now()
	want(t, f.push(second), http.StatusOK, OutDeferred)
	if n := len(f.generateCalls(second.TaskID)); n != 0 {
		t.Fatalf("gemini called for a deferred task")
	}
	if rec := f.record(second); rec.State != store.Waiting {
		t.Fatalf("state = %s, want waiting", rec.State)
	}
	if d := cmp.Diff(store.Counts{Total: 2, Waiting: 1, Succeeded: 1}, f.counts("job-res")); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
	tks := f.scheduled()
	if len(tks) != 1 {
		t.Fatalf("scheduled = %d, want 1", len(tks))
	}
	tk := tks[0]
	if got, want := shortName(tk.Name), queue.TaskName(second.TaskID, 1); got != want {
		t.Errorf("cloud task name = %s, want %s", got, want)
	}
	body := taskBody(t, tk)
	if body.Deferrals != 1 || body.Attempt != 0 {
		t.Errorf("deferred envelope deferrals/attempt = %d/%d, want 1/0", body.Deferrals, body.Attempt)
	}
	var p limiter.Permit
	if err := json.Unmarshal(body.Permit, &p); err != nil || p.Outcome != limiter.Reserved {
		t.Fatalf("carried permit = %s (%v), want reserved", body.Permit, err)
	}
	if at := tk.ScheduleTime.AsTime(); !at.Equal(p.At.Add(-lead)) || p.At.Before(before.Add(time.Second)) {
		t.Errorf("schedule time %v, permit at %v: want the claim lead (%v) before it, and about 2s ahead", at, p.At, lead)
	}

	// The same Pub/Sub message again: the task waits for its Cloud Task, so
	// the duplicate is acknowledged at once, with no second task.
	want(t, f.push(second), http.StatusOK, OutDuplicate)
	if n := len(f.scheduled()); n != 1 {
		t.Fatalf("scheduled after a redelivery = %d, want 1", n)
	}

	// Arriving earlier than the lead (~2s before the slot): deferred again
	// to the same slot, under the next name, without waiting.
	start := time.Now()
	want(t, f.callback(shortName(tk.Name), tk.GetHttpRequest().GetBody()), http.StatusOK, OutDeferred)
	if d := time.Since(start); d > time.Second {
		t.Errorf("an arrival beyond the lead took %v: it waited", d)
	}
	again := f.cloudTask(queue.TaskName(second.TaskID, 2))
	if again == nil {
		t.Fatal("no cloud task for deferral 2")
	}
	if ap := taskPermit(t, again); ap.ID != p.ID || !ap.At.Equal(p.At) || !again.ScheduleTime.AsTime().Equal(p.At.Add(-lead)) {
		t.Errorf("deferral 2 carries %s at %v, due %v; want %s at %v, due %v",
			ap.ID, ap.At, again.ScheduleTime.AsTime(), p.ID, p.At, p.At.Add(-lead))
	}

	// On time: claims the reservation and runs.
	time.Sleep(time.Until(p.At))
	want(t, f.callback(queue.TaskName(second.TaskID, 2), again.GetHttpRequest().GetBody()), http.StatusOK, OutSucceeded)
	if n := len(f.generateCalls(second.TaskID)); n != 1 {
		t.Fatalf("gemini calls = %d, want 1", n)
	}
	if d := cmp.Diff(store.Counts{Total: 2, Succeeded: 2}, f.counts("job-res")); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
}

// deferSecond runs a first modelTight task (it takes the window) and defers
// a second one, returning its envelope, its Cloud Task and the reservation
// that Cloud Task carries (about 2s ahead).
func (f *fixture) deferSecond(jobID string) (task.Envelope, *cloudtaskspb.Task, limiter.Permit) {
	f.t.Helper()
	want(f.t, f.push(envelope(jobID, "first", modelTight, "one")), http.StatusOK, OutSucceeded)
	e := envelope(jobID, "second", modelTight, "two")
	want(f.t, f.push(e), http.StatusOK, OutDeferred)
	tk := f.cloudTask(queue.TaskName(e.TaskID, 1))
	if tk == nil {
		f.t.Fatal("no cloud task for deferral 1")
	}
	return e, tk, taskPermit(f.t, tk)
}

// A Cloud Task callback early by less than the claim lead waits in the
// handler for its slot and claims it: one invocation, one Gemini call at
// the slot, no new Cloud Task, no new reservation.
func TestClaimLeadCallbackWithinTheLeadRunsInTheSameInvocation(t *testing.T) {
	const lead = time.Second
	f := newFixture(t, fixtureOptions{opts: Options{ClaimLead: lead}})
	e, tk, p := f.deferSecond("job-lead")
	due := tk.ScheduleTime.AsTime()
	if !due.Equal(p.At.Add(-lead)) {
		t.Fatalf("cloud task due %v, want %v (a lead before the slot %v)", due, p.At.Add(-lead), p.At)
	}
	lim := f.countLimiter()

	// Cloud Tasks delivers it when due, a lead before the slot.
	time.Sleep(time.Until(due))
	start := time.Now()
	want(t, f.callback(shortName(tk.Name), tk.GetHttpRequest().GetBody()), http.StatusOK, OutSucceeded)
	if d := time.Since(start); d < lead/2 {
		t.Errorf("the callback took %v, want about the lead (%v): it did not wait", d, lead)
	}
	calls := f.generateCalls(e.TaskID)
	if len(calls) != 1 {
		t.Fatalf("gemini calls = %d, want 1", len(calls))
	}
	// The quota guard is 100ms: the claim window opens at At-25ms.
	if got := calls[0].Received; got.Before(p.At.Add(-25 * time.Millisecond)) {
		t.Errorf("gemini called at %v, before the slot %v", got, p.At)
	}
	if n := len(f.scheduled()); n != 1 {
		t.Errorf("scheduled = %d Cloud Tasks, want 1 (no new deferral)", n)
	}
	if a, c, r := lim.calls(); a != 0 || c < 2 || r != 0 {
		t.Errorf("limiter calls: acquire %d, claim %d, release %d; want 0, at least 2 (early, then at the slot), 0", a, c, r)
	}
	if d := cmp.Diff(store.Counts{Total: 2, Succeeded: 2}, f.counts("job-lead")); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
	if !strings.Contains(f.logs(), "claimed the reserved slot after waiting for it") {
		t.Error("no log line for the wait")
	}
}

// A push whose fresh reservation is within the claim lead waits for it too:
// one invocation, no Cloud Task at all.
func TestClaimLeadPushWithinTheLeadRunsInTheSameInvocation(t *testing.T) {
	f := newFixture(t, fixtureOptions{opts: Options{ClaimLead: 3 * time.Second}})
	want(t, f.push(envelope("job-lead4", "first", modelTight, "one")), http.StatusOK, OutSucceeded)
	e := envelope("job-lead4", "second", modelTight, "two")
	lim := f.countLimiter()
	want(t, f.push(e), http.StatusOK, OutSucceeded)
	if n := len(f.scheduled()); n != 0 {
		t.Errorf("scheduled = %d Cloud Tasks, want 0", n)
	}
	if n := len(f.generateCalls(e.TaskID)); n != 1 {
		t.Errorf("gemini calls = %d, want 1", n)
	}
	if a, c, r := lim.calls(); a != 1 || c < 1 || r != 0 {
		t.Errorf("limiter calls: acquire %d, claim %d, release %d; want 1, at least 1, 0", a, c, r)
	}
}

// A Cloud Task callback early by more than the claim lead (+ slack) does not
// wait: it is deferred again, to a Cloud Task a lead before the same slot,
// carrying the same reservation.
func TestClaimLeadCallbackBeyondTheLeadIsDeferredAgain(t *testing.T) {
	const lead = time.Second
	f := newFixture(t, fixtureOptions{opts: Options{ClaimLead: lead}})
	e, tk, p := f.deferSecond("job-lead2")
	if due := tk.ScheduleTime.AsTime(); !due.Equal(p.At.Add(-lead)) {
		t.Errorf("cloud task due %v, want %v (a lead before the slot %v)", due, p.At.Add(-lead), p.At)
	}
	lim := f.countLimiter()

	// Delivered ~2s before the slot (as a paused queue's "run now" would).
	start := time.Now()
	want(t, f.callback(shortName(tk.Name), tk.GetHttpRequest().GetBody()), http.StatusOK, OutDeferred)
	if d := time.Since(start); d > lead/2 {
		t.Errorf("the callback took %v: it waited", d)
	}
	again := f.cloudTask(queue.TaskName(e.TaskID, 2))
	if again == nil {
		t.Fatal("no cloud task for deferral 2")
	}
	if ap := taskPermit(t, again); ap.ID != p.ID || !ap.At.Equal(p.At) {
		t.Errorf("deferral 2 carries %s at %v, want %s at %v", ap.ID, ap.At, p.ID, p.At)
	}
	if due := again.ScheduleTime.AsTime(); !due.Equal(p.At.Add(-lead)) {
		t.Errorf("deferral 2 due %v, want %v", due, p.At.Add(-lead))
	}
	if n := len(f.generateCalls(e.TaskID)); n != 0 {
		t.Errorf("gemini calls = %d, want 0", n)
	}
	if a, c, r := lim.calls(); a != 0 || c != 1 || r != 0 {
		t.Errorf("limiter calls: acquire %d, claim %d, release %d; want 0, 1, 0", a, c, r)
	}
	if rec := f.record(e); rec.State != store.Waiting {
		t.Errorf("state = %s, want waiting", rec.State)
	}
}

// A callback whose request ends while it waits for its slot answers
// non-2xx, gives the lease back and keeps the reservation: Cloud Tasks'
// retry of the same task claims it.
func TestClaimLeadWaitEndsWithTheRequest(t *testing.T) {
	f := newFixture(t, fixtureOptions{opts: Options{ClaimLead: time.Second}})
	e, tk, p := f.deferSecond("job-lead3")
	lim := f.countLimiter()
	time.Sleep(time.Until(tk.ScheduleTime.AsTime()))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	got := f.serve(ctx, tk.GetHttpRequest().GetBody(), http.Header{headerTaskName: {shortName(tk.Name)}})
	if got.status != http.StatusServiceUnavailable || got.outcome != OutAbandoned {
		t.Fatalf("answer %d %q, want 503 %q", got.status, got.outcome, OutAbandoned)
	}
	if _, _, r := lim.calls(); r != 0 {
		t.Errorf("%d releases, want 0 (the reservation stays with the Cloud Task)", r)
	}
	if n := len(f.generateCalls(e.TaskID)); n != 0 {
		t.Errorf("gemini calls = %d, want 0", n)
	}
	// Cloud Tasks retries the same task: it claims the same slot.
	want(t, f.callback(shortName(tk.Name), tk.GetHttpRequest().GetBody()), http.StatusOK, OutSucceeded)
	if calls := f.generateCalls(e.TaskID); len(calls) != 1 || calls[0].Received.Before(p.At.Add(-25*time.Millisecond)) {
		t.Errorf("gemini calls %+v, want one at the slot %v", calls, p.At)
	}
	if a, _, r := lim.calls(); a != 0 || r != 0 {
		t.Errorf("limiter: %d acquires, %d releases; want none", a, r)
	}
}

func TestDeniedComesBackAfterPacificMidnight(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	want(t, f.push(envelope("job-day", "a", modelDaily, "one")), http.StatusOK, OutSucceeded)
	e := envelope("job-day", "b", modelDaily, "two")
	want(t, f.push(e), http.StatusOK, OutDeferred)
	tks := f.scheduled()
	if len(tks) != 1 {
		t.Fatalf("scheduled = %d, want 1", len(tks))
	}
	// Denied until the daily quota's reset comes within the reservation
	// horizon (15m): then it asks again and reserves. Within the horizon
	// of Pacific midnight (the test may run then) the slot after midnight
	// is reserved at once instead: both are right, each checked.
	body := taskBody(t, tks[0])
	at := tks[0].ScheduleTime.AsTime()
	midnight := limiter.PacificDayStart(time.Now(), 1)
	if time.Until(midnight) > 16*time.Minute {
		if len(body.Permit) != 0 {
			t.Errorf("a denied task carries permit %s; want none", body.Permit)
		}
		if at.Before(midnight.Add(-16*time.Minute)) || at.After(midnight.Add(5*time.Second)) {
			t.Errorf("comes back at %v, want within the horizon before Pacific midnight %v", at, midnight)
		}
	} else if time.Until(midnight) < 14*time.Minute {
		if p := taskPermit(t, tks[0]); p.At.Before(midnight) {
			t.Errorf("reserved slot %v, want after Pacific midnight %v", p.At, midnight)
		}
	}
	if n := len(f.generateCalls(e.TaskID)); n != 0 {
		t.Fatal("gemini called for a denied task")
	}
}

func TestSeedPolicyRefusesWithoutReservation(t *testing.T) {
	f := newFixture(t, fixtureOptions{opts: Options{Policy: config.PolicySeed, SeedBase: 500 * time.Millisecond, SeedMax: time.Second}})
	want(t, f.push(envelope("job-seed", "a", modelTight, "one")), http.StatusOK, OutSucceeded)
	e := envelope("job-seed", "b", modelTight, "two")
	before := time.Now()
	want(t, f.push(e), http.StatusOK, OutDeferred)
	tks := f.scheduled()
	if len(tks) != 1 {
		t.Fatalf("scheduled = %d, want 1", len(tks))
	}
	body := taskBody(t, tks[0])
	if len(body.Permit) != 0 || body.Deferrals != 1 {
		t.Errorf("seed re-queue carries permit %s, deferrals %d; want none, 1", body.Permit, body.Deferrals)
	}
	if d := tks[0].ScheduleTime.AsTime().Sub(before); d < 250*time.Millisecond || d > 1500*time.Millisecond {
		t.Errorf("re-queued %v ahead, want the seed delay (250ms..500ms)", d)
	}
	// The refusal held nothing: a third task is not queued behind it, it is
	// refused the same way (no reservation chain).
	p, err := f.lim.Acquire(context.Background(), limiter.Scope{Project: testProject, Model: modelTight}, limiter.Cost{Requests: 1})
	if err != nil {
		t.Fatal(err)
	}
	f.lim.Release(context.Background(), p)
	if p.Outcome == limiter.Reserved && p.At.Sub(before) > 3*time.Second {
		t.Errorf("a later acquire reserves %v ahead: the refused task kept a reservation", p.At.Sub(before))
	}
}

func TestGeminiOutcomes(t *testing.T) {
	t.Run("429 per minute: cooldown and reschedule", func(t *testing.T) {
		f := newFixture(t, fixtureOptions{})
		want(t, f.push(envelope("job-q", "a", modelSimRPM, "one")), http.StatusOK, OutSucceeded)
		e := envelope("job-q", "b", modelSimRPM, "two")
		before := time.Now()
		want(t, f.push(e), http.StatusOK, OutDeferred)
		if rec := f.record(e); rec.State != store.Waiting {
			t.Fatalf("state = %s, want waiting", rec.State)
		}
		tks := f.scheduled()
		if len(tks) != 1 {
			t.Fatalf("scheduled = %d, want 1", len(tks))
		}
		body := taskBody(t, tks[0])
		if body.Attempt != 0 || body.Deferrals != 1 || len(body.Permit) != 0 {
			t.Errorf("rescheduled envelope attempt/deferrals/permit = %d/%d/%s, want 0/1/none", body.Attempt, body.Deferrals, body.Permit)
		}
		if d := tks[0].ScheduleTime.AsTime().Sub(before); d < 5*time.Second || d > 2*time.Minute {
			t.Errorf("rescheduled %v ahead, want after the retry delay", d)
		}
		// The cool-down is shared: the next acquire in the scope waits.
		p, err := f.lim.Acquire(context.Background(), limiter.Scope{Project: testProject, Model: modelSimRPM}, limiter.Cost{Requests: 1})
		if err != nil {
			t.Fatal(err)
		}
		// (by the cooldown, or by the lowered limit below when it binds later)
		if p.Outcome == limiter.Granted || !strings.Contains(p.Reason, "cooldown") && p.Reason != "rpm" {
			t.Errorf("acquire after a 429 = %s %q, want held back by the cooldown", p.Outcome, p.Reason)
		}
		// The stand-in enforces 1 RPM against a configured 100,000: its
		// quotaValue lowers the scope's limit for every instance.
		if lim, err := f.lim.Limits(context.Background(), limiter.Scope{Project: testProject, Model: modelSimRPM}); err != nil || lim["rpm"] != 1 {
			t.Errorf("effective limits after a 429 with quotaValue 1 = %v, %v; want rpm 1", lim, err)
		}
	})
	t.Run("429 per day: after Pacific midnight", func(t *testing.T) {
		f := newFixture(t, fixtureOptions{})
		want(t, f.push(envelope("job-q", "a", modelSimRPD, "one")), http.StatusOK, OutSucceeded)
		want(t, f.push(envelope("job-q", "b", modelSimRPD, "two")), http.StatusOK, OutDeferred)
		tks := f.scheduled()
		if len(tks) != 1 {
			t.Fatalf("scheduled = %d, want 1", len(tks))
		}
		midnight := limiter.PacificDayStart(time.Now(), 1)
		if at := tks[0].ScheduleTime.AsTime(); at.Before(midnight) || at.After(midnight.Add(2*time.Minute)) {
			t.Errorf("comes back at %v, want just after %v", at, midnight)
		}
	})
	t.Run("429 limit 0: permanent", func(t *testing.T) {
		f := newFixture(t, fixtureOptions{})
		e := envelope("job-q", "z", modelZero, "one")
		want(t, f.push(e), http.StatusOK, OutFailed)
		if eo := errorOf(t, f.record(e).Error); eo.Code != 429 || eo.Status != "RESOURCE_EXHAUSTED" || !strings.Contains(eo.Message, "limit: 0") {
			t.Errorf("error = %+v", eo)
		}
		if n := len(f.scheduled()); n != 0 {
			t.Errorf("scheduled %d cloud tasks for a permanent failure", n)
		}
	})
	t.Run("429 without details: back off", func(t *testing.T) {
		f := newFixture(t, fixtureOptions{sim: geminisim.Options{CapacityRate: 1}})
		e := envelope("job-q", "c", modelOpen, "one")
		want(t, f.push(e), http.StatusOK, OutDeferred)
		tks := f.scheduled()
		if len(tks) != 1 {
			t.Fatalf("scheduled = %d, want 1", len(tks))
		}
		if body := taskBody(t, tks[0]); body.Attempt != 0 || body.Deferrals != 1 {
			t.Errorf("attempt/deferrals = %d/%d, want 0/1 (not a failed attempt)", body.Attempt, body.Deferrals)
		}
		// Shared AIMD: the scope's rate drops ×0.8 for every instance.
		if lim, err := f.lim.Limits(context.Background(), limiter.Scope{Project: testProject, Model: modelOpen}); err != nil || lim["rpm"] != 80000 {
			t.Errorf("effective limits after a capacity 429 = %v, %v; want rpm 80000", lim, err)
		}
	})
	t.Run("404: permanent with Gemini's message", func(t *testing.T) {
		f := newFixture(t, fixtureOptions{})
		e := envelope("job-q", "g", modelGone, "one")
		want(t, f.push(e), http.StatusOK, OutFailed)
		if eo := errorOf(t, f.record(e).Error); eo.Code != 404 || eo.Message == "" {
			t.Errorf("error = %+v", eo)
		}
		if n := len(f.generateCalls(e.TaskID)); n != 1 {
			t.Errorf("gemini calls = %d, want 1", n)
		}
	})
	t.Run("5xx: bounded retries then dead-letter", func(t *testing.T) {
		f := newFixture(t, fixtureOptions{sim: geminisim.Options{Faults: geminisim.Faults{Error503: 1}}, opts: Options{MaxAttempts: 3}})
		e := envelope("job-5xx", "k", modelOpen, "one")
		want(t, f.push(e), http.StatusOK, OutDeferred)
		for i := 1; i < 3; i++ {
			var next *task.Envelope
			for _, tk := range f.scheduled() {
				if shortName(tk.Name) == queue.TaskName(e.TaskID, i) {
					b := taskBody(t, tk)
					next = &b
				}
			}
			if next == nil {
				t.Fatalf("no cloud task for retry %d", i)
			}
			if next.Attempt != i {
				t.Fatalf("retry %d carries attempt %d", i, next.Attempt)
			}
			wantOutcome := OutDeferred
			if i == 2 {
				wantOutcome = OutDeadLetter
			}
			want(t, f.callback(queue.TaskName(e.TaskID, i), encode(t, *next)), http.StatusOK, wantOutcome)
		}
		if n := len(f.generateCalls(e.TaskID)); n != 3 {
			t.Errorf("gemini calls = %d, want 3", n)
		}
		rec := f.record(e)
		if eo := errorOf(t, rec.Error); rec.State != store.Failed || eo.Code != 503 || !strings.Contains(eo.Message, "3 attempts") {
			t.Fatalf("record = %s %s", rec.State, rec.Error)
		}
		msgs := f.published()
		if len(msgs) != 1 || msgs[0].Attributes[attrOutcome] != OutDeadLetter || msgs[0].Attributes[attrReason] == "" {
			t.Fatalf("published = %v, want one dead_letter result with a reason", msgs)
		}
		l := line(t, msgs[0].Data)
		if l.DeadLetter == nil || l.DeadLetter.Attempts != 3 || len(l.DeadLetter.Envelope) == 0 {
			t.Fatalf("dead-letter line = %s", msgs[0].Data)
		}
		if env, err := task.Decode(l.DeadLetter.Envelope); err != nil || env.TaskID != e.TaskID {
			t.Errorf("dead-letter envelope = %v, %v", env, err)
		}
		if d := cmp.Diff(store.Counts{Total: 1, Failed: 1}, f.counts(e.JobID)); d != "" {
			t.Errorf("counts (-want +got):\n%s", d)
		}
	})
	t.Run("timeout: a failed attempt", func(t *testing.T) {
		f := newFixture(t, fixtureOptions{sim: geminisim.Options{Faults: geminisim.Faults{Hang: 1}}, opts: Options{GeminiTimeout: 200 * time.Millisecond}})
		e := envelope("job-to", "k", modelOpen, "one")
		want(t, f.push(e), http.StatusOK, OutDeferred)
		tks := f.scheduled()
		if len(tks) != 1 {
			t.Fatalf("scheduled = %d, want 1", len(tks))
		}
		if body := taskBody(t, tks[0]); body.Attempt != 1 {
			t.Errorf("attempt = %d, want 1", body.Attempt)
		}
	})
}

func TestCountTokensEstimator(t *testing.T) {
	f := newFixture(t, fixtureOptions{opts: Options{CountTokens: true}})
	e := envelope("job-ct", "k", modelOpen, "count me")
	want(t, f.push(e), http.StatusOK, OutSucceeded)
	counts := 0
	for _, en := range f.sim.Log() {
		if en.Method == "countTokens" {
			counts++
		}
	}
	if counts != 1 {
		t.Fatalf("countTokens calls = %d, want 1", counts)
	}
}

// A successful call is settled once (one script: reconcile, learning,
// AIMD), whether or not the estimate was off; Reconcile is not called.
func TestSettledOncePerSuccess(t *testing.T) {
	for _, tc := range []struct {
		name string
		skew float64
		want int
	}{
		{"exact estimate", 0, 1},
		{"estimate off by up to 30%", 0.3, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, fixtureOptions{sim: geminisim.Options{TokenSkew: tc.skew, Seed: 7}})
			c := f.countLimiter()
			e := envelope("job-rec", "k", modelOpen, "a prompt long enough that a 30% skew changes its token count")
			want(t, f.push(e), http.StatusOK, OutSucceeded)
			c.mu.Lock()
			got, rec := c.settle, c.reconcile
			c.mu.Unlock()
			if got != tc.want || rec != 0 {
				t.Fatalf("Settle calls = %d, Reconcile calls = %d; want %d and 0", got, rec, tc.want)
			}
		})
	}
}

// The request's context ends mid-call (the instance is stopping, the push
// connection dropped): non-2xx, and the task stays calling under that
// delivery's lease. A foreign duplicate waits for the lease; the message's
// own redelivery (a higher deliveryAttempt) resumes at once, calls again
// (the first call may have reached Gemini: the one duplicate call this
// allows, logged as such) and completes the task exactly once.
func TestContextKilledMidCall(t *testing.T) {
	f := newFixture(t, fixtureOptions{sim: geminisim.Options{Latency: geminisim.Latency{Kind: "fixed", Fixed: 500 * time.Millisecond}}})
	e := envelope("job-kill", "k", modelOpen, "interrupted")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	r := f.serve(ctx, pushBodyAttempt(encode(t, e), 1), nil)
	if r.status < 300 {
		t.Fatalf("answer = %d %q, want non-2xx", r.status, r.outcome)
	}
	if rec := f.record(e); rec.State != store.Calling {
		t.Fatalf("state = %s after the kill, want calling", rec.State)
	}
	other := f.serve(context.Background(), pushBodyWith(encode(t, e), "m2", 1), nil)
	want(t, other, http.StatusOK, OutHeld)
	want(t, f.serve(context.Background(), pushBodyAttempt(encode(t, e), 2), nil), http.StatusOK, OutSucceeded)
	want(t, f.push(e), http.StatusOK, OutDuplicate)
	if n := len(f.published()); n != 1 {
		t.Fatalf("published = %d, want 1", n)
	}
	if n := len(f.generateCalls(e.TaskID)); n != 2 {
		t.Errorf("gemini calls = %d, want 2 (the interrupted one, then the resumed one)", n)
	}
	if !strings.Contains(f.logs(), "possible duplicate call") {
		t.Error("the resumed call is not logged as a possible duplicate")
	}
	if d := cmp.Diff(store.Counts{Total: 1, Succeeded: 1}, f.counts(e.JobID)); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
}

// Redis unreachable: a push is parked as a Cloud Task (the envelope
// unchanged) and acknowledged, so the outage does not burn Pub/Sub's
// delivery attempts; a Cloud Tasks callback answers non-2xx (Cloud Tasks
// retries it). Once Redis is back, empty, the parked task runs.
func TestRedisDownParksTheTask(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.redis.Stop()
	e := envelope("job-redis", "k", modelOpen, "no redis")
	want(t, f.push(e), http.StatusOK, OutParked)
	want(t, f.push(e), http.StatusOK, OutParked) // a duplicate shares the park
	tks := f.scheduled()
	if len(tks) != 1 {
		t.Fatalf("scheduled %d cloud tasks, want 1 park", len(tks))
	}
	if b := taskBody(t, tks[0]); b.TaskID != e.TaskID || b.Deferrals != 0 || len(b.Permit) != 0 {
		t.Fatalf("parked envelope = %+v", b)
	}
	r := f.callback(shortName(tks[0].Name), tks[0].GetHttpRequest().GetBody())
	if r.status < 500 {
		t.Fatalf("callback without Redis answered %d %q, want 5xx", r.status, r.outcome)
	}
	if n := f.allGenerateCalls(); n != 0 {
		t.Fatalf("gemini calls = %d without Redis", n)
	}
	f.redis.Restart(t)
	want(t, f.callback(shortName(tks[0].Name), tks[0].GetHttpRequest().GetBody()), http.StatusOK, OutSucceeded)
	if n := len(f.published()); n != 1 {
		t.Fatalf("published %d, want 1", n)
	}
}

// Redis and Cloud Tasks both unreachable: nothing can be parked; non-2xx.
func TestRedisAndCloudTasksDown(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	f.redis.Stop()
	f.tasks.Stop()
	r := f.push(envelope("job-redis", "k", modelOpen, "no redis"))
	if r.status < 500 {
		t.Fatalf("answer = %d %q, want 5xx", r.status, r.outcome)
	}
	if n := f.allGenerateCalls(); n != 0 {
		t.Fatalf("gemini calls = %d without Redis", n)
	}
}

func TestCloudTasksDown(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	want(t, f.push(envelope("job-ct-down", "a", modelTight, "one")), http.StatusOK, OutSucceeded)
	f.tasks.Stop()
	e := envelope("job-ct-down", "b", modelTight, "two")
	r := f.push(e)
	if r.status < 500 {
		t.Fatalf("answer = %d %q, want 5xx", r.status, r.outcome)
	}
	if n := len(f.generateCalls(e.TaskID)); n != 0 {
		t.Fatal("gemini called")
	}
	if rec := f.record(e); rec.State != store.Queued {
		t.Errorf("state = %s, want queued (lease released for the redelivery)", rec.State)
	}
	// The reservation was given back: the slot it held is free again.
	p, err := f.lim.Acquire(context.Background(), limiter.Scope{Project: testProject, Model: modelTight}, limiter.Cost{Requests: 1})
	if err != nil {
		t.Fatal(err)
	}
	if p.Outcome == limiter.Reserved && p.At.Sub(time.Now()) > 3*time.Second {
		t.Errorf("next slot %v ahead: the failed deferral kept its reservation", time.Until(p.At))
	}
}

// Pub/Sub refuses the result: non-2xx after the terminal write; the
// redelivery publishes the stored result without calling Gemini again.
func TestPublishFailsThenRedeliveryPublishes(t *testing.T) {
	f := newFixture(t, fixtureOptions{psOptions: []pstest.ServerReactorOption{pstest.WithErrorInjection("Publish", codes.PermissionDenied, "publish refused")}})
	e := envelope("job-pub", "k", modelOpen, "publish me")
	r := f.push(e)
	if r.status < 500 {
		t.Fatalf("answer = %d %q, want 5xx", r.status, r.outcome)
	}
	if rec := f.record(e); rec.State != store.Succeeded {
		t.Fatalf("state = %s, want succeeded (written before the publish)", rec.State)
	}
	// Pub/Sub is back: a new publisher on a healthy server.
	ok := newFixture(t, fixtureOptions{})
	f.m.deps.Results = ok.pub
	want(t, f.push(e), http.StatusOK, OutDuplicate)
	want(t, f.push(e), http.StatusOK, OutDuplicate)
	if n := len(ok.published()); n != 1 {
		t.Fatalf("published on redelivery = %d, want 1", n)
	}
	if l := line(t, ok.published()[0].Data); l.Key != "k" || len(l.Response) == 0 {
		t.Errorf("republished line = %s", ok.published()[0].Data)
	}
	if n := len(f.generateCalls(e.TaskID)); n != 1 {
		t.Fatalf("gemini calls = %d, want 1", n)
	}
	if d := cmp.Diff(store.Counts{Total: 1, Succeeded: 1}, f.counts(e.JobID)); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
}

// Logs carry ids and outcomes, never prompts, outputs or keys.
func TestLogsCarryIdsNotContent(t *testing.T) {
	f := newFixture(t, fixtureOptions{sim: geminisim.Options{Faults: geminisim.Faults{Error500: 0.5}, Seed: 7}})
	const secret = "PROMPT-SECRET-7f3a"
	var ids []string
	for i := range 6 {
		e := envelope("job-logs", fmt.Sprintf("KEY-SECRET-%d", i), modelOpen, fmt.Sprintf("%s number %d", secret, i))
		ids = append(ids, e.TaskID)
		f.push(e)
	}
	bad := envelope("job-logs", "KEY-SECRET-bad", modelOpen, "")
	bad.Request = json.RawMessage(`{"contents":[{"parts":[{"text":"` + secret + `"}]}],"generationConfig":{"temperature":9}}`)
	f.push(bad)
	logs := f.logs()
	for _, s := range []string{secret, "KEY-SECRET", "candidates", apiKey} {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain %q", s)
		}
	}
	for _, id := range ids {
		if !strings.Contains(logs, `"task_id":"`+id+`"`) {
			t.Errorf("logs lack task id %s", id)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["severity"] == nil || m["message"] == nil {
			t.Errorf("log line is not JSON with severity and message: %s", l)
		}
	}
}
