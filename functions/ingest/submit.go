package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/jsonstrict"
	"github.com/gemq-dev/gemq/internal/logging"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

// jobBody is the JSON form of POST /v1/jobs.
type jobBody struct {
	JobID             string          `json:"job_id"`
	Model             string          `json:"model"`
	SystemInstruction json.RawMessage `json:"system_instruction"`
	GenerationConfig  json.RawMessage `json:"generation_config"`
	Requests          []item          `json:"requests"`
}

// item is one request: an element of "requests", or one line of a Batch API
// input file.
type item struct {
	Key     string          `json:"key"`
	Request json.RawMessage `json:"request"`
}

// located is an item with where it came from, for error fields.
type located struct {
	item
	prefix string // "requests[3]." for JSON, "" for JSONL
	line   int    // JSONL line, 0 for JSON
}

// where names item it in messages ("requests[3]" or "line 4").
func (it located) where() string {
	if it.line > 0 {
		return "line " + strconv.Itoa(it.line)
	}
	return strings.TrimSuffix(it.prefix, ".")
}

// at prefixes a message about field (relative to the item) with where it
// is: "requests[3].key: …" or "line 4: key: …".
func (it located) at(field, msg string) string {
	if it.line > 0 {
		return fmt.Sprintf("line %d: %s: %s", it.line, field, msg)
	}
	return it.prefix + field + ": " + msg
}

// jobSpec is a parsed submission, before validation of its values.
type jobSpec struct {
	jobID, model string
	sys, gen     json.RawMessage
	items        []located
}

// strictLimits bounds the JSON structure of a submission; the body cap bounds
// the rest.
var strictLimits = jsonstrict.Limits{MaxDepth: 64}

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
	spec, aerr := s.parse(r, f, body)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	j, aerr := s.build(r.Context(), spec)
	if aerr != nil {
		s.fail(w, r, aerr)
		return
	}
	log := logging.From(r.Context(), s.log).With(logging.JobID, j.id)
	setLogger(w, log)
	r = r.WithContext(logging.With(r.Context(), log))

	_, created, err := s.store.CreateJob(r.Context(), store.NewJob{ID: j.id, Model: j.model, ContentHash: j.hash, TaskIDs: j.taskIDs})
	switch {
	case errors.Is(err, store.ErrConflict):
		s.fail(w, r, &apiError{Code: http.StatusConflict, Field: "job_id", reason: "conflict",
			Message: fmt.Sprintf("job %s already exists with different content; use another job_id", j.id)})
		return
	case err != nil:
		s.internal(w, r, "create job", err)
		return
	}
	if !created {
		done, err := s.marks.Published(r.Context(), j.id)
		if err != nil {
			s.internal(w, r, "read publish mark", err)
			return
		}
		if done {
			log.Info("job resubmitted: already published", "tasks", len(j.msgs))
			writeJSON(w, http.StatusAccepted, accepted{JobID: j.id, Accepted: len(j.msgs)})
			return
		}
		log.Warn("job resubmitted before its publishing completed: publishing again", "tasks", len(j.msgs))
	}
	// Publishing must not stop half-way because the client went away: the
	// job exists already, and a complete publish spares the retry.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.publishTimeout)
	defer cancel()
	start := time.Now()
	if err := s.publisher.Publish(ctx, j.msgs); err != nil {
		s.internal(w, r, "publish tasks", err)
		return
	}
	if err := s.marks.MarkPublished(ctx, j.id); err != nil {
		// Everything is published; a retry would only publish duplicates.
		log.Warn("mark published failed", "error", err.Error())
	}
	log.Info("job accepted", "tasks", len(j.msgs), "model", j.model, "publish_ms", time.Since(start).Milliseconds())
	writeJSON(w, http.StatusAccepted, accepted{JobID: j.id, Accepted: len(j.msgs)})
}

// format is the body's syntax.
type format int

const (
	formatJSON format = iota + 1
	formatJSONL
)

