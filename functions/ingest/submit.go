package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gemq-dev/gemq/internal/job"
	"github.com/gemq-dev/gemq/internal/logging"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
)

// accepted is the body of a 202 answer.
type accepted struct {
	JobID    string `json:"job_id"`
	Accepted int    `json:"accepted"`
}

// submit handles POST /v1/jobs. Every check runs before anything is written:
// a refused submission stores and publishes nothing.
//
// Idempotency: CreateJob stores the job with a hash of its content (its task
// envelopes, in order). A retry with the same job id and content finds the
// job; if the earlier attempt recorded that it published everything, the
// retry answers the same 202 and publishes nothing. If it did not (it crashed
// or lost its connection to Pub/Sub between CreateJob and the end of
// publishing, or is still publishing), the retry publishes every task again:
// task ids are deterministic (job id, key), so the worker treats the copies
// as duplicates (a finished task is acked at once, a running one is leased
// by one worker only). A different content under the same id is a 409.
func (s *server) submit(w http.ResponseWriter, r *http.Request) {
	body, f, aerr := s.readBody(w, r)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	params, aerr := queryParams(r, f)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	j, err := s.rules.Build(r.Context(), f, body, params)
	if err != nil {
		s.fail(w, r, jobError(err))
		return
	}
	taskIDs := make([]string, len(j.Tasks))
	for i, t := range j.Tasks {
		taskIDs[i] = t.ID
	}
	log := logging.From(r.Context(), s.log).With(logging.JobID, j.ID)
	setLogger(w, log)
	r = r.WithContext(logging.With(r.Context(), log))

	rec, created, err := s.store.CreateJob(r.Context(), newJob(j, taskIDs))
	switch {
	case errors.Is(err, store.ErrConflict):
		s.fail(w, r, &apiError{Code: http.StatusConflict, Field: "job_id", reason: "conflict",
			Message: fmt.Sprintf("job %s already exists with different content; use another job_id", j.ID)})
		return
	case err != nil:
		s.internal(w, r, "create job", err)
		return
	}
	// Every message carries the record's creation time (a retry's: the
	// first attempt's), for a worker that finds the record lost.
	j.Stamp(rec.CreatedAt)
	msgs := make([]queue.Message, len(j.Tasks))
	for i, t := range j.Tasks {
		msgs[i] = queue.Message{Data: t.Data, Attributes: map[string]string{"job_id": j.ID, "task_id": t.ID}}
	}
	if !created && !rec.LostAt.IsZero() && s.archive != nil {
		if !s.resubmitLost(w, r, rec) {
			return
		}
		log.Warn("lost job resubmitted: its archived results recorded, publishing every task (those with a result are acked as duplicates)",
			"tasks", len(msgs), "restored", rec.Restored)
	} else if !created {
		done, err := s.marks.Published(r.Context(), j.ID)
		if err != nil {
			s.internal(w, r, "read publish mark", err)
			return
		}
		if done {
			log.Info("job resubmitted: already published", "tasks", len(msgs))
			writeJSON(w, http.StatusAccepted, accepted{JobID: j.ID, Accepted: len(msgs)})
			return
		}
		log.Warn("job resubmitted before its publishing completed: publishing again", "tasks", len(msgs))
	}
	// Publishing must not stop half-way because the client went away: the
	// job exists already, and a complete publish spares the retry.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.publishTimeout)
	defer cancel()
	start := time.Now()
	if err := s.publisher.Publish(ctx, msgs); err != nil {
		s.internal(w, r, "publish tasks", err)
		return
	}
	if err := s.marks.MarkPublished(ctx, j.ID); err != nil {
		// Everything is published; a retry would only publish duplicates.
		log.Warn("mark published failed", "error", err.Error())
	}
	log.Info("job accepted", "tasks", len(msgs), "model", j.Model, "publish_ms", time.Since(start).Milliseconds())
	writeJSON(w, http.StatusAccepted, accepted{JobID: j.ID, Accepted: len(msgs)})
}

// resubmitLost prepares the resubmission of a job whose record Redis lost:
// the results the archive holds are recorded first (rebuild), so that only
// the tasks with no result anywhere run again when every task is published.
// Results published in the last moments before the loss reach the archive
// only when the subscription writes their file: until archiveLag after the
// loss the answer is 503 with Retry-After, not a second run of those tasks.
// It reports whether the caller may publish; otherwise it has answered.
func (s *server) resubmitLost(w http.ResponseWriter, r *http.Request, j store.Job) bool {
	if wait := time.Until(j.LostAt.Add(s.archiveLag)); wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		s.fail(w, r, &apiError{Code: http.StatusServiceUnavailable, Field: "job_id", reason: "archive_lag",
			Message: fmt.Sprintf("Redis lost this job's state %s ago; the results published just before are written to Cloud Storage within %s: retry after that, with the same job_id, so that they are not run again",
				time.Since(j.LostAt).Round(time.Second), s.archiveLag)})
		return false
	}
	complete, err := s.rebuild(r.Context(), j, s.publishTimeout)
	if err == nil && !complete {
		err = errors.New("the results archive was not read to the end")
	}
	if err != nil {
		s.internal(w, r, "read the results archive", err)
		return false
	}
	return true
}

// mediaTypes maps the accepted Content-Types to body formats.
var mediaTypes = map[string]job.Format{
	"application/json":      job.JSON,
	"application/jsonl":     job.JSONL,
	"application/x-ndjson":  job.JSONL,
	"application/x-jsonl":   job.JSONL,
	"application/jsonlines": job.JSONL,
}

