// Package geminisim is a stand-in for the Gemini API (generativelanguage.googleapis.com, v1beta REST) that
// the real google.golang.org/genai client talks to through HTTPOptions.BaseURL or GOOGLE_GEMINI_BASE_URL.
// It answers generateContent, countTokens and model GETs with the real response and error shapes, checks
// the API key like the real service, enforces per-model RPM, input TPM and RPD quotas in strict sliding
// windows (RPD per America/Los_Angeles calendar day) with the real 429 RESOURCE_EXHAUSTED body, and can add
// latency, faults, detail-less 429s and token-count skew. It records every request so tests and benchmarks
// can check, at Gemini's side, that no sliding window ever exceeded a limit. Time can be scaled (a quota
// minute of 2 s) without changing any code path.
package geminisim

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/genai"

	"github.com/gemq-dev/gemq/internal/gemini"
)

// TaskIDHeader is the request header whose value the recorder keeps as the gemq task id.
const TaskIDHeader = gemini.TaskIDHeader

// Model is one model the stand-in serves.
type Model struct {
	// ID is the bare model id, e.g. "gemini-2.5-flash".
	ID string `json:"id"`
	// Limits are the model's quotas (zero: unlimited).
	Limits Limits `json:"limits"`
	// NoQuota makes every generateContent a 429 with "limit: 0" (the model has no quota on this tier).
	NoQuota bool `json:"no_quota,omitempty"`
	// InputTokenLimit and OutputTokenLimit are reported by GET and enforced (defaults 1048576 and 65536).
	InputTokenLimit  int64 `json:"input_token_limit,omitempty"`
	OutputTokenLimit int64 `json:"output_token_limit,omitempty"`
}

// DefaultModelIDs are the models served when Options.Models is empty.
var DefaultModelIDs = []string{"gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite", "gemini-2.0-flash"}

// Faults are probabilities (0..1, summed ≤ 1) that a processed generateContent request, already charged
// against the quota, fails in a given way.
type Faults struct {
	Error500 float64 `json:"error_500,omitempty"` // 500 INTERNAL
	Error503 float64 `json:"error_503,omitempty"` // 503 UNAVAILABLE "The model is overloaded"
	Error504 float64 `json:"error_504,omitempty"` // 504 DEADLINE_EXCEEDED
	Hang     float64 `json:"hang,omitempty"`      // no answer until the client gives up (or Options.HangFor)
	Reset    float64 `json:"reset,omitempty"`     // the answer is computed, then the TCP connection is reset
}

// Options configure a Server. The zero value serves DefaultModelIDs without limits, accepts any non-empty
// API key and answers at once.
type Options struct {
	// APIKey is the one valid key; empty accepts any non-empty key. A missing key is answered 403
	// PERMISSION_DENIED, a wrong one 400 INVALID_ARGUMENT with reason API_KEY_INVALID, as the real API does.
	APIKey string
	// Models served; empty: DefaultModelIDs, each with Limits.
	Models []Model
	// Limits for the default models (ignored when Models is set).
	Limits Limits
	// FreeTier names quota metrics and ids as the free tier does ("…-FreeTier").
	FreeTier bool
	// Location is the quotaDimensions location; default "global".
	Location string
	// Minute is how long a quota minute lasts in real time (default 1m). Everything (windows, days,
	// latency, retry delays) runs in stand-in time; see Server.Now.
	Minute time.Duration
	// Start is the stand-in time at New (default: the real time), e.g. just before Pacific midnight.
	Start time.Time
	// Now is the real clock (default time.Now).
	Now func() time.Time
	// Latency of processed requests, in stand-in time.
	Latency Latency
	// Faults injected into processed generateContent requests.
	Faults Faults
	// CapacityRate is the probability that a generateContent gets a 429 without details (not charged).
	CapacityRate float64
	// Tokenizer counts input tokens; the zero value is IndependentTokens (the stand-in's own rule, never
	// gemq's estimator). Tests that need exact estimates name EstimatorTokens.
	Tokenizer Tokenizer
	// DSQ, when set, puts a hidden capacity in front of the quotas, as Vertex AI's Dynamic Shared Quota
	// does: requests beyond it get a 429 without details (not charged).
	DSQ *DSQ
	// TokenSkew, e.g. 0.3, multiplies each request's token count by a random factor in [1-0.3, 1+0.3]
	// (charged, reported by usageMetadata and countTokens), to emulate an estimator that is off.
	TokenSkew float64
	// Seed makes the random choices (latency, faults, skew) reproducible; 0 picks a fixed default.
	Seed uint64
	// HangFor bounds a hang in real time (default 10m); a hang ends sooner when the client disconnects.
	HangFor time.Duration
	// Tiers configure flex shedding and the priority limit.
	Tiers Tiers
	// Batch configures the Batch API (batchGenerateContent, batches/*, and the Files API it reads and writes).
	Batch Batch
}

