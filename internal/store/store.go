// Package store keeps gemq's job records, task states, leases and results in
// Redis.
//
// Every key of a job shares the job's hash tag, so each operation is one Lua
// script that moves a task's state and the job's counters together, also on
// Redis Cluster (Memorystore Cluster):
//
//	gemq:job:{<job>}:meta          hash: id, model, hash, adhoc, total, running, waiting,
//	                               succeeded, failed, seq, created_ms, updated_ms, finished_ms,
//	                               lost, lost_ms, cancelled_ms, rid
//	gemq:job:{<job>}:tasks         set: ids of the job's tasks (ingest's plus first-seen ones), until
//	                               their result is published with a BodyGrace
//	gemq:job:{<job>}:done          sorted set: finished task ids, scored by finish sequence
//	gemq:job:{<job>}:failed        set: finished task ids that failed
//	gemq:job:{<job>}:fps           hash: task id → the first 16 hex digits of its request's
//	                               fingerprint, from the job's creation (ingest) until the
//	                               task's first lease, which moves it into the task's rfp
//	gemq:job:{<job>}:task:<task>   hash: key, state, holder, attempt, fence, leases, lease_ms,
//	                               finished_ms, response | error, deferral, wait_until_ms, published,
//	                               rfp
//
// Job ids and task ids come from internal/task, whose alphabets cannot break a
// hash tag; request keys are stored only as data. Every write sets the TTL
// (Options.TTL) on every key it touches, so nothing outlives it: a job's keys
// expire TTL after its last activity, a task's result TTL after it was
// written. Times come from Redis TIME, never from an instance's clock.
//
// A task's life (internal/lifecycle drives it): queued (published, not yet
// seen) → running (leased) → calling (about to call Gemini) or waiting
// (deferred for quota; not a failure) → running → succeeded or failed.
//
// Every lease carries a fencing token (Token), unique across leases and
// across a loss of Redis' data; every later transition of its holder is
// conditioned on it, so a holder that was taken over (its lease expired, or
// a later attempt of its own delivery resumed) can write nothing: Stale.
// The terminal states are written once, by the current holder: later
// Complete or Fail calls report AlreadyDone. The counts of Job always add up
// to Total.
//
// Deliveries are at least once, so the store tells a task's expected
// delivery from duplicates: MarkWaitingFor records that a waiting task waits
// for deferral n (the Cloud Task carrying its reservation) until a deadline;
// until then LeaseTask answers Awaiting to any delivery not carrying deferral
// n (a duplicate push, an older Cloud Task), which the worker acknowledges
// without touching the limiter, while the delivery carrying n leases it. Past
// the deadline (its Cloud Task was lost or gave up) any delivery takes it
// over. A later attempt of the delivery that holds the lease or wrote the
// waiting mark resumes at once (it knows itself: LeaseRequest.Attempt).
// MarkPublished records that a terminal result was published, and LeaseTask
// reports it with AlreadyDone, so a redelivery publishes a result only when
// that never happened.
//
// Copies: a message with a task's key and its ingest job's hash but
// another request is not the task. CreateJob records every task's request
// fingerprint (NewJob.Fingerprints) before the job's messages exist, and
// LeaseTask refuses a delivery with another one (Conflict), whichever comes
// first; the task's first lease moves the fingerprint into its record, so
// the job keeps it only for tasks not leased yet. Where Redis lost it, the
// first lease defines the task.
//
// Compaction: when the results topic feeds a durable archive (a Cloud
// Storage subscription, read back by internal/archive), Options.BodyGrace is
// set and MarkPublished lets the task's record, answer included, expire that
// long after the publish. What stays is the compact terminal record the
// lifecycle needs: the task's place in the done set (finish order, and "this
// task is finished and published") and, for a failure, in the failed set —
// about 140 bytes of Redis per finished task instead of its whole record.
// Result and ResultsPage report such a task as Succeeded or Failed with
// Record.Archived set and no answer: read it from the archive.
//
// Loss of Redis' data is detected, never papered over: envelopes published
// by ingest carry their job's hash and total (Ref.JobHash, Ref.JobTotal); a
// job record missing for such a task is re-created with that total and
// marked lost (Job.LostAt, state "state_lost"), and a task naming an ingest
// job that does not list it is Foreign. Partial loss too: each job carries
// the primary's replication id (rid, INFO replication's master_replid) as of
// its last delivery; a promoted replica, or a redis-server restarted from an
// RDB or AOF file, has a new one, so an unfinished job found with another id
// by LeaseTask or GetJob is marked lost from then (its last writes may be
// missing: a task finished since the last save is running again, with no
// delivery left to finish it), and its status counts the archived results
// back (RestoreArchived).
//
// A Store is safe for concurrent use.
package store

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gemq-dev/gemq/internal/task"
)

// DefaultTTL is the TTL used when Options.TTL is zero (GEMQ_RESULT_TTL's default).
const DefaultTTL = 168 * time.Hour

// createChunk is how many task ids CreateJob sends per script call.
const createChunk = 1000

// fpPrefix is how much of a request fingerprint CreateJob records per task
// (16 hex digits: 64 bits, as hard to match with another request as the
// whole for anyone without 2^64 tries, at half the bytes while it waits
// for the task's first lease).
const fpPrefix = 16

var (
	// ErrNotFound is returned for a job or task the store does not know.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict is returned by CreateJob when the job id exists with
	// different content (another content hash, or a job made of
	// user-published tasks).
	ErrConflict = errors.New("store: job exists with different content")
)

