package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/gemq-dev/gemq/internal/jsonstrict"
)

// Format is a submission body's syntax.
type Format int

// The body formats.
const (
	// JSON is one object: {"job_id", "model", "system_instruction",
	// "generation_config", "requests": [{"key", "request"}, ...]}.
	JSON Format = iota + 1
	// JSONL is a Gemini Batch API input file: one {"key", "request"} per
	// line; the job's other settings are Params.
	JSONL
)

// Params are the job settings given beside the body (ingest's query
// string); "" means not given. For a JSON body, JobID and Model must agree
// with the body's when both are given, and the defaults must be in the
// body; for JSONL, SystemInstruction and GenerationConfig are JSON texts.
type Params struct {
	JobID, Model                        string
	SystemInstruction, GenerationConfig string
	// ServiceTier and Deadline are the job's tier and deadline (RFC 3339).
	ServiceTier, Deadline string
}

// body is the JSON form of a submission.
type body struct {
	JobID             string          `json:"job_id"`
	Model             string          `json:"model"`
	SystemInstruction json.RawMessage `json:"system_instruction"`
	GenerationConfig  json.RawMessage `json:"generation_config"`
	ServiceTier       string          `json:"service_tier"`
	Deadline          string          `json:"deadline"`
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

// spec is a parsed submission, before validation of its values.
type spec struct {
	jobID, model   string
	sys, gen       json.RawMessage
	tier, deadline string
	items          []located
}

// strictLimits bounds the JSON structure of a submission; the caller's body
// cap bounds the rest.
var strictLimits = jsonstrict.Limits{MaxDepth: 64}

// parse decodes the body strictly and gathers the job parameters from it
// and p.
func (r Rules) parse(f Format, data []byte, p Params) (spec, *Error) {
	switch f {
	case JSON:
		return r.parseJSON(data, p)
	case JSONL:
		return r.parseJSONL(data, p)
	}
	return spec{}, invalid("", "format", fmt.Sprintf("unknown body format %d", f))
}

func (r Rules) parseJSON(data []byte, p Params) (spec, *Error) {
	var b body
	if err := jsonstrict.Decode(data, &b, strictLimits); err != nil {
		e := strictError(err)
		if e.Reason == string(jsonstrict.Trailing) || e.Field == "key" || e.Field == "request" {
			e.Message += " (a JSONL body needs Content-Type application/jsonl)"
		}
		return spec{}, e
	}
	s := spec{jobID: b.JobID, model: b.Model, sys: b.SystemInstruction, gen: b.GenerationConfig, tier: b.ServiceTier, deadline: b.Deadline}
	if r.MaxRequests > 0 && len(b.Requests) > r.MaxRequests {
		return spec{}, invalid("requests", "too_many_requests",
			fmt.Sprintf("%d requests, more than the limit of %d per job; split the job", len(b.Requests), r.MaxRequests))
	}
	s.items = make([]located, len(b.Requests))
	for i, it := range b.Requests {
		s.items[i] = located{item: it, prefix: fmt.Sprintf("requests[%d].", i)}
	}
	for _, q := range []struct {
		name, given string
		dst         *string
	}{{"model", p.Model, &s.model}, {"job_id", p.JobID, &s.jobID}, {"service_tier", p.ServiceTier, &s.tier}, {"deadline", p.Deadline, &s.deadline}} {
		switch {
		case q.given == "":
		case *q.dst == "":
			*q.dst = q.given
		case *q.dst != q.given:
			return spec{}, invalid(q.name, "query", fmt.Sprintf("%s differs between the query string and the body", q.name))
		}
	}
	return s, nil
}

func (r Rules) parseJSONL(data []byte, p Params) (spec, *Error) {
	var s spec
	lim := strictLimits
	lim.MaxLines = max(r.MaxRequests, 0)
	err := jsonstrict.DecodeLines(data, lim, func(n int, it *item) error {
		s.items = append(s.items, located{item: *it, line: n})
		return nil
	})
	if err != nil {
		var je *jsonstrict.Error
		if errors.As(err, &je) && je.Kind == jsonstrict.Limit && je.Path == "" && je.Line > 0 && r.MaxRequests > 0 && len(s.items) >= r.MaxRequests {
			return spec{}, &Error{Kind: Invalid, Field: "requests", Line: je.Line, Reason: "too_many_requests",
				Message: fmt.Sprintf("more than %d requests per job; split the job", r.MaxRequests)}
		}
		return spec{}, strictError(err)
	}
	s.jobID, s.model, s.tier, s.deadline = p.JobID, p.Model, p.ServiceTier, p.Deadline
	for _, q := range []struct {
		name, text string
		dst        *json.RawMessage
	}{{"system_instruction", p.SystemInstruction, &s.sys}, {"generation_config", p.GenerationConfig, &s.gen}} {
		if q.text == "" {
			continue
		}
		var raw json.RawMessage
		if err := jsonstrict.Decode([]byte(q.text), &raw, strictLimits); err != nil {
			e := strictError(err)
			e.Field = joinPath(q.name, e.Field)
			e.Message = "query parameter " + q.name + ": " + e.Message
			return spec{}, e
		}
		*q.dst = raw
	}
	return s, nil
}

// strictError maps a jsonstrict error to an Invalid Error.
func strictError(err error) *Error {
	var je *jsonstrict.Error
	if !errors.As(err, &je) {
		return invalid("", "decode", err.Error())
	}
	return &Error{Kind: Invalid, Field: je.Path, Line: je.Line, Reason: string(je.Kind), Message: je.Error()}
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
