package geminisim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gemq-dev/gemq/internal/gemini"
)

// The Batch API as the stand-in serves it. Sources (read 2026-12-03):
//   - https://ai.google.dev/gemini-api/docs/batch-mode (inline requests under 20 MB, JSONL input files of
//     {"key", "request"} lines, job states, results "in the same order as the input", "The job has expired
//     because it was running or pending for more than 48 hours. The job will not have any results to
//     retrieve", a 24-hour SLO, 50% price);
//   - https://ai.google.dev/api/batch-mode (batches resource: name, displayName, inputConfig, output,
//     createTime, endTime, updateTime, batchStats, state BATCH_STATE_*; create answers an Operation);
//   - https://ai.google.dev/gemini-api/docs/rate-limits#batch-api ("Batch API requests are subject to their own
//     rate limits, separate from the non-batch API calls": 100 concurrent batch requests, 2 GB input files,
//     20 GB of file storage, and per model the "Batch enqueued tokens" across all active batch jobs);
//   - google.golang.org/genai v1.77.0 batches.go (the wire shape it parses: the Operation's name,
//     metadata.{displayName,state,createTime,updateTime,endTime,model,output}, output.inlinedResponses
//     .inlinedResponses[] and output.responsesFile; list answers "operations").

// Batch configures the stand-in's Batch API. Durations are in stand-in time (see Options.Minute). The zero
// value runs a batch for 2m30s and puts no limit on enqueued tokens.
type Batch struct {
	// PendingFor is how long a new batch stays BATCH_STATE_PENDING (default 30s).
	PendingFor time.Duration `json:"pending_for,omitempty"`
	// RunFor is how long a batch then stays BATCH_STATE_RUNNING before it ends (default 2m); PerEntry is
	// added per entry. Entries finish evenly across the run, in input order (batchStats shows it).
	RunFor   time.Duration `json:"run_for,omitempty"`
	PerEntry time.Duration `json:"per_entry,omitempty"`
	// ExpireAfter is how long after creation a batch that has not ended becomes BATCH_STATE_EXPIRED, with no
	// results at all, as the real API does after 48 hours (default 48h). Set it below PendingFor + RunFor to
	// make batches expire.
	ExpireAfter time.Duration `json:"expire_after,omitempty"`
	// FailureRate is the probability (0..1) that an entry is answered with an error status (google.rpc.Status
	// code 13 INTERNAL) instead of a response. Entries with invalid requests always get code 3.
	FailureRate float64 `json:"failure_rate,omitempty"`
	// BatchFailureRate is the probability (0..1) that a whole batch ends BATCH_STATE_FAILED (Operation error
	// code 13, no results) instead of succeeding. A file with no valid line always fails its batch (code 3).
	BatchFailureRate float64 `json:"batch_failure_rate,omitempty"`
	// EnqueuedTokens is the per-model limit on the input tokens (the stand-in's tokenizer) of all pending and
	// running batches of the model; a create that would exceed it is refused 429 RESOURCE_EXHAUSTED. 0: no
	// limit. EnqueuedTokensByModel overrides it per model id. Tier1EnqueuedTokens holds the documented figures.
	EnqueuedTokens        int64            `json:"enqueued_tokens,omitempty"`
	EnqueuedTokensByModel map[string]int64 `json:"enqueued_tokens_by_model,omitempty"`
	// MaxConcurrent is the number of pending and running batches allowed at once (default 100, the documented
	// "Concurrent batch requests"); beyond it a create is refused 429.
	MaxConcurrent int `json:"max_concurrent,omitempty"`
	// MaxInlineBytes bounds a batchGenerateContent body (default 20 MB, the documented inline limit); beyond
	// it the create is answered 400 as an oversized payload.
	MaxInlineBytes int64 `json:"max_inline_bytes,omitempty"`
}

// Tier1EnqueuedTokens are the "Batch enqueued tokens" of Tier 1 projects for the default models
// (https://ai.google.dev/gemini-api/docs/rate-limits#batch-api, read 2026-12-03). Tier 2 allows 400M
// (2.5 Flash) to 1B (2.0 Flash), Tier 3 1B to 5B.
var Tier1EnqueuedTokens = map[string]int64{
	"gemini-2.5-pro":        5_000_000,
	"gemini-2.5-flash":      3_000_000,
	"gemini-2.5-flash-lite": 10_000_000,
	"gemini-2.0-flash":      10_000_000,
}

