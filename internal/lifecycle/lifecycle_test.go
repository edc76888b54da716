package lifecycle

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

// failingWait is the real store whose MarkWaitingFor fails, as when Redis
// stalls at that very write.
type failingWait struct{ *store.Store }

func (failingWait) MarkWaitingFor(context.Context, store.Ref, store.Token, int, time.Time) (store.Outcome, error) {
	return 0, errors.New("redis: i/o timeout")
}

// Write-ahead: when the "waiting for deferral N" write fails, Cloud Task N
// is never created, and the answer is non-2xx with the task queued again, so
// a Cloud Task never exists together with a non-2xx answer.
func TestWriteAheadNoCloudTaskWithoutItsMark(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	want(t, f.push(envelope("job-wa", "first", modelTight, "one")), http.StatusOK, OutSucceeded)
	f.m.deps.Store = failingWait{f.store}
	e := envelope("job-wa", "second", modelTight, "two")
	r := f.push(e)
	if r.status < 500 {
		t.Fatalf("answer = %d %q, want non-2xx", r.status, r.outcome)
	}
	if n := len(f.scheduled()); n != 0 {
		t.Fatalf("%d cloud tasks created without their waiting mark", n)
	}
	if rec := f.record(e); rec.State != store.Queued {
		t.Fatalf("state = %s, want queued for the redelivery", rec.State)
	}
	f.m.deps.Store = f.store
	want(t, f.serve(context.Background(), pushBodyAttempt(encode(t, e), 2), nil), http.StatusOK, OutDeferred)
	if n := len(f.scheduled()); n != 1 {
		t.Fatalf("%d cloud tasks after the redelivery, want 1", n)
	}
}

// Fencing: a holder whose lease expired during a slow call is taken over;
// its late result is refused, the new holder's stands: one result.
func TestStaleHolderCannotSettle(t *testing.T) {
	f := newFixture(t, fixtureOptions{
		sim:  geminisim.Options{Latency: geminisim.Latency{Kind: "fixed", Fixed: 700 * time.Millisecond}},
		opts: Options{Lease: 300 * time.Millisecond, GeminiTimeout: 3 * time.Second},
	})
	e := envelope("job-fence", "k", modelOpen, "slow")
	var first result
	var wg sync.WaitGroup
	wg.Go(func() { first = f.serve(context.Background(), pushBodyWith(encode(t, e), "m1", 1), nil) })
	time.Sleep(450 * time.Millisecond) // the first lease has expired; its call runs on
	second := f.serve(context.Background(), pushBodyWith(encode(t, e), "m2", 1), nil)
	wg.Wait()
	outcomes := []string{first.outcome, second.outcome}
	if !(first.outcome == OutStale && second.outcome == OutSucceeded) && !(first.outcome == OutSucceeded && second.outcome == OutStale) {
		t.Fatalf("outcomes = %v, want one succeeded and one stale", outcomes)
	}
	if n := len(f.published()); n != 1 {
		t.Fatalf("published = %d, want 1", n)
	}
	if d := cmp.Diff(store.Counts{Total: 1, Succeeded: 1}, f.counts(e.JobID)); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
}

// A malformed copy of a task that waits for its Cloud Task is dead-lettered
// and leaves the real task alone.
func TestMalformedCopyLeavesTheRealTask(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	want(t, f.push(envelope("job-copy", "first", modelTight, "one")), http.StatusOK, OutSucceeded)
	e := envelope("job-copy", "second", modelTight, "two")
	want(t, f.push(e), http.StatusOK, OutDeferred)
	raw := []byte(`{"v":1,"job_id":"job-copy","key":"second","model":"m-tight","request":[1]}`)
	want(t, f.serve(context.Background(), pushBodyWith(raw, "m9", 1), nil), http.StatusOK, OutPoison)
	if rec := f.record(e); rec.State != store.Waiting {
		t.Fatalf("state = %s, want still waiting", rec.State)
	}
	dead := f.deadLettered()
	if len(dead) != 1 || string(dead[0].Data) != string(raw) || dead[0].Attributes[AttrDeadLetterKind] != string(KindUndecodable) ||
		!strings.Contains(dead[0].Attributes[AttrDeadLetterReason], "request") {
		t.Fatalf("dead letters = %v, want the copy with a reason naming the field", dead)
	}
	if n := len(f.published()); n != 1 {
		t.Fatalf("published = %d, want only the first task's result", n)
	}
}

// An envelope naming a job that ingest created, but not one of its tasks,
// does not silently join it: it is dead-lettered as foreign.
func TestForeignTaskIsDeadLettered(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	in := envelope("job-ingest", "k0", modelOpen, "mine")
	if _, _, err := f.store.CreateJob(context.Background(), store.NewJob{ID: "job-ingest", Model: modelOpen, ContentHash: "h", TaskIDs: []string{in.TaskID}}); err != nil {
		t.Fatal(err)
	}
	stranger := envelope("job-ingest", "stranger", modelOpen, "not mine")
	stranger.JobHash, stranger.JobTotal = "h", 1
	want(t, f.push(stranger), http.StatusOK, OutForeign)
	dead := f.deadLettered()
	if len(dead) != 1 || dead[0].Attributes[AttrDeadLetterKind] != string(KindForeign) {
		t.Fatalf("dead letters = %v, want one foreign copy", dead)
	}
	if d := cmp.Diff(store.Counts{Total: 1, Queued: 1}, f.counts("job-ingest")); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
	if f.allGenerateCalls() != 0 {
		t.Fatal("gemini called for a foreign task")
	}
}