// mediaTypes maps the accepted Content-Types to formats.
var mediaTypes = map[string]format{
	"application/json":      formatJSON,
	"application/jsonl":     formatJSONL,
	"application/x-ndjson":  formatJSONL,
	"application/x-jsonl":   formatJSONL,
	"application/jsonlines": formatJSONL,
}

const acceptedTypes = "application/json, application/jsonl, application/x-ndjson"

// contentFormat checks Content-Type and Content-Encoding.
func contentFormat(r *http.Request) (format, bool, *apiError) {
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
func (s *server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, format, *apiError) {
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
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBodyBytes))
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

// parse decodes the body strictly and gathers the job parameters from it and
// the query string.
func (s *server) parse(r *http.Request, f format, body []byte) (jobSpec, *apiError) {
	q := r.URL.Query()
	allowedParams := []string{"model", "job_id"}
	if f == formatJSONL {
		allowedParams = append(allowedParams, "system_instruction", "generation_config")
	}
	for name, vals := range q {
		if !slices.Contains(allowedParams, name) {
			return jobSpec{}, &apiError{Code: http.StatusBadRequest, Field: name, reason: "query",
				Message: fmt.Sprintf("unknown query parameter %q (accepted: %s)", name, strings.Join(allowedParams, ", "))}
		}
		if len(vals) > 1 {
			return jobSpec{}, &apiError{Code: http.StatusBadRequest, Field: name, reason: "query",
				Message: fmt.Sprintf("query parameter %q given more than once", name)}
		}
	}
	var spec jobSpec
	switch f {
	case formatJSON:
		var b jobBody
		if err := jsonstrict.Decode(body, &b, strictLimits); err != nil {
			ae := strictError(err, 0)
			if ae.reason == string(jsonstrict.Trailing) || ae.Field == "key" || ae.Field == "request" {
				ae.Message += " (a JSONL body needs Content-Type application/jsonl)"
			}
			return jobSpec{}, ae
		}
		spec = jobSpec{jobID: b.JobID, model: b.Model, sys: b.SystemInstruction, gen: b.GenerationConfig}
		if len(b.Requests) > s.maxRequests {
			return jobSpec{}, &apiError{Code: http.StatusBadRequest, Field: "requests", reason: "too_many_requests",
				Message: fmt.Sprintf("%d requests, more than the limit of %d per job; split the job", len(b.Requests), s.maxRequests)}
		}
		spec.items = make([]located, len(b.Requests))
		for i, it := range b.Requests {
			spec.items[i] = located{item: it, prefix: fmt.Sprintf("requests[%d].", i)}
		}
		for _, name := range []string{"model", "job_id"} {
			qv, bv := q.Get(name), spec.jobID
			if name == "model" {
				bv = spec.model
			}
			switch {
			case qv == "":
			case bv == "":
				if name == "model" {
					spec.model = qv
				} else {
					spec.jobID = qv
				}
			case bv != qv:
				return jobSpec{}, &apiError{Code: http.StatusBadRequest, Field: name, reason: "query",
					Message: fmt.Sprintf("%s differs between the query string and the body", name)}
			}
		}
	case formatJSONL:
		lim := strictLimits
		lim.MaxLines = s.maxRequests
		err := jsonstrict.DecodeLines(body, lim, func(n int, it *item) error {
			spec.items = append(spec.items, located{item: *it, line: n})
			return nil
		})
		if err != nil {
			var je *jsonstrict.Error
			if errors.As(err, &je) && je.Kind == jsonstrict.Limit && je.Path == "" && je.Line > 0 && len(spec.items) >= s.maxRequests {
				return jobSpec{}, &apiError{Code: http.StatusBadRequest, Field: "requests", Line: je.Line, reason: "too_many_requests",
					Message: fmt.Sprintf("more than %d requests per job; split the job", s.maxRequests)}
			}
			return jobSpec{}, strictError(err, 0)
		}
		spec.jobID, spec.model = q.Get("job_id"), q.Get("model")
		for _, p := range []struct {
			name string
			dst  *json.RawMessage
		}{{"system_instruction", &spec.sys}, {"generation_config", &spec.gen}} {
			v := q.Get(p.name)
			if v == "" {
				continue
			}
			var raw json.RawMessage
			if err := jsonstrict.Decode([]byte(v), &raw, strictLimits); err != nil {
				ae := strictError(err, 0)
				ae.Field = joinPath(p.name, ae.Field)
				ae.Message = "query parameter " + p.name + ": " + ae.Message
				return jobSpec{}, ae
			}
			*p.dst = raw
		}
	}
	return spec, nil
}

