package lifecycle

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/cloudtasks/apiv2/cloudtaskspb"
	"github.com/google/go-cmp/cmp"

	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
)

// countingPermits wraps the real limiter and counts the calls that take or
// give back quota.
type countingPermits struct {
	Permits
	mu                      sync.Mutex
	acquire, claim, release int
	reconcile, settle       int
	released                []string // permit ids
}

func (c *countingPermits) Reconcile(ctx context.Context, p limiter.Permit, tokens int64) error {
	c.mu.Lock()
	c.reconcile++
	c.mu.Unlock()
	return c.Permits.Reconcile(ctx, p, tokens)
}

func (c *countingPermits) Settle(ctx context.Context, p limiter.Permit, tokens int64) error {
	c.mu.Lock()
	c.settle++
	c.mu.Unlock()
	return c.Permits.Settle(ctx, p, tokens)
}

func (c *countingPermits) Acquire(ctx context.Context, s limiter.Scope, cost limiter.Cost) (limiter.Permit, error) {
	c.mu.Lock()
	c.acquire++
	c.mu.Unlock()
	return c.Permits.Acquire(ctx, s, cost)
}

func (c *countingPermits) Claim(ctx context.Context, p limiter.Permit) (limiter.Permit, error) {
	c.mu.Lock()
	c.claim++
	c.mu.Unlock()
	return c.Permits.Claim(ctx, p)
}

func (c *countingPermits) Release(ctx context.Context, p limiter.Permit) error {
	c.mu.Lock()
	c.release++
	c.released = append(c.released, p.ID)
	c.mu.Unlock()
	return c.Permits.Release(ctx, p)
}

// calls returns the counts so far.
func (c *countingPermits) calls() (acquire, claim, release int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acquire, c.claim, c.release
}

// countLimiter puts a counting wrapper around the fixture's limiter.
func (f *fixture) countLimiter() *countingPermits {
	c := &countingPermits{Permits: f.m.deps.Permits}
	f.m.deps.Permits = c
	return c
}

// nextTightSlot asks the limiter for modelTight's next slot with a
// throw-away Acquire (released at once), showing through the limiter's own
// API how much of the window is held: modelTight admits 1 request per 2s
// (+ 100ms guard).
func (f *fixture) nextTightSlot() limiter.Permit {
	f.t.Helper()
	p, err := f.lim.Acquire(context.Background(), limiter.Scope{Project: testProject, Model: modelTight}, limiter.Cost{Requests: 1, InputTokens: 1})
	if err != nil {
		f.t.Fatalf("acquire: %v", err)
	}
	if err := f.lim.Release(context.Background(), p); err != nil {
		f.t.Fatalf("release: %v", err)
	}
	return p
}

// cloudTask returns the scheduled Cloud Task of the given name, or nil.
func (f *fixture) cloudTask(name string) *cloudtaskspb.Task {
	for _, tk := range f.scheduled() {
		if shortName(tk.Name) == name {
			return tk
		}
	}
	return nil
}

// taskPermit decodes the reservation a Cloud Task carries.
func taskPermit(t *testing.T, tk *cloudtaskspb.Task) limiter.Permit {
	t.Helper()
	var p limiter.Permit
	if err := json.Unmarshal(taskBody(t, tk).Permit, &p); err != nil || p.Outcome != limiter.Reserved {
		t.Fatalf("carried permit %s (%v), want reserved", taskBody(t, tk).Permit, err)
	}
	return p
}