// Server is the Gemini stand-in: an http.Handler, optionally listening on 127.0.0.1 after Start. It is
// safe for concurrent use.
type Server struct {
	opts   Options
	clk    *clock
	models map[string]*Model

	mu      sync.Mutex
	rng     *rand.Rand
	windows map[string]*window
	dsq     *dsqState
	tiers   tierState
	batch   batchState
	log     []Entry
	seq     int64

	done      chan struct{}
	closeOnce sync.Once
	hs        *http.Server
	url       string
}

// New returns a Server for opts. Invalid values are clamped (negative rates to 0).
func New(opts Options) *Server {
	if opts.Location == "" {
		opts.Location = "global"
	}
	if opts.HangFor <= 0 {
		opts.HangFor = 10 * time.Minute
	}
	if opts.Tokenizer == "" {
		opts.Tokenizer = IndependentTokens
	}
	if opts.Seed == 0 {
		opts.Seed = 0x6765_6d71
	}
	opts.Batch = opts.Batch.withDefaults()
	if len(opts.Models) == 0 {
		for _, id := range DefaultModelIDs {
			opts.Models = append(opts.Models, Model{ID: id, Limits: opts.Limits})
		}
	}
	s := &Server{
		opts:    opts,
		clk:     newClock(opts.Now, opts.Minute, opts.Start),
		models:  make(map[string]*Model),
		rng:     rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
		windows: make(map[string]*window),
		done:    make(chan struct{}),
	}
	if opts.DSQ != nil {
		s.dsq = newDSQState(*opts.DSQ, s.clk.Now())
	}
	for _, m := range opts.Models {
		m := m
		m.ID = strings.TrimPrefix(m.ID, "models/")
		if m.InputTokenLimit <= 0 {
			m.InputTokenLimit = 1048576
		}
		if m.OutputTokenLimit <= 0 {
			m.OutputTokenLimit = 65536
		}
		s.models[m.ID] = &m
		s.windows[m.ID] = &window{}
	}
	return s
}

// Start serves on a free port of 127.0.0.1 and returns the base URL ("http://127.0.0.1:PORT") to give
// genai as HTTPOptions.BaseURL. Close stops it.
func (s *Server) Start() (string, error) {
	return s.Listen("127.0.0.1:0")
}

// Listen serves on addr (host:port) in the background and returns the base URL.
func (s *Server) Listen(addr string) (string, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("geminisim listen %s: %w", addr, err)
	}
	s.hs = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.url = "http://" + lis.Addr().String()
	go func() { _ = s.hs.Serve(lis) }()
	return s.url, nil
}

// URL is the base URL after Start, else "".
func (s *Server) URL() string { return s.url }

// Close ends hangs and latency sleeps and stops the listener started by Start. It is safe to call twice.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { close(s.done) })
	if s.hs != nil {
		return s.hs.Close()
	}
	return nil
}

// Now is the stand-in's time: real time since New, scaled by Options.Minute, from Options.Start.
func (s *Server) Now() time.Time { return s.clk.Now() }

// Reset forgets the log, every quota window, and every batch and file (a fresh project).
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = nil
	s.batch = batchState{}
	if s.dsq != nil {
		s.dsq = newDSQState(s.dsq.cfg, s.clk.Now())
	}
	for id := range s.windows {
		s.windows[id] = &window{}
	}
}

