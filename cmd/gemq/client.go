package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/gemq-dev/gemq/internal/tier"

	"golang.org/x/oauth2"
)

// client speaks the ingest HTTP API (see README "HTTP API") at one base URL.
// The base may carry a path prefix (a local stack, a proxy); the API paths
// are appended to it.
type client struct {
	base *url.URL
	http *http.Client
}

// newClient returns a client for rawURL. For any host other than the loopback
// it attaches a Google ID token for the URL, from the credentials idTokenSource
// (auth.go) finds, renewed before it expires.
func newClient(ctx context.Context, rawURL string, getenv func(string) string) (*client, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &exitError{code: exitUsage, msg: fmt.Sprintf("invalid ingest URL %q: want http(s)://host[:port][/path]", rawURL)}
	}
	u.RawQuery, u.Fragment = "", ""
	u.Path = strings.TrimSuffix(u.Path, "/")
	if i := strings.Index(u.Path, "/v1/jobs"); i >= 0 {
		base := *u
		base.Path = u.Path[:i]
		return nil, &exitError{code: exitUsage, msg: fmt.Sprintf("ingest URL %q ends in an API path: give the function's base URL, %s (gemq adds /v1/jobs itself)", rawURL, base.String())}
	}
	c := &client{base: u, http: &http.Client{}}
	if isLoopback(u.Hostname()) {
		return c, nil
	}
	src, err := idTokenSource(ctx, u.String(), getenv, authDeps{}) // auth.go: every kind of credential, refreshed
	if err != nil {
		return nil, err
	}
	c.http.Transport = &tokenTransport{base: http.DefaultTransport, src: src}
	return c, nil
}

func isLoopback(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	// 0.0.0.0 and :: are "every local address" (a server's listen
	// address, pasted as a URL): connecting to them reaches this machine.
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}

// tokenTransport adds "Authorization: Bearer <ID token>" to every request.
type tokenTransport struct {
	base http.RoundTripper
	src  oauth2.TokenSource
}

func (t *tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	tok, err := t.src.Token()
	if err != nil {
		return nil, &exitError{code: exitAuth, msg: fmt.Sprintf("idtoken: %v", err)}
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	return t.base.RoundTrip(r)
}

// apiError is the ingest API's error body:
// {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "...", "field": "..."}}.
type apiError struct {
	HTTPStatus int    `json:"-"`
	Code       int    `json:"code"`
	Status     string `json:"status"`
	Message    string `json:"message"`
	Field      string `json:"field,omitempty"`
}

func (e *apiError) Error() string {
	s := fmt.Sprintf("ingest answered HTTP %d", e.HTTPStatus)
	if e.Status != "" {
		s += " " + e.Status
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Field != "" {
		s += " (field " + e.Field + ")"
	}
	return s
}

// exitCode maps an HTTP error to the command's exit code.
func (e *apiError) exitCode() int {
	switch e.HTTPStatus {
	case http.StatusUnauthorized, http.StatusForbidden:
		return exitAuth
	case http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
		return exitInput
	}
	return exitHTTP
}

// unreachableError is a transport failure: nothing answered at the URL.
type unreachableError struct {
	url string
	err error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("cannot reach ingest at %s: %v (is the URL right? `gemq dev` prints a local one)", e.url, e.err)
}

func (e *unreachableError) Unwrap() error { return e.err }

func (c *client) endpoint(path string, query url.Values) string {
	u := *c.base
	u.Path = c.base.Path + path
	u.RawQuery = query.Encode()
	return u.String()
}

// do sends one request and returns the response when its status is 2xx,
// else an *apiError; transport failures are *unreachableError.
func (c *client) do(ctx context.Context, method, path string, query url.Values, header http.Header, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.endpoint(path, query), rd)
	if err != nil {
		return nil, fmt.Errorf("http.NewRequest: %w", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", "gemq-cli")
	resp, err := c.http.Do(req)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return nil, ee
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &unreachableError{url: c.base.String(), err: err}
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var env struct {
		Error *apiError `json:"error"`
	}
	ae := &apiError{}
	if json.Unmarshal(data, &env) == nil && env.Error != nil {
		ae = env.Error
	} else {
		ae.Message = strings.TrimSpace(string(data))
		if len(ae.Message) > 300 {
			ae.Message = ae.Message[:300] + "…"
		}
	}
	ae.HTTPStatus = resp.StatusCode
	return nil, ae
}

func (c *client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return &apiError{HTTPStatus: resp.StatusCode, Message: fmt.Sprintf("unreadable answer: %v", err)}
	}
	return nil
}

// submitAnswer is the 202 body of POST /v1/jobs.
type submitAnswer struct {
	JobID    string `json:"job_id"`
	Accepted int    `json:"accepted"`
}

// submit posts a job file (JSONL or the JSON job format) as a job. model
// and jobID go in the query string, with tier and deadline when set, unless empty or equal to the JSON job's
// own (ingest refuses a query that contradicts the body). It retries
// transport errors and 5xx answers with the same job id, which ingest
// treats idempotently.
func (c *client) submit(ctx context.Context, f *jobFile, model, jobID, tier, deadline string) (submitAnswer, error) {
	q := url.Values{}
	if tier != "" {
		q.Set("service_tier", tier)
	}
	if deadline != "" {
		q.Set("deadline", deadline)
	}
	if model != "" && model != f.model {
		q.Set("model", model)
	}
	if jobID != "" && jobID != f.jobID {
		q.Set("job_id", jobID)
	}
	h := http.Header{"Content-Type": {f.contentType()}}
	body := f.data
	if len(f.data) > 1<<20 {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(f.data)
		zw.Close()
		body = buf.Bytes()
		h.Set("Content-Encoding", "gzip")
	}
	var lastErr error
	for attempt := range 4 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return submitAnswer{}, ctx.Err()
			case <-time.After(time.Duration(attempt*attempt) * 500 * time.Millisecond):
			}
		}
		resp, err := c.do(ctx, http.MethodPost, "/v1/jobs", q, h, body)
		if err != nil {
			lastErr = err
			var ae *apiError
			if errors.As(err, &ae) && ae.HTTPStatus < 500 {
				return submitAnswer{}, err
			}
			var ue *unreachableError
			if !errors.As(err, &ae) && !errors.As(err, &ue) {
				return submitAnswer{}, err
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				return submitAnswer{}, err // nothing listens there: retrying will not help
			}
			continue
		}
		var ans submitAnswer
		err = json.NewDecoder(resp.Body).Decode(&ans)
		resp.Body.Close()
		if err != nil || ans.JobID == "" {
			return submitAnswer{}, &apiError{HTTPStatus: resp.StatusCode, Message: fmt.Sprintf("unreadable answer to POST /v1/jobs: %v", err)}
		}
		return ans, nil
	}
	return submitAnswer{}, lastErr
}

