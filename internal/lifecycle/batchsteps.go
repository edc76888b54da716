package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/gemq-dev/gemq/internal/batches"
	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/logging"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
	"github.com/gemq-dev/gemq/internal/tier"
)

// seal closes a group, takes its enqueued-token permit and creates its
// Batch API job.
func (m *Machine) seal(ctx context.Context, s BatchStep, scope limiter.Scope, log *slog.Logger) Outcome {
	bd := m.deps.Batch
	g, err := bd.Groups.Seal(ctx, scope, s.Group)
	if errors.Is(err, batches.ErrNotFound) {
		log.WarnContext(ctx, "seal of an unknown batch group: nothing to do")
		return ack(OutDuplicate)
	}
	if err != nil {
		log.ErrorContext(ctx, "batch group seal", "error", err.Error())
		return redeliver
	}
	switch g.State {
	case batches.Done:
		return ack(OutDuplicate)
	case batches.Running:
		// Created already: make sure its poll exists (the creator may
		// have stopped before scheduling it).
		return m.ensurePoll(ctx, s, scope, g, log)
	}
	// Tasks of cancelled jobs end here, before they cost anything, and are
	// not sent.
	cancelled, all, o, handled := m.settleCancelled(ctx, s, scope, log)
	if handled {
		return o
	}
	if all && g.State == batches.Sealed {
		// (Creating: an earlier attempt may have created the batch; it is
		// found, polled and cancelled.)
		g.Entries = 0
	}
	if g.Entries == 0 {
		if err := bd.Groups.Finish(ctx, scope, s.Group); err != nil {
			return redeliver
		}
		return ack(OutBatchSettled)
	}
	ep, err := bd.Enqueued.Acquire(ctx, scope, s.Group, g.Tokens, m.opts.Batch.EnqueuedTokens, BatchHold(m.opts))
	if err != nil {
		log.ErrorContext(ctx, "enqueued-token permit", "error", err.Error())
		return redeliver
	}
	if !ep.Granted {
		log.InfoContext(ctx, "batch waits for the enqueued-token limit", "tokens", g.Tokens, "held", ep.Held,
			"limit", m.opts.Batch.EnqueuedTokens)
		return m.sealLater(ctx, s, scope, log)
	}
	// Write-ahead: "creating" before the call, so a retry looks first.
	if g, err = bd.Groups.MarkCreating(ctx, scope, s.Group); err != nil {
		log.ErrorContext(ctx, "batch group creating", "error", err.Error())
		return redeliver
	}
	if g.State == batches.Running {
		return m.ensurePoll(ctx, s, scope, g, log)
	}
	if g.Creates > 1 {
		b, found, err := bd.API.FindBatch(ctx, s.Group)
		if err != nil {
			log.ErrorContext(ctx, "find batch", "error", err.Error())
			return m.sealLater(ctx, s, scope, log)
		}
		if found {
			log.WarnContext(ctx, "a retried seal found the batch an earlier attempt created", "batch", b.Name)
			return m.started(ctx, s, scope, b, log)
		}
	}
	members, err := bd.Groups.Members(ctx, scope, s.Group)
	if err != nil {
		log.ErrorContext(ctx, "batch group members", "error", err.Error())
		return redeliver
	}
	entries := make([]gemini.BatchEntry, 0, len(members))
	for _, mb := range members {
		if cancelled[mb.JobID] {
			continue
		}
		env, err := task.Decode(mb.Envelope)
		if err != nil {
			log.ErrorContext(ctx, "batch member envelope", "error", err.Error(), logging.TaskID, mb.TaskID)
			continue // settled as "no result" by the pass
		}
		req, err := gemini.ParseRequest(env.Request)
		if err != nil {
			continue
		}
		entries = append(entries, gemini.BatchEntry{Key: mb.TaskID, Raw: env.Request, Request: req})
	}
	cctx, cancel := context.WithTimeout(ctx, 2*m.opts.GeminiTimeout)
	b, err := bd.API.CreateBatch(cctx, s.Model, s.Group, entries, m.opts.Batch.InlineBytes)
	cancel()
	if err != nil {
		f := gemini.Classify(err)
		log.WarnContext(ctx, "batch create failed", "failure", string(f.Kind), "http_code", f.Code, "error", f.Message)
		if f.Kind == gemini.Permanent || f.Kind == gemini.QuotaZero {
			// Never creatable: every member goes its way without it.
			return m.settle(ctx, s, scope, g, gemini.Batch{Done: true,
				Reason: fmt.Sprintf("the Batch API refused the batch (%d %s): %s", f.Code, f.Status, f.Message)}, log)
		}
		// Again later, under a new name (not a Cloud Tasks retry, whose
		// attempts are bounded); it looks for the batch first.
		return m.sealLater(ctx, s, scope, log)
	}
	log.InfoContext(ctx, "batch created", "batch", b.Name, "entries", len(entries), "tokens", g.Tokens, "file", b.File)
	return m.started(ctx, s, scope, b, log)
}