// A copy of an ingest job's task that ingest did not publish (no job hash;
// here with another, valid request), before and after the task's own
// message: each copy is dead-lettered byte for byte as a conflict, the task
// runs once from its own message, and a byte-identical redelivery of that
// message is a duplicate, not dead-lettered.
func TestConflictingCopyIsDeadLettered(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	ctx := context.Background()
	real := envelope("job-c", "k0", modelOpen, "the real prompt")
	real.JobHash, real.JobTotal = "hc", 1
	if _, _, err := f.store.CreateJob(ctx, store.NewJob{ID: real.JobID, Model: modelOpen, ContentHash: "hc", TaskIDs: []string{real.TaskID}}); err != nil {
		t.Fatal(err)
	}
	cp := envelope("job-c", "k0", modelOpen, "another prompt under the same key")
	copyData := encode(t, cp)
	want(t, f.serve(ctx, pushBodyWith(copyData, "m-copy1", 1), nil), http.StatusOK, OutForeign)
	if rec := f.record(real); rec.State != store.Queued {
		t.Fatalf("task after a copy came first = %s, want untouched (queued)", rec.State)
	}
	realData := encode(t, real)
	want(t, f.serve(ctx, pushBodyWith(realData, "m-real", 1), nil), http.StatusOK, OutSucceeded)
	want(t, f.serve(ctx, pushBodyWith(copyData, "m-copy2", 1), nil), http.StatusOK, OutForeign)
	want(t, f.serve(ctx, pushBodyWith(realData, "m-real-again", 1), nil), http.StatusOK, OutDuplicate)

	dead := f.deadLettered()
	if len(dead) != 2 {
		t.Fatalf("dead letters = %d, want the two copies only", len(dead))
	}
	for _, m := range dead {
		if m.Attributes[AttrDeadLetterKind] != string(KindConflict) || string(m.Data) != string(copyData) ||
			!strings.Contains(m.Attributes[AttrDeadLetterReason], "does not carry its job hash") {
			t.Fatalf("dead letter %q %v, want the copy's bytes, kind conflict and the reason", m.Data, m.Attributes)
		}
	}
	if calls := f.generateCalls(real.TaskID); len(calls) != 1 {
		t.Fatalf("gemini calls = %d, want 1 (the task's own message)", len(calls))
	}
	if pub := f.published(); len(pub) != 1 || !strings.Contains(string(pub[0].Data), `"key":"k0"`) {
		t.Fatalf("results = %v, want the task's one result", pub)
	}
}

// Redis flushed mid-job: tasks still arriving (carrying their job's hash
// and total) re-create the job as lost with its true total, so it is
// reported state_lost, never done with a wrong total; a resubmission is
// accepted and re-running the rest makes the job done.
func TestStateLossIsReported(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	keys := []string{"a", "b", "c"}
	var envs []task.Envelope
	var ids []string
	for _, k := range keys {
		e := envelope("job-lost", k, modelOpen, "prompt "+k)
		e.JobHash, e.JobTotal = "h1", len(keys)
		envs, ids = append(envs, e), append(ids, e.TaskID)
	}
	nj := store.NewJob{ID: "job-lost", Model: modelOpen, ContentHash: "h1", TaskIDs: ids}
	if _, _, err := f.store.CreateJob(context.Background(), nj); err != nil {
		t.Fatal(err)
	}
	want(t, f.push(envs[0]), http.StatusOK, OutSucceeded)
	if err := f.rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	// The limiter, which had seen the scope before the flush, fails safe:
	// every window is taken as full for one window (internal/limiter).
	want(t, f.serve(context.Background(), pushBodyWith(encode(t, envs[1]), "m-b0", 1), nil), http.StatusOK, OutDeferred)
	if !strings.Contains(f.logs(), "cooldown: state lost") {
		t.Fatal("no deferral for the limiter's lost state")
	}
	// A worker instance started after the loss cannot tell it from a first
	// use; the job's own loss is what the rest checks, on such an instance.
	if err := f.rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	f.m.deps.Permits = limiter.New(f.rdb, f.limCfg)
	want(t, f.serve(context.Background(), pushBodyWith(encode(t, envs[1]), "m-b", 1), nil), http.StatusOK, OutSucceeded)
	j, err := f.store.GetJob(context.Background(), "job-lost")
	if err != nil {
		t.Fatal(err)
	}
	if j.State() != "state_lost" || j.Counts.Total != 3 || j.Counts.Succeeded != 1 {
		t.Fatalf("job after the flush = %s %+v, want state_lost, total 3, 1 succeeded since", j.State(), j.Counts)
	}
	if _, created, err := f.store.CreateJob(context.Background(), nj); err != nil || created {
		t.Fatalf("resubmission = %v, %v; want accepted", created, err)
	}
	want(t, f.serve(context.Background(), pushBodyWith(encode(t, envs[1]), "m-b2", 1), nil), http.StatusOK, OutDuplicate)
	for i, e := range []task.Envelope{envs[0], envs[2]} {
		want(t, f.serve(context.Background(), pushBodyWith(encode(t, e), "m-r"+string(rune('0'+i)), 1), nil), http.StatusOK, OutSucceeded)
	}
	if j, _ := f.store.GetJob(context.Background(), "job-lost"); j.State() != "done" || j.Counts.Succeeded != 3 {
		t.Fatalf("job after the re-run = %s %+v, want done", j.State(), j.Counts)
	}
}
