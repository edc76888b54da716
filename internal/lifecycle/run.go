package lifecycle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gemq-dev/gemq/internal/config"
	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/logging"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
	"github.com/gemq-dev/gemq/internal/tier"
)

// run is one delivery being processed.
type run struct {
	d   Delivery
	env task.Envelope
	ref store.Ref
	log *slog.Logger
	// leased is true while this delivery holds the task's lease (tok).
	leased bool
	tok    store.Token
	// lease is what the store reported when this delivery leased the task.
	lease store.LeaseResult
	// carried is the reservation the envelope carries, if any (nil when the
	// task was taken over from a holder that may have used it).
	carried *limiter.Permit
	// req is the envelope's request, parsed and valid.
	req *gemini.Request
}

// Handle runs one delivery through the lifecycle and says how to answer it.
func (m *Machine) Handle(ctx context.Context, d Delivery) Outcome {
	log := m.log.With("source", string(d.Source), "delivery_id", d.ID, "delivery_attempt", d.Attempt)
	if d.Source == CloudTasks && d.Attempt == 0 {
		m.lead.observe(ctx, d.ScheduledAt, m.now())
	}
	if d.Batch != nil && d.Invalid == nil {
		return m.batchStep(ctx, d)
	}
	var req *gemini.Request
	if d.Invalid == nil {
		// A request that can never be sent is a message that cannot be
		// processed, whoever else holds its task: checked before the lease,
		// so that a malformed copy of a task is dead-lettered too.
		var err error
		if req, err = gemini.ParseRequest(d.Envelope.Request); err == nil {
			err = req.Validate()
		}
		if err != nil {
			d.Invalid, d.Kind = err, KindInvalidRequest
		}
	}
	if d.Invalid != nil {
		return m.invalid(ctx, d, log)
	}
	r := &run{d: d, env: d.Envelope, ref: store.RefOf(d.Envelope), req: req}
	r.log = log.With(logging.TaskID, r.env.TaskID, logging.JobID, r.env.JobID, "model", r.env.Model,
		"attempt", r.env.Attempt, "deferrals", r.env.Deferrals)
	o := m.process(ctx, r)
	if r.leased {
		// Every path that keeps the lease past the answer gives it back
		// here (with a fresh context: ctx may be what ended).
		m.releaseLease(r)
	}
	lvl := slog.LevelInfo
	if o.Redeliver {
		lvl = slog.LevelWarn
	}
	r.log.Log(ctx, lvl, "task message handled", "outcome", o.Name, "redeliver", o.Redeliver)
	return o
}

// process leases the task, then admits, calls and settles it.
func (m *Machine) process(ctx context.Context, r *run) Outcome {
	r.carried = carriedPermit(r)
	check := isLeaseCheck(r.d, r.env)
	// Every message of a job created by ingest carries the job's hash
	// (ingest sets it; deferrals and lease checks keep it): one without it
	// is a copy ingest did not publish, refused before it can touch a task.
	// Ingest recorded every task's request fingerprint with the job (the
	// task's first lease does where Redis lost it): a copy that carries the
	// job's hash with another request is refused, whichever comes first.
	var fp string
	if r.env.JobHash != "" {
		fp = task.RequestFingerprint(r.env.Model, r.env.Request)
	}
	lr, err := m.deps.Store.LeaseTask(ctx, r.ref, store.LeaseRequest{
		Holder: r.d.holder(), Attempt: r.d.Attempt, TTL: m.firstLease(),
		Deferral: r.env.Deferrals, TakeoverOnly: check, AdhocOnly: r.env.JobHash == "", Fingerprint: fp,
	})
	if err != nil {
		r.log.ErrorContext(ctx, "lease task", "error", err.Error())
		return m.park(ctx, r)
	}
	switch lr.Outcome {
	case store.Applied:
	case store.AlreadyDone:
		return m.duplicate(ctx, r, lr.Published)
	case store.HeldElsewhere:
		return m.held(ctx, r, lr.LeaseUntil)
	case store.Awaiting:
		// A duplicate push, or an older Cloud Task: the task waits for the
		// Cloud Task of deferral lr.Deferral, which carries its reservation.
		r.log.InfoContext(ctx, "task is waiting for another delivery", "awaiting_deferral", lr.Deferral,
			"until", lr.WaitUntil.UTC().Format(time.RFC3339Nano))
		return ack(OutDuplicate)
	case store.NotStale:
		// A lease check that found the task waiting for its Cloud Task, or
		// released for a redelivery on its way: not its business.
		return ack(OutDuplicate)
	case store.Foreign:
		if r.env.JobHash == "" {
			return m.deadLetter(ctx, r.d, KindConflict, fmt.Sprintf("job %s was created by ingest and this envelope does not carry its job hash: ingest did not publish it (a copy of task %s, possibly with another request, or a task the job does not have); the job's own messages are processed as published", r.env.JobID, r.env.TaskID), r.log)
		}
		return m.deadLetter(ctx, r.d, KindForeign, fmt.Sprintf("task %s is not one of the tasks of job %s (the job was created by ingest without it, or by another submission of the same job id)", r.env.TaskID, r.env.JobID), r.log)
	case store.Conflict:
		return m.deadLetter(ctx, r.d, KindConflict, fmt.Sprintf("a copy of task %s of job %s with another model or request than the task's own messages carry: ingest did not publish it; the task runs as published", r.env.TaskID, r.env.JobID), r.log)
	default:
		r.log.ErrorContext(ctx, "lease task: unexpected outcome", "store_outcome", lr.Outcome.String())
		return redeliver
	}
	r.leased, r.lease, r.tok = true, lr, lr.Token
	if lr.Cancelled {
		return m.cancelled(ctx, r)
	}
	if lr.Previous == store.Calling {
		// The previous holder (maybe an earlier attempt of this very
		// delivery) was calling Gemini: the call may have happened, under
		// the permit this envelope carries. That permit is spent.
		r.carried = nil
		r.log.WarnContext(ctx, "possible duplicate call: took over a task whose holder was calling Gemini",
			"resumed", lr.Resumed)
	} else if check || lr.Resumed || (lr.Previous == store.Waiting && lr.Deferral != r.env.Deferrals) {
		r.log.WarnContext(ctx, "took over a task", "previous_state", string(lr.Previous),
			"awaited_deferral", lr.Deferral, "lease_check", check, "resumed", lr.Resumed)
	}

	if m.tierOf(r) == tier.Batch {
		return m.batchTask(ctx, r)
	}
	permit, o, ok := m.admit.Admit(ctx, r, r.req)
	if !ok {
		return o
	}
	return m.call(ctx, r, r.req, permit)
}

