package gemini

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/genai"
)

// Kind is what a failed Gemini call means for the task.
type Kind string

// The kinds of failure, in the order Classify tests them.
const (
	// QuotaZero: a 429 whose quota limit is 0 (the model has no quota on this tier). Permanent.
	QuotaZero Kind = "quota_zero"
	// QuotaPerDay: a 429 for a per-day quota (RPD). Come back after midnight America/Los_Angeles.
	QuotaPerDay Kind = "quota_per_day"
	// QuotaPerMinute: a 429 for a per-minute quota (RPM, TPM). Cool down for RetryAfter and reschedule.
	QuotaPerMinute Kind = "quota_per_minute"
	// Capacity: a 429 without quota details (the service is short of capacity). Back off and retry.
	Capacity Kind = "capacity"
	// Transient: 5xx, 408, timeouts, connection errors, cancellation. Bounded retries.
	Transient Kind = "transient"
	// Permanent: 400, 403, 404 and other client errors (Message holds Gemini's message). Never retried.
	Permanent Kind = "permanent"
)

// Failure is the classification of a Gemini call's error.
type Failure struct {
	Kind Kind `json:"kind"`
	// Code is the HTTP status (0 for transport errors); Status the RPC status, e.g. "RESOURCE_EXHAUSTED".
	Code   int    `json:"code,omitempty"`
	Status string `json:"status,omitempty"`
	// Message is Gemini's error message (or the transport error's text).
	Message string `json:"message,omitempty"`
	// RetryAfter is google.rpc.RetryInfo.retryDelay, else the "Please retry in Ns" of the message; 0 when
	// Gemini gave no delay.
	RetryAfter time.Duration `json:"retry_after,omitempty"`
	// QuotaID is the quotaId that decided Kind for quota failures; QuotaIDs all the violations' quotaIds.
	QuotaID  string   `json:"quota_id,omitempty"`
	QuotaIDs []string `json:"quota_ids,omitempty"`
	// QuotaValue is the QuotaFailure violation's quotaValue for QuotaID: the limit Gemini enforces (which
	// may be lower than the configured one); 0 when absent or not a number.
	QuotaValue int64 `json:"quota_value,omitempty"`
}

// Retryable reports whether the task may be tried again later (everything but Permanent and QuotaZero).
func (f Failure) Retryable() bool {
	return f.Kind != "" && f.Kind != Permanent && f.Kind != QuotaZero
}

const (
	typeQuotaFailure = "type.googleapis.com/google.rpc.QuotaFailure"
	typeRetryInfo    = "type.googleapis.com/google.rpc.RetryInfo"
)

var (
	retryInRe = regexp.MustCompile(`[Pp]lease retry in ([0-9.]+(?:ms|s|m|h))`)
	limit0Re  = regexp.MustCompile(`\blimit: 0\b`)
)

// Classify turns an error from Generate or CountTokens into a Failure. A nil error gives the zero Failure
// (Kind ""). A genai.APIError is classified by code and details: 429 with google.rpc.QuotaFailure → QuotaZero
// (a violation with quotaValue 0 or "limit: 0" in the message), else QuotaPerDay (a quotaId with "PerDay"),
// else QuotaPerMinute; 429 without QuotaFailure → Capacity; 408 and 5xx → Transient; other codes →
// Permanent. Errors without an HTTP answer (timeouts, resets, refused connections, cancellation) are
// Transient; anything else (e.g. a request the SDK refused to build) is Permanent.
func Classify(err error) Failure {
	if err == nil {
		return Failure{}
	}
	var ae genai.APIError
	if pae := (*genai.APIError)(nil); errors.As(err, &pae) && pae != nil {
		ae = *pae
	} else if !errors.As(err, &ae) {
		if isTransport(err) {
			return Failure{Kind: Transient, Message: err.Error()}
		}
		return Failure{Kind: Permanent, Message: err.Error()}
	}
	f := Failure{Code: ae.Code, Status: ae.Status, Message: ae.Message}
	var violations []map[string]any
	for _, d := range ae.Details {
		switch d["@type"] {
		case typeRetryInfo:
			if s, ok := d["retryDelay"].(string); ok {
				if dur, err := time.ParseDuration(s); err == nil {
					f.RetryAfter = dur
				}
			}
		case typeQuotaFailure:
			vs, _ := d["violations"].([]any)
			for _, v := range vs {
				if m, ok := v.(map[string]any); ok {
					violations = append(violations, m)
					if id, _ := m["quotaId"].(string); id != "" {
						f.QuotaIDs = append(f.QuotaIDs, id)
					}
				}
			}
		}
	}
	if f.RetryAfter == 0 {
		if m := retryInRe.FindStringSubmatch(ae.Message); m != nil {
			if dur, err := time.ParseDuration(m[1]); err == nil {
				f.RetryAfter = dur
			}
		}
	}
	switch {
	case ae.Code == 429 && len(violations) > 0:
		f.Kind, f.QuotaID = classifyQuota(violations, ae.Message)
		f.QuotaValue = quotaValue(violations, f.QuotaID)
	case ae.Code == 429:
		f.Kind = Capacity
	case ae.Code == 408 || ae.Code == 499 || ae.Code >= 500 || ae.Code == 0:
		f.Kind = Transient
	default:
		f.Kind = Permanent
	}
	return f
}

func classifyQuota(violations []map[string]any, message string) (Kind, string) {
	first := func(match func(id string, v map[string]any) bool) (string, bool) {
		for _, v := range violations {
			id, _ := v["quotaId"].(string)
			if match(id, v) {
				return id, true
			}
		}
		return "", false
	}
	if id, ok := first(func(_ string, v map[string]any) bool { return fmt.Sprint(v["quotaValue"]) == "0" }); ok {
		return QuotaZero, id
	}
	if limit0Re.MatchString(message) {
		id, _ := first(func(string, map[string]any) bool { return true })
		return QuotaZero, id
	}
	if id, ok := first(func(id string, _ map[string]any) bool { return strings.Contains(id, "PerDay") }); ok {
		return QuotaPerDay, id
	}
	if id, ok := first(func(id string, _ map[string]any) bool { return strings.Contains(id, "PerMinute") }); ok {
		return QuotaPerMinute, id
	}
	id, _ := first(func(string, map[string]any) bool { return true })
	return QuotaPerMinute, id
}

// quotaValue returns the quotaValue of the first violation with quota id, 0 when there is none.
func quotaValue(violations []map[string]any, id string) int64 {
	for _, v := range violations {
		if got, _ := v["quotaId"].(string); got != id {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(fmt.Sprint(v["quotaValue"])), 10, 64)
		if err != nil || n < 0 {
			return 0
		}
		return n
	}
	return 0
}

func isTransport(err error) bool {
	var ue *url.Error
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.As(err, &ue) || errors.As(err, &ne)
}