// started stores a created batch's name and schedules its first poll.
func (m *Machine) started(ctx context.Context, s BatchStep, scope limiter.Scope, b gemini.Batch, log *slog.Logger) Outcome {
	g, err := m.deps.Batch.Groups.MarkRunning(ctx, scope, s.Group, b.Name, b.File)
	if err != nil {
		log.ErrorContext(ctx, "batch group running", "error", err.Error(), "batch", b.Name)
		return redeliver
	}
	return m.ensurePoll(ctx, s, scope, g, log)
}

// ensurePoll makes sure the group's current poll exists: the one its poll
// count names (the first one when it has none yet).
func (m *Machine) ensurePoll(ctx context.Context, s BatchStep, scope limiter.Scope, g batches.Group, log *slog.Logger) Outcome {
	if g.Polls == 0 {
		var err error
		if g, err = m.deps.Batch.Groups.Count(ctx, scope, s.Group, batches.CountPolls); err != nil {
			return redeliver
		}
	}
	p := BatchStep{Op: StepPoll, Project: s.Project, Model: s.Model, Group: s.Group}
	if err := m.scheduleStep(ctx, p, pollName(s.Group, g.Polls), m.now().Add(m.opts.Batch.PollMin)); err != nil {
		log.ErrorContext(ctx, "schedule batch poll", "error", err.Error())
		return redeliver
	}
	return ack(OutBatchRunning)
}

// poll looks at a running group's batch; once it ended, it settles the
// members.
func (m *Machine) poll(ctx context.Context, s BatchStep, scope limiter.Scope, log *slog.Logger) Outcome {
	bd := m.deps.Batch
	g, err := bd.Groups.Get(ctx, scope, s.Group)
	if errors.Is(err, batches.ErrNotFound) {
		return ack(OutDuplicate)
	}
	if err != nil {
		log.ErrorContext(ctx, "batch group get", "error", err.Error())
		return redeliver
	}
	if g.State != batches.Running {
		log.InfoContext(ctx, "poll of a batch group that is not running", "state", string(g.State))
		return ack(OutDuplicate)
	}
	log = log.With("batch", g.Batch)
	cctx, cancel := context.WithTimeout(ctx, 2*m.opts.GeminiTimeout)
	b, err := bd.API.GetBatch(cctx, g.Batch)
	cancel()
	if err != nil {
		f := gemini.Classify(err)
		log.WarnContext(ctx, "batch get failed", "failure", string(f.Kind), "http_code", f.Code, "error", f.Message)
		if f.Kind == gemini.Permanent && f.Code == 404 {
			return m.settle(ctx, s, scope, g, gemini.Batch{Done: true, Reason: "the batch is gone (404): " + f.Message}, log)
		}
		return m.nextPoll(ctx, s, scope, log)
	}
	if !b.Done {
		if o, handled := m.cancelIfCancelled(ctx, s, scope, g, log); handled {
			return o
		}
		log.InfoContext(ctx, "batch still running", "state", b.State)
		return m.nextPoll(ctx, s, scope, log)
	}
	log.InfoContext(ctx, "batch ended", "state", b.State, "results", len(b.Results), "reason", b.Reason)
	return m.settle(ctx, s, scope, g, b, log)
}

// nextPoll schedules the group's next poll after the poll back-off.
// Steps that fail come back this way, under a new name, rather than as
// Cloud Tasks retries, whose attempts the queue bounds.
func (m *Machine) nextPoll(ctx context.Context, s BatchStep, scope limiter.Scope, log *slog.Logger) Outcome {
	g, err := m.deps.Batch.Groups.Count(ctx, scope, s.Group, batches.CountPolls)
	if err != nil {
		return redeliver
	}
	at := m.now().Add(backoff(g.Polls, m.opts.Batch.PollMin, m.opts.Batch.PollMax))
	p := BatchStep{Op: StepPoll, Project: s.Project, Model: s.Model, Group: s.Group}
	if err := m.scheduleStep(ctx, p, pollName(s.Group, g.Polls), at); err != nil {
		log.ErrorContext(ctx, "schedule batch poll", "error", err.Error())
		return redeliver
	}
	return ack(OutBatchRunning)
}

