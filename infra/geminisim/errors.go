package geminisim

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// apiError is the google.rpc.Status JSON body the Gemini API answers errors with.
type apiError struct {
	Code    int              `json:"code"`
	Message string           `json:"message"`
	Status  string           `json:"status"`
	Details []map[string]any `json:"details,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":{"code":500,"message":"encode","status":"INTERNAL"}}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, e apiError) {
	writeJSON(w, e.Code, map[string]any{"error": e})
}

// Real messages of the Gemini API (generativelanguage.googleapis.com) as clients report them.
const (
	msgUnregistered = "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API."
	msgKeyInvalid   = "API key not valid. Please pass a valid API key."
	msgCapacity     = "Resource has been exhausted (e.g. check quota)."
	msgInternal     = "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
	msgOverloaded   = "The model is overloaded. Please try again later."
	msgDeadline     = "Deadline expired before operation could complete."
	msgQuotaHead    = "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/rate-limit. "
	rateLimitsDoc   = "https://ai.google.dev/gemini-api/docs/rate-limits"
	service         = "generativelanguage.googleapis.com"
)

func errUnregistered() apiError {
	return apiError{Code: 403, Status: "PERMISSION_DENIED", Message: msgUnregistered}
}

func errKeyInvalid() apiError {
	return apiError{Code: 400, Status: "INVALID_ARGUMENT", Message: msgKeyInvalid, Details: []map[string]any{
		{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
			"metadata": map[string]any{"service": service}},
		{"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": msgKeyInvalid},
	}}
}

func errInvalid(msg string) apiError {
	return apiError{Code: 400, Status: "INVALID_ARGUMENT", Message: msg}
}

func errNotFound(model, version, method string) apiError {
	return apiError{Code: 404, Status: "NOT_FOUND", Message: fmt.Sprintf(
		"models/%s is not found for API version %s, or is not supported for %s. Call ListModels to see the list of available models and their supported methods.",
		model, version, method)}
}

func errFault(code int) apiError {
	switch code {
	case 503:
		return apiError{Code: 503, Status: "UNAVAILABLE", Message: msgOverloaded}
	case 504:
		return apiError{Code: 504, Status: "DEADLINE_EXCEEDED", Message: msgDeadline}
	}
	return apiError{Code: 500, Status: "INTERNAL", Message: msgInternal}
}

func errCapacity() apiError {
	return apiError{Code: 429, Status: "RESOURCE_EXHAUSTED", Message: msgCapacity}
}

// Quota metric and quota id names by dimension; the free tier adds "-FreeTier" to the ids.
func quotaNames(d Dimension, free bool) (metric, id string) {
	tier := "paid_tier"
	suffix := ""
	if free {
		tier, suffix = "free_tier", "-FreeTier"
	}
	switch d {
	case RPM:
		return service + "/generate_content_" + tier + "_requests", "GenerateRequestsPerMinutePerProjectPerModel" + suffix
	case TPM:
		return service + "/generate_content_" + tier + "_input_token_count", "GenerateContentInputTokensPerModelPerMinute" + suffix
	}
	return service + "/generate_content_" + tier + "_requests", "GenerateRequestsPerDayPerProjectPerModel" + suffix
}

// QuotaID returns the quotaId the stand-in reports for a dimension, e.g.
// "GenerateRequestsPerMinutePerProjectPerModel" (with "-FreeTier" appended for the free tier).
func QuotaID(d Dimension, freeTier bool) string {
	_, id := quotaNames(d, freeTier)
	return id
}

// errQuota is the 429 RESOURCE_EXHAUSTED body with google.rpc.Help, google.rpc.QuotaFailure and
// google.rpc.RetryInfo, as the Gemini API answers a quota breach. limits gives each violated dimension's
// limit (0 for a model without quota).
func errQuota(model, location string, dims []Dimension, limits Limits, free bool, retry time.Duration, wholeSeconds bool) apiError {
	var msg strings.Builder
	msg.WriteString(msgQuotaHead)
	violations := make([]any, 0, len(dims))
	for _, d := range dims {
		metric, id := quotaNames(d, free)
		limit := limits.of(d)
		fmt.Fprintf(&msg, "\n* Quota exceeded for metric: %s, limit: %d, model: %s", metric, limit, model)
		violations = append(violations, map[string]any{
			"quotaMetric":     metric,
			"quotaId":         id,
			"quotaDimensions": map[string]any{"location": location, "model": model},
			"quotaValue":      strconv.FormatInt(limit, 10),
		})
	}
	fmt.Fprintf(&msg, "\nPlease retry in %ss.", strconv.FormatFloat(retry.Seconds(), 'f', -1, 64))
	return apiError{Code: 429, Status: "RESOURCE_EXHAUSTED", Message: msg.String(), Details: []map[string]any{
		{"@type": "type.googleapis.com/google.rpc.Help", "links": []any{
			map[string]any{"description": "Learn more about Gemini API quotas", "url": rateLimitsDoc}}},
		{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": violations},
		{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": formatDelay(retry, wholeSeconds)},
	}}
}

// formatDelay writes a proto Duration: whole seconds rounded up ("47s") like the real API when time is not
// scaled, else milliseconds rounded up ("0.734s") so a scaled client is not told to wait a whole real second.
func formatDelay(d time.Duration, wholeSeconds bool) string {
	if d < 0 {
		d = 0
	}
	if wholeSeconds {
		return strconv.FormatInt(int64(math.Ceil(d.Seconds())), 10) + "s"
	}
	ms := int64(math.Ceil(float64(d) / float64(time.Millisecond)))
	return strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64) + "s"
}
