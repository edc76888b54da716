package lifecycle

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/queue"
)

// pairQuota admits 2 requests per 2 s of modelOpen (unlimited at the
// stand-in), with the fixture's guard: a slot is claimable within ±100 ms.
const pairQuota = `{"safety": 1, "horizon": "15m", "guard": "400ms", "scopes": [
  {"project": "*", "model": "gemini-2.5-flash", "dimensions": [
    {"name": "rp2s", "unit": "requests", "limit": 2, "period": "2s"}]}]}`

// lateClaims makes the first Claim made at its slot reach Redis late by
// `late` past the slot, as a claim does on a loaded machine whose sleep
// overshot (or whose Cloud Task was dispatched late).
type lateClaims struct {
	Permits
	late time.Duration
	mu   sync.Mutex
	done bool
	// answer is the delayed Claim's answer.
	answer limiter.Permit
}

func (c *lateClaims) Claim(ctx context.Context, p limiter.Permit) (limiter.Permit, error) {
	c.mu.Lock()
	delay := !c.done && p.Outcome == limiter.Reserved && time.Until(p.At) < 100*time.Millisecond
	c.done = c.done || delay
	c.mu.Unlock()
	if !delay {
		return c.Permits.Claim(ctx, p)
	}
	time.Sleep(time.Until(p.At.Add(c.late)))
	np, err := c.Permits.Claim(ctx, p)
	c.mu.Lock()
	c.answer = np
	c.mu.Unlock()
	return np, err
}

// A claim that misses its slot's window gives the slot back and is
// reserved again (internal/limiter, Claim); when the new slot is within
// the claim lead, the delivery waits for it in the function and runs:
// two invocations for a deferred task (its push, its Cloud Task), never a
// third Cloud Task, whether the claim was late on arrival or after the
// callback had already waited a lead for its first slot.
func TestLateClaimWaitsForItsNewSlot(t *testing.T) {
	const (
		lead = time.Second
		late = 250 * time.Millisecond // past the slot's claim window (+100 ms)
	)
	for _, tc := range []struct {
		name string
		// arrive is when the Cloud Task is delivered, from its slot.
		arrive time.Duration
	}{
		{"late after waiting a lead for the slot", -lead},
		{"late on arrival", late},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, fixtureOptions{opts: Options{ClaimLead: lead}})
			cfg, err := limiter.ParseConfig([]byte(pairQuota))
			if err != nil {
				t.Fatal(err)
			}
			lim := limiter.New(f.rdb, cfg)
			lc := &lateClaims{Permits: lim, late: late}
			f.m.deps.Permits = lc
			ctx := context.Background()
			scope := limiter.Scope{Project: testProject, Model: modelOpen}
			acquire := func(want limiter.Outcome) limiter.Permit {
				t.Helper()
				p, err := lim.Acquire(ctx, scope, limiter.Cost{Requests: 1, InputTokens: 1})
				if err != nil || p.Outcome != want {
					t.Fatalf("acquire: %+v, %v; want %s", p, err, want)
				}
				return p
			}
			// Two calls 500 ms apart fill the window: a third task is
			// reserved when the first leaves it (2.4 s on), a fourth
			// 500 ms after that.
			a := acquire(limiter.Granted)
			time.Sleep(500 * time.Millisecond)
			acquire(limiter.Granted)
			e := envelope("job-late", "late", modelOpen, "late")
			want(t, f.push(e), http.StatusOK, OutDeferred)
			tk := f.cloudTask(queue.TaskName(e.TaskID, 1))
			if tk == nil {
				t.Fatal("no cloud task for deferral 1")
			}
			p := taskPermit(t, tk)
			if d := p.At.Sub(a.At); d < 2*time.Second {
				t.Fatalf("reserved %v after the first call, want the window (2.4 s)", d)
			}
			next := acquire(limiter.Reserved)
			// The late claim gives its slot back and queues behind next:
			// next.At is the new slot, within the lead of the late claim.
			if gap := next.At.Sub(p.At.Add(late)); gap <= 0 || gap > lead {
				t.Fatalf("the next slot is %v after the late claim, want within (0, %v]: the machine was too slow to set up", gap, lead)
			}

			time.Sleep(time.Until(p.At.Add(tc.arrive)))
			got := f.callback(shortName(tk.Name), tk.GetHttpRequest().GetBody())
			lc.mu.Lock()
			answer := lc.answer
			lc.mu.Unlock()
			if answer.Outcome != limiter.Reserved || !answer.At.After(p.At) || answer.Early {
				t.Fatalf("the late claim answered %+v, want reserved again after %v (decided afresh, not early)", answer, p.At)
			}
			if !strings.Contains(f.logs(), "claim missed its slot; reserved again") || strings.Contains(f.logs(), "reserved slot moved") {
				t.Error("the late claim is not logged as a missed slot")
			}
			want(t, got, http.StatusOK, OutSucceeded)
			if n := len(f.scheduled()); n != 1 {
				t.Errorf("%d Cloud Tasks, want 1 (no third invocation)", n)
			}
			calls := f.generateCalls(e.TaskID)
			if len(calls) != 1 {
				t.Fatalf("gemini calls = %d, want 1", len(calls))
			}
			if got := calls[0].Received; got.Before(answer.At.Add(-100 * time.Millisecond)) {
				t.Errorf("gemini called at %v, before the new slot %v", got, answer.At)
			}
			if !strings.Contains(f.logs(), "claimed the reserved slot after waiting for it") {
				t.Error("no log line for the wait")
			}
		})
	}
}
