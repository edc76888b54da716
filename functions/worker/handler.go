package worker

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gemq-dev/gemq/internal/config"
	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/logging"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

// The dependencies the handler needs, each the narrow part of the real type
// it uses (the real types are asserted below).

var (
	_ taskStore = (*store.Store)(nil)
	_ permits   = (*limiter.Limiter)(nil)
	_ generator = (*gemini.Client)(nil)
	_ scheduler = (*queue.Scheduler)(nil)
	_ publisher = (*queue.Publisher)(nil)
)

// taskStore keeps task states, leases, write-once results and their
// "published" flags (*store.Store). The flag lets a redelivery after a crash
// between the terminal write and the publish publish the result (and only
// then).
type taskStore interface {
	LeaseTask(ctx context.Context, r store.Ref, req store.LeaseRequest) (store.LeaseResult, error)
	MarkWaitingFor(ctx context.Context, r store.Ref, holder string, deferral int, until time.Time) (store.Outcome, error)
	ReleaseLease(ctx context.Context, r store.Ref, holder string) (store.Outcome, error)
	Complete(ctx context.Context, r store.Ref, holder string, response []byte) (store.Outcome, error)
	Fail(ctx context.Context, r store.Ref, holder string, errJSON []byte) (store.Outcome, error)
	Result(ctx context.Context, jobID, key string) (store.Record, error)
	MarkPublished(ctx context.Context, r store.Ref) error
}

// permits is the quota limiter (*limiter.Limiter).
type permits interface {
	Acquire(ctx context.Context, scope limiter.Scope, cost limiter.Cost) (limiter.Permit, error)
	Claim(ctx context.Context, p limiter.Permit) (limiter.Permit, error)
	Reconcile(ctx context.Context, p limiter.Permit, actualInputTokens int64) error
	Release(ctx context.Context, p limiter.Permit) error
	Cooldown(ctx context.Context, scope limiter.Scope, until time.Time, reason string) error
}

// generator calls Gemini (*gemini.Client).
type generator interface {
	Generate(ctx context.Context, taskID, model string, r *gemini.Request) (*gemini.Response, error)
	CountTokens(ctx context.Context, model string, r *gemini.Request) (int64, error)
}

// scheduler creates named Cloud Tasks (*queue.Scheduler); ALREADY_EXISTS is
// success, reported as created false.
type scheduler interface {
	Create(ctx context.Context, name string, at time.Time, body []byte) (created bool, err error)
}

// publisher publishes to the results topic (*queue.Publisher).
type publisher interface {
	Publish(ctx context.Context, msgs []queue.Message) error
}

// Policies (GEMQ_LIMIT_POLICY).
const (
	// policyReserve is gemq's: reservations claimed on arrival, a shared
	// cool-down on 429.
	policyReserve = "reserve"
	// policySeed is the deny-and-retry baseline the benchmarks compare
	// against: a permit is granted or refused, refused tasks come back after
	// an exponential delay without any reservation, 429s are retried the same
	// way, nothing is shared.
	policySeed = "seed"
)

// options tunes the handler; newHandler fills in defaults for zero values.
type options struct {
	// project is the quota project of the limiter scope (GOOGLE_CLOUD_PROJECT).
	project string
	// policy is policyReserve or policySeed.
	policy string
	// countTokens: estimate with the countTokens API, not locally.
	countTokens bool
	// geminiTimeout bounds one Gemini call (GEMQ_GEMINI_TIMEOUT).
	geminiTimeout time.Duration
	// lease is how long a worker holds a task (GEMQ_LEASE); > geminiTimeout.
	lease time.Duration
	// maxAttempts bounds transient failures before dead-letter (GEMQ_MAX_ATTEMPTS).
	maxAttempts int
	// retryBase, retryMax shape the transient-failure back-off
	// (GEMQ_RETRY_BASE, GEMQ_RETRY_MAX).
	retryBase, retryMax time.Duration
	// capacityBase, capacityMax shape the back-off after a 429 without
	// details or a failed countTokens (GEMQ_CAPACITY_BACKOFF_BASE, _MAX).
	capacityBase, capacityMax time.Duration
	// quotaRetry is the pause after a per-minute 429 without RetryInfo.
	quotaRetry time.Duration
	// seedBase, seedMax shape the seed policy's re-queue delay
	// (GEMQ_SEED_BACKOFF_BASE, _MAX).
	seedBase, seedMax time.Duration
	// claimLead is how long before its reserved slot a deferred task's
	// Cloud Task is scheduled, and how early (+ config.ClaimSlack) a Cloud
	// Tasks callback may be and still wait in the handler for its slot
	// instead of being deferred again (GEMQ_CLAIM_LEAD).
	claimLead time.Duration
	// callTimeout bounds one Cloud Tasks or Pub/Sub call, so an outage
	// answers non-2xx well before the push deadline.
	callTimeout time.Duration
}

