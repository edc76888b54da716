package lifecycle

import (
	"context"
	"time"

	"github.com/gemq-dev/gemq/internal/config"
	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/limiter"
)

// Admission decides when a leased task may call Gemini, and what a 429
// does. The policies are reserve (gemq's) and seed (the benchmarks'
// baseline); config.Config.LimitPolicy chooses one in New.
type Admission interface {
	// Admit returns a Granted permit to call under, or ok false and the
	// outcome the delivery answers instead (deferred, failed, redeliver).
	Admit(ctx context.Context, r *run, req *gemini.Request) (p limiter.Permit, o Outcome, ok bool)
	// Throttled answers a 429 (f is QuotaPerMinute, QuotaPerDay or
	// Capacity) to a call made under a permit of scope.
	Throttled(ctx context.Context, r *run, scope limiter.Scope, f gemini.Failure) Outcome
}

var (
	_ Admission = reserve{}
	_ Admission = seed{}
)

// reserve is gemq's policy: a busy quota reserves the earliest slot, and
// the task's Cloud Task claims it on arrival; a 429 sets a cool-down shared
// by every instance.
type reserve struct{ m *Machine }

func (a reserve) Admit(ctx context.Context, r *run, req *gemini.Request) (limiter.Permit, Outcome, bool) {
	m := a.m
	var p limiter.Permit
	if r.carried != nil {
		var err error
		if p, err = m.deps.Permits.Claim(ctx, *r.carried); err != nil {
			r.log.ErrorContext(ctx, "limiter claim", "error", err.Error())
			return p, m.abort(ctx, r), false
		}
		missedSlot(ctx, r, *r.carried, p, m.now())
	} else {
		var o Outcome
		var ok bool
		if p, o, ok = m.acquire(ctx, r, req); !ok {
			return p, o, false
		}
	}
	if o, ok := m.waitForSlot(ctx, r, &p); !ok {
		return p, o, false
	}
	switch p.Outcome {
	case limiter.Granted:
		return p, Outcome{}, true
	case limiter.Reserved:
		return p, m.deferTask(ctx, r, deferral{at: p.At, permit: &p, why: "reserved: " + p.Reason}), false
	case limiter.Denied:
		return p, m.deferTask(ctx, r, deferral{at: p.At, why: "denied: " + p.Reason}), false
	}
	return p, m.unusable(ctx, r, p), false
}

func (a reserve) Throttled(ctx context.Context, r *run, scope limiter.Scope, f gemini.Failure) Outcome {
	m := a.m
	now := m.now()
	// Adapt the scope's limits for every instance: a quotaValue below the
	// configuration lowers that dimension; a 429 without details, or any on
	// Vertex AI, lowers the rate (AIMD). The per-task paths below remain.
	sig := limiter.Throttle429{QuotaID: f.QuotaID, QuotaValue: f.QuotaValue, Capacity: f.Kind == gemini.Capacity || m.opts.Vertex}
	if _, err := m.deps.Permits.Throttled(ctx, scope, sig); err != nil {
		r.log.WarnContext(ctx, "limiter throttled", "error", err.Error())
	}
	switch f.Kind {
	case gemini.QuotaPerMinute:
		wait := f.RetryAfter
		if wait <= 0 {
			wait = m.opts.QuotaRetry
		}
		until := now.Add(wait)
		if err := m.deps.Permits.Cooldown(ctx, scope, until, f.QuotaID); err != nil {
			r.log.WarnContext(ctx, "limiter cooldown", "error", err.Error())
		}
		return m.deferTask(ctx, r, deferral{at: until.Add(jitter(wait/10 + time.Second)), why: "429 " + f.QuotaID})
	case gemini.QuotaPerDay:
		until := limiter.PacificDayStart(now, 1)
		if err := m.deps.Permits.Cooldown(ctx, scope, until, f.QuotaID); err != nil {
			r.log.WarnContext(ctx, "limiter cooldown", "error", err.Error())
		}
		return m.deferTask(ctx, r, deferral{at: until.Add(jitter(time.Minute)), why: "429 " + f.QuotaID})
	}
	return m.deferTask(ctx, r, deferral{at: now.Add(backoff(r.env.Deferrals+1, m.opts.CapacityBase, m.opts.CapacityMax)),
		why: "429 without quota details"})
}

// seed is the deny-and-retry baseline the benchmarks compare against: a
// permit is granted or refused, refused tasks and 429s come back after an
// exponential delay without any reservation, nothing is shared.
type seed struct{ m *Machine }

