package ingest

import (
	"encoding/json"
	"net/http"

	"github.com/gemq-dev/gemq/internal/logging"
)

// apiError is the body of every error answer:
//
//	{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "...",
//	           "field": "requests[3].request.contents", "line": 4, "key": "..."}}
//
// code is the HTTP status; status its name in Google API style; field the
// JSON path of the offending input (query parameters and headers are named
// as such, e.g. "Content-Type"); line the 1-based JSONL line; key the request
// key concerned, when there is one.
type apiError struct {
	Code    int    `json:"code"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	Line    int    `json:"line,omitempty"`
	Key     string `json:"key,omitempty"`
	// reason is a short, input-free classification for the logs.
	reason string
}

// Error implements error.
func (e *apiError) Error() string { return e.Message }

// statusName maps an HTTP status to the status string of the error body.
func statusName(code int) string {
	switch code {
	case http.StatusBadRequest:
		return "INVALID_ARGUMENT"
	case http.StatusNotFound:
		return "NOT_FOUND"
	case http.StatusMethodNotAllowed:
		return "METHOD_NOT_ALLOWED"
	case http.StatusConflict:
		return "ALREADY_EXISTS"
	case http.StatusRequestEntityTooLarge:
		return "PAYLOAD_TOO_LARGE"
	case http.StatusUnsupportedMediaType:
		return "UNSUPPORTED_MEDIA_TYPE"
	case http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	}
	return "INTERNAL"
}

// fail writes e. Client errors are logged at info level with their reason
// and field kind only: never the message, which may quote the input.
func (s *server) fail(w http.ResponseWriter, r *http.Request, e *apiError) {
	if e.Status == "" {
		e.Status = statusName(e.Code)
	}
	log := logging.From(r.Context(), s.log)
	attrs := []any{"code", e.Code, "status", e.Status}
	if e.reason != "" {
		attrs = append(attrs, "reason", e.reason)
	}
	if e.Line > 0 {
		attrs = append(attrs, "line", e.Line)
	}
	log.Info("request refused", attrs...)
	writeJSON(w, e.Code, struct {
		Error *apiError `json:"error"`
	}{e})
}

// internal answers 503 for a failure of a dependency (Redis, Pub/Sub): the
// client should retry, with the same job id when submitting.
func (s *server) internal(w http.ResponseWriter, r *http.Request, op string, err error) {
	logging.From(r.Context(), s.log).Error(op+" failed", "error", err.Error())
	e := &apiError{Code: http.StatusServiceUnavailable, Message: op + " failed; retry later (a submission with the same job_id is safe to retry)"}
	e.Status = statusName(e.Code)
	writeJSON(w, e.Code, struct {
		Error *apiError `json:"error"`
	}{e})
}

// writeJSON writes v as the JSON body with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b = []byte(`{"error":{"code":500,"status":"INTERNAL","message":"encoding the answer failed"}}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