func (o options) withDefaults() options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.policy == "" {
		o.policy = policyReserve
	}
	def(&o.geminiTimeout, 120*time.Second)
	def(&o.lease, o.geminiTimeout+60*time.Second)
	if o.maxAttempts <= 0 {
		o.maxAttempts = 5
	}
	def(&o.retryBase, config.DefaultRetryBase)
	def(&o.retryMax, max(config.DefaultRetryMax, o.retryBase))
	def(&o.capacityBase, config.DefaultCapacityBackoffBase)
	def(&o.capacityMax, max(config.DefaultCapacityBackoffMax, o.capacityBase))
	def(&o.quotaRetry, 60*time.Second)
	def(&o.seedBase, config.DefaultSeedBackoffBase)
	def(&o.seedMax, max(config.DefaultSeedBackoffMax, o.seedBase))
	def(&o.claimLead, config.DefaultClaimLead)
	def(&o.callTimeout, 30*time.Second)
	return o
}

// handler processes one task message per request. It is safe for concurrent
// use.
type handler struct {
	store   taskStore
	lim     permits
	gem     generator
	sched   scheduler
	results publisher
	opts    options
	log     *slog.Logger
	now     func() time.Time
}

// newHandler returns a handler on its dependencies.
func newHandler(st taskStore, lim permits, gem generator, sched scheduler, results publisher, opts options, log *slog.Logger) *handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &handler{
		store: st, lim: lim, gem: gem, sched: sched, results: results,
		opts: opts.withDefaults(), log: log, now: time.Now,
	}
}

// Outcomes reported in the response body and logs.
const (
	outSucceeded  = "succeeded"
	outFailed     = "failed"
	outDeadLetter = "dead_letter"
	outPoison     = "poison"
	outDuplicate  = "duplicate"    // already terminal, or waiting for another delivery
	outBusy       = "held"         // another holder's lease is live
	outDeferred   = "deferred"     // Cloud Task created for later
	outRedeliver  = "redeliver"    // non-2xx: infrastructure failure
	outAbandoned  = "abandoned"    // the request's context ended mid-way
	outWrongVerb  = "method_error" // not a POST
)

// answer is the response: the HTTP status and the outcome.
type answer struct {
	status  int
	outcome string
}

func ack(outcome string) answer { return answer{http.StatusOK, outcome} }

// redeliver answers non-2xx so Pub/Sub (or Cloud Tasks) delivers again.
var redeliver = answer{http.StatusServiceUnavailable, outRedeliver}

// ServeHTTP handles one Pub/Sub push delivery or Cloud Tasks callback: 2xx
// acknowledges (the task is finished, deferred, or poison), non-2xx asks for
// redelivery (infrastructure down).
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var a answer
	if r.Method != http.MethodPost {
		a = answer{http.StatusMethodNotAllowed, outWrongVerb}
	} else {
		a = h.serve(r)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	fmt.Fprintf(w, "{\"outcome\":%q}\n", a.outcome)
}

// job is one delivery being processed: the envelope, its store ref, the
// lease holder id and a logger carrying the ids.
type job struct {
	d      delivery
	env    task.Envelope
	ref    store.Ref
	holder string
	log    *slog.Logger
	// leased is true while this delivery holds the task's lease.
	leased bool
	// lease is what the store reported when this delivery leased the task
	// (its Deferral numbers the next Cloud Task).
	lease store.LeaseResult
	// carried is the reservation the envelope carries, if any.
	carried *limiter.Permit
}

func (h *handler) serve(r *http.Request) answer {
	ctx := r.Context()
	d, err := decode(r)
	if err != nil {
		var pe *poisonError
		if errors.As(err, &pe) {
			return h.poison(ctx, d, pe)
		}
		h.log.WarnContext(ctx, "read request", "error", err.Error(), "source", d.source, "delivery_id", d.id)
		return redeliver
	}
	j := &job{d: d, env: d.env, ref: store.RefOf(d.env), holder: rand.Text()}
	j.log = h.log.With(logging.TaskID, d.env.TaskID, logging.JobID, d.env.JobID, "model", d.env.Model,
		"source", d.source, "delivery_id", d.id, "attempt", d.env.Attempt, "deferrals", d.env.Deferrals)
	a := h.process(ctx, j)
	if j.leased {
		// Every path that keeps the lease past the answer is a bug; give it
		// back (with a fresh context: ctx may be what ended).
		h.releaseLease(j)
	}
	lvl := slog.LevelInfo
	if a.status >= 300 {
		lvl = slog.LevelWarn
	}
	j.log.Log(ctx, lvl, "task message handled", "outcome", a.outcome, "http_status", a.status)
	return a
}