// jobStatus is the body of GET /v1/jobs/{id}.
type jobStatus struct {
	JobID      string     `json:"job_id"`
	Model      string     `json:"model"`
	State      string     `json:"state"`
	Counts     jobCounts  `json:"counts"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// StateLost explains a "state_lost" job (Redis lost its record).
	StateLost string `json:"state_lost,omitempty"`
	// CancelledAt is when the job was cancelled (gemq cancel).
	CancelledAt *time.Time `json:"cancelled_at,omitempty"`
	// ServiceTier and Cost: the job's tier and what its tokens cost.
	ServiceTier *jobTier     `json:"service_tier,omitempty"`
	Cost        *tier.Report `json:"cost,omitempty"`
}

// jobCounts are a job's tasks per state.
type jobCounts struct {
	Total     int `json:"total"`
	Queued    int `json:"queued"`
	Waiting   int `json:"waiting"`
	Running   int `json:"running"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
}

func (c jobCounts) finished() int { return c.Succeeded + c.Failed }

// cancel cancels a job (POST /v1/jobs/{id}:cancel) and returns its status.
func (c *client) cancel(ctx context.Context, jobID string) (jobStatus, error) {
	var st jobStatus
	resp, err := c.do(ctx, http.MethodPost, "/v1/jobs/"+url.PathEscape(jobID)+":cancel", nil, nil, nil)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, &apiError{HTTPStatus: resp.StatusCode, Message: fmt.Sprintf("unreadable answer: %v", err)}
	}
	return st, nil
}

func (c *client) status(ctx context.Context, jobID string) (jobStatus, error) {
	var st jobStatus
	err := c.getJSON(ctx, "/v1/jobs/"+url.PathEscape(jobID), &st)
	return st, err
}

// resultsInfo is what a results download found.
type resultsInfo struct {
	lines, failed int
	// state is the job's X-Gemq-Job-State ("done", or "running": more
	// results may come); complete is false when the server's trailer
	// X-Gemq-Results-Complete said the stream ended early.
	state    string
	complete bool
}

// partial reports whether the results downloaded are not all the job's.
func (r resultsInfo) partial() bool { return r.state != "done" || !r.complete }

// results streams GET /v1/jobs/{id}/results into w and counts the lines and
// those holding an "error".
func (c *client) results(ctx context.Context, jobID string, w io.Writer) (resultsInfo, error) {
	var info resultsInfo
	resp, err := c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(jobID)+"/results", nil, nil, nil)
	if err != nil {
		return info, err
	}
	defer resp.Body.Close()
	info.state = resp.Header.Get("X-Gemq-Job-State")
	dec := json.NewDecoder(resp.Body)
	for {
		var line map[string]json.RawMessage
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			// The trailer is readable once the body is.
			info.complete = resp.Trailer.Get("X-Gemq-Results-Complete") != "false"
			return info, nil
		} else if err != nil {
			return info, &unreachableError{url: c.base.String(), err: fmt.Errorf("reading results: %w", err)}
		}
		info.lines++
		if json.Unmarshal(raw, &line) == nil {
			if _, ok := line["error"]; ok {
				info.failed++
			}
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			buf.Reset()
			buf.Write(raw)
		}
		buf.WriteByte('\n')
		if _, err := w.Write(buf.Bytes()); err != nil {
			return info, fmt.Errorf("write results: %w", err)
		}
	}
}