// Options tunes a Store. The zero value is usable.
type Options struct {
	// TTL is how long keys live after they are written (GEMQ_RESULT_TTL);
	// zero means DefaultTTL.
	TTL time.Duration
	// BodyGrace is how long a finished task's record, answer included,
	// stays after MarkPublished (GEMQ_RESULT_BODY_GRACE): long enough for
	// the results archive to hold the published result. Zero keeps it for
	// TTL, for deployments whose results have no durable copy that gemq can
	// read back.
	BodyGrace time.Duration
}

// Store is the Redis-backed job and task store.
type Store struct {
	rdb   redis.Scripter
	ttl   time.Duration
	grace time.Duration
}

// New returns a Store on rdb: any go-redis client (standalone, cluster,
// ring), since every operation is a single-slot script.
func New(rdb redis.Scripter, opts Options) *Store {
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	return &Store{rdb: rdb, ttl: opts.TTL, grace: max(opts.BodyGrace, 0)}
}

// State is a task's state.
type State string

// The task states.
const (
	Queued    State = "queued"    // accepted, not picked up yet (or lease released)
	Running   State = "running"   // a worker holds the lease
	Calling   State = "calling"   // a worker holds the lease and is calling Gemini (counted as running)
	Waiting   State = "waiting"   // deferred until its quota slot; not a failure
	Succeeded State = "succeeded" // terminal: a response is stored
	Failed    State = "failed"    // terminal: an error is stored
	// Expired is terminal, in LeaseResult.Previous only: the task finished
	// and its record left Redis (compacted once its result was published,
	// or expired while the job's keys did not). It is never run again.
	Expired State = "expired"
)

// Terminal reports whether s is Succeeded, Failed or Expired.
func (s State) Terminal() bool { return s == Succeeded || s == Failed || s == Expired }

// Counts are a job's tasks by state. Queued is Total minus the others.
type Counts struct {
	Total     int64 `json:"total"`
	Queued    int64 `json:"queued"`
	Waiting   int64 `json:"waiting"`
	Running   int64 `json:"running"`
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
}

// Job is a job record.
type Job struct {
	ID    string
	Model string
	// ContentHash is the hash ingest gave at creation; empty for a job
	// created implicitly by user-published tasks (Adhoc).
	ContentHash string
	// Adhoc is true for a job that exists only because tasks naming it
	// were seen (published straight to the topic), not through CreateJob.
	Adhoc     bool
	Counts    Counts
	CreatedAt time.Time
	UpdatedAt time.Time
	// FinishedAt is when the last task became terminal; zero while any
	// task is not.
	FinishedAt time.Time
	// Tier is the service tier the job's tasks call at, AskedTier the one
	// the job named (auto), TierReason why auto chose Tier, Deadline the
	// job's deadline; all empty for a job created without them.
	Tier, AskedTier, TierReason string
	Deadline                    time.Time
	// Usage sums the tokens of the job's succeeded tasks by the tier that
	// served them; Downgraded counts the tasks served at another tier than
	// asked.
	Usage      map[string]TierUsage
	Downgraded int64
	// LostAt is when a worker found the job's record missing for one of
	// its tasks (Redis lost its data: a flush, an empty restart) and
	// re-created it from the task's envelope; zero if never. Counts then
	// cover only what happened since: tasks finished before the loss are
	// counted as queued until they run again (a resubmission of the job).
	LostAt time.Time
	// Restored is how many of the job's tasks were recorded as finished
	// from the results archive after the loss (RestoreArchived); they are
	// in the counts.
	Restored int64
	// CancelledAt is when the job was cancelled (CancelJob); zero if never.
	CancelledAt time.Time
}

// Done reports whether every task of the job is terminal.
func (j Job) Done() bool { return !j.FinishedAt.IsZero() }

// State is the status API's "state": "done" when every task is terminal
// (as far as the store knows), "state_lost" when the job's record was lost
// and not every task has finished since, "cancelling" when the job was
// cancelled and not every task has ended yet, else "running".
func (j Job) State() string {
	switch {
	case j.Done():
		return "done"
	case !j.LostAt.IsZero():
		return "state_lost"
	case !j.CancelledAt.IsZero():
		return "cancelling"
	}
	return "running"
}

// NewJob describes a job to create.
type NewJob struct {
	ID          string   // task.ValidJobID
	Model       string   // task.ValidModel
	ContentHash string   // non-empty; equal content must give equal hashes
	TaskIDs     []string // task.TaskID of every request; Total becomes the number of distinct ids
	// Fingerprints, optional, are the tasks' request fingerprints
	// (task.RequestFingerprint), in the order of TaskIDs. CreateJob records
	// them before the job's messages are published, so LeaseTask refuses a
	// copy with another request even when it arrives before the task's own
	// message (LeaseRequest.Fingerprint). Without them, a task's first
	// lease defines its request.
	Fingerprints []string
	// Tier, AskedTier, TierReason and Deadline are the job's service tier
	// settings (Job's fields of the same names); optional.
	Tier, AskedTier, TierReason string
	Deadline                    time.Time
}

// Ref names one task and carries what the store needs to register a task
// it has never seen (a user-published message: its key and model), and to
// recognise a job that Redis lost (its hash and total).
type Ref struct {
	JobID  string // task.ValidJobID
	TaskID string // task.TaskID(JobID, Key)
	Key    string // the request key, stored as data
	Model  string // the job's model, used if the job must be created
	// JobHash is the content hash of the ingest job the task belongs to
	// (the envelope's job_hash); empty for a user-published task. A task
	// carrying it joins only the job with that hash, and only if the job
	// lists it; a job record missing for it was lost, not never created.
	JobHash string
	// JobTotal is the ingest job's number of tasks (the envelope's
	// job_total), used to re-create a lost job record.
	JobTotal int
	// JobCreated is the ingest job's creation (the envelope's
	// job_created), the CreatedAt of a lost job record re-created for the
	// task; zero (an envelope without it) gives the time of the loss. A
	// time after the loss is not believed either.
	JobCreated time.Time
}

