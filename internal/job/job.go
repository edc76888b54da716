// Package job holds the rules that turn a submission into a gemq job: the
// body's two formats (a JSON object with "requests", or a Batch API JSONL
// file), the job-level defaults (system instruction, generation config),
// the model's resolution against the allow-list, the validation of every
// request with the exact place of its first problem, the task envelopes and
// the job's content hash. It knows nothing of HTTP: a refusal is an *Error
// whose Kind the caller maps to its own status.
//
// Build checks the whole submission before it returns anything, so a
// refused job has produced no task.
package job

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/task"
)

// Kind classifies an Error by what the submitter can do about it.
type Kind int

// The kinds of Error.
const (
	// Invalid is input that will never be accepted as it is.
	Invalid Kind = iota + 1
	// TooLarge is a request whose task message would exceed what a task
	// message can carry (task.MaxPublishBytes).
	TooLarge
	// Unavailable is a failure to look up what validation needs (the
	// model's input limit): the same submission may succeed later.
	Unavailable
)

// Error is a refused submission.
type Error struct {
	// Kind classifies the refusal.
	Kind Kind
	// Field is the JSON path of the offending input ("requests[3].request.contents",
	// or for JSONL the path within the line); a parameter is named by its
	// name ("model", "system_instruction").
	Field string
	// Line is the 1-based JSONL line; 0 for a JSON body.
	Line int
	// Key is the request key concerned, when there is one.
	Key string
	// Reason is a short classification free of input, fit for logs.
	Reason string
	// Message says what is wrong and where, for the submitter.
	Message string
}

// Error returns Message.
func (e *Error) Error() string { return e.Message }

func invalid(field, reason, msg string) *Error {
	return &Error{Kind: Invalid, Field: field, Reason: reason, Message: msg}
}

// IDRule describes valid job ids (task.ValidJobID), for messages.
const IDRule = "job_id must be 1 to 64 characters of A-Z a-z 0-9 _ -"

// InputLimits gives a model's input token limit (0: none known) and what
// the limit is, for messages.
type InputLimits interface {
	InputTokenLimit(ctx context.Context, model string) (limit int64, what string, err error)
}

// Rules are the settings a job is built under. The zero value allows no
// model.
type Rules struct {
	// Allowed is the set of models accepted; empty allows none.
	Allowed []string
	// DefaultModel is used when a job names none; "" makes model required.
	DefaultModel string
	// MaxRequests caps the requests of one job; 0 or less: no cap.
	MaxRequests int
	// Limits gives per-model input token limits; nil: not checked.
	Limits InputLimits
	// NewID returns a fresh job id for a job submitted without one; nil
	// means RandomID.
	NewID func() string
	// Now is the clock that deadlines are judged by; nil means time.Now.
	Now func() time.Time
	// PerMinute gives the requests per minute a model may make, for
	// service_tier auto's estimate; nil or 0: unknown (no wait assumed).
	PerMinute func(model string) int64
}

// Job is a validated submission, ready to store and publish.
type Job struct {
	// ID is the job id, given or from Rules.NewID.
	ID string
	// Model is the bare model id every task calls.
	Model string
	// Hash is the hex SHA-256 of the job id, the model and every task
	// envelope in order (before task.WithJob): equal for equal
	// submissions, the idempotency check's key.
	Hash string
	// Tasks are the job's tasks in submission order.
	Tasks []Task
	// Tiers are the service tier asked for, the one every task calls at
	// (auto resolved) and why, and the deadline (zero: none).
	Tiers Tiers
}

// Task is one encoded task envelope.
type Task struct {
	// ID is task.TaskID(job id, key).
	ID string
	// Data is the envelope (task.Encode, then task.WithJob with the job's
	// hash and size), within task.MaxPublishBytes also once Stamp added
	// the job's creation time.
	Data []byte
	// Fingerprint is task.RequestFingerprint of the task's model and
	// request, as the worker computes it from Data.
	Fingerprint string
}

// Fingerprints returns the tasks' fingerprints in order.
func (j *Job) Fingerprints() []string {
	out := make([]string, len(j.Tasks))
	for i, t := range j.Tasks {
		out[i] = t.Fingerprint
	}
	return out
}

// Stamp adds the job's creation time (its record's, once stored) to every
// task envelope (task.WithCreated), so a worker that finds the record lost
// re-creates it with that time. Build kept the room for it.
func (j *Job) Stamp(created time.Time) {
	for i := range j.Tasks {
		j.Tasks[i].Data = task.WithCreated(j.Tasks[i].Data, created)
	}
}