// strictError maps a jsonstrict error to a 400.
func strictError(err error, line int) *apiError {
	var je *jsonstrict.Error
	if !errors.As(err, &je) {
		return &apiError{Code: http.StatusBadRequest, reason: "decode", Message: err.Error()}
	}
	if line == 0 {
		line = je.Line
	}
	return &apiError{Code: http.StatusBadRequest, Field: je.Path, Line: line, reason: string(je.Kind), Message: je.Error()}
}

func joinPath(a, b string) string {
	switch {
	case b == "":
		return a
	case strings.HasPrefix(b, "["):
		return a + b
	}
	return a + "." + b
}

// builtJob is a validated submission ready to store and publish.
type builtJob struct {
	id, model string
	hash      string
	taskIDs   []string
	msgs      []queue.Message
}

// jobIDRule describes valid job ids.
const jobIDRule = "job_id must be 1 to 64 characters of A-Z a-z 0-9 _ -"

func validJobID(id string) bool { return task.ValidJobID(id) }

// build validates every value of spec and encodes the task envelopes.
func (s *server) build(ctx context.Context, spec jobSpec) (*builtJob, *apiError) {
	j := &builtJob{id: spec.jobID}
	if j.id == "" {
		j.id = s.newJobID()
	} else if !validJobID(j.id) {
		return nil, &apiError{Code: http.StatusBadRequest, Field: "job_id", reason: "job_id", Message: jobIDRule}
	}
	model, aerr := s.model(spec.model)
	if aerr != nil {
		return nil, aerr
	}
	j.model = model
	if aerr := checkDefaults(spec.sys, spec.gen); aerr != nil {
		return nil, aerr
	}
	if len(spec.items) == 0 {
		return nil, &apiError{Code: http.StatusBadRequest, Field: "requests", reason: "empty_job",
			Message: "the job has no requests: give at least one {\"key\": ..., \"request\": {...}}"}
	}
	var limit int64
	var limitWhat string
	if s.limits != nil {
		l, what, err := s.limits.InputTokenLimit(ctx, model)
		if err != nil {
			return nil, &apiError{Code: http.StatusServiceUnavailable, reason: "model_info",
				Message: "looking up the model's input limit failed; retry later"}
		}
		limit, limitWhat = l, what
	}
	seen := make(map[string]int, len(spec.items))
	j.taskIDs = make([]string, len(spec.items))
	j.msgs = make([]queue.Message, len(spec.items))
	h := sha256.New()
	fmt.Fprintf(h, "gemq-job-v1\x00%s\x00%s\x00", j.id, model)
	for i, it := range spec.items {
		keyErr := func(msg string, args ...any) *apiError {
			return &apiError{Code: http.StatusBadRequest, Field: it.prefix + "key", Line: it.line, reason: "key", Message: it.at("key", fmt.Sprintf(msg, args...))}
		}
		if err := task.ValidateKey(it.Key); err != nil {
			var ve *task.ValidationError
			if errors.As(err, &ve) {
				return nil, keyErr("%s", ve.Message)
			}
			return nil, keyErr("invalid")
		}
		id := task.TaskID(j.id, it.Key)
		if first, dup := seen[id]; dup {
			ae := keyErr("duplicate key %q (first used by %s)", it.Key, spec.items[first].where())
			ae.Key = it.Key
			return nil, ae
		}
		seen[id] = i
		reqErr := func(field, msg string) *apiError {
			return &apiError{Code: http.StatusBadRequest, Field: it.prefix + field, Line: it.line, Key: it.Key, reason: "request",
				Message: it.at(field, msg)}
		}
		raw := bytes.TrimSpace(it.Request)
		if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
			return nil, reqErr("request", "is required: a GenerateContentRequest object")
		}
		if raw[0] != '{' {
			return nil, reqErr("request", "must be a JSON object (a GenerateContentRequest)")
		}
		merged, err := applyDefaults(raw, spec.sys, spec.gen)
		if err != nil {
			return nil, reqErr("request", err.Error())
		}
		req, err := gemini.ParseRequest(merged)
		if err == nil {
			err = req.Validate()
		}
		if err != nil {
			var fe *gemini.FieldError
			if errors.As(err, &fe) {
				return nil, reqErr(fe.Field, fe.Message)
			}
			return nil, reqErr("request", err.Error())
		}
		if limit > 0 {
			if n := gemini.EstimateInputTokens(req); n > limit {
				return nil, reqErr("request.contents", fmt.Sprintf("the prompt is about %d input tokens, over the limit of %d for model %s (%s)", n, limit, model, limitWhat))
			}
		}
		data, err := task.Encode(task.Envelope{V: task.Version, JobID: j.id, Key: it.Key, Model: model, Request: merged})
		if err == nil {
			err = task.CheckPublishSize(data)
		}
		if err != nil {
			if errors.Is(err, task.ErrTooLarge) {
				return nil, taskTooLarge(it)
			}
			var ve *task.ValidationError
			if errors.As(err, &ve) && ve.Field != "" {
				return nil, reqErr(ve.Field, ve.Message)
			}
			return nil, reqErr("request", err.Error())
		}
		j.taskIDs[i] = id
		j.msgs[i] = queue.Message{Data: data, Attributes: map[string]string{"job_id": j.id, "task_id": id}}
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(data)))
		h.Write(n[:])
		h.Write(data)
	}
	j.hash = hex.EncodeToString(h.Sum(nil))
	// Every task names its job's hash and size, so a worker that finds the
	// job's record missing knows it was lost rather than never created.
	for i := range j.msgs {
		j.msgs[i].Data = task.WithJob(j.msgs[i].Data, j.hash, len(j.msgs))
		if err := task.CheckPublishSize(j.msgs[i].Data); err != nil {
			return nil, taskTooLarge(spec.items[i])
		}
	}
	return j, nil
}

