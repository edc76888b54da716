package lifecycle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gemq-dev/gemq/internal/batches"
	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

// The Batch tier. A leased batch-tier task is not admitted: it joins the
// open group of its scope (internal/batches; write-ahead, before anything
// else), then waits, fenced, for the deferral number of its membership
// ("batched in group G": a waiting mark no delivery but the group's own
// settling takes over before the batch could have ended), and the group's
// first member schedules the group's seal, a named Cloud Task due when the
// collect window ends (at once when the group is full). The seal takes the
// scope's enqueued-token permit (limiter.Enqueued; not granted: the seal
// comes back later), records "creating" and creates the Batch API job
// named after the group (a retried seal first looks for a job of that
// name: the Batch API takes no request id), stores its name and schedules
// the first poll. Each poll gets the job; while it runs the next poll comes
// after a back-off. When it ends, a settle pass leases each member as the
// group (holder "batch/<group>", the pass number as attempt, the
// membership's deferral) and settles it exactly as an interactive call
// would (same store write, with its usage at tier batch; same results
// message); an entry with an error, or every entry of a batch that ended
// without responses (failed, expired, cancelled), falls back to the
// interactive path (a deferral at standard, or flex when the deadline
// allows) while the task's deadline allows, and fails with the batch's
// reason otherwise. A pass that could not reach every member is repeated;
// one that did releases the permit and ends the group. Every step may run
// twice: the store's fencing settles each task once.

// BatchExpiry is how long the Batch API lets a batch be pending or running
// before it expires (48 hours: https://ai.google.dev/gemini-api/docs/batch-mode,
// read 2026-12-03).
const BatchExpiry = 48 * time.Hour

// BatchAPI is the Gemini Batch API (*gemini.Client).
type BatchAPI interface {
	CreateBatch(ctx context.Context, model, displayName string, entries []gemini.BatchEntry, inlineLimit int64) (gemini.Batch, error)
	FindBatch(ctx context.Context, displayName string) (gemini.Batch, bool, error)
	GetBatch(ctx context.Context, name string) (gemini.Batch, error)
	CancelBatch(ctx context.Context, name string) error
}

// BatchGroups keeps the groups of batch-tier tasks (*batches.Store).
type BatchGroups interface {
	Add(ctx context.Context, scope limiter.Scope, m batches.Member, b batches.Bounds, openHint string) (batches.AddResult, error)
	Get(ctx context.Context, scope limiter.Scope, id string) (batches.Group, error)
	Seal(ctx context.Context, scope limiter.Scope, id string) (batches.Group, error)
	MarkCreating(ctx context.Context, scope limiter.Scope, id string) (batches.Group, error)
	MarkRunning(ctx context.Context, scope limiter.Scope, id, batch string, file bool) (batches.Group, error)
	Count(ctx context.Context, scope limiter.Scope, id, counter string) (batches.Group, error)
	Members(ctx context.Context, scope limiter.Scope, id string) ([]batches.Member, error)
	Finish(ctx context.Context, scope limiter.Scope, id string) error
}

// EnqueuedPermits is the Batch API's enqueued-token limit (*limiter.Enqueued).
type EnqueuedPermits interface {
	Acquire(ctx context.Context, scope limiter.Scope, holder string, tokens, limit int64, hold time.Duration) (limiter.EnqueuedResult, error)
	Release(ctx context.Context, scope limiter.Scope, holder string) error
}

var (
	_ BatchAPI        = (*gemini.Client)(nil)
	_ BatchGroups     = (*batches.Store)(nil)
	_ EnqueuedPermits = (*limiter.Enqueued)(nil)
)

// JobReader reads job records (*store.Store): the poller asks whether a
// running batch's jobs were cancelled.
type JobReader interface {
	GetJob(ctx context.Context, jobID string) (store.Job, error)
}

var _ JobReader = (*store.Store)(nil)

// BatchDeps are the Batch tier's dependencies. With API nil (Vertex AI,
// whose Batch API reads Cloud Storage or BigQuery only) batch-tier tasks
// run at standard. Jobs nil: a cancelled job's batched tasks end when
// their batch does.
type BatchDeps struct {
	API      BatchAPI
	Groups   BatchGroups
	Enqueued EnqueuedPermits
	Jobs     JobReader
}

// BatchPoller is the Source of the settle passes of a batch group: not a
// delivery from outside, the group acting on its members.
const BatchPoller Source = "batch"