// A task that must wait for its quota slot, delivered many times by Pub/Sub
// and its Cloud Task delivered many times too, sequentially or concurrently:
// one reservation (one Acquire, one Claim, nothing released, as the counting
// wrapper around the real limiter sees it), one Gemini call (the stand-in's
// log), one published result; and the quota used is exactly that one slot (a
// follow-up Acquire queues right behind it: not refunded, nothing else
// reserved). The lease checks the concurrent duplicates schedule are no-ops
// that touch no quota.
func TestDuplicateDeliveryCostsOneCallAndOneReservation(t *testing.T) {
	for _, concurrent := range []bool{false, true} {
		t.Run(map[bool]string{false: "sequential", true: "concurrent"}[concurrent], func(t *testing.T) {
			f := newFixture(t, fixtureOptions{})
			// The first task takes the window's slot, so the next one reserves.
			want(t, f.push(envelope("job-dd", "first", modelTight, "one")), http.StatusOK, OutSucceeded)
			lim := f.countLimiter()

			e := envelope("job-dd", "second", modelTight, "two")
			deliver := func(n int, do func() result) map[string]int {
				got := make([]result, n)
				if concurrent {
					var wg sync.WaitGroup
					for i := range n {
						wg.Go(func() { got[i] = do() })
					}
					wg.Wait()
				} else {
					for i := range n {
						got[i] = do()
					}
				}
				by := map[string]int{}
				for _, r := range got {
					if r.status != http.StatusOK {
						t.Errorf("answer %d %q, want 200", r.status, r.outcome)
					}
					by[r.outcome]++
				}
				return by
			}

			by := deliver(6, func() result { return f.push(e) })
			if by[OutDeferred] != 1 || by[OutDuplicate]+by[OutHeld] != 5 {
				t.Fatalf("push outcomes %v, want one deferred, the rest duplicate or held", by)
			}
			if a, c, r := lim.calls(); a != 1 || c != 0 || r != 0 {
				t.Fatalf("limiter calls after the pushes: acquire %d, claim %d, release %d; want 1, 0, 0", a, c, r)
			}
			tk := f.cloudTask(queue.TaskName(e.TaskID, 1))
			if tk == nil {
				t.Fatal("no cloud task for deferral 1")
			}
			p := taskPermit(t, tk)

			time.Sleep(time.Until(p.At))
			body := tk.GetHttpRequest().GetBody()
			by = deliver(4, func() result { return f.callback(shortName(tk.Name), body) })
			if by[OutSucceeded] != 1 || by[OutDuplicate]+by[OutHeld] != 3 {
				t.Fatalf("cloud task outcomes %v, want one succeeded, the rest duplicate or held", by)
			}

			// Lease checks the held duplicates scheduled come back: the
			// task is done, so they do nothing (and touch no quota).
			for _, c := range f.scheduled() {
				name := shortName(c.Name)
				if name == shortName(tk.Name) {
					continue
				}
				want(t, f.callback(name, c.GetHttpRequest().GetBody()), http.StatusOK, OutDuplicate)
			}
			// And late duplicates of everything.
			want(t, f.push(e), http.StatusOK, OutDuplicate)
			want(t, f.callback(shortName(tk.Name), body), http.StatusOK, OutDuplicate)

			if a, c, r := lim.calls(); a != 1 || c != 1 || r != 0 {
				t.Errorf("limiter calls: acquire %d, claim %d, release %d; want 1, 1, 0", a, c, r)
			}
			calls := f.generateCalls(e.TaskID)
			if len(calls) != 1 {
				t.Fatalf("gemini calls = %d, want 1", len(calls))
			}
			// The call used the reserved slot (the guard is 100ms: the claim
			// window opens 25ms before it).
			if calls[0].Received.Before(p.At.Add(-25 * time.Millisecond)) {
				t.Errorf("gemini called at %v, before the reserved slot %v", calls[0].Received, p.At)
			}
			// The window holds that one slot and nothing more: the next
			// request queues right behind it (one period + guard later), not
			// at once (a refund) nor a period later still (a second
			// reservation by a duplicate).
			if next := f.nextTightSlot(); next.Outcome != limiter.Reserved ||
				next.At.Before(p.At.Add(2*time.Second)) || !next.At.Before(p.At.Add(4*time.Second)) {
				t.Errorf("follow-up acquire: %s at %v; want reserved %v to %v after the used slot %v",
					next.Outcome, next.At, 2*time.Second, 4*time.Second, p.At)
			}
			if n := len(f.published()); n != 2 {
				t.Errorf("published = %d, want 2 (one per task)", n)
			}
			if d := cmp.Diff(store.Counts{Total: 2, Succeeded: 2}, f.counts("job-dd")); d != "" {
				t.Errorf("counts (-want +got):\n%s", d)
			}
		})
	}
}