// taskTooLarge is the 413 for an item whose task would not fit a message.
func taskTooLarge(it located) *apiError {
	return &apiError{Code: http.StatusRequestEntityTooLarge, Field: it.prefix + "request", Line: it.line, Key: it.Key, reason: "task_too_large",
		Message: it.at("request", fmt.Sprintf("the task for key %q would be larger than the %d bytes a task message can carry through Pub/Sub push and Cloud Tasks; shrink the request (e.g. fileData URIs instead of inline data)", it.Key, task.MaxPublishBytes))}
}

// model resolves and checks the job's model: given, or the default; a
// "models/" prefix is dropped; it must be allowed.
func (s *server) model(m string) (string, *apiError) {
	if m == "" {
		m = s.defaultModel
	}
	if m == "" {
		return "", &apiError{Code: http.StatusBadRequest, Field: "model", reason: "model",
			Message: "model is required (e.g. \"gemini-2.5-flash\"); allowed: " + strings.Join(s.allowed, ", ")}
	}
	id, err := gemini.ModelID(m)
	if err != nil || !task.ValidModel(id) {
		return "", &apiError{Code: http.StatusBadRequest, Field: "model", reason: "model",
			Message: "model must be a model id such as gemini-2.5-flash"}
	}
	if !slices.Contains(s.allowed, id) {
		return "", &apiError{Code: http.StatusBadRequest, Field: "model", reason: "model",
			Message: fmt.Sprintf("model %s is unknown or not allowed here; allowed: %s", id, strings.Join(s.allowed, ", "))}
	}
	return id, nil
}