// Outcomes of batch steps.
const (
	OutBatched      = "batched"       // the task joined a batch group
	OutBatchWaiting = "batch_waiting" // the seal waits for the enqueued-token limit
	OutBatchRunning = "batch_running" // the batch was created, or is still running
	OutBatchSettled = "batch_settled" // every member of the group is settled
)

// BatchStep is the body of a batch group's Cloud Tasks (a seal or a poll),
// as {"gemq_batch": {...}}; the worker routes such a body here instead of
// decoding a task envelope.
type BatchStep struct {
	Op      string `json:"op"` // "seal" or "poll"
	Project string `json:"project"`
	Model   string `json:"model"`
	Group   string `json:"group"`
}

// The batch step operations.
const (
	StepSeal = "seal"
	StepPoll = "poll"
)

// batchStepField names the body's one field.
const batchStepField = "gemq_batch"

// EncodeBatchStep returns a step's Cloud Task body.
func EncodeBatchStep(s BatchStep) []byte {
	b, _ := json.Marshal(map[string]BatchStep{batchStepField: s})
	return b
}

// DecodeBatchStep reads a Cloud Task body as a batch step: ok is false
// when the body is not one (a task envelope); err is set when it is one
// but malformed.
func DecodeBatchStep(body []byte) (s BatchStep, ok bool, err error) {
	// Cheap first: a task envelope (up to 900 kB) is not parsed twice.
	if !bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte(`{"`+batchStepField+`"`)) {
		return s, false, nil
	}
	var probe map[string]json.RawMessage
	if json.Unmarshal(body, &probe) != nil {
		return s, true, errors.New("batch step: not a JSON object")
	}
	raw, ok := probe[batchStepField]
	if !ok {
		return s, false, nil
	}
	if len(probe) != 1 {
		return s, true, errors.New("batch step: unexpected fields beside " + batchStepField)
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return s, true, fmt.Errorf("batch step: %w", err)
	}
	if (s.Op != StepSeal && s.Op != StepPoll) || s.Project == "" || !task.ValidModel(s.Model) || s.Group == "" {
		return s, true, fmt.Errorf("batch step: invalid op %q, project, model %q or group %q", s.Op, s.Model, s.Group)
	}
	return s, true, nil
}

// batchReady reports whether batch-tier tasks go to the Batch API.
func (m *Machine) batchReady() bool {
	b := m.deps.Batch
	return b.API != nil && b.Groups != nil && b.Enqueued != nil
}

// BatchHold is how long a batched task waits for its group before any
// delivery may take it over: the collect window, the Batch API's expiry
// and the longest poll interval.
func BatchHold(o Options) time.Duration {
	o = o.withDefaults()
	return o.Batch.Collect + BatchExpiry + o.Batch.PollMax + o.Lease
}

func (m *Machine) batchBounds() batches.Bounds {
	b := m.opts.Batch
	return batches.Bounds{MaxEntries: b.MaxEntries, MaxBytes: b.MaxBytes, MaxTokens: b.EnqueuedTokens}
}