// SetBehaviour replaces the latency, faults and capacity-429 rate for the
// requests that arrive from now on (a fault that starts and ends during a
// run); the log and the quota windows are kept.
func (s *Server) SetBehaviour(l Latency, f Faults, capacityRate float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Latency, s.opts.Faults, s.opts.CapacityRate = l, f, capacityRate
}

// ServeHTTP routes the Gemini REST surface (/v1beta/models/{model}:generateContent, :countTokens,
// :batchGenerateContent, GET /v1beta/models/{model}; batches/* and files/* (batch.go, files.go); /v1 too)
// and the stand-in's own GET /_stats, GET /_log and POST /_reset.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/_stats":
		s.serveStats(w, r)
		return
	case "/_log":
		writeJSON(w, http.StatusOK, s.Log())
		return
	case "/_reset":
		if r.Method != http.MethodPost {
			writeError(w, apiError{Code: 405, Status: "INVALID_ARGUMENT", Message: "use POST"})
			return
		}
		s.Reset()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if s.serveBatchAPI(w, r) {
		return
	}
	version, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	name, ok := strings.CutPrefix(rest, "models/")
	if (version != "v1beta" && version != "v1") || !ok || name == "" {
		writeError(w, apiError{Code: 404, Status: "NOT_FOUND", Message: "Method not found."})
		return
	}
	model, method, _ := strings.Cut(name, ":")
	switch {
	case method == "" && r.Method == http.MethodGet:
		s.handle(w, r, "getModel", model, version)
	case method == "generateContent" && r.Method == http.MethodPost:
		s.handle(w, r, "generateContent", model, version)
	case method == "countTokens" && r.Method == http.MethodPost:
		s.handle(w, r, "countTokens", model, version)
	case method == "batchGenerateContent" && r.Method == http.MethodPost:
		s.handleBatchCreate(w, r, model, version)
	case method == "streamGenerateContent" || method == "embedContent":
		writeError(w, apiError{Code: 501, Status: "UNIMPLEMENTED", Message: "geminisim does not implement " + method})
	default:
		writeError(w, apiError{Code: 404, Status: "NOT_FOUND", Message: "Method not found."})
	}
}