// poison records a message that can never be processed and acknowledges
// it. When the envelope names its task well enough (job id, key, model), the
// task is failed in the store and an error result published, so the job's
// counts still add up; otherwise only an error log records it.
func (h *handler) poison(ctx context.Context, d delivery, pe *poisonError) answer {
	log := h.log.With("source", d.source, "delivery_id", d.id)
	ref, ok := refOfPoison(d.raw)
	if !ok {
		log.ErrorContext(ctx, "poison message dropped: no task to record it against", "error", pe.Error())
		return ack(outPoison)
	}
	log = log.With(logging.TaskID, ref.TaskID, logging.JobID, ref.JobID)
	j := &job{d: d, ref: ref, holder: rand.Text(), log: log}
	j.env = task.Envelope{V: task.Version, JobID: ref.JobID, Key: ref.Key, Model: ref.Model, TaskID: ref.TaskID}
	log.ErrorContext(ctx, "poison message", "error", pe.Error())
	a := h.finishFailed(ctx, j, http.StatusBadRequest, "INVALID_ARGUMENT", pe.err.Error(), nil)
	if a.status == http.StatusOK {
		a.outcome = outPoison
	}
	return a
}

// refOfPoison recovers the task a malformed envelope was meant to be, when
// its job id (or what derives it), key and model are usable.
func refOfPoison(raw []byte) (store.Ref, bool) {
	var e struct {
		JobID   string          `json:"job_id"`
		Key     string          `json:"key"`
		Model   string          `json:"model"`
		Request json.RawMessage `json:"request"`
	}
	if json.Unmarshal(raw, &e) != nil {
		return store.Ref{}, false
	}
	env := task.Envelope{JobID: e.JobID, Key: e.Key, Model: e.Model, Request: e.Request}
	env.Normalize()
	if !task.ValidJobID(env.JobID) || task.ValidateKey(env.Key) != nil || !task.ValidModel(env.Model) {
		return store.Ref{}, false
	}
	return store.RefOf(env), true
}