const acceptedTypes = "application/json, application/jsonl, application/x-ndjson"

// contentFormat checks Content-Type and Content-Encoding.
func contentFormat(r *http.Request) (job.Format, bool, *apiError) {
	ct := r.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil {
		return 0, false, &apiError{Code: http.StatusUnsupportedMediaType, Field: "Content-Type", reason: "content_type",
			Message: "Content-Type must be one of " + acceptedTypes}
	}
	f, ok := mediaTypes[mt]
	if !ok {
		return 0, false, &apiError{Code: http.StatusUnsupportedMediaType, Field: "Content-Type", reason: "content_type",
			Message: fmt.Sprintf("Content-Type %s is not supported: use one of %s", mt, acceptedTypes)}
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return 0, false, &apiError{Code: http.StatusUnsupportedMediaType, Field: "Content-Type", reason: "charset",
			Message: fmt.Sprintf("charset %s is not supported: the body must be UTF-8", cs)}
	}
	gz := false
	for _, enc := range r.Header.Values("Content-Encoding") {
		for e := range strings.SplitSeq(enc, ",") {
			switch e = strings.ToLower(strings.TrimSpace(e)); e {
			case "", "identity":
			case "gzip", "x-gzip":
				if gz {
					return 0, false, &apiError{Code: http.StatusUnsupportedMediaType, Field: "Content-Encoding", reason: "content_encoding",
						Message: "Content-Encoding gzip may be applied once"}
				}
				gz = true
			default:
				return 0, false, &apiError{Code: http.StatusUnsupportedMediaType, Field: "Content-Encoding", reason: "content_encoding",
					Message: fmt.Sprintf("Content-Encoding %s is not supported: use gzip or none", e)}
			}
		}
	}
	return f, gz, nil
}

// readBody returns the decompressed body, refusing one over maxBodyBytes as
// sent (413) or once decompressed (413: a gzip bomb stops at the cap).
func (s *server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, job.Format, *apiError) {
	f, gz, aerr := contentFormat(r)
	if aerr != nil {
		return nil, 0, aerr
	}
	tooLarge := func(what string) *apiError {
		return &apiError{Code: http.StatusRequestEntityTooLarge, reason: "body_too_large",
			Message: fmt.Sprintf("%s is larger than the limit of %d bytes; split the job", what, s.maxBodyBytes)}
	}
	if r.ContentLength > s.maxBodyBytes {
		return nil, 0, tooLarge("the request body")
	}
	// Read into one buffer of the announced size (io.ReadAll would copy a
	// 10 MB body about twenty times as it grows).
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, s.maxBodyBytes))
	raw := buf.Bytes()
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return nil, 0, tooLarge("the request body")
		}
		return nil, 0, &apiError{Code: http.StatusBadRequest, reason: "read_body", Message: "reading the request body failed"}
	}
	if !gz {
		return raw, f, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, 0, &apiError{Code: http.StatusBadRequest, Field: "Content-Encoding", reason: "gzip",
			Message: "the body is not valid gzip: " + err.Error()}
	}
	out, err := io.ReadAll(io.LimitReader(zr, s.maxBodyBytes+1))
	if err != nil {
		return nil, 0, &apiError{Code: http.StatusBadRequest, Field: "Content-Encoding", reason: "gzip",
			Message: "the body is not valid gzip: " + err.Error()}
	}
	if int64(len(out)) > s.maxBodyBytes {
		return nil, 0, tooLarge("the decompressed request body")
	}
	return out, f, nil
}

// queryParams checks the query string (only the parameters format f takes,
// each once) and returns them.
func queryParams(r *http.Request, f job.Format) (job.Params, *apiError) {
	q := r.URL.Query()
	allowedParams := []string{"model", "job_id", "service_tier", "deadline"}
	if f == job.JSONL {
		allowedParams = append(allowedParams, "system_instruction", "generation_config")
	}
	for name, vals := range q {
		if !slices.Contains(allowedParams, name) {
			return job.Params{}, &apiError{Code: http.StatusBadRequest, Field: name, reason: "query",
				Message: fmt.Sprintf("unknown query parameter %q (accepted: %s)", name, strings.Join(allowedParams, ", "))}
		}
		if len(vals) > 1 {
			return job.Params{}, &apiError{Code: http.StatusBadRequest, Field: name, reason: "query",
				Message: fmt.Sprintf("query parameter %q given more than once", name)}
		}
	}
	return job.Params{JobID: q.Get("job_id"), Model: q.Get("model"),
		SystemInstruction: q.Get("system_instruction"), GenerationConfig: q.Get("generation_config"),
		ServiceTier: q.Get("service_tier"), Deadline: q.Get("deadline")}, nil
}

// jobStatus maps the kinds of job.Error to HTTP statuses.
var jobStatus = map[job.Kind]int{
	job.Invalid:     http.StatusBadRequest,
	job.TooLarge:    http.StatusRequestEntityTooLarge,
	job.Unavailable: http.StatusServiceUnavailable,
}

// jobError is the answer for an error of job.Rules.Build.
func jobError(err error) *apiError {
	var je *job.Error
	if !errors.As(err, &je) {
		return &apiError{Code: http.StatusInternalServerError, reason: "build", Message: "building the job failed"}
	}
	code, ok := jobStatus[je.Kind]
	if !ok {
		code = http.StatusInternalServerError
	}
	return &apiError{Code: code, Field: je.Field, Line: je.Line, Key: je.Key, reason: je.Reason, Message: je.Message}
}
