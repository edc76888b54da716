package geminisim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gemq-dev/gemq/internal/gemini"
)

// batchState is the Batch and Files API state of a Server (under Server.mu).
type batchState struct {
	batches map[string]*batchJob
	order   []*batchJob // creation order
	files   map[string]*storedFile
	uploads map[string]*upload
}

// Quota names the stand-in gives the Batch API's limits. The docs name the limits but not their quota ids;
// these follow the interactive ids' pattern.
const (
	batchTokensMetric = service + "/batch_enqueued_tokens"
	batchTokensID     = "BatchEnqueuedTokensPerModel"
	batchConcMetric   = service + "/batch_concurrent_requests"
	batchConcID       = "ConcurrentBatchRequestsPerProject"
)

// errBatchQuota is the 429 RESOURCE_EXHAUSTED answer to a create beyond a Batch API limit: the message and
// google.rpc.Help of the interactive quota errors (a real batch create refused over quota answered them, as
// reported in langchain4j/langchain4j#3942, 2026-01-12), a google.rpc.QuotaFailure naming the limit, and no
// RetryInfo: room comes back only as batches end.
func errBatchQuota(metric, id, model, location string, limit int64) apiError {
	msg := msgQuotaHead + fmt.Sprintf("\n* Quota exceeded for metric: %s, limit: %d, model: %s", metric, limit, model)
	return apiError{Code: 429, Status: "RESOURCE_EXHAUSTED", Message: msg, Details: []map[string]any{
		{"@type": "type.googleapis.com/google.rpc.Help", "links": []any{
			map[string]any{"description": "Learn more about Gemini API quotas", "url": rateLimitsDoc}}},
		{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []any{map[string]any{
			"quotaMetric":     metric,
			"quotaId":         id,
			"quotaDimensions": map[string]any{"location": location, "model": model},
			"quotaValue":      fmt.Sprint(limit),
		}}},
	}}
}

// errPayloadTooLarge is Google's answer to a request body over the limit.
func errPayloadTooLarge(limit int64) apiError {
	return errInvalid(fmt.Sprintf("Request payload size exceeds the limit: %d bytes.", limit))
}