// process runs steps 2 to 6 for a decoded envelope.
func (h *handler) process(ctx context.Context, j *job) answer {
	// A permit the task carries (a reservation made when it was deferred).
	var carried *limiter.Permit
	if len(j.env.Permit) > 0 {
		var p limiter.Permit
		if err := json.Unmarshal(j.env.Permit, &p); err != nil {
			j.log.WarnContext(ctx, "ignoring unreadable permit; acquiring a new one", "error", err.Error())
		} else if p.Outcome == limiter.Reserved {
			carried = &p
		}
	}

	j.carried = carried

	// 2. Lease. A delivery that does not lease the task never touches the
	// limiter, not even to release the permit it carries: that permit is
	// the task's own reservation, claimed (and maybe used) by the delivery
	// that runs it, or shared with the next deferral's Cloud Task (an early
	// arrival passes it on); releasing it could refund a slot in use.
	check := isLeaseCheck(j.d, j.env)
	lr, err := h.store.LeaseTask(ctx, j.ref, store.LeaseRequest{
		Holder: j.holder, TTL: h.opts.lease, Deferral: j.env.Deferrals, TakeoverOnly: check,
	})
	if err != nil {
		j.log.ErrorContext(ctx, "lease task", "error", err.Error())
		return redeliver
	}
	switch lr.Outcome {
	case store.AlreadyDone:
		return h.duplicate(ctx, j, lr.Published)
	case store.HeldElsewhere:
		return h.held(ctx, j, lr.LeaseUntil)
	case store.Awaiting:
		// A duplicate push, or an older Cloud Task: the task waits for
		// the Cloud Task of its deferral lr.Deferral, which carries its
		// reservation.
		j.log.InfoContext(ctx, "task is waiting for another delivery", "awaiting_deferral", lr.Deferral,
			"until", lr.WaitUntil.UTC().Format(time.RFC3339Nano))
		return ack(outDuplicate)
	case store.NotStale:
		// A lease check that found the task waiting for its Cloud Task, or
		// released for a redelivery on its way: not its business.
		return ack(outDuplicate)
	case store.Applied:
	default:
		j.log.ErrorContext(ctx, "lease task: unexpected outcome", "store_outcome", lr.Outcome.String())
		return redeliver
	}
	j.leased, j.lease = true, lr
	if check || (lr.Previous == store.Waiting && lr.Deferral != j.env.Deferrals) {
		j.log.WarnContext(ctx, "took over a stale task", "previous_state", string(lr.Previous),
			"awaited_deferral", lr.Deferral, "lease_check", check)
	}

	req, err := gemini.ParseRequest(j.env.Request)
	if err == nil {
		err = req.Validate()
	}
	if err != nil {
		h.releasePermit(ctx, j, carried)
		return h.finishFailed(ctx, j, http.StatusBadRequest, "INVALID_ARGUMENT", err.Error(), nil)
	}

	// 3. Permit.
	scope := limiter.Scope{Project: h.opts.project, Model: j.env.Model}
	var permit limiter.Permit
	if carried != nil && h.opts.policy == policyReserve {
		permit, err = h.lim.Claim(ctx, *carried)
		if err != nil {
			j.log.ErrorContext(ctx, "limiter claim", "error", err.Error())
			return h.abort(ctx, j)
		}
	} else {
		tokens, a, ok := h.estimate(ctx, j, req)
		if !ok {
			return a
		}
		permit, err = h.lim.Acquire(ctx, scope, limiter.Cost{Requests: 1, InputTokens: tokens})
		if errors.Is(err, limiter.ErrUnknownScope) {
			return h.finishFailed(ctx, j, http.StatusBadRequest, "INVALID_ARGUMENT",
				fmt.Sprintf("no quota is configured for model %q", j.env.Model), nil)
		}
		if err != nil {
			j.log.ErrorContext(ctx, "limiter acquire", "error", err.Error())
			return h.abort(ctx, j)
		}
	}
	if h.opts.policy == policyReserve {
		if a, ok := h.waitForSlot(ctx, j, &permit); !ok {
			return a
		}
	}
	j.log = j.log.With("permit_id", permit.ID)
	switch permit.Outcome {
	case limiter.Granted:
	case limiter.Reserved, limiter.Denied:
		if h.opts.policy == policySeed {
			// The baseline keeps no reservation: give it back, retry later.
			h.releasePermit(ctx, j, &permit)
			return h.deferTask(ctx, j, h.now().Add(h.seedDelay(j)), nil, "refused: "+permit.Reason, false)
		}
		var keep *limiter.Permit
		if permit.Outcome == limiter.Reserved {
			keep = &permit
		}
		return h.deferTask(ctx, j, permit.At, keep, string(permit.Outcome)+": "+permit.Reason, false)
	case limiter.Rejected:
		return h.finishFailed(ctx, j, http.StatusBadRequest, "INVALID_ARGUMENT",
			fmt.Sprintf("request needs %d input tokens, more than the quota allows at once (%s)", permit.Cost.InputTokens, permit.Reason), nil)
	default:
		j.log.ErrorContext(ctx, "limiter returned an unknown outcome", "permit_outcome", string(permit.Outcome))
		return h.abort(ctx, j)
	}

	// 4. Gemini, holding a granted permit.
	callCtx, cancel := context.WithTimeout(ctx, h.opts.geminiTimeout)
	resp, err := h.gem.Generate(callCtx, j.env.TaskID, j.env.Model, req)
	cancel()
	if err == nil {
		// A permit is reconciled once, so an exact estimate (countTokens)
		// needs no round trip.
		if resp.PromptTokens != permit.Cost.InputTokens {
			if err := h.lim.Reconcile(ctx, permit, resp.PromptTokens); err != nil {
				j.log.WarnContext(ctx, "limiter reconcile", "error", err.Error())
			}
		}
		return h.finishSucceeded(ctx, j, resp.JSON)
	}
	if ctx.Err() != nil {
		// The request itself ended (client gone, instance stopping): nobody
		// hears the answer; the message comes back and the lease is freed
		// so that it can be processed at once.
		j.log.WarnContext(ctx, "request ended during the Gemini call", "error", err.Error())
		return answer{http.StatusServiceUnavailable, outAbandoned}
	}
	return h.geminiFailed(ctx, j, scope, err)
}

// estimate returns the task's estimated input tokens, or an answer to give
// when it could not (countTokens failed).
func (h *handler) estimate(ctx context.Context, j *job, req *gemini.Request) (int64, answer, bool) {
	if !h.opts.countTokens {
		return gemini.EstimateInputTokens(req), answer{}, true
	}
	callCtx, cancel := context.WithTimeout(ctx, h.opts.geminiTimeout)
	n, err := h.gem.CountTokens(callCtx, j.env.Model, req)
	cancel()
	if err == nil {
		return n, answer{}, true
	}
	if ctx.Err() != nil {
		return 0, answer{http.StatusServiceUnavailable, outAbandoned}, false
	}
	f := gemini.Classify(err)
	j.log.WarnContext(ctx, "countTokens failed", "failure", string(f.Kind), "error", f.Message)
	if f.Kind == gemini.Permanent {
		return 0, h.finishFailed(ctx, j, f.Code, f.Status, f.Message, nil), false
	}
	// countTokens has its own quota; any other failure is retried later
	// without counting as an attempt.
	return 0, h.deferTask(ctx, j, h.now().Add(backoff(j.env.Deferrals+1, h.opts.capacityBase, h.opts.capacityMax)), nil, "countTokens: "+string(f.Kind), false), false
}

