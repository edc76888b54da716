package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

// deferral is a decision to run the task again later, through a Cloud Task.
type deferral struct {
	// at is when the task may run: a reserved slot, or the end of a back-off.
	at time.Time
	// permit is the reservation the Cloud Task carries (nil for none).
	permit *limiter.Permit
	// why is logged.
	why string
	// failedAttempt also counts a failed attempt (transient failures).
	failedAttempt bool
}

// deferTask marks the task waiting for its next deferral (write-ahead),
// then creates that deferral's Cloud Task, due at df.at (a claim lead
// before it for a reservation), and acknowledges.
func (m *Machine) deferTask(ctx context.Context, r *run, df deferral) Outcome {
	n, body, o, ok := m.nextEnvelope(ctx, r, df)
	if !ok {
		return o
	}
	name := queue.TaskName(r.env.TaskID, n)
	due := df.at
	if df.permit != nil {
		// A reservation's Cloud Task comes a lead before its slot: Cloud
		// Tasks dispatches late, by up to seconds for the burst of a window
		// boundary; a callback that is early waits for its slot
		// (waitForSlot), a late one would be queued again. The lead is the
		// dispatch lag this instance (or else the fleet) has seen (99th
		// percentile + 50 ms), at most the claim lead.
		due = df.at.Add(-m.lead.current(ctx, m.now()))
		if now := m.now(); due.Before(now) {
			due = now
		}
	}

	// Write-ahead: the task waits for Cloud Task n before it exists, so
	// its callback can never find the task in another state.
	so, err := m.deps.Store.MarkWaitingFor(ctx, r.ref, r.tok, n, df.at.Add(m.opts.Lease))
	if err != nil {
		r.log.ErrorContext(ctx, "mark waiting", "error", err.Error())
		m.releasePermit(ctx, r, df.permit)
		return m.abort(ctx, r)
	}
	if so != store.Applied {
		r.leased = false
		m.releasePermit(ctx, r, df.permit)
		r.log.WarnContext(ctx, "task taken over before its deferral", "store_outcome", so.String())
		return ack(OutStale)
	}
	created, err := m.schedule(ctx, name, due, body)
	if err != nil {
		// Not created, or not known to be: the mark is taken back (abort
		// releases the lease, waiting → queued) and the message comes
		// again. Should that fail too, a later attempt of this delivery
		// resumes the mark at once, and anyone after its deadline. If the
		// Cloud Task was created after all, its callback finds another
		// deferral awaited and is acknowledged; the permit it carries is
		// released here, which its Claim handles by asking again.
		r.log.ErrorContext(ctx, "schedule cloud task", "error", err.Error(), "cloud_task", name)
		m.releasePermit(ctx, r, df.permit)
		return m.abort(ctx, r)
	}
	r.leased = false
	if !created && df.permit != nil && (r.carried == nil || df.permit.ID != r.carried.ID) {
		// An earlier attempt created it, with the reservation it carries:
		// that one runs; the reservation taken here is never used. (An
		// early arrival passes its carried reservation on under the same
		// id: that one is kept.)
		m.releasePermit(ctx, r, df.permit)
	}
	r.log.InfoContext(ctx, "task deferred", "reason", df.why, "at", df.at.UTC().Format(time.RFC3339Nano),
		"due", due.UTC().Format(time.RFC3339Nano), "cloud_task", name, "reserved", df.permit != nil, "created", created)
	return ack(OutDeferred)
}

// nextEnvelope is the envelope of the task's next deferral n, carrying
// df's permit. ok is false when the delivery must answer o instead (the
// task was deferred too often, or cannot be encoded: it fails).
func (m *Machine) nextEnvelope(ctx context.Context, r *run, df deferral) (n int, body []byte, o Outcome, ok bool) {
	// Number beyond every deferral the task has had: a takeover of a task
	// whose Cloud Task was lost must not reuse a name that exists or ran.
	// A delivery resuming its own mark re-creates that very Cloud Task
	// (Cloud Tasks deduplicates the name) instead of adding one.
	n = max(r.env.Deferrals, r.lease.Deferral) + 1
	if r.lease.Resumed && r.lease.Previous == store.Waiting && r.lease.Deferral > 0 {
		n = r.lease.Deferral
	}
	next := r.env
	next.Deferrals, next.Permit = n, nil
	if df.failedAttempt {
		next.Attempt++
	}
	if df.permit != nil {
		raw, err := json.Marshal(df.permit)
		if err != nil {
			r.log.ErrorContext(ctx, "encode permit", "error", err.Error())
			m.releasePermit(ctx, r, df.permit)
			return n, nil, m.abort(ctx, r), false
		}
		next.Permit = raw
	}
	if n > task.MaxCount {
		m.releasePermit(ctx, r, df.permit)
		return n, nil, m.finishFailed(ctx, r, failure{code: 429, status: "RESOURCE_EXHAUSTED",
			message: fmt.Sprintf("deferred %d times without running (last: %s)", r.env.Deferrals, df.why)}), false
	}
	body, err := task.Encode(next)
	if err != nil {
		m.releasePermit(ctx, r, df.permit)
		return n, nil, m.finishFailed(ctx, r, failure{code: 400, status: "INVALID_ARGUMENT", message: err.Error()}), false
	}
	return n, body, Outcome{}, true
}