// Build parses body in format f with the parameters p given beside it and
// builds the job: it returns the job, or an *Error for the first problem
// found.
func (r Rules) Build(ctx context.Context, f Format, body []byte, p Params) (*Job, error) {
	spec, err := r.parse(f, body, p)
	if err != nil {
		return nil, err
	}
	return r.build(ctx, spec)
}

// build validates every value of spec and encodes the task envelopes.
func (r Rules) build(ctx context.Context, spec spec) (*Job, error) {
	j := &Job{ID: spec.jobID}
	switch {
	case j.ID == "" && r.NewID != nil:
		j.ID = r.NewID()
	case j.ID == "":
		j.ID = RandomID()
	case !task.ValidJobID(j.ID):
		return nil, invalid("job_id", "job_id", IDRule)
	}
	model, err := r.model(spec.model)
	if err != nil {
		return nil, err
	}
	j.Model = model
	if err := checkDefaults(spec.sys, spec.gen); err != nil {
		return nil, err
	}
	tiers, terr := r.tiers(spec)
	if terr != nil {
		return nil, terr
	}
	j.Tiers = tiers
	if len(spec.items) == 0 {
		return nil, invalid("requests", "empty_job", "the job has no requests: give at least one {\"key\": ..., \"request\": {...}}")
	}
	var limit int64
	var limitWhat string
	if r.Limits != nil {
		l, what, err := r.Limits.InputTokenLimit(ctx, model)
		if err != nil {
			return nil, &Error{Kind: Unavailable, Reason: "model_info", Message: "looking up the model's input limit failed; retry later"}
		}
		limit, limitWhat = l, what
	}
	j.Tasks = make([]Task, len(spec.items))
	valid, keyErr := checkKeys(j.ID, spec.items, j.Tasks)
	if err := buildEnvelopes(spec.items[:valid], j.Tasks, func(it located) ([]byte, string, *Error) {
		return it.envelope(j.ID, model, spec, tiers, limit, limitWhat)
	}); err != nil {
		return nil, err
	}
	if keyErr != nil {
		return nil, keyErr
	}
	h := sha256.New()
	fmt.Fprintf(h, "gemq-job-v1\x00%s\x00%s\x00", j.ID, model)
	for _, t := range j.Tasks {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(t.Data)))
		h.Write(n[:])
		h.Write(t.Data)
	}
	j.Hash = hex.EncodeToString(h.Sum(nil))
	if err := r.resolveAuto(j); err != nil {
		return nil, err
	}
	// Every task names its job's hash and size, so a worker that finds the
	// job's record missing knows it was lost rather than never created;
	// Stamp adds the creation time once the record exists.
	for i := range j.Tasks {
		j.Tasks[i].Data = task.WithJob(j.Tasks[i].Data, j.Hash, len(j.Tasks))
		if len(j.Tasks[i].Data)+task.JobCreatedBytes > task.MaxPublishBytes {
			return nil, spec.items[i].tooLarge()
		}
	}
	return j, nil
}

// checkKeys sets every task's id and checks the items' keys in order: it
// returns how many items come before the first key error (all of them when
// there is none) and that error.
func checkKeys(jobID string, items []located, tasks []Task) (int, *Error) {
	seen := make(map[string]int, len(items))
	for i, it := range items {
		id := task.TaskID(jobID, it.Key)
		if err := it.checkKey(id, seen, items); err != nil {
			return i, err
		}
		seen[id] = i
		tasks[i].ID = id
	}
	return len(items), nil
}