// firstLease is the lease LeaseTask takes: long enough for what comes
// before the Gemini call (estimating, the limiter, waiting for a slot within
// the claim lead), after which MarkCalling extends it to cover the call. A
// lease taken by a script that ran after its caller gave up (Redis stalled)
// therefore blocks the task for this long, not for a whole lease.
func (m *Machine) firstLease() time.Duration {
	d := m.opts.ClaimLead + config.ClaimSlack + m.opts.CallTimeout
	if m.opts.CountTokens {
		d += m.opts.GeminiTimeout
	}
	return min(d, m.opts.Lease)
}

// carriedPermit is the reservation the envelope carries, if readable.
func carriedPermit(r *run) *limiter.Permit {
	if len(r.env.Permit) == 0 {
		return nil
	}
	var p limiter.Permit
	if err := json.Unmarshal(r.env.Permit, &p); err != nil {
		r.log.Warn("ignoring unreadable permit; acquiring a new one", "error", err.Error())
		return nil
	}
	if p.Outcome != limiter.Reserved {
		return nil
	}
	return &p
}

// call calls Gemini under a Granted permit, once the store records that the
// task is calling.
func (m *Machine) call(ctx context.Context, r *run, req *gemini.Request, permit limiter.Permit) Outcome {
	r.log = r.log.With("permit_id", permit.ID)
	t := m.tierOf(r)
	so, err := m.deps.Store.MarkCalling(ctx, r.ref, r.tok, m.callLease(t))
	if err != nil {
		r.log.ErrorContext(ctx, "mark calling", "error", err.Error())
		m.releasePermit(ctx, r, &permit)
		return m.abort(ctx, r)
	}
	if so != store.Applied {
		// Taken over (or finished) since the lease: no call.
		r.leased = false
		m.releasePermit(ctx, r, &permit)
		r.log.WarnContext(ctx, "task taken over before the call", "store_outcome", so.String())
		return ack(OutStale)
	}
	if t != tier.Standard {
		req.ServiceTier = string(t)
	}
	callCtx, cancel := context.WithTimeout(ctx, m.callTimeout(t))
	resp, err := m.deps.Gemini.Generate(callCtx, r.env.TaskID, r.env.Model, req)
	cancel()
	if err == nil {
		// One script: reconcile the charge, learn the estimate's error,
		// count the success for the adaptive limits.
		if err := m.deps.Permits.Settle(ctx, permit, resp.PromptTokens); err != nil {
			r.log.WarnContext(ctx, "limiter settle", "error", err.Error())
		}
		return m.finishSucceeded(ctx, r, resp.JSON, usage(t, resp))
	}
	if ctx.Err() != nil {
		// The request itself ended (client gone, instance stopping): nobody
		// hears the answer. The lease is kept, marked calling: a later
		// attempt of this delivery resumes at once, knowing the call may
		// have happened; anyone else waits for the lease.
		r.leased = false
		r.log.WarnContext(ctx, "request ended during the Gemini call", "error", err.Error())
		return Outcome{Name: OutAbandoned, Redeliver: true}
	}
	return m.geminiFailed(ctx, r, permit.Scope, t, err)
}