// RefOf returns the Ref of a decoded envelope.
func RefOf(e task.Envelope) Ref {
	return Ref{JobID: e.JobID, TaskID: e.TaskID, Key: e.Key, Model: e.Model, JobHash: e.JobHash, JobTotal: e.JobTotal,
		JobCreated: e.JobCreatedTime()}
}

func (r Ref) check() error {
	switch {
	case !task.ValidJobID(r.JobID):
		return fmt.Errorf("store: invalid job id %q", r.JobID)
	case r.TaskID != task.TaskID(r.JobID, r.Key):
		return fmt.Errorf("store: task id %q does not match job %s and its key", r.TaskID, r.JobID)
	case task.ValidateKey(r.Key) != nil:
		return fmt.Errorf("store: %w", task.ValidateKey(r.Key))
	case !task.ValidModel(r.Model):
		return fmt.Errorf("store: invalid model %q", r.Model)
	}
	return nil
}

// Outcome says what a task transition did.
type Outcome int

// The outcomes.
const (
	// Applied: the transition happened (for Lease: the caller now holds
	// the lease; for Complete and Fail: this call wrote the terminal state).
	Applied Outcome = iota + 1
	// AlreadyDone: the task was already terminal; nothing changed.
	AlreadyDone
	// HeldElsewhere: another holder's lease is live; nothing changed.
	HeldElsewhere
	// Awaiting (LeaseTask only): the task is waiting for another delivery
	// (the Cloud Task of its deferral, LeaseResult.Deferral) until
	// LeaseResult.WaitUntil; nothing changed.
	Awaiting
	// NotStale (LeaseTask with TakeoverOnly only): the task is neither
	// running under an expired lease nor waiting past its deadline (or has
	// no record), so there is nothing to take over; nothing changed.
	NotStale
	// Foreign: the envelope is not one of its job's tasks: the job was
	// created by ingest without it, or by another run of the same job id
	// (another job hash); nothing changed.
	Foreign
	// Stale: the caller's lease token is no longer the task's (another
	// delivery took the task over since); nothing changed.
	Stale
	// Conflict (LeaseTask only): the delivery's request is not the one
	// the task's first lease recorded (LeaseRequest.Fingerprint): a copy
	// of the task with another request; nothing changed.
	Conflict
)