// handle runs one API request and records it.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, method, model, version string) {
	e := Entry{Method: method, Model: model, TaskID: r.Header.Get(TaskIDHeader), Received: s.clk.Now()}
	defer func() {
		e.Finished = s.clk.Now()
		s.record(e)
	}()
	answer := func(code int, v any) {
		e.Status = code
		writeJSON(w, code, v)
	}
	fail := func(outcome string, ae apiError) {
		e.Outcome = outcome
		e.Status = ae.Code
		writeError(w, ae)
	}

	key := r.Header.Get("x-goog-api-key")
	if key == "" {
		key = r.URL.Query().Get("key")
	}
	switch {
	case key == "":
		fail("unregistered", errUnregistered())
		return
	case s.opts.APIKey != "" && key != s.opts.APIKey:
		fail("invalid_key", errKeyInvalid())
		return
	}
	m, ok := s.models[model]
	if !ok {
		fail("not_found", errNotFound(model, version, method))
		return
	}
	if method == "getModel" {
		e.Outcome = "ok"
		answer(http.StatusOK, modelJSON(m))
		return
	}

	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		fail("bad_request", errInvalid("Failed to read the request body."))
		return
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		body = []byte("{}") // genai sends no body for an empty request; the API treats it as {}
	}
	if method == "countTokens" {
		s.countTokens(&e, body, answer, fail)
		return
	}

	body, e.Tier, err = splitTier(body)
	if err != nil {
		fail("bad_request", errInvalid(err.Error()))
		return
	}
	req, err := gemini.ParseRequest(body)
	if err != nil {
		fail("bad_request", errInvalid("Invalid JSON payload received. "+err.Error()))
		return
	}
	if err := req.Validate(); err != nil {
		fail("bad_request", errInvalid("* GenerateContentRequest."+strings.TrimPrefix(err.Error(), "request.")+"\n"))
		return
	}
	e.InputTokens = s.skew(s.opts.Tokenizer.count(req.SystemInstruction, req.Contents))

	// Quota: decided, then charged, under one lock, at the receive time.
	s.mu.Lock()
	shed := s.shedLocked(e.Tier)
	capacity := !shed && s.opts.CapacityRate > 0 && s.rng.Float64() < s.opts.CapacityRate
	if !shed && !capacity && s.dsq != nil {
		capacity = !s.dsq.admit(m.ID, e.Received)
	}
	var dims []Dimension
	var retryAt time.Time
	if !shed && !capacity && !m.NoQuota {
		dims, retryAt = s.windows[m.ID].check(e.Received, e.InputTokens, m.Limits)
		if len(dims) == 0 {
			s.windows[m.ID].charge(e.Received, e.InputTokens)
			e.Charged = true
			e.ServedTier = s.servedLocked(m.ID, e.Tier, e.Received)
		}
	}
	fault := s.pickFault()
	latency := s.opts.Latency.sample(s.rng)
	seed := s.rng.Uint64()
	s.mu.Unlock()

	scaled := s.clk.factor != 1
	switch {
	case shed:
		fail("shed", errFault(503))
		return
	case capacity:
		fail("capacity", errCapacity())
		return
	case m.NoQuota:
		e.Dimensions = []Dimension{RPM, TPM, RPD}
		fail("quota_zero", errQuota(m.ID, s.opts.Location, e.Dimensions, Limits{}, s.opts.FreeTier, s.clk.real(time.Minute), !scaled))
		return
	case len(dims) > 0:
		e.Dimensions = dims
		fail("quota", errQuota(m.ID, s.opts.Location, dims, m.Limits, s.opts.FreeTier, s.clk.real(retryAt.Sub(e.Received)), !scaled))
		return
	}

	if !s.sleep(r.Context(), s.clk.real(latency)) {
		e.Outcome = "client_gone"
		return
	}
	if e.InputTokens > m.InputTokenLimit {
		fail("too_long", errInvalid(fmt.Sprintf("The input token count (%d) exceeds the maximum number of tokens allowed (%d).", e.InputTokens, m.InputTokenLimit)))
		return
	}
	switch fault {
	case "error_500", "error_503", "error_504":
		var code int
		fmt.Sscanf(fault, "error_%d", &code)
		fail(fault, errFault(code))
		return
	case "hang":
		e.Outcome = "hang"
		s.sleep(r.Context(), s.opts.HangFor)
		return
	}
	resp, outTokens := s.respond(m, req, e.InputTokens, seed)
	e.OutputTokens = outTokens
	if e.ServedTier == "" {
		e.ServedTier = "standard"
	}
	resp["usageMetadata"].(map[string]any)["serviceTier"] = e.ServedTier
	w.Header().Set(gemini.ServiceTierHeader, e.ServedTier)
	if fault == "reset" {
		e.Outcome = "reset"
		resetConn(w)
		return
	}
	e.Outcome = "ok"
	answer(http.StatusOK, resp)
}