// estimate returns the task's cost: the local estimate corrected by what
// the limiter learned for its kind of content, or countTokens' exact count;
// or the outcome to answer when it could not (Redis down, countTokens
// failed).
func (m *Machine) estimate(ctx context.Context, r *run, scope limiter.Scope, req *gemini.Request) (limiter.Cost, Outcome, bool) {
	if !m.opts.CountTokens {
		kind, raw := gemini.EstimateKind(req)
		if m.opts.Tokenizer != nil {
			k, n, err := m.opts.Tokenizer.EstimateKind(req)
			if err != nil {
				r.log.WarnContext(ctx, "local tokenizer failed; estimating with characters/4", "error", err.Error())
			} else {
				kind, raw = k, n
			}
		}
		cost, err := m.deps.Permits.Estimate(ctx, scope, kind, raw)
		if err != nil && !errors.Is(err, limiter.ErrUnknownScope) {
			r.log.ErrorContext(ctx, "limiter estimate", "error", err.Error())
			return cost, m.abort(ctx, r), false
		}
		if err != nil { // Acquire answers the unknown scope
			cost = limiter.Cost{Requests: 1, InputTokens: raw}
		}
		return cost, Outcome{}, true
	}
	callCtx, cancel := context.WithTimeout(ctx, m.opts.GeminiTimeout)
	n, err := m.deps.Gemini.CountTokens(callCtx, r.env.Model, req)
	cancel()
	if err == nil {
		return limiter.Cost{Requests: 1, InputTokens: n}, Outcome{}, true
	}
	if ctx.Err() != nil {
		return limiter.Cost{}, Outcome{Name: OutAbandoned, Redeliver: true}, false
	}
	f := gemini.Classify(err)
	r.log.WarnContext(ctx, "countTokens failed", "failure", string(f.Kind), "error", f.Message)
	if f.Kind == gemini.Permanent {
		return limiter.Cost{}, m.finishFailed(ctx, r, failure{code: f.Code, status: f.Status, message: f.Message}), false
	}
	// countTokens has its own quota; any other failure is retried later
	// without counting as an attempt.
	return limiter.Cost{}, m.deferTask(ctx, r, deferral{at: m.now().Add(backoff(r.env.Deferrals+1, m.opts.CapacityBase, m.opts.CapacityMax)),
		why: "countTokens: " + string(f.Kind)}), false
}

// acquire estimates the task's cost and takes a permit for it. ok is false
// when the answer is o instead (no quota configured for the model, Redis
// down, countTokens failed).
func (m *Machine) acquire(ctx context.Context, r *run, req *gemini.Request) (p limiter.Permit, o Outcome, ok bool) {
	scope := limiter.Scope{Project: m.opts.Project, Model: r.env.Model}
	cost, o, ok := m.estimate(ctx, r, scope, req)
	if !ok {
		return p, o, false
	}
	p, err := m.deps.Permits.Acquire(ctx, scope, cost)
	if errors.Is(err, limiter.ErrUnknownScope) {
		return p, m.finishFailed(ctx, r, failure{code: 400, status: "INVALID_ARGUMENT",
			message: fmt.Sprintf("no quota is configured for model %q", r.env.Model)}), false
	}
	if err != nil {
		r.log.ErrorContext(ctx, "limiter acquire", "error", err.Error())
		return p, m.abort(ctx, r), false
	}
	return p, Outcome{}, true
}

// unusable answers a permit that can be neither used nor deferred for.
func (m *Machine) unusable(ctx context.Context, r *run, p limiter.Permit) Outcome {
	if p.Outcome == limiter.Rejected {
		return m.finishFailed(ctx, r, failure{code: 400, status: "INVALID_ARGUMENT",
			message: fmt.Sprintf("request needs %d input tokens, more than the quota allows at once (%s)", p.Cost.InputTokens, p.Reason)})
	}
	r.log.ErrorContext(ctx, "limiter returned an unknown outcome", "permit_outcome", string(p.Outcome))
	return m.abort(ctx, r)
}

// abort gives the lease back and asks for the message again.
func (m *Machine) abort(ctx context.Context, r *run) Outcome {
	m.releaseLease(r)
	return redeliver
}

// releasePermit gives back a permit that will not be used (best effort: a
// permit not given back only holds its slot until it expires).
func (m *Machine) releasePermit(ctx context.Context, r *run, p *limiter.Permit) {
	if p == nil || (p.Outcome != limiter.Reserved && p.Outcome != limiter.Granted) {
		return
	}
	if err := m.deps.Permits.Release(ctx, *p); err != nil {
		r.log.WarnContext(ctx, "limiter release", "error", err.Error(), "permit_id", p.ID)
	}
}

// releaseLease gives the lease back so a redelivery can run at once (best
// effort: otherwise it expires). It uses its own context because the
// request's may be what ended.
func (m *Machine) releaseLease(r *run) {
	if !r.leased {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := m.deps.Store.ReleaseLease(ctx, r.ref, r.tok); err != nil {
		r.log.WarnContext(ctx, "release lease", "error", err.Error())
		return
	}
	r.leased = false
}

// shortHash is 16 hex digits of SHA-256(s), for names.
func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}