// handleBatchCreate answers POST /v1beta/models/{model}:batchGenerateContent: a batch of inline requests
// (batch.inputConfig.requests.requests[] of {request, metadata}) or of an uploaded JSONL file
// (batch.inputConfig.fileName), answered with the batch's Operation.
func (s *Server) handleBatchCreate(w http.ResponseWriter, r *http.Request, model, version string) {
	e := Entry{Method: "batchGenerateContent", Model: model, Received: s.clk.Now(), Tier: "batch"}
	defer func() {
		e.Finished = s.clk.Now()
		s.record(e)
	}()
	fail := func(outcome string, ae apiError) {
		e.Outcome, e.Status = outcome, ae.Code
		writeError(w, ae)
	}
	if !s.callerError(w, r, &e) {
		return
	}
	m, ok := s.models[model]
	if !ok {
		fail("not_found", errNotFound(model, version, "batchGenerateContent"))
		return
	}
	s.mu.Lock()
	cfg := s.opts.Batch
	s.mu.Unlock()
	body, err := io.ReadAll(io.LimitReader(r.Body, cfg.MaxInlineBytes+1))
	if err != nil {
		fail("bad_request", errInvalid("Failed to read the request body."))
		return
	}
	if int64(len(body)) > cfg.MaxInlineBytes {
		fail("too_large", errPayloadTooLarge(cfg.MaxInlineBytes))
		return
	}
	var in struct {
		Batch *struct {
			DisplayName string `json:"displayName"`
			InputConfig *struct {
				FileName string `json:"fileName"`
				Requests *struct {
					Requests []json.RawMessage `json:"requests"`
				} `json:"requests"`
			} `json:"inputConfig"`
		} `json:"batch"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		fail("bad_request", errInvalid("Invalid JSON payload received. "+err.Error()))
		return
	}
	var inline []json.RawMessage
	var file string
	switch b := in.Batch; {
	case b == nil || b.InputConfig == nil:
		fail("bad_request", errInvalid("* BatchGenerateContentRequest.batch.input_config: input_config is required\n"))
		return
	case strings.TrimSpace(b.DisplayName) == "":
		fail("bad_request", errInvalid("* BatchGenerateContentRequest.batch.display_name: display_name is required\n"))
		return
	default:
		file = b.InputConfig.FileName
		if b.InputConfig.Requests != nil {
			inline = b.InputConfig.Requests.Requests
		}
		if (file == "") == (len(inline) == 0) {
			fail("bad_request", errInvalid("* BatchGenerateContentRequest.batch.input_config: exactly one of file_name and a non-empty requests.requests must be set\n"))
			return
		}
	}

	var entries []*batchEntry
	var failure *rpcStatus
	if file == "" {
		for i, raw := range inline {
			be, ae := s.inlineEntry(raw, i)
			if ae != nil {
				fail("bad_request", *ae)
				return
			}
			entries = append(entries, be)
		}
	} else {
		data, ae := s.readInputFile(file)
		if ae != nil {
			fail("file_not_found", *ae)
			return
		}
		entries = s.fileEntries(data)
		if len(entries) == 0 {
			fail("bad_request", errInvalid(fmt.Sprintf("The input file %s has no requests.", file)))
			return
		}
		failure = &rpcStatus{Code: rpcInvalidArgument, Message: fmt.Sprintf("No line of the input file %s is a valid request.", file)}
		for _, be := range entries {
			if be.bad == "" {
				failure = nil
			}
		}
	}

	for _, be := range entries {
		if be.req != nil {
			be.tokens = s.opts.Tokenizer.count(be.req.SystemInstruction, be.req.Contents)
		}
	}
	// The answer is built under the lock and written after it, so a slow client never holds the stand-in.
	s.mu.Lock()
	code, out := s.enqueueLocked(m, in.Batch.DisplayName, file, entries, failure, &e)
	s.mu.Unlock()
	e.Status = code
	writeJSON(w, code, out)
}

// enqueueLocked admits a batch of entries for m against the Batch API's limits and creates it (under s.mu),
// returning the HTTP status and body of the answer.
func (s *Server) enqueueLocked(m *Model, displayName, file string, entries []*batchEntry, failure *rpcStatus, e *Entry) (int, any) {
	now := s.clk.Now()
	s.advanceLocked(now)
	cfg := s.opts.Batch
	var total, enqueued int64
	for _, be := range entries {
		be.tokens = s.skewLocked(be.tokens)
		total += be.tokens
		be.fail = cfg.FailureRate > 0 && s.rng.Float64() < cfg.FailureRate
		be.seed = s.rng.Uint64()
	}
	e.InputTokens = total
	active := 0
	for _, j := range s.batch.order {
		if !j.terminal() {
			active++
			if j.model == m.ID {
				enqueued += j.tokens
			}
		}
	}
	if active >= cfg.MaxConcurrent {
		e.Outcome = "concurrent"
		return http.StatusTooManyRequests, map[string]any{"error": errBatchQuota(batchConcMetric, batchConcID, m.ID, s.opts.Location, int64(cfg.MaxConcurrent))}
	}
	if lim := cfg.enqueuedLimit(m.ID); lim > 0 && enqueued+total > lim {
		e.Outcome = "enqueued_tokens"
		return http.StatusTooManyRequests, map[string]any{"error": errBatchQuota(batchTokensMetric, batchTokensID, m.ID, s.opts.Location, lim)}
	}
	run := cfg.RunFor + time.Duration(len(entries))*cfg.PerEntry
	j := &batchJob{
		id: s.newIDLocked(36), displayName: displayName, model: m.ID, file: file,
		created: now, updated: now, runAt: now.Add(cfg.PendingFor), expireAt: now.Add(cfg.ExpireAfter),
		state: BatchPending, entries: entries, tokens: total, failure: failure,
	}
	if failure == nil && cfg.BatchFailureRate > 0 && s.rng.Float64() < cfg.BatchFailureRate {
		j.failure = &rpcStatus{Code: rpcInternal, Message: msgInternal}
	}
	j.doneAt = j.runAt.Add(run)
	if s.batch.batches == nil {
		s.batch.batches = map[string]*batchJob{}
	}
	s.batch.batches[j.id] = j
	s.batch.order = append(s.batch.order, j)
	e.Outcome = "ok"
	return http.StatusOK, s.batchOpLocked(j, now)
}

// requestOf parses one GenerateContentRequest of a batch: the "model" a client may name in it and the
// service tier are dropped (the batch's model and tier apply), the rest parsed as generateContent parses it
// (snake_case keys too, as the docs' JSONL example writes "generation_config").
// A parse error is returned; a request that parses but is invalid comes back with bad set.
func requestOf(raw json.RawMessage) (req *gemini.Request, bad string, err error) {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) == nil {
		for _, k := range []string{"model", "serviceTier", "service_tier"} {
			delete(m, k)
		}
		raw, _ = json.Marshal(m)
	}
	req, err = gemini.ParseRequest(raw)
	if err != nil {
		return nil, "", err
	}
	if err := req.Validate(); err != nil {
		return req, "* GenerateContentRequest." + strings.TrimPrefix(err.Error(), "request.") + "\n", nil
	}
	return req, "", nil
}

// inlineEntry parses requests.requests[i]: {request, metadata}. A request that does not parse fails the
// whole create with 400, as an invalid field of the create body does.
func (s *Server) inlineEntry(raw json.RawMessage, i int) (*batchEntry, *apiError) {
	var in struct {
		Request  json.RawMessage `json:"request"`
		Metadata json.RawMessage `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		ae := errInvalid(fmt.Sprintf("Invalid JSON payload received. batch.input_config.requests.requests[%d]: %v", i, err))
		return nil, &ae
	}
	if len(in.Request) == 0 || string(in.Request) == "null" {
		ae := errInvalid(fmt.Sprintf("* BatchGenerateContentRequest.batch.input_config.requests.requests[%d].request: request is required\n", i))
		return nil, &ae
	}
	req, bad, err := requestOf(in.Request)
	if err != nil {
		ae := errInvalid(fmt.Sprintf("Invalid JSON payload received. batch.input_config.requests.requests[%d].%v", i, err))
		return nil, &ae
	}
	be := &batchEntry{req: req, bad: bad}
	if len(in.Metadata) > 0 && string(in.Metadata) != "null" {
		be.metadata = in.Metadata
		var md map[string]any
		if json.Unmarshal(in.Metadata, &md) == nil {
			be.key, _ = md["key"].(string)
		}
	}
	return be, nil
}