// schedule creates a Cloud Task within CallTimeout; created is false when
// one of that name existed.
func (m *Machine) schedule(ctx context.Context, name string, at time.Time, body []byte) (created bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	defer cancel()
	return m.deps.Scheduler.Create(ctx, name, at, body)
}

// held answers a delivery whose task another delivery is running. The
// holder normally finishes it; in case it died without a trace and its own
// delivery never comes again, a lease check comes back as a Cloud Task once
// that lease has surely expired and takes the task over if it is still
// running under a dead lease (LeaseRequest.TakeoverOnly); otherwise the
// check is a no-op costing one store call. Concurrent duplicates of one
// envelope share the check's name, so they create one check.
func (m *Machine) held(ctx context.Context, r *run, leaseUntil time.Time) Outcome {
	next := r.env
	next.Permit = nil
	if isLeaseCheck(r.d, r.env) {
		// A check that found a newer live lease: check that one too,
		// under a new name.
		next.Deferrals++
	}
	if next.Deferrals > task.MaxCount {
		r.log.ErrorContext(ctx, "too many lease checks; leaving the task to its holder")
		return ack(OutHeld)
	}
	body, err := task.Encode(next)
	if err != nil {
		r.log.ErrorContext(ctx, "encode envelope", "error", err.Error())
		return ack(OutHeld)
	}
	name := leaseCheckName(next)
	at := m.now().Add(m.opts.Lease + 5*time.Second)
	if !leaseUntil.IsZero() && leaseUntil.Before(at.Add(-5*time.Second)) {
		// Right after the holder's lease surely expired.
		at = leaseUntil.Add(5 * time.Second)
	}
	if _, err := m.schedule(ctx, name, at, body); err != nil {
		r.log.ErrorContext(ctx, "schedule lease check", "error", err.Error(), "cloud_task", name)
		return redeliver
	}
	return ack(OutHeld)
}

// leaseCheckName is the Cloud Task name of the lease check for an envelope:
// distinct from every deferral's queue.TaskName(task id, n).
func leaseCheckName(e task.Envelope) string {
	return queue.TaskName(e.TaskID+"-lease-check-"+strconv.Itoa(e.Attempt), e.Deferrals)
}

// isLeaseCheck reports whether a delivery is a lease check scheduled by held.
func isLeaseCheck(d Delivery, e task.Envelope) bool {
	if d.Source != CloudTasks {
		return false
	}
	return d.ID == leaseCheckName(e) || strings.HasSuffix(d.ID, "/"+leaseCheckName(e))
}

// park answers a delivery whose task could not be leased because Redis is
// unreachable. A Pub/Sub delivery is parked as a Cloud Task (the envelope
// unchanged, due after a back-off) and acknowledged: every non-2xx answer to
// a push counts against the subscription's delivery attempts, after which
// Pub/Sub dead-letters the message, so an outage longer than that budget
// would otherwise strand tasks. A Cloud Tasks delivery answers non-2xx:
// Cloud Tasks retries it with the queue's back-off, which costs nothing
// else. If Cloud Tasks is unreachable too, the push answers non-2xx.
func (m *Machine) park(ctx context.Context, r *run) Outcome {
	if r.d.Source == CloudTasks {
		return redeliver
	}
	body, err := task.Encode(r.env)
	if err != nil {
		r.log.ErrorContext(ctx, "encode envelope", "error", err.Error())
		return redeliver
	}
	// One park per delivery attempt: concurrent duplicates share it.
	name := queue.TaskName(r.env.TaskID+"-park-"+shortHash(r.d.holder()), r.d.Attempt)
	at := m.now().Add(backoff(r.d.Attempt+1, m.opts.RetryBase, m.opts.RetryMax))
	if _, err := m.schedule(ctx, name, at, body); err != nil {
		r.log.ErrorContext(ctx, "park task: schedule cloud task", "error", err.Error(), "cloud_task", name)
		return redeliver
	}
	r.log.WarnContext(ctx, "store unreachable: task parked as a Cloud Task", "cloud_task", name,
		"at", at.UTC().Format(time.RFC3339Nano))
	return ack(OutParked)
}