func (b Batch) withDefaults() Batch {
	if b.PendingFor <= 0 {
		b.PendingFor = 30 * time.Second
	}
	if b.RunFor <= 0 {
		b.RunFor = 2 * time.Minute
	}
	if b.ExpireAfter <= 0 {
		b.ExpireAfter = 48 * time.Hour
	}
	if b.MaxConcurrent <= 0 {
		b.MaxConcurrent = 100
	}
	if b.MaxInlineBytes <= 0 {
		b.MaxInlineBytes = 20 << 20
	}
	return b
}

func (b Batch) enqueuedLimit(model string) int64 {
	if l, ok := b.EnqueuedTokensByModel[model]; ok {
		return l
	}
	return b.EnqueuedTokens
}

// SetBatch replaces the Batch API behaviour for the batches created from now on.
func (s *Server) SetBatch(b Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Batch = b.withDefaults()
}

// Batch states on the wire (genai maps them to JOB_STATE_*).
const (
	BatchPending   = "BATCH_STATE_PENDING"
	BatchRunning   = "BATCH_STATE_RUNNING"
	BatchSucceeded = "BATCH_STATE_SUCCEEDED"
	BatchFailed    = "BATCH_STATE_FAILED"
	BatchCancelled = "BATCH_STATE_CANCELLED"
	BatchExpired   = "BATCH_STATE_EXPIRED"
)

// google.rpc.Code values of per-entry statuses (the status object of a batch entry carries the canonical
// code, not the HTTP one).
const (
	rpcCancelled       = 1
	rpcInvalidArgument = 3
	rpcInternal        = 13
)

// batchJob is one batch (under Server.mu).
type batchJob struct {
	id, displayName, model string
	file                   string // input file name; "" for inline requests
	created, runAt, doneAt time.Time
	expireAt, ended        time.Time
	updated                time.Time
	state                  string
	failure                *rpcStatus // why the batch fails as a whole at its end; nil: it succeeds
	entries                []*batchEntry
	tokens                 int64  // enqueued input tokens
	output                 string // result file name, for file input
	deleted                bool
}

// batchEntry is one request of a batch.
type batchEntry struct {
	key      string          // metadata.key (inline) or the line's "key" (file): the task id
	metadata json.RawMessage // inline metadata as given
	req      *gemini.Request
	bad      string // why the request is invalid (answered with code 3)
	tokens   int64
	fail     bool // answered with an error by Batch.FailureRate
	seed     uint64
	// Set when the batch ends: the response (nil for an error), the output tokens and the status.
	response  map[string]any
	outTokens int64
	status    *rpcStatus
	outcome   string // ok, error, bad_request, too_long, expired, cancelled, failed
}

// rpcStatus is a google.rpc.Status as the status object of a batch entry (genai's JobError: code, message,
// details as strings; the stand-in sends no details).
type rpcStatus struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (j *batchJob) name() string { return "batches/" + j.id }

func (j *batchJob) terminal() bool {
	switch j.state {
	case BatchSucceeded, BatchFailed, BatchCancelled, BatchExpired:
		return true
	}
	return false
}

// newID returns n random lowercase letters and digits (under s.mu), the shape of real batch and file ids.
func (s *Server) newIDLocked(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[s.rng.IntN(len(alphabet))]
	}
	return string(b)
}

// advanceLocked moves every batch to its state at stand-in time now (under s.mu), answering the entries of
// batches that end and recording them in the log.
func (s *Server) advanceLocked(now time.Time) {
	for _, j := range s.batch.order {
		if j.terminal() {
			continue
		}
		switch {
		case !j.expireAt.After(now) && j.expireAt.Before(j.doneAt):
			s.endLocked(j, BatchExpired, j.expireAt)
		case !j.doneAt.After(now):
			if j.failure != nil {
				s.endLocked(j, BatchFailed, j.doneAt)
			} else {
				s.endLocked(j, BatchSucceeded, j.doneAt)
			}
		case !j.runAt.After(now) && j.state == BatchPending:
			j.state, j.updated = BatchRunning, j.runAt
		}
	}
}

// endLocked ends j in state at stand-in time at, answering its entries (succeeded) or marking them
// unanswered, and records one log entry per batch entry.
func (s *Server) endLocked(j *batchJob, state string, at time.Time) {
	j.state, j.ended, j.updated = state, at, at
	m := s.models[j.model]
	for _, e := range j.entries {
		switch state {
		case BatchSucceeded:
			s.answerLocked(m, e)
		case BatchExpired:
			e.outcome = "expired"
		case BatchCancelled:
			e.outcome = "cancelled"
		default:
			e.outcome = "failed"
		}
		le := Entry{Method: "batchEntry", Model: j.model, TaskID: e.key, Received: j.created, Finished: at,
			InputTokens: e.tokens, OutputTokens: e.outTokens, Outcome: e.outcome, Tier: "batch"}
		switch {
		case e.outcome == "ok":
			le.Status, le.ServedTier = http.StatusOK, "batch"
		case e.status != nil:
			le.Status = httpStatusOf(e.status.Code)
		}
		s.recordLocked(le)
	}
	if state == BatchSucceeded && j.file != "" {
		s.writeResultsLocked(j, at)
	}
}