// fileEntries parses a JSONL input file: each non-empty line {"key", "request"} or a bare
// GenerateContentRequest. A line that does not parse becomes an entry answered with code 3.
func (s *Server) fileEntries(data []byte) []*batchEntry {
	var out []*batchEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), len(data)+1)
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		be := &batchEntry{}
		out = append(out, be)
		var in map[string]json.RawMessage
		if err := json.Unmarshal(text, &in); err != nil {
			be.bad = fmt.Sprintf("Invalid JSON payload received on line %d: %v", line, err)
			continue
		}
		raw := json.RawMessage(text)
		if rq, ok := in["request"]; ok {
			raw = rq
			if k, ok := in["key"]; ok && json.Unmarshal(k, &be.key) != nil {
				be.bad = fmt.Sprintf("Invalid JSON payload received on line %d: key must be a string", line)
				continue
			}
		}
		req, bad, err := requestOf(raw)
		switch {
		case err != nil:
			be.bad = fmt.Sprintf("Invalid JSON payload received on line %d: %v", line, err)
		default:
			be.req, be.bad = req, bad
		}
	}
	return out
}

// writeResultsLocked writes the results file of a file-input batch: one JSONL line per entry, in input
// order, {"key", "response"} or {"key", "error"} ("each line is either a GenerateContentResponse or a status
// object").
func (s *Server) writeResultsLocked(j *batchJob, at time.Time) {
	var buf bytes.Buffer
	for _, e := range j.entries {
		line := map[string]any{}
		if e.key != "" {
			line["key"] = e.key
		}
		if e.response != nil {
			line["response"] = e.response
		} else {
			line["error"] = e.status
		}
		b, _ := json.Marshal(line)
		buf.Write(b)
		buf.WriteByte('\n')
	}
	f := s.storeFileLocked("batch-"+s.newIDLocked(36), "", "application/jsonl", buf.Bytes(), "GENERATED", at)
	j.output = "files/" + f.id
}
