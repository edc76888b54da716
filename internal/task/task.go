// Package task defines the versioned task envelope: the JSON document that
// carries one Gemini request through gemq, as the data of a Pub/Sub message
// (published by ingest, or by users themselves) and as the body of a Cloud
// Task (when the worker defers it until its quota slot).
//
// The envelope, version 1:
//
//	{
//	  "v": 1,                          required, always 1
//	  "job_id": "nightly_2024-06-01",  optional, [A-Za-z0-9_-]{1,64}; absent: derived from the content ("adhoc-…")
//	  "key": "req-42",                 required, any UTF-8 string of 1..1024 bytes (the Batch API's key)
//	  "model": "gemini-2.5-flash",     required, [A-Za-z0-9._-]{1,128}
//	  "request": {…},                  required, a Gemini REST GenerateContentRequest (JSON object)
//	  "task_id": "…",                  optional, must equal TaskID(job_id, key) when present
//	  "attempt": 0,                    optional, transient failures so far (0..1000)
//	  "deferrals": 0,                  optional, Cloud Tasks deferrals so far (0..1000)
//	  "permit": {…},                   optional, the limiter permit reserved for this task (set by the worker)
//	  "job_hash": "…",                 optional, set by ingest: the job's content hash ([A-Za-z0-9_-]{1,128})
//	  "job_total": 200,                with job_hash: the job's number of tasks
//	  "job_created": "2026-12-03T04:08:38.123Z"  optional, with job_hash: the job's creation (RFC 3339, 2000 to 9999)
//	  "service_tier": "flex",          optional: standard (default), flex, priority, batch, or auto with a deadline
//	  "deadline": "2026-12-03T06:00:00Z" optional, RFC 3339: required with auto; flex sheds stop at it
//	}
//
// Decoding is strict: unknown or case-variant field names, duplicate fields,
// trailing data, invalid UTF-8, a wrong version and envelopes over
// MaxEnvelopeBytes are all rejected with a *ValidationError naming the field.
//
// Identifiers: job ids are restricted so they can sit inside Redis hash tags,
// log lines and Cloud Task names unchanged. Keys are arbitrary user strings,
// so they are never used in names: TaskID hashes (job id, key) into a
// fixed-alphabet id that is used instead, and the key travels only as data.
package task

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gemq-dev/gemq/internal/tier"
)

// Version is the envelope version this package reads and writes.
const Version = 1

// Size limits. The binding constraint end to end is Cloud Tasks: a task,
// headers and name included, is at most 1 MB (Pub/Sub allows 10 MB per
// message, and a push delivery's base64 makes 1 MB about 1.34 MB, well under).
const (
	// MaxEnvelopeBytes caps an encoded envelope anywhere: Encode and Decode
	// refuse larger ones. It leaves 100 kB of the Cloud Tasks megabyte for
	// the HTTP headers, the OIDC token and the task name.
	MaxEnvelopeBytes = 900_000

	// ReserveBytes is the room kept for what the worker adds to an envelope
	// after it was published (permit, task id, attempt and deferral counts).
	ReserveBytes = 4_096

	// MaxPublishBytes caps an envelope as first published (by ingest or a
	// user): MaxEnvelopeBytes minus ReserveBytes, so a deferral always fits.
	MaxPublishBytes = MaxEnvelopeBytes - ReserveBytes

	// MaxKeyBytes caps a request key.
	MaxKeyBytes = 1024

	// MaxCount caps the attempt and deferral counters.
	MaxCount = 1000

	// MaxJobTasks caps an envelope's job_total.
	MaxJobTasks = 100_000_000
)

// AdhocPrefix starts the job id derived for an envelope published without one.
const AdhocPrefix = "adhoc-"

// ErrTooLarge is wrapped by the *ValidationError for an envelope over the
// size limit, so callers can answer 413 rather than 400.
var ErrTooLarge = errors.New("envelope too large")

// ValidationError reports one invalid envelope. Field is the JSON field name
// ("job_id", "request", "permit.scope", …), or empty when the problem is the
// document as a whole (syntax, size, encoding).
type ValidationError struct {
	Field   string
	Message string
	Err     error // optional cause, e.g. ErrTooLarge
}