// sealLater schedules another seal of the group after the poll back-off
// (the enqueued-token limit is held, or the creation failed for now).
func (m *Machine) sealLater(ctx context.Context, s BatchStep, scope limiter.Scope, log *slog.Logger) Outcome {
	g, err := m.deps.Batch.Groups.Count(ctx, scope, s.Group, batches.CountWaits)
	if err != nil {
		return redeliver
	}
	at := m.now().Add(backoff(g.Waits, m.opts.Batch.PollMin, m.opts.Batch.PollMax))
	if err := m.scheduleStep(ctx, s, queue.TaskName("batch-seal-"+s.Group, 1+g.Waits), at); err != nil {
		log.ErrorContext(ctx, "schedule batch seal", "error", err.Error())
		return redeliver
	}
	return ack(OutBatchWaiting)
}

// cancelIfCancelled settles, as CANCELLED, the members of a running batch
// whose jobs were cancelled (POST /v1/jobs/{id}:cancel), without waiting for
// the batch; when that leaves no member, it cancels the batch
// (Batches.Cancel), whose end the next poll settles (nothing left but
// duplicates). handled is true when the answer is o (a store failure).
func (m *Machine) cancelIfCancelled(ctx context.Context, s BatchStep, scope limiter.Scope, g batches.Group, log *slog.Logger) (Outcome, bool) {
	_, all, o, handled := m.settleCancelled(ctx, s, scope, log)
	if handled || !all {
		return o, handled
	}
	cctx, cancel := context.WithTimeout(ctx, 2*m.opts.GeminiTimeout)
	err := m.deps.Batch.API.CancelBatch(cctx, g.Batch)
	cancel()
	if err != nil {
		log.WarnContext(ctx, "batch cancel", "error", err.Error())
	} else {
		log.InfoContext(ctx, "every job of the batch was cancelled: batch cancelled")
	}
	return Outcome{}, false
}

// settleCancelled settles, as CANCELLED, the group's members whose jobs
// were cancelled (the jobs are in cancelled); all is true when every member
// was (none is left to send). handled is true when the answer is o instead
// (a store failure).
func (m *Machine) settleCancelled(ctx context.Context, s BatchStep, scope limiter.Scope, log *slog.Logger) (cancelled map[string]bool, all bool, o Outcome, handled bool) {
	bd := m.deps.Batch
	if bd.Jobs == nil {
		return nil, false, Outcome{}, false
	}
	members, err := bd.Groups.Members(ctx, scope, s.Group)
	if err != nil {
		return nil, false, redeliver, true
	}
	cancelled = map[string]bool{}
	some := false
	for _, mb := range members {
		if _, seen := cancelled[mb.JobID]; seen {
			continue
		}
		j, err := bd.Jobs.GetJob(ctx, mb.JobID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, false, redeliver, true
		}
		cancelled[mb.JobID] = !j.CancelledAt.IsZero()
		some = some || cancelled[mb.JobID]
	}
	if !some {
		return cancelled, false, Outcome{}, false
	}
	g, err := bd.Groups.Count(ctx, scope, s.Group, batches.CountPasses)
	if err != nil {
		return nil, false, redeliver, true
	}
	all = true
	for _, mb := range members {
		if !cancelled[mb.JobID] {
			all = false
			continue
		}
		if o := m.settleMember(ctx, s.Group, g.Passes, mb, gemini.Batch{}, true, log); o.Redeliver {
			return nil, false, o, true
		}
	}
	return cancelled, all, Outcome{}, false
}

// settleParallel is how many members a settle pass settles at once.
const settleParallel = 16

// settle runs one settle pass over a group whose batch ended (b), then
// ends the group.
func (m *Machine) settle(ctx context.Context, s BatchStep, scope limiter.Scope, g batches.Group, b gemini.Batch, log *slog.Logger) Outcome {
	bd := m.deps.Batch
	g, err := bd.Groups.Count(ctx, scope, s.Group, batches.CountPasses)
	if err != nil {
		return redeliver
	}
	members, err := bd.Groups.Members(ctx, scope, s.Group)
	if err != nil {
		log.ErrorContext(ctx, "batch group members", "error", err.Error())
		return redeliver
	}
	// Members are settled a few at a time: each is a lease, a terminal
	// write and a publish, and a group may hold thousands.
	redo := 0
	counts := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, settleParallel)
	for _, mb := range members {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			o := m.settleMember(ctx, s.Group, g.Passes, mb, b, false, log)
			mu.Lock()
			defer mu.Unlock()
			counts[o.Name]++
			if o.Redeliver {
				redo++
			}
		})
	}
	wg.Wait()
	if redo > 0 {
		// The pass is repeated: members settled already are duplicates
		// then. From a poll, by the next poll (a new name: a results topic
		// down for long does not use up the queue's attempts); from a seal
		// (the batch was refused), by Cloud Tasks' retry of the seal.
		log.WarnContext(ctx, "batch settle pass incomplete", "pass", g.Passes, "outcomes", counts)
		if s.Op == StepPoll {
			return m.nextPoll(ctx, s, scope, log)
		}
		return redeliver
	}
	if err := bd.Enqueued.Release(ctx, scope, s.Group); err != nil {
		log.WarnContext(ctx, "enqueued-token release", "error", err.Error())
	}
	if err := bd.Groups.Finish(ctx, scope, s.Group); err != nil {
		log.ErrorContext(ctx, "batch group finish", "error", err.Error())
		return redeliver
	}
	log.InfoContext(ctx, "batch group settled", "pass", g.Passes, "outcomes", counts)
	return ack(OutBatchSettled)
}