func (s *Server) countTokens(e *Entry, body []byte, answer func(int, any), fail func(string, apiError)) {
	var in struct {
		Contents               []*genai.Content `json:"contents"`
		GenerateContentRequest *gemini.Request  `json:"generateContentRequest"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		fail("bad_request", errInvalid("Invalid JSON payload received. "+err.Error()))
		return
	}
	var n int64
	if g := in.GenerateContentRequest; g != nil {
		n = s.opts.Tokenizer.count(g.SystemInstruction, g.Contents)
	} else {
		n = s.opts.Tokenizer.count(nil, in.Contents)
	}
	s.mu.Lock()
	n = s.skewLocked(n)
	s.mu.Unlock()
	e.InputTokens = n
	e.Outcome = "ok"
	answer(http.StatusOK, map[string]any{
		"totalTokens":         n,
		"promptTokensDetails": []any{map[string]any{"modality": "TEXT", "tokenCount": n}},
	})
}

func (s *Server) skew(n int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.skewLocked(n)
}

func (s *Server) skewLocked(n int64) int64 {
	if s.opts.TokenSkew <= 0 || n == 0 {
		return n
	}
	f := 1 + s.opts.TokenSkew*(2*s.rng.Float64()-1)
	return max(1, int64(math.Round(float64(n)*f)))
}

func (s *Server) pickFault() string {
	f := s.opts.Faults
	u := s.rng.Float64()
	for _, c := range []struct {
		p    float64
		name string
	}{{f.Error500, "error_500"}, {f.Error503, "error_503"}, {f.Error504, "error_504"}, {f.Hang, "hang"}, {f.Reset, "reset"}} {
		if c.p <= 0 {
			continue
		}
		if u < c.p {
			return c.name
		}
		u -= c.p
	}
	return ""
}

// sleep waits d of real time; false if the client went away or the server closed first.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.done:
		return false
	}
}

// resetConn drops the connection with a TCP RST, without an HTTP answer.
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok { // not an HTTP/1 connection (e.g. a ResponseRecorder): the closest is a bare 500
		writeError(w, errFault(500))
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// respond builds the GenerateContentResponse JSON and the output token count.
func (s *Server) respond(m *Model, req *gemini.Request, promptTokens int64, seed uint64) (map[string]any, int64) {
	g := req.GenerationConfig
	base := promptSeed(m.ID, req)
	rng := rand.New(rand.NewPCG(base, 1))
	maxOut := m.OutputTokenLimit
	n := 1
	var thoughts int64
	if g != nil {
		if g.MaxOutputTokens != nil {
			maxOut = min(maxOut, int64(*g.MaxOutputTokens))
		}
		if g.CandidateCount != nil {
			n = int(*g.CandidateCount)
		}
		if tc := g.ThinkingConfig; tc != nil && tc.ThinkingBudget != nil && *tc.ThinkingBudget != 0 {
			thoughts = int64(16 + rng.IntN(48))
			if b := int64(*tc.ThinkingBudget); b > 0 {
				thoughts = min(thoughts, b)
			}
			thoughts = min(thoughts, maxOut) // thinking spends the output budget first
		}
	}
	var candidates []any
	var outTokens int64
	for i := range n {
		crng := rand.New(rand.NewPCG(base, uint64(i)+2))
		a := generate(crng, g, maxOut-thoughts)
		outTokens += a.tokens
		c := map[string]any{"finishReason": a.finish, "index": i}
		content := map[string]any{"role": "model"}
		if a.text != "" {
			content["parts"] = []any{map[string]any{"text": a.text}}
		}
		c["content"] = content
		candidates = append(candidates, c)
	}
	usage := map[string]any{
		"promptTokenCount":    promptTokens,
		"totalTokenCount":     promptTokens + outTokens + thoughts,
		"promptTokensDetails": []any{map[string]any{"modality": "TEXT", "tokenCount": promptTokens}},
	}
	if outTokens > 0 {
		usage["candidatesTokenCount"] = outTokens
	}
	if thoughts > 0 {
		usage["thoughtsTokenCount"] = thoughts
	}
	id := make([]byte, 12)
	for i := range id {
		id[i] = byte(seed >> (8 * (i % 8)))
	}
	return map[string]any{
		"candidates":    candidates,
		"usageMetadata": usage,
		"modelVersion":  m.ID,
		"responseId":    base64.RawURLEncoding.EncodeToString(id),
	}, outTokens + thoughts
}

func modelJSON(m *Model) map[string]any {
	return map[string]any{
		"name":                       "models/" + m.ID,
		"version":                    "001",
		"displayName":                m.ID + " (geminisim)",
		"description":                "Gemini stand-in model served by gemq's geminisim",
		"inputTokenLimit":            m.InputTokenLimit,
		"outputTokenLimit":           m.OutputTokenLimit,
		"supportedGenerationMethods": []string{"generateContent", "countTokens"},
		"temperature":                1,
		"topP":                       0.95,
		"topK":                       64,
		"maxTemperature":             2,
		"thinking":                   strings.Contains(m.ID, "2.5"),
	}
}

func (s *Server) modelIDs() []string {
	ids := make([]string, 0, len(s.models))
	for id := range s.models {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