// Error implements error.
func (e *ValidationError) Error() string {
	if e.Field == "" {
		return "task envelope: " + e.Message
	}
	return "task envelope: field " + e.Field + ": " + e.Message
}

// Unwrap returns the cause, if any.
func (e *ValidationError) Unwrap() error { return e.Err }

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Envelope is one task. The zero value is not valid; build one with the
// fields below and check it with Validate (Encode does).
type Envelope struct {
	// V is the envelope version; always Version.
	V int `json:"v"`
	// JobID groups tasks; see ValidJobID. Decode fills it in (DeriveJobID)
	// when the message has none.
	JobID string `json:"job_id,omitempty"`
	// Key is the caller's name for this request, unique within the job
	// (the Batch API's "key"). Data only: never used inside a name.
	Key string `json:"key"`
	// Model is the Gemini model id, e.g. "gemini-2.5-flash"; see ValidModel.
	Model string `json:"model"`
	// Request is the GenerateContentRequest as REST JSON. This package only
	// checks that it is a JSON object; internal/gemini parses it strictly.
	Request json.RawMessage `json:"request"`
	// TaskID is TaskID(JobID, Key). Optional on the wire; Decode fills it in
	// and rejects a value that differs.
	TaskID string `json:"task_id,omitempty"`
	// Attempt counts transient failures so far (not deferrals).
	Attempt int `json:"attempt,omitempty"`
	// Deferrals counts the times the worker deferred the task through Cloud
	// Tasks (quota reservations, back-offs); it numbers Cloud Task names.
	Deferrals int `json:"deferrals,omitempty"`
	// Permit is the limiter permit reserved for this task (limiter.Permit
	// JSON), set by the worker when it defers the task; absent otherwise.
	Permit json.RawMessage `json:"permit,omitempty"`
	// JobHash is the content hash of the job ingest created the task for
	// (set by ingest; absent on user-published tasks). With it, a task joins
	// only that job, and a job record found missing is known to be lost.
	JobHash string `json:"job_hash,omitempty"`
	// JobTotal is that job's number of tasks (set by ingest with JobHash).
	JobTotal int `json:"job_total,omitempty"`
	// JobCreated, RFC 3339, is when that job was created (set by ingest
	// with JobHash, from the job's record), so a worker that finds the
	// job's record lost re-creates it with its true creation time.
	// Optional: envelopes published before ingest wrote it have none.
	JobCreated string `json:"job_created,omitempty"`
	// ServiceTier is the Gemini service tier to call at (internal/tier):
	// "" or "standard", "flex", "priority", "batch" (the Batch API), or
	// "auto" (with Deadline: the worker picks batch, flex or standard).
	// Ingest writes the tier it resolved.
	ServiceTier string `json:"service_tier,omitempty"`
	// Deadline, RFC 3339, is when the task must be done by: required with
	// auto; a flex task shed by Gemini is deferred again only until then,
	// and a batch entry that failed falls back to the interactive path only
	// before it.
	Deadline string `json:"deadline,omitempty"`
}

// JobCreatedTime is JobCreated parsed; the zero time when there is none
// (or it does not parse, which Validate refuses).
func (e *Envelope) JobCreatedTime() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, e.JobCreated)
	return t
}

// DeadlineTime is Deadline parsed; the zero time when there is none (or it
// does not parse, which Validate refuses).
func (e *Envelope) DeadlineTime() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, e.Deadline)
	return t
}

