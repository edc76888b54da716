package gemini_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genai"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/internal/gemini"
)

const model = "gemini-2.5-flash"

// fakeClock is the stand-in's real clock, moved by hand so windows and retry delays are exact.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func start(t *testing.T, opts geminisim.Options) *geminisim.Server {
	t.Helper()
	srv := geminisim.New(opts)
	if _, err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func client(t *testing.T, srv *geminisim.Server, cfg gemini.Config) *gemini.Client {
	t.Helper()
	if cfg.APIKey == "" {
		cfg.APIKey = "test-key"
	}
	cfg.BaseURL = srv.URL()
	c, err := gemini.NewClient(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

func prompt(text string) *gemini.Request {
	return &gemini.Request{Contents: []*genai.Content{{Role: "user", Parts: []*genai.Part{{Text: text}}}}}
}

func parse(t *testing.T, raw string) *gemini.Request {
	t.Helper()
	r, err := gemini.ParseRequest([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	return r
}

// restResponse is the part of the REST GenerateContentResponse the tests read.
type restResponse struct {
	Candidates []struct {
		Content struct {
			Role  string `json:"role"`
			Parts []struct {
				Text string `json:"text"`
			} `json:"parts"`
		} `json:"content"`
		FinishReason string `json:"finishReason"`
	} `json:"candidates"`
	UsageMetadata struct {
		PromptTokenCount     int64 `json:"promptTokenCount"`
		CandidatesTokenCount int64 `json:"candidatesTokenCount"`
		ThoughtsTokenCount   int64 `json:"thoughtsTokenCount"`
		TotalTokenCount      int64 `json:"totalTokenCount"`
	} `json:"usageMetadata"`
	ModelVersion string `json:"modelVersion"`
	ResponseID   string `json:"responseId"`
}

func decode(t *testing.T, r *gemini.Response) restResponse {
	t.Helper()
	var out restResponse
	if err := json.Unmarshal(r.JSON, &out); err != nil {
		t.Fatalf("response JSON: %v\n%s", err, r.JSON)
	}
	if strings.Contains(string(r.JSON), "sdkHttpResponse") {
		t.Errorf("response JSON leaks sdkHttpResponse: %s", r.JSON)
	}
	return out
}

func apiError(t *testing.T, err error) genai.APIError {
	t.Helper()
	var ae genai.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v (%T), want a genai.APIError", err, err)
	}
	return ae
}

func TestGenerate(t *testing.T) {
	srv := start(t, geminisim.Options{APIKey: "test-key"})
	c := client(t, srv, gemini.Config{})
	ctx := context.Background()
	req := parse(t, `{"systemInstruction":{"parts":[{"text":"You are terse."}]},"contents":[{"parts":[{"text":"Tell me about the sea."}]}]}`)

	resp, err := c.Generate(ctx, "task-1", "models/"+model, req)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	got := decode(t, resp)
	if want := gemini.EstimateInputTokens(req); resp.PromptTokens != want || got.UsageMetadata.PromptTokenCount != want {
		t.Errorf("prompt tokens = %d / %d, want the local estimate %d", resp.PromptTokens, got.UsageMetadata.PromptTokenCount, want)
	}
	if len(got.Candidates) != 1 || got.Candidates[0].FinishReason != "STOP" || got.Candidates[0].Content.Role != "model" || got.Candidates[0].Content.Parts[0].Text == "" {
		t.Errorf("candidates = %+v", got.Candidates)
	}
	u := got.UsageMetadata
	if u.CandidatesTokenCount != gemini.TextTokens(got.Candidates[0].Content.Parts[0].Text) || u.TotalTokenCount != u.PromptTokenCount+u.CandidatesTokenCount {
		t.Errorf("usage = %+v", u)
	}
	if got.ModelVersion != model || got.ResponseID == "" || resp.FinishReason != "STOP" {
		t.Errorf("modelVersion %q responseId %q finish %q", got.ModelVersion, got.ResponseID, resp.FinishReason)
	}

	again, err := c.Generate(ctx, "task-2", model, req)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := decode(t, again).Candidates[0].Content.Parts[0].Text, got.Candidates[0].Content.Parts[0].Text; a != b {
		t.Errorf("text not deterministic: %q vs %q", a, b)
	}

	n, err := c.CountTokens(ctx, model, req)
	if err != nil || n != gemini.EstimateInputTokens(req) {
		t.Errorf("CountTokens = %d, %v; want %d", n, err, gemini.EstimateInputTokens(req))
	}

	log := srv.Log()
	var tasks []string
	for _, e := range log {
		if e.Method == "generateContent" {
			tasks = append(tasks, e.TaskID)
		}
	}
	if diff := cmp.Diff([]string{"task-1", "task-2"}, tasks); diff != "" {
		t.Errorf("recorded task ids (-want +got):\n%s", diff)
	}
}

func TestGenerateOutputControls(t *testing.T) {
	srv := start(t, geminisim.Options{})
	c := client(t, srv, gemini.Config{})
	ctx := context.Background()

	t.Run("maxOutputTokens", func(t *testing.T) {
		resp, err := c.Generate(ctx, "t", model, parse(t, `{"contents":[{"parts":[{"text":"Write a long story."}]}],"generationConfig":{"maxOutputTokens":3}}`))
		if err != nil {
			t.Fatal(err)
		}
		got := decode(t, resp)
		if got.Candidates[0].FinishReason != "MAX_TOKENS" || got.UsageMetadata.CandidatesTokenCount > 3 || got.UsageMetadata.CandidatesTokenCount == 0 {
			t.Errorf("got %+v", got)
		}
	})
	t.Run("json with schema", func(t *testing.T) {
		resp, err := c.Generate(ctx, "t", model, parse(t, `{"contents":[{"parts":[{"text":"List a user."}]}],"generationConfig":{
		  "responseMimeType":"application/json","responseSchema":{"type":"OBJECT","properties":{
		    "name":{"type":"STRING"},"age":{"type":"INTEGER"},"tags":{"type":"ARRAY","items":{"type":"STRING"}},"kind":{"type":"STRING","enum":["a","b"]}}}}}`))
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Name *string  `json:"name"`
			Age  *int     `json:"age"`
			Tags []string `json:"tags"`
			Kind string   `json:"kind"`
		}
		text := decode(t, resp).Candidates[0].Content.Parts[0].Text
		if err := json.Unmarshal([]byte(text), &v); err != nil || v.Name == nil || v.Age == nil || len(v.Tags) == 0 || (v.Kind != "a" && v.Kind != "b") {
			t.Errorf("JSON answer %q: %+v, %v", text, v, err)
		}
	})
	t.Run("json without schema", func(t *testing.T) {
		resp, err := c.Generate(ctx, "t", model, parse(t, `{"contents":[{"parts":[{"text":"x"}]}],"generationConfig":{"responseMimeType":"application/json"}}`))
		if err != nil {
			t.Fatal(err)
		}
		if text := decode(t, resp).Candidates[0].Content.Parts[0].Text; !json.Valid([]byte(text)) {
			t.Errorf("not JSON: %q", text)
		}
	})
	t.Run("candidates and thinking", func(t *testing.T) {
		resp, err := c.Generate(ctx, "t", model, parse(t, `{"contents":[{"parts":[{"text":"x"}]}],"generationConfig":{"candidateCount":2,"thinkingConfig":{"thinkingBudget":1024}}}`))
		if err != nil {
			t.Fatal(err)
		}
		got := decode(t, resp)
		if len(got.Candidates) != 2 || got.UsageMetadata.ThoughtsTokenCount == 0 || resp.ThoughtsTokens != got.UsageMetadata.ThoughtsTokenCount {
			t.Errorf("got %+v", got)
		}
		if u := got.UsageMetadata; u.TotalTokenCount != u.PromptTokenCount+u.CandidatesTokenCount+u.ThoughtsTokenCount {
			t.Errorf("usage %+v", u)
		}
	})
}

func TestGetModel(t *testing.T) {
	srv := start(t, geminisim.Options{Models: []geminisim.Model{{ID: model, InputTokenLimit: 1000, OutputTokenLimit: 100}}})
	gc, err := genai.NewClient(context.Background(), &genai.ClientConfig{APIKey: "k", Backend: genai.BackendGeminiAPI, HTTPOptions: genai.HTTPOptions{BaseURL: srv.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := gc.Models.Get(context.Background(), model, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "models/"+model || m.InputTokenLimit != 1000 || m.OutputTokenLimit != 100 {
		t.Errorf("model = %+v", m)
	}
	_, err = gc.Models.Get(context.Background(), "gemini-9", nil)
	if ae := apiError(t, err); ae.Code != 404 || ae.Status != "NOT_FOUND" {
		t.Errorf("unknown model: %+v", ae)
	}
}

// stripKey removes the API key the SDK always sets, to see the answer to an unregistered caller.
type stripKey struct{}

func (stripKey) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Del("x-goog-api-key")
	return http.DefaultTransport.RoundTrip(r)
}

func TestPermanentErrors(t *testing.T) {
	srv := start(t, geminisim.Options{APIKey: "right", Models: []geminisim.Model{{ID: model, InputTokenLimit: 20}}})
	ctx := context.Background()
	req := prompt("hello")

	_, err := client(t, srv, gemini.Config{APIKey: "wrong"}).Generate(ctx, "t", model, req)
	ae := apiError(t, err)
	want := genai.APIError{Code: 400, Status: "INVALID_ARGUMENT", Message: "API key not valid. Please pass a valid API key.", Details: []map[string]any{
		{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com", "metadata": map[string]any{"service": "generativelanguage.googleapis.com"}},
		{"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": "API key not valid. Please pass a valid API key."},
	}}
	if diff := cmp.Diff(want, ae); diff != "" {
		t.Errorf("wrong key (-want +got):\n%s", diff)
	}
	if f := gemini.Classify(err); f.Kind != gemini.Permanent || f.Code != 400 || f.Message != want.Message {
		t.Errorf("Classify(wrong key) = %+v", f)
	}

	_, err = client(t, srv, gemini.Config{APIKey: "right", HTTPClient: &http.Client{Transport: stripKey{}}}).Generate(ctx, "t", model, req)
	if ae := apiError(t, err); ae.Code != 403 || ae.Status != "PERMISSION_DENIED" || !strings.HasPrefix(ae.Message, "Method doesn't allow unregistered callers") {
		t.Errorf("missing key: %+v", ae)
	}
	if f := gemini.Classify(err); f.Kind != gemini.Permanent || f.Code != 403 {
		t.Errorf("Classify(missing key) = %+v", f)
	}

	c := client(t, srv, gemini.Config{APIKey: "right"})
	_, err = c.Generate(ctx, "t", "gemini-unknown", req)
	if f := gemini.Classify(err); f.Kind != gemini.Permanent || f.Code != 404 || !strings.Contains(f.Message, "models/gemini-unknown is not found") {
		t.Errorf("Classify(unknown model) = %+v", f)
	}

	_, err = c.Generate(ctx, "t", model, prompt(strings.Repeat("abcd", 21)))
	if f := gemini.Classify(err); f.Kind != gemini.Permanent || f.Code != 400 || f.Message != "The input token count (21) exceeds the maximum number of tokens allowed (20)." {
		t.Errorf("Classify(too long) = %+v", f)
	}
	if _, err := c.Generate(ctx, "t", "bad model!", req); err == nil || gemini.Classify(err).Kind != gemini.Permanent {
		t.Errorf("bad model name: %v", err)
	}
}

func TestQuota429Bodies(t *testing.T) {
	clk := &fakeClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	srv := start(t, geminisim.Options{Now: clk.Now, Models: []geminisim.Model{
		{ID: model, Limits: geminisim.Limits{RPM: 2, TPM: 100, RPD: 1000}},
		{ID: "gemini-2.5-pro", NoQuota: true},
	}})
	c := client(t, srv, gemini.Config{})
	ctx := context.Background()
	req := prompt("hello")

	for i := range 2 {
		if _, err := c.Generate(ctx, "ok", model, req); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	clk.Advance(15 * time.Second)
	_, err := c.Generate(ctx, "over", model, req)
	want := genai.APIError{
		Code:   429,
		Status: "RESOURCE_EXHAUSTED",
		Message: "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/rate-limit. " +
			"\n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_paid_tier_requests, limit: 2, model: gemini-2.5-flash\nPlease retry in 45s.",
		Details: []map[string]any{
			{"@type": "type.googleapis.com/google.rpc.Help", "links": []any{map[string]any{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}}},
			{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []any{map[string]any{
				"quotaMetric":     "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
				"quotaId":         "GenerateRequestsPerMinutePerProjectPerModel",
				"quotaDimensions": map[string]any{"location": "global", "model": "gemini-2.5-flash"},
				"quotaValue":      "2",
			}}},
			{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "45s"},
		},
	}
	if diff := cmp.Diff(want, apiError(t, err)); diff != "" {
		t.Errorf("RPM 429 body (-want +got):\n%s", diff)
	}
	wantF := gemini.Failure{Kind: gemini.QuotaPerMinute, Code: 429, Status: "RESOURCE_EXHAUSTED", Message: want.Message, RetryAfter: 45 * time.Second,
		QuotaID: "GenerateRequestsPerMinutePerProjectPerModel", QuotaIDs: []string{"GenerateRequestsPerMinutePerProjectPerModel"}, QuotaValue: 2}
	if diff := cmp.Diff(wantF, gemini.Classify(err)); diff != "" {
		t.Errorf("Classify(RPM 429) (-want +got):\n%s", diff)
	}

	// TPM: 50 tokens twice fill the minute; after the RPM window passes, tokens are still the limit.
	clk.Advance(time.Minute)
	big := prompt(strings.Repeat("abcd", 50)) // 50 tokens
	for i := range 2 {
		if _, err := c.Generate(ctx, "big", model, big); err != nil {
			t.Fatalf("big %d: %v", i, err)
		}
		clk.Advance(20 * time.Second)
	}
	_, err = c.Generate(ctx, "big", model, prompt("x")) // RPM has room (one call 20 s ago... two within the minute) — both full
	f := gemini.Classify(err)
	if f.Kind != gemini.QuotaPerMinute || !cmp.Equal(f.QuotaIDs, []string{"GenerateRequestsPerMinutePerProjectPerModel", "GenerateContentInputTokensPerModelPerMinute"}) || f.RetryAfter != 20*time.Second {
		t.Errorf("Classify(RPM+TPM 429) = %+v", f)
	}

	_, err = c.Generate(ctx, "zero", "gemini-2.5-pro", req)
	f = gemini.Classify(err)
	if f.Kind != gemini.QuotaZero || f.QuotaID != "GenerateRequestsPerMinutePerProjectPerModel" || !strings.Contains(f.Message, "limit: 0, model: gemini-2.5-pro") {
		t.Errorf("Classify(limit 0) = %+v", f)
	}

	st := srv.Stats(1)
	if st.Quota429 != 3 || st.Models[model].Quota429[geminisim.RPM] != 2 || st.Models[model].Quota429[geminisim.TPM] != 1 || st.Models["gemini-2.5-pro"].QuotaZero429 != 1 {
		t.Errorf("stats 429s = %d, %+v", st.Quota429, st.Models[model].Quota429)
	}
}

func TestSlidingWindowIsStrict(t *testing.T) {
	clk := &fakeClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	srv := start(t, geminisim.Options{Now: clk.Now, Limits: geminisim.Limits{RPM: 2}})
	c := client(t, srv, gemini.Config{})
	ctx := context.Background()
	call := func() gemini.Failure {
		_, err := c.Generate(ctx, "t", model, prompt("hi"))
		return gemini.Classify(err)
	}
	step := func(d time.Duration, want gemini.Kind, retry time.Duration) {
		t.Helper()
		clk.Advance(d)
		if f := call(); f.Kind != want || f.RetryAfter != retry {
			t.Errorf("at +%v: got %s retry %v, want %q retry %v", d, f.Kind, f.RetryAfter, want, retry)
		}
	}
	step(0, "", 0)                                                                // t=0
	step(30*time.Second, "", 0)                                                   // t=30
	step(29*time.Second+500*time.Millisecond, gemini.QuotaPerMinute, time.Second) // t=59.5: 0.5 s left, rounded up to whole seconds
	step(500*time.Millisecond, "", 0)                                             // t=60: the first call left the window
	step(time.Second, gemini.QuotaPerMinute, 29*time.Second)                      // t=61: calls at 30 and 60 are in the window
	// The recorder counts what the client sent, 429s included: windows from t=0, 30 and 59.5 hold 3, 4, 3.
	var values []int64
	for _, v := range srv.Check(model, geminisim.Limits{RPM: 2}, 1) {
		values = append(values, v.Value)
	}
	if diff := cmp.Diff([]int64{3, 4, 3}, values); diff != "" {
		t.Errorf("violations (-want +got):\n%s", diff)
	}
}

func TestDailyQuotaResetsAtPacificMidnight(t *testing.T) {
	la, _ := time.LoadLocation("America/Los_Angeles")
	// 2025-11-01 23:59 PDT; the next midnight is still PDT, the day after ends in PST (DST ends 11-02).
	clk := &fakeClock{t: time.Date(2025, 11, 1, 23, 59, 0, 0, la)}
	srv := start(t, geminisim.Options{Now: clk.Now, Limits: geminisim.Limits{RPD: 1}})
	c := client(t, srv, gemini.Config{})
	ctx := context.Background()
	if _, err := c.Generate(ctx, "a", model, prompt("hi")); err != nil {
		t.Fatal(err)
	}
	_, err := c.Generate(ctx, "b", model, prompt("hi"))
	f := gemini.Classify(err)
	if f.Kind != gemini.QuotaPerDay || f.QuotaID != "GenerateRequestsPerDayPerProjectPerModel" || f.RetryAfter != time.Minute {
		t.Fatalf("Classify(RPD) = %+v", f)
	}
	clk.Advance(time.Minute) // 2025-11-02 00:00 PDT
	if _, err := c.Generate(ctx, "b", model, prompt("hi")); err != nil {
		t.Fatalf("after midnight: %v", err)
	}
	clk.Advance(23*time.Hour + 59*time.Minute) // 23:59 PST on the 25-hour day: still 11-02
	_, err = c.Generate(ctx, "c", model, prompt("hi"))
	if f := gemini.Classify(err); f.Kind != gemini.QuotaPerDay || f.RetryAfter != time.Hour+time.Minute {
		t.Errorf("on the 25-hour day: %+v", f)
	}
}

func TestCapacityAndFaults(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		opts geminisim.Options
		code int
		kind gemini.Kind
	}{
		{"capacity", geminisim.Options{CapacityRate: 1}, 429, gemini.Capacity},
		{"500", geminisim.Options{Faults: geminisim.Faults{Error500: 1}}, 500, gemini.Transient},
		{"503", geminisim.Options{Faults: geminisim.Faults{Error503: 1}}, 503, gemini.Transient},
		{"504", geminisim.Options{Faults: geminisim.Faults{Error504: 1}}, 504, gemini.Transient},
		{"hang", geminisim.Options{Faults: geminisim.Faults{Hang: 1}}, 0, gemini.Transient},
		{"reset", geminisim.Options{Faults: geminisim.Faults{Reset: 1}}, 0, gemini.Transient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := start(t, tc.opts)
			c := client(t, srv, gemini.Config{Timeout: 300 * time.Millisecond})
			_, err := c.Generate(ctx, "t1", model, prompt("hi"))
			f := gemini.Classify(err)
			if f.Kind != tc.kind || f.Code != tc.code {
				t.Fatalf("Classify = %+v (err %v), want %s/%d", f, err, tc.kind, tc.code)
			}
			if tc.name == "capacity" && (f.RetryAfter != 0 || len(f.QuotaIDs) != 0 || len(apiError(t, err).Details) != 0) {
				t.Errorf("capacity 429 has details: %+v", f)
			}
			// Exactly one request reached the stand-in: no SDK retry, no transport replay.
			deadline := time.Now().Add(2 * time.Second)
			for len(srv.Log()) == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond) // a hang is recorded when the stand-in sees the client leave
			}
			time.Sleep(20 * time.Millisecond)
			if log := srv.Log(); len(log) != 1 || log[0].TaskID != "t1" {
				t.Errorf("log = %+v, want exactly one request", log)
			}
		})
	}
}

func TestTokenSkew(t *testing.T) {
	srv := start(t, geminisim.Options{TokenSkew: 0.3, Seed: 7})
	c := client(t, srv, gemini.Config{})
	req := prompt(strings.Repeat("abcd", 100)) // 100 tokens
	differs := false
	for range 10 {
		resp, err := c.Generate(context.Background(), "t", model, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.PromptTokens < 70 || resp.PromptTokens > 130 {
			t.Errorf("skewed count %d outside ±30%% of 100", resp.PromptTokens)
		}
		differs = differs || resp.PromptTokens != 100
	}
	if !differs {
		t.Error("skew never changed the count")
	}
}

func TestClassifyLocal(t *testing.T) {
	for _, tc := range []struct {
		err  error
		kind gemini.Kind
	}{
		{nil, ""},
		{context.DeadlineExceeded, gemini.Transient},
		{errors.New("genai: bad config"), gemini.Permanent},
		{genai.APIError{Code: 429, Message: "Resource exhausted. Please try again later."}, gemini.Capacity},
		{&genai.APIError{Code: 503}, gemini.Transient},
		{genai.APIError{Code: 429, Message: "Quota exceeded for metric: x, limit: 0, model: m", Details: []map[string]any{
			{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []any{map[string]any{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}}}}}, gemini.QuotaZero},
		{genai.APIError{Code: 429, Message: "Please retry in 1.5s.", Details: []map[string]any{
			{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []any{map[string]any{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "quotaValue": "250"}}}}}, gemini.QuotaPerDay},
	} {
		if f := gemini.Classify(tc.err); f.Kind != tc.kind {
			t.Errorf("Classify(%v) = %+v, want %q", tc.err, f, tc.kind)
		}
	}
	if f := gemini.Classify(genai.APIError{Code: 429, Message: "x Please retry in 1.5s.", Details: []map[string]any{
		{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []any{map[string]any{"quotaId": "GenerateContentPaidTierInputTokensPerModelPerMinute"}}}}}); f.RetryAfter != 1500*time.Millisecond || f.Kind != gemini.QuotaPerMinute {
		t.Errorf("retry from message: %+v", f)
	}
}

func TestNewClientConfig(t *testing.T) {
	if _, err := gemini.NewClient(context.Background(), gemini.Config{}); err == nil {
		t.Error("no key accepted")
	}
	if _, err := gemini.NewClient(context.Background(), gemini.Config{Vertex: true}); err == nil {
		t.Error("Vertex without project accepted")
	}
	srv := start(t, geminisim.Options{})
	t.Setenv("GOOGLE_GEMINI_BASE_URL", srv.URL())
	c, err := gemini.NewClient(context.Background(), gemini.Config{APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Generate(context.Background(), "env", model, prompt("hi")); err != nil {
		t.Fatalf("via GOOGLE_GEMINI_BASE_URL: %v", err)
	}
	if n := len(srv.Log()); n != 1 {
		t.Errorf("stand-in saw %d requests", n)
	}
}