func (a seed) Admit(ctx context.Context, r *run, req *gemini.Request) (limiter.Permit, Outcome, bool) {
	m := a.m
	p, o, ok := m.acquire(ctx, r, req)
	if !ok {
		return p, o, false
	}
	switch p.Outcome {
	case limiter.Granted:
		return p, Outcome{}, true
	case limiter.Reserved, limiter.Denied:
		m.releasePermit(ctx, r, &p)
		return p, m.deferTask(ctx, r, deferral{at: m.now().Add(a.delay(r)), why: "refused: " + p.Reason}), false
	}
	return p, m.unusable(ctx, r, p), false
}

func (a seed) Throttled(ctx context.Context, r *run, _ limiter.Scope, f gemini.Failure) Outcome {
	return a.m.deferTask(ctx, r, deferral{at: a.m.now().Add(a.delay(r)), why: "429 " + string(f.Kind)})
}

// delay is the seed policy's re-queue delay: exponential in the number of
// deferrals, capped, jittered.
func (a seed) delay(r *run) time.Duration {
	return backoff(r.env.Deferrals+1, a.m.opts.SeedBase, a.m.opts.SeedMax)
}

// waitForSlot handles a permit Reserved at most the claim lead (+
// config.ClaimSlack) ahead, however it got it: Acquire just reserved it,
// Claim answered that the Cloud Task carrying it came early, or a claim
// that came late (a callback dispatched late, or a wait that overshot its
// slot on a loaded machine) gave its slot back and was reserved again.
// Instead of a Cloud Task and another invocation, it waits in the function
// until the slot and claims it, a few times at most. Each wait is measured
// from now, not from the first: a claim that missed its slot after waiting
// a whole lead still waits for a new slot a few milliseconds away. The
// lease bounds the whole: a slot is waited for only if it comes at least
// config.ClaimSlack before the delivery's lease ends. It also means a
// reservation's Cloud Task, due a lead before its slot, is always due at
// least the slack after now. *p is updated to the last answer. ok is false
// when the delivery must answer o instead: the request's context ended
// during the wait (the reservation is kept: the redelivery claims it), or a
// Claim failed.
func (m *Machine) waitForSlot(ctx context.Context, r *run, p *limiter.Permit) (o Outcome, ok bool) {
	start := m.now()
	limit := m.opts.ClaimLead + config.ClaimSlack
	for try := 0; try < maxSlotClaims && p.Outcome == limiter.Reserved; try++ {
		now := m.now()
		wait := p.At.Sub(now)
		if wait > limit || !m.leaseCovers(r, p.At) {
			return Outcome{}, true // too far ahead: deferred
		}
		// At least a little: Claim said early, so Redis' clock is behind ours.
		wait = max(wait, 20*time.Millisecond)
		if !sleepCtx(ctx, wait) {
			r.log.WarnContext(ctx, "request ended while waiting for the reserved slot", "error", ctx.Err().Error())
			return Outcome{Name: OutAbandoned, Redeliver: true}, false
		}
		np, err := m.deps.Permits.Claim(ctx, *p)
		if err != nil {
			r.log.ErrorContext(ctx, "limiter claim", "error", err.Error())
			return m.abort(ctx, r), false
		}
		missedSlot(ctx, r, *p, np, m.now())
		*p = np
	}
	if p.Outcome == limiter.Granted {
		r.log.InfoContext(ctx, "claimed the reserved slot after waiting for it", "waited", m.now().Sub(start).String())
	}
	return Outcome{}, true
}

// missedSlot logs a claim of reservation p answered with another time
// (np): one that came too late for its slot and was reserved again (the
// documented cause of a task's third invocation when the new slot is
// beyond the claim lead), or one whose slot moved while it held it (an
// adaptive limit fell and the queue was re-planned later, or a wake: see
// the limiter's "Re-planning").
func missedSlot(ctx context.Context, r *run, p, np limiter.Permit, now time.Time) {
	if np.Outcome != limiter.Reserved || np.At.Equal(p.At) {
		return
	}
	if np.Early {
		r.log.InfoContext(ctx, "reserved slot moved; coming back at the new time", "slot", p.At.UTC().Format(time.RFC3339Nano),
			"new_time", np.At.UTC().Format(time.RFC3339Nano))
		return
	}
	r.log.InfoContext(ctx, "claim missed its slot; reserved again", "slot", p.At.UTC().Format(time.RFC3339Nano),
		"new_slot", np.At.UTC().Format(time.RFC3339Nano), "late", now.Sub(p.At).String())
}

// maxSlotClaims bounds the claims of one wait for a slot: early (Redis'
// clock behind), late and reserved again, then on time.
const maxSlotClaims = 4

// leaseCovers reports whether the delivery's lease lasts until at least
// config.ClaimSlack after at (true when the store did not say when it ends).
func (m *Machine) leaseCovers(r *run, at time.Time) bool {
	until := r.lease.LeaseUntil
	return until.IsZero() || !at.Add(config.ClaimSlack).After(until)
}

// sleepCtx waits for d or until ctx ends, reporting whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