// batchTask puts a leased batch-tier task into its scope's open group.
func (m *Machine) batchTask(ctx context.Context, r *run) Outcome {
	scope := limiter.Scope{Project: m.opts.Project, Model: r.env.Model}
	env := r.env
	env.Permit = nil
	raw, err := task.Encode(env)
	if err != nil {
		return m.finishFailed(ctx, r, failure{code: 400, status: "INVALID_ARGUMENT", message: err.Error()})
	}
	// The enqueued-token dimension counts what Gemini will count: the same
	// estimate as an interactive call's (the learned correction for the
	// content's kind, the local tokenizer, or countTokens), not characters/4.
	cost, o, ok := m.estimate(ctx, r, scope, r.req)
	if !ok {
		return o
	}
	tokens := cost.InputTokens
	hint, _ := m.openGroups.Load(scope)
	h, _ := hint.(string)
	res, err := m.deps.Batch.Groups.Add(ctx, scope, batches.Member{JobID: r.env.JobID, TaskID: r.env.TaskID,
		Deferral: batchDeferral(r), Tokens: tokens, Envelope: raw}, m.batchBounds(), h)
	if err != nil {
		r.log.ErrorContext(ctx, "batch group add", "error", err.Error())
		return m.abort(ctx, r)
	}
	if !res.Existing {
		m.openGroups.Store(scope, res.Group)
	}
	r.log = r.log.With("batch_group", res.Group)
	so, err := m.deps.Store.MarkWaitingFor(ctx, r.ref, r.tok, res.Deferral, m.now().Add(BatchHold(m.opts)))
	if err != nil {
		r.log.ErrorContext(ctx, "mark batched", "error", err.Error())
		return m.abort(ctx, r)
	}
	if so != store.Applied {
		r.leased = false
		r.log.WarnContext(ctx, "task taken over before it was batched", "store_outcome", so.String())
		return ack(OutStale)
	}
	now := m.now()
	if res.Closed != "" {
		if err := m.scheduleStep(ctx, BatchStep{Op: StepSeal, Project: scope.Project, Model: scope.Model, Group: res.Closed}, sealName(res.Closed, true), now); err != nil {
			r.log.ErrorContext(ctx, "schedule batch seal", "error", err.Error(), "closed_group", res.Closed)
			return m.abort(ctx, r) // the waiting mark is this lease's: released to queued
		}
	}
	step := BatchStep{Op: StepSeal, Project: scope.Project, Model: scope.Model, Group: res.Group}
	if res.Full {
		if err := m.scheduleStep(ctx, step, sealName(res.Group, true), now); err != nil {
			r.log.ErrorContext(ctx, "schedule batch seal", "error", err.Error())
			return m.abort(ctx, r)
		}
	}
	// The first member schedules the collect window's seal; so does a
	// member found already (its first delivery may have stopped before
	// it), and a resumed delivery: the name makes it one Cloud Task.
	if res.First || res.Existing || r.lease.Resumed {
		at := res.OpenedAt.Add(m.opts.Batch.Collect)
		if res.OpenedAt.IsZero() || res.OpenedAt.Unix() <= 0 {
			at = now.Add(m.opts.Batch.Collect)
		}
		if err := m.scheduleStep(ctx, step, sealName(res.Group, false), at); err != nil {
			r.log.ErrorContext(ctx, "schedule batch seal", "error", err.Error())
			return m.abort(ctx, r)
		}
	}
	r.leased = false
	r.log.InfoContext(ctx, "task batched", "deferral", res.Deferral, "first", res.First, "full", res.Full, "existing", res.Existing)
	return ack(OutBatched)
}

// batchDeferral is the deferral number a new waiting mark of r names:
// beyond every deferral the task had, or the one a resumed delivery had
// marked.
func batchDeferral(r *run) int {
	if r.lease.Resumed && r.lease.Previous == store.Waiting && r.lease.Deferral > 0 {
		return r.lease.Deferral
	}
	return max(r.env.Deferrals, r.lease.Deferral) + 1
}

func sealName(group string, now bool) string {
	if now {
		return queue.TaskName("batch-seal-"+group, 1)
	}
	return queue.TaskName("batch-seal-"+group, 0)
}

func pollName(group string, n int) string { return queue.TaskName("batch-poll-"+group, n) }

// scheduleStep creates a batch step's Cloud Task (an existing one of that
// name is success).
func (m *Machine) scheduleStep(ctx context.Context, s BatchStep, name string, at time.Time) error {
	_, err := m.schedule(ctx, name, at, EncodeBatchStep(s))
	return err
}

// batchStep runs one batch step delivered by Cloud Tasks.
func (m *Machine) batchStep(ctx context.Context, d Delivery) Outcome {
	s := *d.Batch
	scope := limiter.Scope{Project: s.Project, Model: s.Model}
	log := m.log.With("source", string(d.Source), "delivery_id", d.ID, "delivery_attempt", d.Attempt,
		"batch_group", s.Group, "batch_op", s.Op, "model", s.Model)
	if !m.batchReady() {
		log.ErrorContext(ctx, "batch step without a Batch API configured: dropped")
		return ack(OutDuplicate)
	}
	var o Outcome
	if s.Op == StepSeal {
		o = m.seal(ctx, s, scope, log)
	} else {
		o = m.poll(ctx, s, scope, log)
	}
	lvl := slog.LevelInfo
	if o.Redeliver {
		lvl = slog.LevelWarn
	}
	log.Log(ctx, lvl, "batch step handled", "outcome", o.Name, "redeliver", o.Redeliver)
	return o
}