// geminiFailed handles a failed Gemini call made under a granted permit.
func (h *handler) geminiFailed(ctx context.Context, j *job, scope limiter.Scope, err error) answer {
	f := gemini.Classify(err)
	j.log.WarnContext(ctx, "gemini call failed", "failure", string(f.Kind), "http_code", f.Code, "quota_id", f.QuotaID, "retry_after", f.RetryAfter.String())
	now := h.now()
	if h.opts.policy == policySeed && f.Kind != gemini.QuotaZero && f.Kind != gemini.Permanent && f.Kind != gemini.Transient {
		return h.deferTask(ctx, j, now.Add(h.seedDelay(j)), nil, "429 "+string(f.Kind), false)
	}
	switch f.Kind {
	case gemini.QuotaPerMinute:
		wait := f.RetryAfter
		if wait <= 0 {
			wait = h.opts.quotaRetry
		}
		until := now.Add(wait)
		if err := h.lim.Cooldown(ctx, scope, until, f.QuotaID); err != nil {
			j.log.WarnContext(ctx, "limiter cooldown", "error", err.Error())
		}
		return h.deferTask(ctx, j, until.Add(jitter(wait/10+time.Second)), nil, "429 "+f.QuotaID, false)
	case gemini.QuotaPerDay:
		until := limiter.PacificDayStart(now, 1)
		if err := h.lim.Cooldown(ctx, scope, until, f.QuotaID); err != nil {
			j.log.WarnContext(ctx, "limiter cooldown", "error", err.Error())
		}
		return h.deferTask(ctx, j, until.Add(jitter(time.Minute)), nil, "429 "+f.QuotaID, false)
	case gemini.Capacity:
		return h.deferTask(ctx, j, now.Add(backoff(j.env.Deferrals+1, h.opts.capacityBase, h.opts.capacityMax)), nil, "429 without quota details", false)
	case gemini.Transient:
		attempt := j.env.Attempt + 1
		if attempt >= h.opts.maxAttempts {
			reason := fmt.Sprintf("gave up after %d attempts; last error: %s", attempt, f.Message)
			return h.finishFailed(ctx, j, f.Code, f.Status, reason, &deadLetter{reason: reason, attempts: attempt})
		}
		return h.deferTask(ctx, j, now.Add(backoff(attempt, h.opts.retryBase, h.opts.retryMax)), nil, "transient: "+f.Message, true)
	default: // QuotaZero, Permanent
		return h.finishFailed(ctx, j, f.Code, f.Status, f.Message, nil)
	}
}