// String returns "applied", "already_done", "held_elsewhere", "awaiting",
// "not_stale", "foreign", "stale" or "conflict".
func (o Outcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case AlreadyDone:
		return "already_done"
	case HeldElsewhere:
		return "held_elsewhere"
	case Awaiting:
		return "awaiting"
	case NotStale:
		return "not_stale"
	case Foreign:
		return "foreign"
	case Stale:
		return "stale"
	case Conflict:
		return "conflict"
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// Record is one task as stored.
type Record struct {
	Key    string
	TaskID string
	State  State
	// Response is the GenerateContentResponse JSON (Succeeded only).
	Response json.RawMessage
	// Error is the error JSON given to Fail (Failed only).
	Error json.RawMessage
	// FinishedAt is when the task became terminal; zero otherwise.
	FinishedAt time.Time
	// Seq is the task's position in the job's finish order (1, 2, …);
	// zero while not terminal. Pass it to ResultsPage as after.
	Seq int64
	// Published is true once MarkPublished recorded that the terminal
	// result was published.
	Published bool
	// Archived is true for a finished task whose record left Redis
	// (compacted after its result was published, see Options.BodyGrace, or
	// expired): State is Succeeded or Failed, Response and Error are empty,
	// and the answer is in the results archive.
	Archived bool
	// Downgrade is set when Gemini served the call at another tier than
	// the one asked for (Succeeded only).
	Downgrade *Downgrade
}

// Downgrade is a call served at another service tier than asked, silently
// (Gemini answers priority over its limit at standard).
type Downgrade struct {
	Asked  string `json:"asked"`
	Served string `json:"served"`
}

// ResultLine is one result in the Gemini Batch API's output format: a line
// of GET /v1/jobs/{id}/results, and the data of a results-topic message.
type ResultLine struct {
	// JobID is set on the results topic only (first, so a reader of the
	// archived lines can skip other jobs' lines by their first bytes); the
	// results API's lines carry no job id.
	JobID    string          `json:"job_id,omitempty"`
	Key      string          `json:"key"`
	Response json.RawMessage `json:"response,omitempty"`
	Error    json.RawMessage `json:"error,omitempty"`
	// DeadLetter is set (on the results topic) for a task dead-lettered
	// after its retries.
	DeadLetter *DeadLetterInfo `json:"dead_letter,omitempty"`
	// Downgrade is set when the response was served at another service
	// tier than asked.
	Downgrade *Downgrade `json:"service_tier_downgrade,omitempty"`
}

// DeadLetterInfo describes a dead-lettered task in its published result.
type DeadLetterInfo struct {
	Reason   string          `json:"reason"`
	Attempts int             `json:"attempts"`
	Envelope json.RawMessage `json:"envelope,omitempty"`
}

// Line is the record's result line: its response when Succeeded, else its
// error.
func (r Record) Line() ResultLine {
	l := ResultLine{Key: r.Key}
	if r.State == Succeeded {
		l.Response, l.Downgrade = r.Response, r.Downgrade
	} else {
		l.Error = r.Error
	}
	return l
}

func jobKey(jobID, part string) string { return "gemq:job:{" + jobID + "}:" + part }
func metaKey(jobID string) string      { return jobKey(jobID, "meta") }
func tasksKey(jobID string) string     { return jobKey(jobID, "tasks") }
func doneKey(jobID string) string      { return jobKey(jobID, "done") }
func failedKey(jobID string) string    { return jobKey(jobID, "failed") }
func fpsKey(jobID string) string       { return jobKey(jobID, "fps") }
func taskKey(jobID, taskID string) string {
	return jobKey(jobID, "task:"+taskID)
}

// taskKeys are the KEYS of every transition script.
func taskKeys(r Ref) []string {
	return []string{metaKey(r.JobID), tasksKey(r.JobID), doneKey(r.JobID), taskKey(r.JobID, r.TaskID), failedKey(r.JobID),
		fpsKey(r.JobID)}
}

func (s *Store) ttlMS() int64 { return s.ttl.Milliseconds() }

// CreateJob creates a job record with its task ids, idempotently: if the job
// exists with the same ContentHash it returns the existing job and created
// false (and makes sure every id is registered, so a retried ingest after a
// crash completes the set); with another hash it returns ErrConflict.
// Call it before publishing the job's tasks.
func (s *Store) CreateJob(ctx context.Context, nj NewJob) (job Job, created bool, err error) {
	switch {
	case !task.ValidJobID(nj.ID):
		return Job{}, false, fmt.Errorf("store: create job: invalid job id %q", nj.ID)
	case !task.ValidModel(nj.Model):
		return Job{}, false, fmt.Errorf("store: create job: invalid model %q", nj.Model)
	case nj.ContentHash == "":
		return Job{}, false, errors.New("store: create job: empty content hash")
	}
	for _, id := range nj.TaskIDs {
		if !task.ValidTaskID(id) {
			return Job{}, false, fmt.Errorf("store: create job: invalid task id %q", id)
		}
	}
	withFP := nj.Fingerprints != nil
	if withFP && len(nj.Fingerprints) != len(nj.TaskIDs) {
		return Job{}, false, fmt.Errorf("store: create job: %d fingerprints for %d task ids", len(nj.Fingerprints), len(nj.TaskIDs))
	}
	for _, fp := range nj.Fingerprints {
		if len(fp) < fpPrefix {
			return Job{}, false, fmt.Errorf("store: create job: fingerprint %q is shorter than %d characters", fp, fpPrefix)
		}
	}
	keys := []string{metaKey(nj.ID), tasksKey(nj.ID), doneKey(nj.ID), fpsKey(nj.ID)}
	first := true
	for start := 0; first || start < len(nj.TaskIDs); start += createChunk {
		end := min(start+createChunk, len(nj.TaskIDs))
		args := make([]any, 0, 5+2*(end-start))
		args = append(args, s.ttlMS(), nj.ID, nj.Model, nj.ContentHash, flag(withFP))
		for i, id := range nj.TaskIDs[start:end] {
			args = append(args, id)
			if withFP {
				args = append(args, nj.Fingerprints[start+i][:fpPrefix])
			}
		}
		n, err := createJobScript.Run(ctx, s.rdb, keys, args...).Int64()
		if err != nil {
			return Job{}, false, fmt.Errorf("store: create job script: %w", err)
		}
		if n < 0 {
			return Job{}, false, ErrConflict
		}
		if first {
			created = n == 1
			first = false
		}
	}
	if err := s.setTiers(ctx, nj); err != nil {
		return Job{}, false, err
	}
	job, err = s.GetJob(ctx, nj.ID)
	return job, created, err
}

// setTiers records a new job's tier settings (once: a retry keeps them).
func (s *Store) setTiers(ctx context.Context, nj NewJob) error {
	var args []any
	for _, f := range [][2]string{{"tier", nj.Tier}, {"asked_tier", nj.AskedTier}, {"tier_reason", nj.TierReason}} {
		if f[1] != "" {
			args = append(args, f[0], f[1])
		}
	}
	if !nj.Deadline.IsZero() {
		args = append(args, "deadline_ms", nj.Deadline.UnixMilli())
	}
	if len(args) == 0 {
		return nil
	}
	if err := jobTiersScript.Run(ctx, s.rdb, []string{metaKey(nj.ID)}, args...).Err(); err != nil {
		return fmt.Errorf("store: job tiers script: %w", err)
	}
	return nil
}

// GetJob returns a job's record and counts, or ErrNotFound.
func (s *Store) GetJob(ctx context.Context, jobID string) (Job, error) {
	if !task.ValidJobID(jobID) {
		return Job{}, ErrNotFound
	}
	vals, err := getJobScript.Run(ctx, s.rdb, []string{metaKey(jobID)}).StringSlice()
	if err != nil {
		return Job{}, fmt.Errorf("store: get job script: %w", err)
	}
	if len(vals) == 0 {
		return Job{}, ErrNotFound
	}
	m := make(map[string]string, len(vals)/2)
	for i := 0; i+1 < len(vals); i += 2 {
		m[vals[i]] = vals[i+1]
	}
	n := func(f string) int64 { v, _ := strconv.ParseInt(m[f], 10, 64); return v }
	j := Job{
		ID:          jobID,
		Model:       m["model"],
		ContentHash: m["hash"],
		Adhoc:       m["adhoc"] == "1",
		Counts: Counts{
			Total: n("total"), Waiting: n("waiting"), Running: n("running"),
			Succeeded: n("succeeded"), Failed: n("failed"),
		},
		CreatedAt:   msTime(n("created_ms")),
		UpdatedAt:   msTime(n("updated_ms")),
		FinishedAt:  msTime(n("finished_ms")),
		LostAt:      msTime(n("lost_ms")),
		Restored:    n("restored"),
		CancelledAt: msTime(n("cancelled_ms")),
	}
	c := &j.Counts
	c.Queued = c.Total - c.Waiting - c.Running - c.Succeeded - c.Failed
	j.Tier, j.AskedTier, j.TierReason = m["tier"], m["asked_tier"], m["tier_reason"]
	j.Deadline, j.Downgraded = msTime(n("deadline_ms")), n("downgraded")
	j.Usage = usageOf(m)
	return j, nil
}

// Cancel outcomes (CancelJob).
const (
	// CancelledNow: the job is cancelled from now on.
	CancelledNow = iota + 1
	// CancelledBefore: an earlier CancelJob cancelled it (Job.CancelledAt).
	CancelledBefore
	// FinishedBefore: every task had ended before; nothing was written.
	FinishedBefore
)

// CancelJob cancels a job: from now on, a delivery that leases one of its
// tasks is told so (LeaseResult.Cancelled) and ends the task (failed,
// CANCELLED) instead of calling Gemini; tasks calling Gemini already finish
// as they are. It is idempotent (CancelledBefore), refuses a finished job
// (FinishedBefore, nothing written) and answers ErrNotFound for a job the
// store does not have. The returned job is read after the write.
func (s *Store) CancelJob(ctx context.Context, jobID string) (Job, int, error) {
	if !task.ValidJobID(jobID) {
		return Job{}, 0, ErrNotFound
	}
	vals, err := cancelJobScript.Run(ctx, s.rdb, []string{metaKey(jobID)}).Slice()
	if err != nil {
		return Job{}, 0, fmt.Errorf("store: cancel job script: %w", err)
	}
	code, _ := vals[0].(int64)
	if code == 0 {
		return Job{}, 0, ErrNotFound
	}
	j, err := s.GetJob(ctx, jobID)
	return j, int(code), err
}

// usageOf gathers the "usage:<tier>:<count>" fields of a job record.
func usageOf(m map[string]string) map[string]TierUsage {
	var out map[string]TierUsage
	for f, v := range m {
		rest, ok := strings.CutPrefix(f, "usage:")
		if !ok {
			continue
		}
		t, name, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		if out == nil {
			out = make(map[string]TierUsage)
		}
		u := out[t]
		switch name {
		case "tasks":
			u.Tasks = n
		case "input":
			u.Input = n
		case "cached":
			u.Cached = n
		case "output":
			u.Output = n
		case "thinking":
			u.Thinking = n
		}
		out[t] = u
	}
	return out
}

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// LeaseRequest says which delivery asks LeaseTask for a task's lease.
type LeaseRequest struct {
	// Holder identifies the delivery (required): the same string for every
	// attempt of one Pub/Sub message or one Cloud Task, e.g.
	// "pubsub/<message id>" or "cloudtasks/<task name>".
	Holder string
	// Attempt numbers the delivery's attempts (Pub/Sub's deliveryAttempt,
	// Cloud Tasks' retry count). A task held, or marked waiting, by an
	// earlier attempt of the same Holder is resumed by a later one at once
	// (LeaseResult.Resumed) instead of waiting out the lease: that attempt
	// died or gave up. Equal attempts (concurrent duplicates) do not resume.
	Attempt int
	// TTL is the lease's length; required (> 0).
	TTL time.Duration
	// Deferral is the deferral number the delivery carries (the envelope's
	// deferrals: 0 for a Pub/Sub message, n for the Cloud Task of deferral
	// n). A task waiting for another deferral is not leased before its
	// deadline (Awaiting).
	Deferral int
	// TakeoverOnly leases the task only when it is stale: running under an
	// expired lease, or waiting past its deadline; otherwise the answer is
	// NotStale (or AlreadyDone, HeldElsewhere). A task with no record is not
	// created (NotStale). For lease checks.
	TakeoverOnly bool
	// AdhocOnly refuses (Foreign) a task of a job created by ingest: a
	// malformed copy of one of its tasks cannot be the task itself (ingest
	// publishes only valid envelopes), so it must not settle it.
	AdhocOnly bool
	// Fingerprint identifies the request the delivery carries
	// (task.RequestFingerprint); empty: not checked. A delivery whose
	// fingerprint is not the one CreateJob recorded for the task
	// (NewJob.Fingerprints, compared on their first 16 characters) is
	// refused (Conflict), also before the task's first lease: a copy that
	// comes before the task's own message does not define the task. The
	// first lease that carries one records it in the task's record (where
	// CreateJob recorded none: a job created without them, or whose
	// fingerprints Redis lost, the first lease defines the task), and a
	// later delivery with another one is refused, whatever the task's
	// state: a copy of the task with the right key and job hash but
	// another request must never run in its place (nor be acknowledged as
	// a duplicate). The record lives until the task's answer leaves Redis.
	Fingerprint string
}

// Token is a lease: the holder and its fencing token. Every transition a
// holder makes is conditioned on it; once another lease was taken (a
// takeover, a resumed delivery) the old token is refused (Stale) and writes
// nothing.
type Token struct {
	Holder string
	Fence  string
}

// LeaseResult is LeaseTask's answer.
type LeaseResult struct {
	// Outcome: Applied (the caller holds the lease), AlreadyDone,
	// HeldElsewhere, Awaiting, NotStale or Foreign (nothing changed).
	Outcome Outcome
	// Token is the new lease (Applied only).
	Token Token
	// Previous is the task's state before the call (Queued for a task
	// never seen; Expired for a finished task whose record expired).
	// Calling means the previous holder may have reached Gemini.
	Previous State
	// Resumed (Applied only) is true when the lease passed from an earlier
	// attempt of the same delivery (LeaseRequest.Attempt).
	Resumed bool
	// Published (AlreadyDone only) is true when the terminal result was
	// marked published (MarkPublished), or its record has expired.
	Published bool
	// Deferral is the deferral number the task was last marked waiting for
	// (MarkWaitingFor), 0 if never. A new deferral must number beyond it,
	// unless the lease Resumed the delivery that marked it.
	Deferral int
	// WaitUntil is the waiting deadline (Awaiting; and for Applied, the
	// deadline of the wait this lease ended, zero if none).
	WaitUntil time.Time
	// LeaseUntil is when the live lease expires: the other holder's
	// (HeldElsewhere) or the caller's new one (Applied).
	LeaseUntil time.Time
	// Cancelled (Applied only) is true when the task's job was cancelled
	// (CancelJob): the holder must end the task, not call Gemini.
	Cancelled bool
}

// LeaseTask claims a task for one delivery and reports the state it found.
// Applied: the caller holds the lease (LeaseResult.Token) and may go on.
// AlreadyDone: the task is terminal. HeldElsewhere: another delivery's
// lease is live. Awaiting: the task waits for the Cloud Task of another
// deferral (LeaseResult.Deferral) until LeaseResult.WaitUntil; past that
// deadline any delivery takes it over. Foreign: the envelope is not one of
// its job's tasks (see Ref). Conflict: the request is not the task's (see
// LeaseRequest.Fingerprint). A task or job never seen is registered first
// (an ad-hoc job's Total grows by one), so user-published tasks show up in
// the job's counts and results.
func (s *Store) LeaseTask(ctx context.Context, r Ref, req LeaseRequest) (LeaseResult, error) {
	if err := r.check(); err != nil {
		return LeaseResult{}, err
	}
	if req.Holder == "" || req.TTL <= 0 || req.Deferral < 0 || req.Attempt < 0 {
		return LeaseResult{}, errors.New("store: lease task: empty holder, non-positive ttl, or negative deferral or attempt")
	}
	args := append(s.taskArgs(r, Token{Holder: req.Holder}), req.TTL.Milliseconds(), req.Deferral,
		flag(req.TakeoverOnly), req.Attempt, flag(req.AdhocOnly), rand.Text(), req.Fingerprint)
	vals, err := leaseTaskScript.Run(ctx, s.rdb, taskKeys(r), args...).Slice()
	if err != nil {
		return LeaseResult{}, fmt.Errorf("store: lease task script: %w", err)
	}
	if len(vals) != 9 {
		return LeaseResult{}, fmt.Errorf("store: lease task script: unexpected result %v", vals)
	}
	str := func(i int) string {
		switch v := vals[i].(type) {
		case string:
			return v
		case int64:
			return strconv.FormatInt(v, 10)
		}
		return ""
	}
	num := func(i int) int64 { n, _ := strconv.ParseInt(str(i), 10, 64); return n }
	code, _ := vals[0].(int64)
	res := LeaseResult{
		Outcome:    Outcome(code),
		Previous:   State(str(1)),
		Published:  str(2) == "1",
		Deferral:   int(num(3)),
		WaitUntil:  msTime(num(4)),
		LeaseUntil: msTime(num(5)),
		Resumed:    str(7) == "1",
	}
	if res.Outcome == Applied {
		res.Token = Token{Holder: req.Holder, Fence: str(6)}
		res.Cancelled = str(8) == "1"
	}
	if res.Previous == "" {
		res.Previous = Queued
	}
	if res.Outcome < Applied || (res.Outcome > Foreign && res.Outcome != Conflict) {
		return LeaseResult{}, fmt.Errorf("store: lease task script: unexpected result %d", code)
	}
	return res, nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// MarkCalling records that the holder of tok is about to call Gemini
// (write-ahead: a later holder then knows the call may have been made), and
// sets its lease to end lease from now, to cover the call: LeaseTask's
// lease needs to cover only the moments before it. Applied, AlreadyDone,
// Foreign, or Stale when tok is no longer the task's lease (nothing
// written: do not call).
func (s *Store) MarkCalling(ctx context.Context, r Ref, tok Token, lease time.Duration) (Outcome, error) {
	if lease <= 0 {
		return 0, errors.New("store: mark calling: non-positive lease")
	}
	return s.transition(ctx, "mark calling", callingScript, r, tok, lease.Milliseconds())
}

// MarkWaitingFor moves the task of tok's holder to Waiting for the Cloud
// Task of deferral number deferral (> 0), before that Cloud Task is created
// (write-ahead). Until the deadline until (its scheduled time plus a grace;
// compared with Redis's clock), LeaseTask answers Awaiting to every other
// delivery, so duplicates cost nothing, except to a later attempt of the
// same delivery (it resumes: the Cloud Task may never have been created);
// after it, any delivery may take the task over. Applied, AlreadyDone,
// Foreign, or Stale (nothing written: do not create the Cloud Task).
func (s *Store) MarkWaitingFor(ctx context.Context, r Ref, tok Token, deferral int, until time.Time) (Outcome, error) {
	if deferral <= 0 {
		return 0, fmt.Errorf("store: mark waiting: deferral %d is not positive", deferral)
	}
	if until.IsZero() {
		return 0, errors.New("store: mark waiting: no deadline")
	}
	return s.transition(ctx, "mark waiting", waitScript, r, tok, strconv.Itoa(deferral),
		strconv.FormatInt(max(until.UnixMilli(), 1), 10))
}

// MarkPublished records that a terminal task's result was published to the
// results topic; LeaseTask then reports Published with AlreadyDone, and
// Result and ResultsPage set Record.Published. With Options.BodyGrace, the
// task's record then expires after the grace, leaving its compact terminal
// record (see the package doc). Call it only after the publish succeeded:
// the answer leaves Redis only once it is on its way to the archive.
// ErrNotFound when the task has no record (never seen, or expired); an
// error when it is not terminal.
func (s *Store) MarkPublished(ctx context.Context, r Ref) error {
	if err := r.check(); err != nil {
		return err
	}
	keys := []string{tasksKey(r.JobID), doneKey(r.JobID), taskKey(r.JobID, r.TaskID)}
	n, err := publishedScript.Run(ctx, s.rdb, keys, r.TaskID, s.grace.Milliseconds()).Int64()
	if err != nil {
		return fmt.Errorf("store: mark published script: %w", err)
	}
	switch n {
	case 0:
		return ErrNotFound
	case -1:
		return errors.New("store: mark published: task is not terminal")
	}
	return nil
}

// ReleaseLease gives up tok's lease: a task running, calling, or waiting by
// tok's own mark (its Cloud Task could not be created) goes back to Queued,
// e.g. before answering non-2xx so the message is redelivered. Applied,
// AlreadyDone, Foreign, or Stale (another lease was taken since; nothing
// changed).
func (s *Store) ReleaseLease(ctx context.Context, r Ref, tok Token) (Outcome, error) {
	return s.transition(ctx, "release lease", releaseScript, r, tok)
}

// Complete records a task's response (the GenerateContentResponse JSON) and
// moves it to Succeeded, exactly once and only for the current lease:
// Applied for the lease that wrote it (also when called again with the same
// token, e.g. a retry after a lost reply); AlreadyDone (nothing written)
// when another lease made the task terminal; Stale (nothing written) when
// another lease was taken since tok's, whose holder settles the task
// instead.
func (s *Store) Complete(ctx context.Context, r Ref, tok Token, response []byte) (Outcome, error) {
	return s.finish(ctx, "complete", r, tok, Succeeded, "response", response)
}

// CompleteWithUsage is Complete that also adds the call's token usage to
// the job's sums for u.Tier, in the same script as the terminal write: the
// sums grow exactly once per task, whatever is retried.
func (s *Store) CompleteWithUsage(ctx context.Context, r Ref, tok Token, response []byte, u Usage) (Outcome, error) {
	if !validTierName(u.Tier) || u.Asked != "" && !validTierName(u.Asked) {
		return 0, fmt.Errorf("store: complete: invalid service tier %q (asked %q)", u.Tier, u.Asked)
	}
	var downgrade string
	if u.Asked != "" && u.Asked != u.Tier {
		downgrade = u.Asked + ">" + u.Tier
	}
	return s.finish(ctx, "complete", r, tok, Succeeded, "response", response,
		u.Tier, u.Input, u.Cached, u.Output, u.Thinking, downgrade)
}

// Usage is one call's tokens (usageMetadata) and the tier they are billed at.
type Usage struct {
	// Tier is the service tier that served the call (billed); Asked the
	// one asked for ("" when unknown: no downgrade is recorded).
	Tier, Asked string
	// Input is promptTokenCount (cached tokens included), Cached
	// cachedContentTokenCount, Output candidatesTokenCount, Thinking
	// thoughtsTokenCount.
	Input, Cached, Output, Thinking int64
}

// TierUsage is a job's token sums at one service tier.
type TierUsage struct {
	// Tasks is the number of tasks that succeeded at the tier.
	Tasks                           int64
	Input, Cached, Output, Thinking int64
}

// validTierName: 1 to 32 of [a-z_], as tier names are used in hash fields.
func validTierName(t string) bool {
	if t == "" || len(t) > 32 {
		return false
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; (c < 'a' || c > 'z') && c != '_' {
			return false
		}
	}
	return true
}

// Fail records a task's terminal error (JSON, e.g. {"code":400,
// "message":"…","status":"INVALID_ARGUMENT"}) and moves it to Failed,
// exactly once, like Complete.
func (s *Store) Fail(ctx context.Context, r Ref, tok Token, errJSON []byte) (Outcome, error) {
	return s.finish(ctx, "fail", r, tok, Failed, "error", errJSON)
}

func (s *Store) finish(ctx context.Context, op string, r Ref, tok Token, st State, field string, payload []byte, usage ...any) (Outcome, error) {
	if !json.Valid(payload) {
		return 0, fmt.Errorf("store: %s: %s is not valid JSON", op, field)
	}
	return s.transition(ctx, op, finishScript, r, tok, append([]any{string(st), field, payload}, usage...)...)
}

// taskArgs are ARGV[1..10] of every transition script.
func (s *Store) taskArgs(r Ref, tok Token) []any {
	var created int64
	if !r.JobCreated.IsZero() {
		created = max(r.JobCreated.UnixMilli(), 0)
	}
	return []any{s.ttlMS(), r.JobID, r.TaskID, r.Key, r.Model, r.JobHash, r.JobTotal, tok.Holder, tok.Fence, created}
}

func (s *Store) transition(ctx context.Context, op string, script *redis.Script, r Ref, tok Token, extra ...any) (Outcome, error) {
	if err := r.check(); err != nil {
		return 0, err
	}
	if tok.Holder == "" {
		return 0, fmt.Errorf("store: %s: empty holder", op)
	}
	args := append(s.taskArgs(r, tok), extra...)
	n, err := script.Run(ctx, s.rdb, taskKeys(r), args...).Int64()
	if err != nil {
		return 0, fmt.Errorf("store: %s script: %w", op, err)
	}
	switch o := Outcome(n); o {
	case Applied, AlreadyDone, Foreign, Stale:
		return o, nil
	}
	return 0, fmt.Errorf("store: %s script: unexpected result %d", op, n)
}

// Restored is a task's result found in the results archive.
type Restored struct {
	TaskID string // task.TaskID of the job and the result's key
	Failed bool   // an error result (failed or dead-lettered)
}

// RestoreArchived records tasks of a job whose record Redis lost as
// finished, from their results in the archive (internal/archive): a task
// not finished here gets the compact terminal record a published result
// leaves, and the job's counters move, so the job's counts include what
// finished before the loss and a later delivery of such a task is a
// duplicate (AlreadyDone, published), never a second run. A task holding a
// lease or a waiting mark taken since the loss is finished all the same
// (its holder's writes are then refused): its result exists. Tasks finished
// here already are left alone. It returns how many tasks it recorded; 0 for
// a job without a record. Safe to call again with the same tasks.
func (s *Store) RestoreArchived(ctx context.Context, jobID string, rs []Restored) (int, error) {
	if !task.ValidJobID(jobID) {
		return 0, fmt.Errorf("store: restore: invalid job id %q", jobID)
	}
	total := 0
	for start := 0; start < len(rs); start += createChunk {
		chunk := rs[start:min(start+createChunk, len(rs))]
		keys := []string{metaKey(jobID), tasksKey(jobID), doneKey(jobID), failedKey(jobID), fpsKey(jobID)}
		args := []any{s.ttlMS()}
		for _, r := range chunk {
			if !task.ValidTaskID(r.TaskID) {
				return total, fmt.Errorf("store: restore: invalid task id %q", r.TaskID)
			}
			st := Succeeded
			if r.Failed {
				st = Failed
			}
			keys = append(keys, taskKey(jobID, r.TaskID))
			args = append(args, r.TaskID, string(st))
		}
		n, err := restoreScript.Run(ctx, s.rdb, keys, args...).Int()
		if err != nil {
			return total, fmt.Errorf("store: restore script: %w", err)
		}
		total += n
	}
	return total, nil
}

// Result returns the task with the given key in a job, whatever its state,
// or ErrNotFound when the job has no such task.
func (s *Store) Result(ctx context.Context, jobID, key string) (Record, error) {
	if !task.ValidJobID(jobID) || task.ValidateKey(key) != nil {
		return Record{}, ErrNotFound
	}
	id := task.TaskID(jobID, key)
	vals, err := resultScript.Run(ctx, s.rdb, []string{tasksKey(jobID), taskKey(jobID, id), doneKey(jobID), failedKey(jobID)}, id).Slice()
	if err != nil {
		if errors.Is(err, redis.Nil) {
			return Record{}, ErrNotFound
		}
		return Record{}, fmt.Errorf("store: result script: %w", err)
	}
	rec := record(id, vals)
	if rec.Key == "" {
		rec.Key = key
	}
	return rec, nil
}

// record turns {key, state, response, error, finished_ms, seq, published,
// archived, downgrade} into a Record.
func record(id string, v []any) Record {
	str := func(i int) string {
		if i < len(v) {
			if s, ok := v[i].(string); ok {
				return s
			}
		}
		return ""
	}
	raw := func(i int) json.RawMessage {
		if s := str(i); s != "" {
			return json.RawMessage(s)
		}
		return nil
	}
	fin, _ := strconv.ParseInt(str(4), 10, 64)
	seq, _ := strconv.ParseInt(str(5), 10, 64)
	st := State(str(1))
	if st == "" {
		st = Queued
	}
	rec := Record{Key: str(0), TaskID: id, State: st, Response: raw(2), Error: raw(3), FinishedAt: msTime(fin), Seq: seq,
		Published: str(6) == "1", Archived: str(7) == "1"}
	if asked, served, ok := strings.Cut(str(8), ">"); ok {
		rec.Downgrade = &Downgrade{Asked: asked, Served: served}
	}
	return rec
}

// ResultsPage returns up to limit finished tasks of a job in finish order,
// starting after sequence number after (0 for the start), and the after to
// pass next time (equal to after when there was nothing new). Order is
// stable: tasks finishing later are appended. A finished task whose record
// left Redis (Record.Archived) comes with its state and task id but no key
// and no answer: read those from the results archive.
func (s *Store) ResultsPage(ctx context.Context, jobID string, after int64, limit int) ([]Record, int64, error) {
	if !task.ValidJobID(jobID) {
		return nil, after, ErrNotFound
	}
	if limit <= 0 {
		limit = 100
	}
	ids, err := pageScript.Run(ctx, s.rdb, []string{doneKey(jobID)}, after, limit).StringSlice()
	if err != nil {
		return nil, after, fmt.Errorf("store: results page script: %w", err)
	}
	if len(ids) == 0 {
		return nil, after, nil
	}
	keys := make([]string, 1, 1+len(ids)/2)
	keys[0] = failedKey(jobID)
	args := make([]any, 0, len(ids)/2)
	for i := 0; i+1 < len(ids); i += 2 {
		keys = append(keys, taskKey(jobID, ids[i]))
		args = append(args, ids[i])
	}
	rows, err := readTasksScript.Run(ctx, s.rdb, keys, args...).Slice()
	if err != nil {
		return nil, after, fmt.Errorf("store: read tasks script: %w", err)
	}
	recs := make([]Record, 0, len(keys))
	next := after
	for i, row := range rows {
		seq, _ := strconv.ParseInt(ids[2*i+1], 10, 64)
		next = max(next, seq)
		fields, _ := row.([]any)
		rec := record(ids[2*i], fields)
		rec.Seq = seq
		recs = append(recs, rec)
	}
	return recs, next, nil
}

// Results iterates over a job's finished tasks in finish order, reading
// pageSize records at a time (100 when pageSize <= 0), until none are left.
// It stops at the first error, which it yields.
func (s *Store) Results(ctx context.Context, jobID string, pageSize int) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		var after int64
		for {
			recs, next, err := s.ResultsPage(ctx, jobID, after, pageSize)
			if err != nil {
				yield(Record{}, err)
				return
			}
			for _, r := range recs {
				if !yield(r, nil) {
					return
				}
			}
			if next == after {
				return
			}
			after = next
		}
	}
}