// settleMember settles one member of an ended batch as the group; with
// onlyCancelled, only a member of a cancelled job (ended CANCELLED) while
// the batch runs.
func (m *Machine) settleMember(ctx context.Context, group string, pass int, mb batches.Member, b gemini.Batch, onlyCancelled bool, log *slog.Logger) Outcome {
	env, err := task.Decode(mb.Envelope)
	if err != nil {
		log.ErrorContext(ctx, "batch member envelope", "error", err.Error(), logging.TaskID, mb.TaskID)
		return ack(OutDuplicate)
	}
	d := Delivery{Source: BatchPoller, ID: group, Attempt: pass, Data: mb.Envelope, Envelope: env}
	r := &run{d: d, env: env, ref: store.RefOf(env)}
	r.log = log.With(logging.TaskID, env.TaskID, logging.JobID, env.JobID)
	lr, err := m.deps.Store.LeaseTask(ctx, r.ref, store.LeaseRequest{Holder: d.holder(), Attempt: pass,
		TTL: m.opts.Lease, Deferral: mb.Deferral})
	if err != nil {
		r.log.ErrorContext(ctx, "lease batched task", "error", err.Error())
		return redeliver
	}
	switch lr.Outcome {
	case store.AlreadyDone:
		return m.duplicate(ctx, r, lr.Published)
	case store.Applied:
	default:
		// Another delivery has it (taken over past its wait, or waiting
		// for a deferral of its own): it settles the task.
		r.log.InfoContext(ctx, "batched task moved on", "store_outcome", lr.Outcome.String())
		return ack(OutDuplicate)
	}
	r.leased, r.lease, r.tok = true, lr, lr.Token
	var o Outcome
	switch {
	case lr.Cancelled:
		// Its job was cancelled: one terminal state, CANCELLED, whatever
		// the batch answered.
		o = m.cancelled(ctx, r)
	case onlyCancelled:
		o = ack(OutDuplicate) // released below: still batched
	default:
		o = m.settleLeased(ctx, r, mb, b)
	}
	if r.leased {
		m.releaseLease(r)
	}
	return o
}

// settleLeased settles a leased member with its batch result, or sends it
// back to the interactive path.
func (m *Machine) settleLeased(ctx context.Context, r *run, mb batches.Member, b gemini.Batch) Outcome {
	if res, ok := b.Results[mb.TaskID]; ok && res.Response != nil {
		resp := res.Response
		return m.finishSucceeded(ctx, r, resp.JSON, store.Usage{Tier: string(tier.Batch), Input: resp.PromptTokens,
			Cached: resp.CachedTokens, Output: resp.CandidatesTokens, Thinking: resp.ThoughtsTokens})
	}
	f := failure{code: 500, status: "INTERNAL", message: b.Reason}
	switch res, ok := b.Results[mb.TaskID]; {
	case ok && res.Error != nil:
		f = failure{code: res.Error.Code, status: res.Error.Status, message: "the batch entry failed: " + res.Error.Message}
	case b.Succeeded:
		f.message = "the batch returned no result for this task"
	}
	return m.batchFallback(ctx, r, f)
}

// batchFallback sends a leased batch task whose entry failed back to the
// interactive path (standard, or flex when its deadline leaves flex's
// latency), if its deadline allows; otherwise it fails with the batch's
// reason.
func (m *Machine) batchFallback(ctx context.Context, r *run, f failure) Outcome {
	now := m.now()
	deadline := r.env.DeadlineTime()
	if !deadline.IsZero() && deadline.Sub(now) < m.opts.Lease {
		f.message = fmt.Sprintf("%s; the job's deadline %s leaves no time for the interactive path", f.message, r.env.Deadline)
		return m.finishFailed(ctx, r, f)
	}
	t := tier.Standard
	if !deadline.IsZero() && deadline.Sub(now) >= tier.FlexLatency {
		t = tier.Flex
	}
	r.env.ServiceTier = string(t)
	r.env.Permit = nil
	r.log.WarnContext(ctx, "batch entry did not succeed: back to the interactive path", "tier", string(t), "reason", f.message)
	return m.deferTask(ctx, r, deferral{at: now, why: "batch fallback: " + f.message})
}