// waitForSlot handles a permit Reserved at most the claim lead (+
// config.ClaimSlack) ahead, whether Acquire just reserved it or Claim
// answered that the Cloud Task carrying it came early (or came late and was
// queued again): instead of a Cloud Task and another invocation, it waits in
// the handler until the slot's time, the middle of the claim window
// [At-g/4, At+g/4] (so the function's clock may differ from Redis' by up to
// g/4 either way), and claims it, a few times at most. Waiting costs
// function time (at most the lead + slack). It also means a reservation's
// Cloud Task, due a lead before its slot, is always due at least the slack
// after now: never dispatched before deferTask has marked the task waiting
// (such a callback would find the task held and be acked, leaving the task
// to a lease check a whole lease later). *p is updated to the last answer.
// ok is false when the handler must answer a instead: the request's context
// ended during the wait (the reservation is kept: the redelivery claims it),
// or a Claim failed.
func (h *handler) waitForSlot(ctx context.Context, j *job, p *limiter.Permit) (a answer, ok bool) {
	start := h.now()
	limit := h.opts.claimLead + config.ClaimSlack
	for try := 0; try < 3 && p.Outcome == limiter.Reserved; try++ {
		now := h.now()
		wait := p.At.Sub(now)
		if wait > limit-now.Sub(start) {
			// Too far ahead: deferred, to a Cloud Task a lead before the
			// slot.
			return answer{}, true
		}
		// At least a little: Claim said early, so Redis' clock is behind
		// ours.
		wait = max(wait, 20*time.Millisecond)
		j.log.DebugContext(ctx, "waiting for the reserved slot", "at", p.At.UTC().Format(time.RFC3339Nano),
			"wait", wait.String(), "try", try)
		if !sleepCtx(ctx, wait) {
			j.log.WarnContext(ctx, "request ended while waiting for the reserved slot", "error", ctx.Err().Error())
			return answer{http.StatusServiceUnavailable, outAbandoned}, false
		}
		np, err := h.lim.Claim(ctx, *p)
		if err != nil {
			j.log.ErrorContext(ctx, "limiter claim", "error", err.Error())
			return h.abort(ctx, j), false
		}
		*p = np
	}
	if p.Outcome == limiter.Granted {
		j.log.InfoContext(ctx, "claimed the reserved slot after waiting for it", "waited", h.now().Sub(start).String())
	}
	return answer{}, true
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

// seedDelay is the seed policy's re-queue delay: exponential in the number
// of deferrals, capped, jittered.
func (h *handler) seedDelay(j *job) time.Duration {
	return backoff(j.env.Deferrals+1, h.opts.seedBase, h.opts.seedMax)
}

// deferTask schedules the task as a Cloud Task at `at` (carrying permit, if
// any), marks it waiting and acknowledges. Deferrals are counted (they
// number the Cloud Task); failedAttempt also counts a failed attempt.
func (h *handler) deferTask(ctx context.Context, j *job, at time.Time, permit *limiter.Permit, why string, failedAttempt bool) answer {
	next := j.env
	// Number beyond every deferral the task has had: a takeover of a task
	// whose Cloud Task was lost must not reuse a name that exists or ran.
	next.Deferrals = max(j.env.Deferrals, j.lease.Deferral) + 1
	next.Permit = nil
	if failedAttempt {
		next.Attempt++
	}
	if permit != nil {
		raw, err := json.Marshal(permit)
		if err != nil {
			j.log.ErrorContext(ctx, "encode permit", "error", err.Error())
			h.releasePermit(ctx, j, permit)
			return h.abort(ctx, j)
		}
		next.Permit = raw
	}
	if next.Deferrals > task.MaxCount {
		h.releasePermit(ctx, j, permit)
		return h.finishFailed(ctx, j, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED",
			fmt.Sprintf("deferred %d times without running (last: %s)", j.env.Deferrals, why), nil)
	}
	body, err := task.Encode(next)
	if err != nil {
		j.log.ErrorContext(ctx, "encode deferred envelope", "error", err.Error())
		h.releasePermit(ctx, j, permit)
		return h.finishFailed(ctx, j, http.StatusBadRequest, "INVALID_ARGUMENT", err.Error(), nil)
	}
	name := queue.TaskName(j.env.TaskID, next.Deferrals)
	due := at
	if permit != nil && h.opts.policy == policyReserve {
		// A reservation's Cloud Task comes a claim lead before its slot:
		// Cloud Tasks dispatches the burst of a window boundary over
		// seconds, and a callback that is early waits for its slot in the
		// handler (waitForSlot), one that is late is queued again and costs
		// another invocation. A slot within the lead (+ slack) was waited
		// for instead, so this is normally after now; never before.
		due = at.Add(-h.opts.claimLead)
		if now := h.now(); due.Before(now) {
			due = now
		}
	}
	created, err := h.schedule(ctx, name, due, body)
	if err != nil {
		// Not created (or not known to be): redeliver. If it was created
		// after all, the redelivery's Schedule of the same name answers
		// ALREADY_EXISTS, and the permit it carries is released here, which
		// its Claim handles by asking again.
		j.log.ErrorContext(ctx, "schedule cloud task", "error", err.Error(), "cloud_task", name)
		h.releasePermit(ctx, j, permit)
		return h.abort(ctx, j)
	}
	// From here the Cloud Task exists: the answer must be 2xx whatever else
	// fails, or the task would run twice.
	if !created {
		// An earlier delivery created it (and then failed to mark the task
		// waiting, or its answer was lost): that Cloud Task, with the
		// reservation it carries, is the one that runs. The reservation
		// taken here is never used: give it back, unless it is the one
		// the envelope carried (an early arrival passes its reservation
		// on under the same id, so the existing task may carry it too).
		if permit != nil && (j.carried == nil || permit.ID != j.carried.ID) {
			h.releasePermit(ctx, j, permit)
		}
		j.log.InfoContext(ctx, "cloud task already existed", "cloud_task", name)
	}
	if _, err := h.store.MarkWaitingFor(ctx, j.ref, j.holder, next.Deferrals, at.Add(h.opts.lease)); err != nil {
		j.log.WarnContext(ctx, "mark waiting", "error", err.Error())
	} else {
		j.leased = false
	}
	j.log.InfoContext(ctx, "task deferred", "reason", why, "at", at.UTC().Format(time.RFC3339Nano),
		"due", due.UTC().Format(time.RFC3339Nano), "cloud_task", name, "reserved", permit != nil, "created", created)
	return ack(outDeferred)
}

// schedule creates a Cloud Task within callTimeout; created is false when
// one of that name existed.
func (h *handler) schedule(ctx context.Context, name string, at time.Time, body []byte) (created bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, h.opts.callTimeout)
	defer cancel()
	return h.sched.Create(ctx, name, at, body)
}

// abort gives the lease back and answers non-2xx: the message is redelivered.
func (h *handler) abort(ctx context.Context, j *job) answer {
	h.releaseLease(j)
	return redeliver
}

