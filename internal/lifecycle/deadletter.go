package lifecycle

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/gemq-dev/gemq/internal/logging"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

// DeadLetterKind classifies a message the worker dead-letters itself.
type DeadLetterKind string

// The kinds, in the gemq_kind attribute of a dead-letter copy. None of them
// can succeed by replaying the same message.
const (
	KindUndecodable DeadLetterKind = "undecodable" // not a push envelope, or not a valid task envelope
	KindOversized   DeadLetterKind = "oversized"   // over the worker's size limit
	KindForeign     DeadLetterKind = "foreign"     // not one of its job's tasks
	// KindConflict: a copy ingest did not publish of one of a job's tasks:
	// an envelope naming a job created by ingest without that job's hash,
	// or one with the hash whose model or request is not the one ingest
	// recorded with the job (task.RequestFingerprint; the task's first
	// lease records it where Redis lost the job's). The task runs
	// from its own message only. A redelivery of a task's message (or a
	// copy the worker made of it) is a duplicate, never dead-lettered.
	KindConflict DeadLetterKind = "conflict"
	// KindInvalidRequest: a valid envelope whose Gemini request can never
	// be sent (it would be refused); its task fails with 400 when the
	// message is the task's own (see Machine.invalid).
	KindInvalidRequest DeadLetterKind = "invalid_request"
)

// Attributes of a dead-letter copy published by the worker (Pub/Sub's own
// dead-lettering adds CloudPubSubDeadLetterSource* attributes instead).
const (
	AttrDeadLetterReason   = "gemq_reason"      // what was wrong, for a person
	AttrDeadLetterKind     = "gemq_kind"        // a DeadLetterKind
	AttrDeadLetterSource   = "gemq_source"      // pubsub | cloudtasks
	AttrDeadLetterDelivery = "gemq_delivery_id" // the message id or Cloud Task name
)

// invalid handles a message that can never be processed: a copy goes to
// the dead-letter topic with the reason. When its envelope still names a
// task of a user-published job (job id, key and model are usable), that task
// is also settled as failed (400) so the job's counts add up, and so is a
// task of an ingest job when the message is a valid envelope carrying that
// job's hash and the task's request (the task's own message: its
// fingerprint is the one ingest, or the task's first lease, recorded);
// otherwise a task of a job created by ingest is never touched (this cannot
// be the task itself), nor is a task another delivery holds or awaits.
func (m *Machine) invalid(ctx context.Context, d Delivery, log *slog.Logger) Outcome {
	kind := d.Kind
	if kind == "" {
		kind = KindUndecodable
	}
	if o := m.deadLetter(ctx, d, kind, d.Invalid.Error(), log); o.Redeliver {
		return o
	}
	ref, ok := refOfInvalid(d.Data)
	own := d.Envelope.TaskID != "" && d.Envelope.JobHash != ""
	var fp string
	if own {
		// Its own only if its request is the task's (ingest recorded it):
		// a malformed copy with the job's hash is refused (Conflict).
		ref, ok = store.RefOf(d.Envelope), true
		fp = task.RequestFingerprint(d.Envelope.Model, d.Envelope.Request)
	}
	if !ok {
		return ack(OutPoison)
	}
	r := &run{d: d, ref: ref, log: log.With(logging.TaskID, ref.TaskID, logging.JobID, ref.JobID)}
	r.env = task.Envelope{V: task.Version, JobID: ref.JobID, Key: ref.Key, Model: ref.Model, TaskID: ref.TaskID}
	lr, err := m.deps.Store.LeaseTask(ctx, ref, store.LeaseRequest{
		Holder: d.holder(), Attempt: d.Attempt, TTL: m.firstLease(), AdhocOnly: !own, Fingerprint: fp,
	})
	if err != nil {
		r.log.ErrorContext(ctx, "lease task", "error", err.Error())
		return redeliver
	}
	if lr.Outcome != store.Applied {
		return ack(OutPoison)
	}
	r.leased, r.lease, r.tok = true, lr, lr.Token
	o := m.finishFailed(ctx, r, failure{code: 400, status: "INVALID_ARGUMENT", message: d.Invalid.Error()})
	m.releaseLease(r)
	if !o.Redeliver {
		o.Name = OutPoison
	}
	return o
}

// refOfInvalid recovers the task an invalid envelope was meant to be, when
// its job id (or what derives it), key and model are usable.
func refOfInvalid(raw []byte) (store.Ref, bool) {
	var e struct {
		JobID   string          `json:"job_id"`
		Key     string          `json:"key"`
		Model   string          `json:"model"`
		Request json.RawMessage `json:"request"`
	}
	if len(raw) > task.MaxEnvelopeBytes || json.Unmarshal(raw, &e) != nil {
		return store.Ref{}, false
	}
	env := task.Envelope{JobID: e.JobID, Key: e.Key, Model: e.Model, Request: e.Request}
	env.Normalize()
	if !task.ValidJobID(env.JobID) || task.ValidateKey(env.Key) != nil || !task.ValidModel(env.Model) {
		return store.Ref{}, false
	}
	return store.RefOf(env), true
}

// deadLetter publishes a copy of the delivered message to the dead-letter
// topic with its reason and acknowledges; if the copy cannot be published,
// the message is asked for again (so it is never only a log line).
func (m *Machine) deadLetter(ctx context.Context, d Delivery, kind DeadLetterKind, reason string, log *slog.Logger) Outcome {
	attrs := map[string]string{
		AttrDeadLetterReason: truncate(reason, 1000), AttrDeadLetterKind: string(kind),
		AttrDeadLetterSource: string(d.Source), AttrDeadLetterDelivery: d.ID,
	}
	if d.Invalid == nil {
		attrs[attrJobID], attrs[attrTaskID] = d.Envelope.JobID, d.Envelope.TaskID
	}
	pctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	err := m.deps.DeadLetters.Publish(pctx, []queue.Message{{Data: d.Data, Attributes: attrs}})
	cancel()
	if err != nil {
		log.ErrorContext(ctx, "publish dead-letter copy", "error", err.Error(), "kind", string(kind))
		return redeliver
	}
	log.ErrorContext(ctx, "message dead-lettered", "kind", string(kind), "reason", truncate(reason, 300),
		"bytes", len(d.Data))
	if kind == KindForeign || kind == KindConflict {
		return ack(OutForeign)
	}
	return ack(OutPoison)
}
