package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
	"github.com/gemq-dev/gemq/internal/tier"
)

// failure is a terminal error: {code, message, status} as stored and
// published (like google.rpc.Status and the Batch API's error lines), and
// for a task dead-lettered after its retries, how many attempts it had.
type failure struct {
	code     int
	status   string
	message  string
	attempts int // > 0: dead-lettered after this many attempts
}

// geminiFailed handles a failed Gemini call made at tier t under a permit
// of scope.
func (m *Machine) geminiFailed(ctx context.Context, r *run, scope limiter.Scope, t tier.Tier, err error) Outcome {
	f := gemini.Classify(err)
	r.log.WarnContext(ctx, "gemini call failed", "failure", string(f.Kind), "http_code", f.Code, "quota_id", f.QuotaID,
		"retry_after", f.RetryAfter.String(), "service_tier", string(t))
	if shed(t, f, err) {
		return m.deferShed(ctx, r, f)
	}
	switch f.Kind {
	case gemini.QuotaPerMinute, gemini.QuotaPerDay, gemini.Capacity:
		return m.admit.Throttled(ctx, r, scope, f)
	case gemini.Transient:
		attempt := r.env.Attempt + 1
		if attempt >= m.opts.MaxAttempts {
			return m.finishFailed(ctx, r, failure{code: f.Code, status: f.Status, attempts: attempt,
				message: fmt.Sprintf("gave up after %d attempts; last error: %s", attempt, f.Message)})
		}
		return m.deferTask(ctx, r, deferral{at: m.now().Add(backoff(attempt, m.opts.RetryBase, m.opts.RetryMax)),
			why: "transient: " + f.Message, failedAttempt: true})
	}
	// QuotaZero, Permanent.
	return m.finishFailed(ctx, r, failure{code: f.Code, status: f.Status, message: f.Message})
}

// finishSucceeded writes the response once, for this lease, with its usage
// added to the job's sums in the same write, and publishes it.
func (m *Machine) finishSucceeded(ctx context.Context, r *run, response json.RawMessage, u store.Usage) Outcome {
	// A Redis blip here would cost a second Gemini call on redelivery: try
	// the write a few times first (it is idempotent for this lease).
	var o store.Outcome
	var err error
	for try := range 3 {
		if try > 0 {
			time.Sleep(time.Duration(try) * 200 * time.Millisecond)
		}
		if o, err = m.deps.Store.CompleteWithUsage(ctx, r.ref, r.tok, response, u); err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		// The lease stays (calling): a later attempt of this delivery
		// resumes at once; anyone else after it expires.
		r.leased = false
		r.log.ErrorContext(ctx, "store complete", "error", err.Error())
		return redeliver
	}
	r.leased = false
	if o != store.Applied {
		// Taken over while the call ran (this lease had expired): the new
		// holder settles the task; this response is dropped.
		r.log.WarnContext(ctx, "task settled or taken over elsewhere while this call ran", "store_outcome", o.String())
		return ack(OutStale)
	}
	line := store.ResultLine{Key: r.env.Key, Response: response}
	if u.Asked != "" && u.Asked != u.Tier {
		line.Downgrade = &store.Downgrade{Asked: u.Asked, Served: u.Tier}
		r.log.WarnContext(ctx, "served at another service tier than asked", "asked", u.Asked, "served", u.Tier)
	}
	return m.publish(ctx, r, line, OutSucceeded, "")
}

// cancelled ends a leased task of a cancelled job (store.CancelJob) as
// failed CANCELLED, with the result published like any other, and gives
// back the reservation it carried so the slot serves other work.
func (m *Machine) cancelled(ctx context.Context, r *run) Outcome {
	m.releasePermit(ctx, r, r.carried)
	r.log.InfoContext(ctx, "job cancelled: task ended without calling Gemini")
	return m.finishFailed(ctx, r, failure{code: 499, status: "CANCELLED",
		message: fmt.Sprintf("job %s was cancelled before this task called Gemini", r.env.JobID)})
}

// finishFailed writes a terminal error once, for this lease, and publishes
// it (with the dead-letter details when f.attempts is set).
func (m *Machine) finishFailed(ctx context.Context, r *run, f failure) Outcome {
	if f.code == 0 {
		f.code = 500
	}
	errJSON, err := json.Marshal(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status,omitempty"`
	}{f.code, f.message, f.status})
	if err != nil {
		r.log.ErrorContext(ctx, "encode error", "error", err.Error())
		return m.abort(ctx, r)
	}
	o, err := m.deps.Store.Fail(ctx, r.ref, r.tok, errJSON)
	if err != nil {
		r.log.ErrorContext(ctx, "store fail", "error", err.Error())
		return m.abort(ctx, r)
	}
	r.leased = false
	if o != store.Applied {
		r.log.WarnContext(ctx, "task settled or taken over elsewhere", "store_outcome", o.String())
		return ack(OutStale)
	}
	outcome := OutFailed
	line := store.ResultLine{Key: r.env.Key, Error: errJSON}
	if f.attempts > 0 {
		outcome = OutDeadLetter
		env := r.env
		env.Attempt, env.Deferrals, env.Permit = 0, 0, nil
		raw, _ := task.Encode(env)
		line.DeadLetter = &store.DeadLetterInfo{Reason: f.message, Attempts: f.attempts, Envelope: raw}
	}
	r.log.WarnContext(ctx, "task failed", "outcome", outcome, "code", f.code, "status", f.status)
	return m.publish(ctx, r, line, outcome, f.message)
}

// duplicate answers a delivery of a task already terminal; if its result was
// never published (a crash between the terminal write and the publish), it
// publishes it now.
func (m *Machine) duplicate(ctx context.Context, r *run, published bool) Outcome {
	if published {
		return ack(OutDuplicate)
	}
	rec, err := m.deps.Store.Result(ctx, r.ref.JobID, r.ref.Key)
	if err != nil {
		r.log.ErrorContext(ctx, "read stored result", "error", err.Error())
		return redeliver
	}
	if !rec.State.Terminal() || rec.Archived {
		// Its record left Redis after its result was published (or
		// expired): nothing to publish.
		return ack(OutDuplicate)
	}
	outcome := OutSucceeded
	if rec.State == store.Failed {
		outcome = OutFailed
	}
	if o := m.publish(ctx, r, rec.Line(), outcome, ""); o.Redeliver {
		return o
	}
	r.log.InfoContext(ctx, "published a stored result that had not been published")
	return ack(OutDuplicate)
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
func (m *Machine) publish(ctx context.Context, r *run, line store.ResultLine, outcome, reason string) Outcome {
	line.JobID = r.ref.JobID // the archived copy is found by it (internal/archive)
	data, err := json.Marshal(line)
	if err != nil {
		r.log.ErrorContext(ctx, "encode result", "error", err.Error())
		return ack(outcome)
	}
	attrs := map[string]string{attrJobID: r.ref.JobID, attrTaskID: r.ref.TaskID, attrOutcome: outcome}
	if line.DeadLetter != nil {
		attrs[attrReason] = truncate(reason, 1000)
	}
	pctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	err = m.deps.Results.Publish(pctx, []queue.Message{{Data: data, Attributes: attrs}})
	cancel()
	if err != nil {
		r.log.ErrorContext(ctx, "publish result", "error", err.Error())
		return redeliver
	}
	if err := m.deps.Store.MarkPublished(ctx, r.ref); err != nil {
		// The result is out; at worst a redelivery publishes it again.
		r.log.WarnContext(ctx, "mark published", "error", err.Error())
	}
	return ack(outcome)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