// held answers a delivery whose task another holder is running. The holder
// normally finishes it; in case it died without a trace (instance killed:
// its own redelivery may arrive while the dead lease still looks live and be
// acknowledged as held too), a lease check comes back as a Cloud Task once
// that lease has surely expired and takes the task over if it is still
// running under a dead lease (a lease check leases only a stale task:
// store.LeaseRequest.TakeoverOnly); when the holder finished, deferred or
// released the task, the check is a no-op costing one store call and no
// limiter call. Concurrent duplicates of one envelope share the check's name,
// so they create one check. leaseUntil is when the holder's lease expires.
func (h *handler) held(ctx context.Context, j *job, leaseUntil time.Time) answer {
	next := j.env
	next.Permit = nil
	if isLeaseCheck(j.d, j.env) {
		// A check that found a newer live lease: check that one too,
		// under a new name.
		next.Deferrals++
	}
	if next.Deferrals > task.MaxCount {
		j.log.ErrorContext(ctx, "too many lease checks; leaving the task to its holder")
		return ack(outBusy)
	}
	body, err := task.Encode(next)
	if err != nil {
		j.log.ErrorContext(ctx, "encode envelope", "error", err.Error())
		return ack(outBusy)
	}
	name := leaseCheckName(next)
	at := h.now().Add(h.opts.lease + 5*time.Second)
	if !leaseUntil.IsZero() && leaseUntil.Before(at.Add(-5*time.Second)) {
		// Right after the holder's lease surely expired, not a full lease
		// from now.
		at = leaseUntil.Add(5 * time.Second)
	}
	if _, err := h.schedule(ctx, name, at, body); err != nil {
		j.log.ErrorContext(ctx, "schedule lease check", "error", err.Error(), "cloud_task", name)
		return redeliver
	}
	return ack(outBusy)
}

// leaseCheckName is the Cloud Task name of the lease check for an envelope:
// distinct from every deferral's queue.TaskName(task id, n).
func leaseCheckName(e task.Envelope) string {
	return queue.TaskName(e.TaskID+"-lease-check-"+strconv.Itoa(e.Attempt), e.Deferrals)
}

// isLeaseCheck reports whether a delivery is a lease check scheduled by held.
func isLeaseCheck(d delivery, e task.Envelope) bool {
	if d.source != sourceCloudTasks {
		return false
	}
	return d.id == leaseCheckName(e) || strings.HasSuffix(d.id, "/"+leaseCheckName(e))
}

// duplicate answers a delivery of a task already terminal; if its result was
// never published (a crash between the terminal write and the publish), it
// publishes it now.
func (h *handler) duplicate(ctx context.Context, j *job, published bool) answer {
	if published {
		return ack(outDuplicate)
	}
	rec, err := h.store.Result(ctx, j.ref.JobID, j.ref.Key)
	if err != nil {
		j.log.ErrorContext(ctx, "read stored result", "error", err.Error())
		return redeliver
	}
	if !rec.State.Terminal() {
		// Finished so long ago that its record expired: nothing to publish.
		return ack(outDuplicate)
	}
	var line []byte
	outcome := outSucceeded
	if rec.State == store.Succeeded {
		line, err = json.Marshal(resultLine{Key: j.ref.Key, Response: rec.Response})
	} else {
		outcome = outFailed
		line, err = json.Marshal(resultLine{Key: j.ref.Key, Error: rec.Error})
	}
	if err != nil {
		j.log.ErrorContext(ctx, "encode result", "error", err.Error())
		return ack(outDuplicate)
	}
	if a := h.publish(ctx, j, line, outcome, nil); a.status != http.StatusOK {
		return a
	}
	j.log.InfoContext(ctx, "published a stored result that had not been published")
	return ack(outDuplicate)
}

// resultLine is one result in the Gemini Batch API's output format, as
// published to the results topic.
type resultLine struct {
	Key      string          `json:"key"`
	Response json.RawMessage `json:"response,omitempty"`
	Error    json.RawMessage `json:"error,omitempty"`
	// DeadLetter is set on a task dead-lettered after its retries.
	DeadLetter *deadLetterInfo `json:"dead_letter,omitempty"`
}

// deadLetterInfo describes a dead-lettered task in its published result.
type deadLetterInfo struct {
	Reason   string          `json:"reason"`
	Attempts int             `json:"attempts"`
	Envelope json.RawMessage `json:"envelope,omitempty"`
}

// deadLetter marks a terminal failure as retries exhausted.
type deadLetter struct {
	reason   string
	attempts int
}

// errorObject is a terminal error as stored and published ({code, message,
// status}, like google.rpc.Status and the Batch API's error lines).
type errorObject struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Status  string `json:"status,omitempty"`
}