// answerLocked answers one entry of a succeeding batch with the generateContent logic.
func (s *Server) answerLocked(m *Model, e *batchEntry) {
	switch {
	case e.bad != "":
		e.status, e.outcome = &rpcStatus{Code: rpcInvalidArgument, Message: e.bad}, "bad_request"
	case e.tokens > m.InputTokenLimit:
		e.status, e.outcome = &rpcStatus{Code: rpcInvalidArgument, Message: fmt.Sprintf(
			"The input token count (%d) exceeds the maximum number of tokens allowed (%d).", e.tokens, m.InputTokenLimit)}, "too_long"
	case e.fail:
		e.status, e.outcome = &rpcStatus{Code: rpcInternal, Message: msgInternal}, "error"
	default:
		// No serviceTier in usageMetadata: genai v1.77.0's ServiceTier has no batch value and the docs name none.
		e.response, e.outTokens = s.respond(m, e.req, e.tokens, e.seed)
		e.outcome = "ok"
	}
}

// httpStatusOf maps a google.rpc.Code to its HTTP status, for the log.
func httpStatusOf(code int) int {
	switch code {
	case rpcInvalidArgument:
		return http.StatusBadRequest
	case rpcCancelled:
		return 499
	}
	return http.StatusInternalServerError
}

// batchOp is the Operation JSON of j (under s.mu), as GET batches/{id} and the create answer it.
func (s *Server) batchOpLocked(j *batchJob, now time.Time) map[string]any {
	n := len(j.entries)
	stats := map[string]any{"requestCount": strconv.Itoa(n)}
	switch {
	case j.state == BatchSucceeded:
		var okN, failed int
		for _, e := range j.entries {
			if e.outcome == "ok" {
				okN++
			} else {
				failed++
			}
		}
		stats["successfulRequestCount"] = strconv.Itoa(okN)
		stats["failedRequestCount"] = strconv.Itoa(failed)
		stats["pendingRequestCount"] = "0"
	case j.state == BatchRunning:
		done := int(float64(n) * float64(now.Sub(j.runAt)) / float64(j.doneAt.Sub(j.runAt)))
		done = min(max(done, 0), n)
		stats["pendingRequestCount"] = strconv.Itoa(n - done)
	case !j.terminal():
		stats["pendingRequestCount"] = strconv.Itoa(n)
	}
	md := map[string]any{
		"@type":       "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
		"name":        j.name(),
		"model":       "models/" + j.model,
		"displayName": j.displayName,
		"createTime":  stamp(j.created),
		"updateTime":  stamp(j.updated),
		"batchStats":  stats,
		"state":       j.state,
	}
	if j.file != "" {
		md["inputConfig"] = map[string]any{"fileName": j.file}
	}
	op := map[string]any{"name": j.name(), "metadata": md}
	if j.terminal() {
		md["endTime"] = stamp(j.ended)
		op["done"] = true
	}
	switch j.state {
	case BatchSucceeded:
		out := map[string]any{}
		if j.file != "" {
			out["responsesFile"] = j.output
		} else {
			rs := make([]any, 0, n)
			for _, e := range j.entries {
				r := map[string]any{}
				if e.response != nil {
					r["response"] = e.response
				} else {
					r["error"] = e.status
				}
				if e.metadata != nil {
					r["metadata"] = e.metadata
				}
				rs = append(rs, r)
			}
			out["inlinedResponses"] = map[string]any{"inlinedResponses": rs}
		}
		md["output"] = out
		resp := map[string]any{"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput"}
		for k, v := range out {
			resp[k] = v
		}
		op["response"] = resp
	case BatchFailed:
		op["error"] = j.failure
	}
	return op
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// serveBatchAPI answers the batches and files collections; false if the path is neither.
func (s *Server) serveBatchAPI(w http.ResponseWriter, r *http.Request) bool {
	p := strings.TrimPrefix(r.URL.Path, "/")
	version, rest, _ := strings.Cut(p, "/")
	switch {
	case version == "upload" || version == "download":
		return s.serveFiles(w, r, rest)
	case version != "v1beta" && version != "v1":
		return false
	case rest == "batches" || strings.HasPrefix(rest, "batches/"):
		s.serveBatches(w, r, strings.TrimPrefix(strings.TrimPrefix(rest, "batches"), "/"))
		return true
	case rest == "files" || strings.HasPrefix(rest, "files/"):
		return s.serveFiles(w, r, rest)
	}
	return false
}

// callerError checks the API key as the real API does; ok is false when the call is refused (and answered).
func (s *Server) callerError(w http.ResponseWriter, r *http.Request, e *Entry) bool {
	key := r.Header.Get("x-goog-api-key")
	if key == "" {
		key = r.URL.Query().Get("key")
	}
	var ae apiError
	switch {
	case key == "":
		e.Outcome, ae = "unregistered", errUnregistered()
	case s.opts.APIKey != "" && key != s.opts.APIKey:
		e.Outcome, ae = "invalid_key", errKeyInvalid()
	default:
		return true
	}
	e.Status = ae.Code
	writeError(w, ae)
	return false
}

func errBatchNotFound() apiError {
	return apiError{Code: 404, Status: "NOT_FOUND", Message: "Requested entity was not found."}
}

// serveBatches answers GET batches, GET/DELETE batches/{id}, POST batches/{id}:cancel (and :delete).
func (s *Server) serveBatches(w http.ResponseWriter, r *http.Request, rest string) {
	id, verb, _ := strings.Cut(rest, ":")
	e := Entry{Method: "batches.get", Received: s.clk.Now()}
	switch {
	case id == "" && r.Method == http.MethodGet:
		e.Method = "batches.list"
	case verb == "cancel" && r.Method == http.MethodPost:
		e.Method = "batches.cancel"
	case (verb == "delete" && r.Method == http.MethodPost) || (verb == "" && r.Method == http.MethodDelete):
		e.Method = "batches.delete"
	case verb == "" && r.Method == http.MethodGet && id != "":
	default:
		writeError(w, apiError{Code: 404, Status: "NOT_FOUND", Message: "Method not found."})
		return
	}
	defer func() {
		e.Finished = s.clk.Now()
		s.record(e)
	}()
	if !s.callerError(w, r, &e) {
		return
	}
	// The answer is built under the lock and written after it, so a slow client never holds the stand-in.
	s.mu.Lock()
	code, body := s.batchCallLocked(r, id, &e)
	s.mu.Unlock()
	e.Status = code
	if code == http.StatusOK {
		e.Outcome = "ok"
	}
	writeJSON(w, code, body)
}

// batchCallLocked runs a batches call on batch id (under s.mu) and returns the HTTP status and body.
func (s *Server) batchCallLocked(r *http.Request, id string, e *Entry) (int, any) {
	now := s.clk.Now()
	s.advanceLocked(now)
	if e.Method == "batches.list" {
		return s.listBatchesLocked(r, now, e)
	}
	j := s.batch.batches[id]
	if j == nil || j.deleted {
		e.Outcome = "not_found"
		return http.StatusNotFound, map[string]any{"error": errBatchNotFound()}
	}
	e.Model = j.model
	switch e.Method {
	case "batches.cancel":
		// Cancelling an ended batch changes nothing (the docs do not say what the real API answers).
		if !j.terminal() {
			s.endLocked(j, BatchCancelled, now)
		}
		return http.StatusOK, map[string]any{}
	case "batches.delete":
		// "When a job is deleted, it stops processing new requests and is removed from the list".
		if !j.terminal() {
			s.endLocked(j, BatchCancelled, now)
		}
		j.deleted = true
		return http.StatusOK, map[string]any{}
	}
	return http.StatusOK, s.batchOpLocked(j, now)
}

// listBatchesLocked answers GET batches?pageSize=&pageToken=, newest first (pageSize default 50, at most
// 1000).
func (s *Server) listBatchesLocked(r *http.Request, now time.Time, e *Entry) (int, any) {
	var visible []*batchJob
	for i := len(s.batch.order) - 1; i >= 0; i-- {
		if !s.batch.order[i].deleted {
			visible = append(visible, s.batch.order[i])
		}
	}
	from, to, next, ok := page(r, len(visible), 50, 1000)
	if !ok {
		e.Outcome = "bad_request"
		return http.StatusBadRequest, map[string]any{"error": errInvalid("Invalid page_size or page_token.")}
	}
	ops := make([]any, 0, to-from)
	for _, j := range visible[from:to] {
		ops = append(ops, s.batchOpLocked(j, now))
	}
	out := map[string]any{"operations": ops}
	if next != "" {
		out["nextPageToken"] = next
	}
	return http.StatusOK, out
}