// TaskID returns the task id for a key within a job: 32 lowercase hex
// digits of SHA-256(jobID, 0x00, key). It is deterministic, so a redelivered
// or republished message maps to the same task, and it is safe in Redis keys,
// log lines and Cloud Task names whatever the key contains.
func TaskID(jobID, key string) string {
	h := sha256.New()
	io.WriteString(h, jobID)
	h.Write([]byte{0})
	io.WriteString(h, key)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// DeriveJobID returns the job id given to an envelope published without
// one: AdhocPrefix followed by 20 hex digits of SHA-256 over the model, key
// and request. Republishing the same message therefore hits the same task
// (and is not run twice), while different messages are separate jobs.
func DeriveJobID(model, key string, request []byte) string {
	h := sha256.New()
	io.WriteString(h, model)
	h.Write([]byte{0})
	io.WriteString(h, key)
	h.Write([]byte{0})
	h.Write(request)
	return AdhocPrefix + hex.EncodeToString(h.Sum(nil)[:10])
}

// ValidJobID reports whether id is a valid job id: 1 to 64 characters of
// [A-Za-z0-9_-].
func ValidJobID(id string) bool { return validName(id, 64, false) }

// ValidModel reports whether m is a valid model id: 1 to 128 characters of
// [A-Za-z0-9._-] (so "models/…" prefixes must be stripped by the caller).
func ValidModel(m string) bool { return validName(m, 128, true) }

// ValidTaskID reports whether id has the form TaskID returns.
func ValidTaskID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func validName(s string, max int, dot bool) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		case c == '.' && dot:
		default:
			return false
		}
	}
	return true
}

// ValidateKey checks a request key: non-empty valid UTF-8 of at most
// MaxKeyBytes bytes. The error (nil when valid) names the field "key".
func ValidateKey(key string) error {
	switch {
	case key == "":
		return invalid("key", "required")
	case len(key) > MaxKeyBytes:
		return invalid("key", "%d bytes, over the limit of %d", len(key), MaxKeyBytes)
	case !utf8.ValidString(key):
		return invalid("key", "not valid UTF-8")
	}
	return nil
}

// Validate checks every field of e, including that JobID and TaskID are set
// and agree (call Normalize first for an envelope still missing them). It
// returns a *ValidationError for the first problem found, or nil.
func (e *Envelope) Validate() error { return e.validate(true) }

// validate is Validate; with syntax false it leaves out the check that the
// request and the permit are well-formed JSON (their first byte is still
// checked), for Encode, whose json.Marshal checks that as it compacts them.
func (e *Envelope) validate(syntax bool) error {
	if e.V != Version {
		return invalid("v", "unsupported version %d (want %d)", e.V, Version)
	}
	if !ValidJobID(e.JobID) {
		return invalid("job_id", "must be 1 to 64 characters of A-Z a-z 0-9 _ -")
	}
	if err := ValidateKey(e.Key); err != nil {
		return err
	}
	if !ValidModel(e.Model) {
		return invalid("model", "must be a model id of 1 to 128 characters of A-Z a-z 0-9 . _ - (e.g. gemini-2.5-flash)")
	}
	if err := checkObject("request", e.Request, true, syntax); err != nil {
		return err
	}
	if want := TaskID(e.JobID, e.Key); e.TaskID != want {
		return invalid("task_id", "does not match job_id and key (want %s)", want)
	}
	if e.Attempt < 0 || e.Attempt > MaxCount {
		return invalid("attempt", "must be 0 to %d", MaxCount)
	}
	if e.Deferrals < 0 || e.Deferrals > MaxCount {
		return invalid("deferrals", "must be 0 to %d", MaxCount)
	}
	if len(e.JobHash) > 128 || !validName(e.JobHash, 128, false) && e.JobHash != "" {
		return invalid("job_hash", "must be up to 128 characters of A-Z a-z 0-9 _ - (set by ingest)")
	}
	if e.JobTotal < 0 || e.JobTotal > MaxJobTasks || (e.JobTotal == 0) != (e.JobHash == "") {
		return invalid("job_total", "must be 1 to %d together with job_hash, and absent without it", MaxJobTasks)
	}
	if e.JobCreated != "" {
		t, err := time.Parse(time.RFC3339Nano, e.JobCreated)
		switch {
		case e.JobHash == "":
			return invalid("job_created", "only together with job_hash (set by ingest)")
		case len(e.JobCreated) > 64 || err != nil || t.Before(minJobCreated) || !t.Before(maxJobCreated):
			return invalid("job_created", "must be an RFC 3339 time from the year 2000 to 9999, got %.64q", e.JobCreated)
		}
	}
	if _, err := tier.Parse(e.ServiceTier); err != nil {
		return invalid("service_tier", "%s", err.Error())
	}
	if e.Deadline != "" {
		if _, err := time.Parse(time.RFC3339Nano, e.Deadline); err != nil {
			return invalid("deadline", "must be an RFC 3339 time such as 2026-12-03T06:00:00Z, got %.64q", e.Deadline)
		}
	} else if tier.Tier(e.ServiceTier) == tier.Auto {
		return invalid("deadline", "required with service_tier auto (an RFC 3339 time such as 2026-12-03T06:00:00Z)")
	}
	return checkObject("permit", e.Permit, false, syntax)
}