// finishSucceeded writes the response once and publishes it.
func (h *handler) finishSucceeded(ctx context.Context, j *job, response json.RawMessage) answer {
	// A Redis blip here would cost a second Gemini call on redelivery:
	// try the write a few times first.
	var o store.Outcome
	var err error
	for try := range 3 {
		if try > 0 {
			time.Sleep(time.Duration(try) * 200 * time.Millisecond)
		}
		if o, err = h.store.Complete(ctx, j.ref, j.holder, response); err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		j.log.ErrorContext(ctx, "store complete", "error", err.Error())
		return h.abort(ctx, j)
	}
	j.leased = false
	if o == store.AlreadyDone {
		// Another delivery finished it first (our lease had expired): its
		// result stands, and it publishes it.
		j.log.WarnContext(ctx, "task finished elsewhere while this call ran")
		return ack(outDuplicate)
	}
	line, err := json.Marshal(resultLine{Key: j.env.Key, Response: response})
	if err != nil {
		j.log.ErrorContext(ctx, "encode result", "error", err.Error())
		return ack(outSucceeded)
	}
	if a := h.publish(ctx, j, line, outSucceeded, nil); a.status != http.StatusOK {
		return a
	}
	return ack(outSucceeded)
}

// finishFailed writes a terminal error once and publishes it (with the
// dead-letter details when dl is set).
func (h *handler) finishFailed(ctx context.Context, j *job, code int, status, message string, dl *deadLetter) answer {
	if code == 0 {
		code = http.StatusInternalServerError
	}
	errJSON, err := json.Marshal(errorObject{Code: code, Message: message, Status: status})
	if err != nil {
		j.log.ErrorContext(ctx, "encode error", "error", err.Error())
		return h.abort(ctx, j)
	}
	o, err := h.store.Fail(ctx, j.ref, j.holder, errJSON)
	if err != nil {
		j.log.ErrorContext(ctx, "store fail", "error", err.Error())
		return h.abort(ctx, j)
	}
	j.leased = false
	if o == store.AlreadyDone {
		return ack(outDuplicate)
	}
	outcome := outFailed
	rl := resultLine{Key: j.env.Key, Error: errJSON}
	if dl != nil {
		outcome = outDeadLetter
		env := j.env
		env.Attempt, env.Deferrals, env.Permit = 0, 0, nil
		raw, _ := task.Encode(env)
		rl.DeadLetter = &deadLetterInfo{Reason: dl.reason, Attempts: dl.attempts, Envelope: raw}
	}
	j.log.WarnContext(ctx, "task failed", "outcome", outcome, "code", code, "status", status)
	line, err := json.Marshal(rl)
	if err != nil {
		j.log.ErrorContext(ctx, "encode result", "error", err.Error())
		return ack(outcome)
	}
	if a := h.publish(ctx, j, line, outcome, dl); a.status != http.StatusOK {
		return a
	}
	return ack(outcome)
}

// Attributes of a results-topic message.
const (
	attrJobID   = "job_id"
	attrTaskID  = "task_id"
	attrOutcome = "outcome" // succeeded | failed | dead_letter
	attrReason  = "reason"  // dead_letter only: why the retries ended
)

// publish sends one result line to the results topic, then marks it
// published. The terminal state is already written, so a failed publish
// answers non-2xx: the redelivery finds the task terminal and unpublished and
// publishes it (at least once).
func (h *handler) publish(ctx context.Context, j *job, line []byte, outcome string, dl *deadLetter) answer {
	attrs := map[string]string{attrJobID: j.ref.JobID, attrTaskID: j.ref.TaskID, attrOutcome: outcome}
	if dl != nil {
		attrs[attrReason] = truncate(dl.reason, 1000)
	}
	pctx, cancel := context.WithTimeout(ctx, h.opts.callTimeout)
	err := h.results.Publish(pctx, []queue.Message{{Data: line, Attributes: attrs}})
	cancel()
	if err != nil {
		j.log.ErrorContext(ctx, "publish result", "error", err.Error())
		return redeliver
	}
	if err := h.store.MarkPublished(ctx, j.ref); err != nil {
		// The result is out; at worst a redelivery publishes it again.
		j.log.WarnContext(ctx, "mark published", "error", err.Error())
	}
	return ack(outcome)
}

// releasePermit gives back a permit that will not be used (best effort: a
// permit not given back only holds its slot until it expires).
func (h *handler) releasePermit(ctx context.Context, j *job, p *limiter.Permit) {
	if p == nil || (p.Outcome != limiter.Reserved && p.Outcome != limiter.Granted) {
		return
	}
	if err := h.lim.Release(ctx, *p); err != nil {
		j.log.WarnContext(ctx, "limiter release", "error", err.Error(), "permit_id", p.ID)
	}
}

// releaseLease gives the lease back so a redelivery can run at once (best
// effort: otherwise it expires). It uses its own context because the
// request's may be what ended.
func (h *handler) releaseLease(j *job) {
	if !j.leased {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.store.ReleaseLease(ctx, j.ref, j.holder); err != nil {
		j.log.WarnContext(ctx, "release lease", "error", err.Error())
		return
	}
	j.leased = false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