// buildEnvelopes sets each task's envelope and fingerprint from its item
// (build), spread over the cores the process may use: the items are
// independent, and validating and encoding them is most of a job's
// submission time. It returns the error of the first item in order that has
// one, as one loop over them would.
func buildEnvelopes(items []located, tasks []Task, build func(located) ([]byte, string, *Error)) *Error {
	workers := min(runtime.GOMAXPROCS(0), max(len(items)/256, 1))
	chunk := (len(items) + workers - 1) / workers
	errs := make([]*Error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w * chunk; i < min((w+1)*chunk, len(items)); i++ {
				data, fp, err := build(items[i])
				if err != nil {
					errs[w] = err
					return
				}
				tasks[i].Data, tasks[i].Fingerprint = data, fp
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// checkKey validates the item's key and refuses a second use of its task
// id (seen maps the ids so far to their item's index in items).
func (it located) checkKey(id string, seen map[string]int, items []located) *Error {
	keyErr := func(msg string, args ...any) *Error {
		return &Error{Kind: Invalid, Field: it.prefix + "key", Line: it.line, Reason: "key", Message: it.at("key", fmt.Sprintf(msg, args...))}
	}
	if err := task.ValidateKey(it.Key); err != nil {
		var ve *task.ValidationError
		if errors.As(err, &ve) {
			return keyErr("%s", ve.Message)
		}
		return keyErr("invalid")
	}
	if first, dup := seen[id]; dup {
		e := keyErr("duplicate key %q (first used by %s)", it.Key, items[first].where())
		e.Key = it.Key
		return e
	}
	return nil
}

// envelope validates the item's request with the job's defaults applied
// and returns its task envelope (without the job's hash and size) and the
// request's fingerprint.
func (it located) envelope(jobID, model string, spec spec, tiers Tiers, limit int64, limitWhat string) ([]byte, string, *Error) {
	raw, err := it.request(spec.sys, spec.gen)
	if err != nil {
		return nil, "", err
	}
	req, perr := gemini.ParseRequest(raw)
	if perr == nil {
		perr = req.Validate()
	}
	if perr != nil {
		var fe *gemini.FieldError
		if errors.As(perr, &fe) {
			return nil, "", it.requestErr(fe.Field, fe.Message)
		}
		return nil, "", it.requestErr("request", perr.Error())
	}
	if limit > 0 {
		if n := gemini.EstimateInputTokens(req); n > limit {
			return nil, "", it.requestErr("request.contents", fmt.Sprintf("the prompt is about %d input tokens, over the limit of %d for model %s (%s)", n, limit, model, limitWhat))
		}
	}
	data, eerr := task.Encode(task.Envelope{V: task.Version, JobID: jobID, Key: it.Key, Model: model, Request: raw,
		ServiceTier: tiers.envelopeTier(), Deadline: tiers.deadlineText()})
	if eerr == nil {
		eerr = task.CheckPublishSize(data)
	}
	if eerr != nil {
		if errors.Is(eerr, task.ErrTooLarge) {
			return nil, "", it.tooLarge()
		}
		var ve *task.ValidationError
		if errors.As(eerr, &ve) && ve.Field != "" {
			return nil, "", it.requestErr(ve.Field, ve.Message)
		}
		return nil, "", it.requestErr("request", eerr.Error())
	}
	return data, task.RequestFingerprint(model, raw), nil
}

// requestErr is an Invalid error about field (relative to the item) of the
// item's request.
func (it located) requestErr(field, msg string) *Error {
	return &Error{Kind: Invalid, Field: it.prefix + field, Line: it.line, Key: it.Key, Reason: "request", Message: it.at(field, msg)}
}

// tooLarge is the error for an item whose task would not fit a message.
func (it located) tooLarge() *Error {
	return &Error{Kind: TooLarge, Field: it.prefix + "request", Line: it.line, Key: it.Key, Reason: "task_too_large",
		Message: it.at("request", fmt.Sprintf("the task for key %q would be larger than the %d bytes a task message can carry through Pub/Sub push and Cloud Tasks; shrink the request (e.g. fileData URIs instead of inline data)", it.Key, task.MaxPublishBytes))}
}

// model resolves and checks the job's model: given, or the default; a
// "models/" prefix is dropped; it must be allowed.
func (r Rules) model(m string) (string, *Error) {
	if m == "" {
		m = r.DefaultModel
	}
	if m == "" {
		return "", invalid("model", "model", "model is required (e.g. \"gemini-2.5-flash\"); allowed: "+strings.Join(r.Allowed, ", "))
	}
	id, err := gemini.ModelID(m)
	if err != nil || !task.ValidModel(id) {
		return "", invalid("model", "model", "model must be a model id such as gemini-2.5-flash")
	}
	if !slices.Contains(r.Allowed, id) {
		return "", invalid("model", "model", fmt.Sprintf("model %s is unknown or not allowed here; allowed: %s", id, strings.Join(r.Allowed, ", ")))
	}
	return id, nil
}

// RandomID returns a fresh job id: "job-" and 24 random hex digits.
func RandomID() string {
	var b [12]byte
	rand.Read(b[:])
	return "job-" + hex.EncodeToString(b[:])
}