// checkObject requires raw to be one JSON object (or, when optional, absent
// or null).
func checkObject(field string, raw json.RawMessage, required, syntax bool) error {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		if required {
			return invalid(field, "required")
		}
		return nil
	}
	if t[0] != '{' || syntax && !json.Valid(t) {
		return invalid(field, "must be a JSON object")
	}
	return nil
}

// Normalize fills in what a published envelope may leave out: the job id
// (DeriveJobID) and the task id (TaskID). It does not overwrite a task id
// that is present; Validate checks it.
func (e *Envelope) Normalize() {
	if e.JobID == "" {
		e.JobID = DeriveJobID(e.Model, e.Key, bytes.TrimSpace(e.Request))
	}
	if e.TaskID == "" {
		e.TaskID = TaskID(e.JobID, e.Key)
	}
}

// Encode validates e (after Normalize) and returns its JSON, at most
// MaxEnvelopeBytes long, exactly as json.Marshal writes it. The request
// must be JSON a parser has accepted (Decode, internal/gemini.ParseRequest):
// Encode checks that it is an object whose strings and brackets close, and
// compacts it without re-checking the rest of its grammar (Validate does).
// Callers that publish a new envelope should also check CheckPublishSize.
func Encode(e Envelope) ([]byte, error) {
	e.Normalize()
	if err := e.validate(false); err != nil {
		return nil, err
	}
	data, err := e.marshal()
	if err != nil {
		return nil, err
	}
	if len(data) > MaxEnvelopeBytes {
		return nil, tooLarge(len(data), MaxEnvelopeBytes)
	}
	return data, nil
}

// requestMark is what marshal has json.Marshal write in the request's place:
// it cannot occur earlier in the output (a string escapes its quotes), so
// its first occurrence is the request's.
const requestMark = `"request":0`

// marshal returns json.Marshal(e), byte for byte, for an e whose request is
// JSON (appendCanonical's terms): the request, most of an envelope's bytes,
// is compacted in one plain pass instead of encoding/json's re-validating
// one, which cost ingest a third of its time per task.
func (e *Envelope) marshal() ([]byte, error) {
	rest := *e
	rest.Request = json.RawMessage("0")
	data, err := json.Marshal(rest)
	if err != nil {
		return nil, invalid("permit", "must be a JSON object")
	}
	at := bytes.Index(data, []byte(requestMark)) + len(requestMark) - 1
	out := make([]byte, 0, len(data)+len(e.Request))
	out = append(out, data[:at]...)
	if out, err = appendCanonical(out, bytes.TrimSpace(e.Request)); err != nil {
		return nil, invalid("request", "must be a JSON object")
	}
	return append(out, data[at+1:]...), nil
}

// WithJob returns data, an envelope as Encode returned it, with job_hash and
// job_total set to hash (a hex content hash) and total (> 0): ingest adds
// them once the job's hash, which covers every envelope without them, is
// known.
func WithJob(data []byte, hash string, total int) []byte {
	out := openEnvelope(data, len(hash)+40)
	out = append(out, `,"job_hash":"`...)
	out = append(out, hash...)
	out = append(out, `","job_total":`...)
	out = strconv.AppendInt(out, int64(total), 10)
	return append(out, '}')
}

// openEnvelope returns a copy of data, an encoded envelope (a JSON object),
// without its closing brace, with room for extra more bytes: fields are
// appended to it, then the brace. Exactly one brace goes (trailing space
// first): the last field may itself end with one.
func openEnvelope(data []byte, extra int) []byte {
	body := bytes.TrimSuffix(bytes.TrimRight(data, " \n"), []byte("}"))
	return append(make([]byte, 0, len(body)+extra+1), body...)
}