// checkDefaults validates the job-level system instruction and generation
// config on their own, so their errors name the job-level field instead of
// every request.
func checkDefaults(sys, gen json.RawMessage) *apiError {
	if isNull(sys) && isNull(gen) {
		return nil
	}
	probe := map[string]json.RawMessage{"contents": json.RawMessage(`[{"role":"user","parts":[{"text":"x"}]}]`)}
	if !isNull(sys) {
		probe["systemInstruction"] = sys
	}
	if !isNull(gen) {
		probe["generationConfig"] = gen
	}
	raw, err := json.Marshal(probe)
	if err != nil {
		return &apiError{Code: http.StatusBadRequest, reason: "defaults", Message: "invalid system_instruction or generation_config"}
	}
	req, err := gemini.ParseRequest(raw)
	if err == nil {
		err = req.Validate()
	}
	if err == nil {
		return nil
	}
	field, msg := "", err.Error()
	var fe *gemini.FieldError
	if errors.As(err, &fe) {
		msg = fe.Message
		switch {
		case strings.HasPrefix(fe.Field, "request.systemInstruction"):
			field = "system_instruction" + strings.TrimPrefix(fe.Field, "request.systemInstruction")
		case strings.HasPrefix(fe.Field, "request.generationConfig"):
			field = "generation_config" + strings.TrimPrefix(fe.Field, "request.generationConfig")
		}
	}
	if field == "" {
		field = "generation_config"
		if !isNull(sys) && isNull(gen) {
			field = "system_instruction"
		}
	}
	return &apiError{Code: http.StatusBadRequest, Field: field, reason: "defaults", Message: field + ": " + msg}
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

// applyDefaults returns the request with the job's defaults: the system
// instruction when the request has none, and each top-level generation
// config field the request does not set itself (its own fields win; nested
// objects such as thinkingConfig are replaced whole, not merged). Field
// names match whether written lowerCamel or snake_case.
func applyDefaults(raw, sys, gen json.RawMessage) (json.RawMessage, error) {
	if isNull(sys) && isNull(gen) {
		return raw, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("must be a JSON object: %w", err)
	}
	find := func(names ...string) string {
		for _, n := range names {
			if v, ok := m[n]; ok && !isNull(v) {
				return n
			}
		}
		return ""
	}
	if !isNull(sys) && find("systemInstruction", "system_instruction") == "" {
		delete(m, "system_instruction")
		m["systemInstruction"] = sys
	}
	if !isNull(gen) {
		if k := find("generationConfig", "generation_config"); k == "" {
			delete(m, "generation_config")
			m["generationConfig"] = gen
		} else {
			var own, def map[string]json.RawMessage
			if err := json.Unmarshal(m[k], &own); err != nil {
				return nil, fmt.Errorf("%s must be a JSON object", k)
			}
			if err := json.Unmarshal(gen, &def); err != nil {
				return nil, errors.New("generation_config must be a JSON object")
			}
			have := make(map[string]bool, len(own))
			for name := range own {
				have[camel(name)] = true
			}
			for name, v := range def {
				if !have[camel(name)] {
					own[name] = v
				}
			}
			b, err := json.Marshal(own)
			if err != nil {
				return nil, fmt.Errorf("merge %s: %w", k, err)
			}
			m[k] = b
		}
	}
	return json.Marshal(m)
}

// camel maps a snake_case field name to lowerCamel ("max_output_tokens" →
// "maxOutputTokens"); lowerCamel names are unchanged.
func camel(s string) string {
	if !strings.Contains(s, "_") {
		return s
	}
	var b strings.Builder
	up := false
	for _, r := range s {
		switch {
		case r == '_':
			up = true
		case up:
			b.WriteString(strings.ToUpper(string(r)))
			up = false
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// randomJobID returns a fresh job id: "job-" and 24 random hex digits.
func randomJobID() string {
	var b [12]byte
	rand.Read(b[:])
	return "job-" + hex.EncodeToString(b[:])
}