// A redelivery finds the deferral's Cloud Task already created by an
// earlier delivery that could not mark the task waiting: it gives back the
// reservation it just took (the existing Cloud Task carries its own) and
// marks the task waiting, so later duplicates are acknowledged at once.
func TestExistingCloudTaskReleasesTheNewReservation(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	want(t, f.push(envelope("job-ex", "first", modelTight, "one")), http.StatusOK, OutSucceeded)
	e := envelope("job-ex", "second", modelTight, "two")

	// The earlier delivery: reserved, created Cloud Task 1, then lost.
	p1, err := f.lim.Acquire(context.Background(), limiter.Scope{Project: testProject, Model: modelTight}, limiter.Cost{Requests: 1, InputTokens: 1})
	if err != nil || p1.Outcome != limiter.Reserved {
		t.Fatalf("acquire = %+v, %v", p1, err)
	}
	next := e
	next.Deferrals = 1
	next.Permit, _ = json.Marshal(p1)
	name := queue.TaskName(e.TaskID, 1)
	if created, err := f.m.deps.Scheduler.Create(context.Background(), name, p1.At, encode(t, next)); err != nil || !created {
		t.Fatalf("create = %v, %v", created, err)
	}
	lim := f.countLimiter()
	want(t, f.push(e), http.StatusOK, OutDeferred)
	a, _, r := lim.calls()
	if a != 1 || r != 1 || lim.released[0] == p1.ID {
		t.Fatalf("limiter: %d acquires, %d releases of %v; want the new reservation (not %s) released", a, r, lim.released, p1.ID)
	}
	// The slot after p1 is free again: a new request reserves it, not the
	// one after.
	p3, err := f.lim.Acquire(context.Background(), limiter.Scope{Project: testProject, Model: modelTight}, limiter.Cost{Requests: 1, InputTokens: 1})
	if err != nil || p3.Outcome != limiter.Reserved || p3.At.After(p1.At.Add(3*time.Second)) {
		t.Errorf("next acquire = %s at %v, want reserved within 3s after %v (the released slot)", p3.Outcome, p3.At, p1.At)
	}
	f.lim.Release(context.Background(), p3)
	if n := len(f.scheduled()); n != 1 {
		t.Errorf("scheduled %d cloud tasks, want 1", n)
	}
	if rec := f.record(e); rec.State != store.Waiting {
		t.Fatalf("state = %s, want waiting", rec.State)
	}
	want(t, f.push(e), http.StatusOK, OutDuplicate)
	if a, _, _ := lim.calls(); a != 1 {
		t.Errorf("acquires = %d after a duplicate, want 1", a)
	}

	// The existing Cloud Task runs it with its own reservation.
	tk := f.cloudTask(name)
	time.Sleep(time.Until(p1.At))
	want(t, f.callback(name, tk.GetHttpRequest().GetBody()), http.StatusOK, OutSucceeded)
	if _, c, _ := lim.calls(); c != 1 {
		t.Errorf("claims = %d, want 1", c)
	}
	if n := len(f.generateCalls(e.TaskID)); n != 1 {
		t.Errorf("gemini calls = %d, want 1", n)
	}
}

// A waiting task whose Cloud Task never came (lost, or out of retries) past
// its deadline is taken over by the next delivery, which defers it under a
// new name beyond every deferral it had.
func TestStaleWaitingTaskIsTakenOver(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	want(t, f.push(envelope("job-stale", "first", modelTight, "one")), http.StatusOK, OutSucceeded)
	e := envelope("job-stale", "second", modelTight, "two")
	ref := store.RefOf(e)
	res, err := f.store.LeaseTask(context.Background(), ref, store.LeaseRequest{Holder: "gone", TTL: time.Minute})
	if err != nil || res.Outcome != store.Applied {
		t.Fatalf("lease = %+v, %v", res, err)
	}
	if o, err := f.store.MarkWaitingFor(context.Background(), ref, res.Token, 3, time.Now().Add(-time.Millisecond)); err != nil || o != store.Applied {
		t.Fatalf("mark waiting = %v, %v", o, err)
	}
	want(t, f.push(e), http.StatusOK, OutDeferred)
	tk := f.cloudTask(queue.TaskName(e.TaskID, 4))
	if tk == nil {
		t.Fatalf("no cloud task for deferral 4 in %d scheduled", len(f.scheduled()))
	}
	if b := taskBody(t, tk); b.Deferrals != 4 {
		t.Errorf("deferred envelope deferrals = %d, want 4", b.Deferrals)
	}
	want(t, f.push(e), http.StatusOK, OutDuplicate)
	// An old Cloud Task (deferral 3, arriving late): acknowledged too.
	old := e
	old.Deferrals = 3
	want(t, f.callback(queue.TaskName(e.TaskID, 3), encode(t, old)), http.StatusOK, OutDuplicate)
	if rec := f.record(e); rec.State != store.Waiting {
		t.Fatalf("state = %s, want waiting", rec.State)
	}
	if n := len(f.generateCalls(e.TaskID)); n != 0 {
		t.Fatalf("gemini calls = %d, want 0 before the slot", n)
	}
}