// The bounds of job_created: [minJobCreated, maxJobCreated).
var (
	minJobCreated = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	maxJobCreated = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
)

// jobCreatedLayout is how WithCreated writes job_created: UTC, milliseconds,
// always the same length for the years Validate accepts.
const jobCreatedLayout = "2006-01-02T15:04:05.000Z"

// JobCreatedBytes is how many bytes WithCreated adds to an envelope: room
// that ingest keeps in every envelope it builds before the job's creation
// time is known.
const JobCreatedBytes = len(`,"job_created":""`) + len(jobCreatedLayout)

// WithCreated returns data, an envelope with job_hash (WithJob), with
// job_created set to created, which must be in the years 2000 to 9999
// (UTC) for Validate to accept it: ingest adds it once the job's record,
// which holds the creation time, exists. It adds JobCreatedBytes bytes.
func WithCreated(data []byte, created time.Time) []byte {
	out := openEnvelope(data, JobCreatedBytes)
	out = append(out, `,"job_created":"`...)
	out = created.UTC().AppendFormat(out, jobCreatedLayout)
	return append(out, `"}`...)
}

// CheckPublishSize returns a *ValidationError wrapping ErrTooLarge when an
// encoded envelope is too large to publish as a new task (MaxPublishBytes).
func CheckPublishSize(data []byte) error {
	if len(data) > MaxPublishBytes {
		return tooLarge(len(data), MaxPublishBytes)
	}
	return nil
}

func tooLarge(n, max int) error {
	return &ValidationError{Message: fmt.Sprintf("%d bytes, over the limit of %d", n, max), Err: ErrTooLarge}
}

// fields lists the envelope's JSON field names, which must match exactly.
var fields = map[string]bool{
	"v": true, "job_id": true, "key": true, "model": true, "request": true,
	"task_id": true, "attempt": true, "deferrals": true, "permit": true,
	"job_hash": true, "job_total": true, "job_created": true, "service_tier": true, "deadline": true,
}

// Decode parses and validates an envelope, then fills in a missing job id
// and task id (Normalize). Any problem is a *ValidationError naming the
// field; such a message is poison and redelivering it cannot help.
func Decode(data []byte) (Envelope, error) {
	if len(data) > MaxEnvelopeBytes {
		return Envelope{}, tooLarge(len(data), MaxEnvelopeBytes)
	}
	if !utf8.Valid(data) {
		return Envelope{}, invalid("", "not valid UTF-8")
	}
	if err := checkFieldNames(data); err != nil {
		return Envelope{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var e Envelope
	if err := dec.Decode(&e); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return Envelope{}, invalid(te.Field, "must be a JSON %s", te.Type)
		}
		return Envelope{}, invalid("", "malformed JSON: %v", err)
	}
	if e.V == 0 {
		return Envelope{}, invalid("v", "required (use %d)", Version)
	}
	e.Normalize()
	// The decoder has checked that the request and permit are JSON.
	if err := e.validate(false); err != nil {
		return Envelope{}, err
	}
	return e, nil
}

// checkFieldNames walks the top-level object and rejects names that are not
// exactly an envelope field, or that repeat: encoding/json would otherwise
// match "Job_ID" to job_id and let a later duplicate win silently.
func checkFieldNames(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return invalid("", "malformed JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return invalid("", "must be a JSON object")
	}
	seen := make(map[string]bool, len(fields))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return invalid("", "malformed JSON: %v", err)
		}
		name, _ := tok.(string)
		if !fields[name] {
			if len(name) > 64 || !utf8.ValidString(name) {
				name = fmt.Sprintf("%.64q", name)
			}
			return invalid(name, "unknown field")
		}
		if seen[name] {
			return invalid(name, "duplicate field")
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return invalid(name, "malformed JSON: %v", err)
		}
	}
	if _, err := dec.Token(); err != nil {
		return invalid("", "malformed JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid("", "trailing data after the envelope")
	}
	return nil
}
