package geminisim_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

func start(t *testing.T, opts geminisim.Options) (*geminisim.Server, *genai.Client) {
	t.Helper()
	srv := geminisim.New(opts)
	url, err := srv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	gc, err := genai.NewClient(context.Background(), &genai.ClientConfig{
		APIKey: "k", Backend: genai.BackendGeminiAPI, HTTPOptions: genai.HTTPOptions{BaseURL: url},
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv, gc
}

func generate(gc *genai.Client, taskID, text string) (*genai.GenerateContentResponse, error) {
	return gc.Models.GenerateContent(context.Background(), model, genai.Text(text), &genai.GenerateContentConfig{
		HTTPOptions: &genai.HTTPOptions{Headers: http.Header{geminisim.TaskIDHeader: {taskID}}},
	})
}

func TestParseLatency(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want geminisim.Latency
		bad  bool
	}{
		{spec: "", want: geminisim.Latency{}},
		{spec: "fixed:800ms", want: geminisim.Latency{Kind: "fixed", Fixed: 800 * time.Millisecond}},
		{spec: "uniform:200ms,2s", want: geminisim.Latency{Kind: "uniform", Min: 200 * time.Millisecond, Max: 2 * time.Second}},
		{spec: "lognormal:median=1.5s,sigma=0.5,max=20s", want: geminisim.Latency{Kind: "lognormal", Median: 1500 * time.Millisecond, Sigma: 0.5, Cap: 20 * time.Second}},
		{spec: "uniform:2s,1s", bad: true},
		{spec: "lognormal:sigma=1", bad: true},
		{spec: "gaussian:1s", bad: true},
	} {
		got, err := geminisim.ParseLatency(tc.spec)
		if (err != nil) != tc.bad {
			t.Errorf("ParseLatency(%q) error = %v", tc.spec, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); !tc.bad && diff != "" {
			t.Errorf("ParseLatency(%q) (-want +got):\n%s", tc.spec, diff)
		}
		if !tc.bad && tc.spec != "" {
			if again, _ := geminisim.ParseLatency(got.String()); again != got {
				t.Errorf("String round trip of %q: %q", tc.spec, got.String())
			}
		}
	}
}

// TestTimeScaling runs the same code paths with a 200 ms minute: windows, retry delays and latency shrink 300×.
func TestTimeScaling(t *testing.T) {
	lat, _ := geminisim.ParseLatency("fixed:9s") // 30 ms of real time
	srv, gc := start(t, geminisim.Options{Minute: 200 * time.Millisecond, Limits: geminisim.Limits{RPM: 2}, Latency: lat})
	began := time.Now()
	for i := range 2 {
		if _, err := generate(gc, fmt.Sprint(i), "hi"); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(began); d < 60*time.Millisecond || d > 2*time.Second {
		t.Errorf("two calls with 9 s of scaled latency took %v, want about 60 ms", d)
	}
	_, err := generate(gc, "x", "hi")
	var ae genai.APIError
	if !errors.As(err, &ae) || ae.Code != 429 {
		t.Fatalf("third call: %v", err)
	}
	delay, _ := ae.Details[2]["retryDelay"].(string)
	f := gemini.Classify(err)
	if f.Kind != gemini.QuotaPerMinute || f.RetryAfter <= 0 || f.RetryAfter > 200*time.Millisecond || !strings.HasPrefix(delay, "0.") {
		t.Fatalf("scaled 429: retryDelay %q, %+v", delay, f)
	}
	time.Sleep(f.RetryAfter)
	if _, err := generate(gc, "y", "hi"); err != nil {
		t.Errorf("after the scaled retry delay: %v", err)
	}
	st := srv.Stats(1)
	if st.Minute != 200*time.Millisecond || st.Models[model].Peaks.RPM > 3 {
		t.Errorf("stats: minute %v peaks %+v", st.Minute, st.Models[model].Peaks)
	}
	if v := srv.Check(model, geminisim.Limits{RPM: 3}, 1); len(v) != 0 {
		t.Errorf("violations of RPM 3 (the 429 counted): %+v", v)
	}
}

// TestRecorderCatchesOverload overloads an unlimited stand-in on purpose: the invariant check over the log
// must flag it against the limit gemq was supposed to respect, in Go and over GET /_stats.
func TestRecorderCatchesOverload(t *testing.T) {
	srv, gc := start(t, geminisim.Options{})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			task := fmt.Sprintf("task-%d", i%18) // tasks 0 and 1 are called twice
			if _, err := generate(gc, task, "abcdabcd"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()

	v := srv.Check(model, geminisim.Limits{RPM: 10, TPM: 100}, 1)
	dims := map[geminisim.Dimension]int64{}
	for _, x := range v {
		dims[x.Dimension] = max(dims[x.Dimension], x.Value)
	}
	if dims[geminisim.RPM] != 20 || dims[geminisim.TPM] != 0 {
		t.Errorf("violations of RPM 10: %+v", v)
	}
	if v := srv.Check(model, geminisim.Limits{RPM: 20, TPM: 40}, 1); len(v) != 0 {
		t.Errorf("RPM 20, TPM 40 (exactly reached) flagged: %+v", v)
	}
	if v := srv.Check(model, geminisim.Limits{RPM: 20}, 0.95); len(v) == 0 || v[0].Limit != 19 {
		t.Errorf("safety 0.95 of 20 not enforced: %+v", v)
	}
	if v := srv.Check(model, geminisim.Limits{RPD: 19}, 1); len(v) != 1 || v[0].Dimension != geminisim.RPD {
		t.Errorf("RPD 19 not flagged: %+v", v)
	}

	resp, err := http.Get(srv.URL() + "/_stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st geminisim.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	ms := st.Models[model]
	want := map[string]int{"task-0": 2, "task-1": 2}
	if st.Requests != 20 || st.Tasks != 18 || st.DuplicateCalls != 2 || !cmp.Equal(want, st.DuplicateTasks) ||
		ms == nil || ms.Peaks.RPM != 20 || ms.Peaks.TPM != 40 || ms.InputTokens != 40 || ms.OK != 20 || st.ByStatus["200"] != 20 {
		t.Errorf("GET /_stats = %+v, model %+v", st, ms)
	}
}

func TestStatsAgainstConfiguredLimits(t *testing.T) {
	srv, gc := start(t, geminisim.Options{Limits: geminisim.Limits{RPM: 4}})
	for i := range 5 {
		_, _ = generate(gc, fmt.Sprint(i), "hi")
	}
	st := srv.Stats(1)
	ms := st.Models[model]
	if st.Quota429 != 1 || ms.Charged != 4 || ms.Utilisation[geminisim.RPM] != 1.25 || len(ms.Violations) != 1 {
		t.Errorf("stats = %+v, model %+v", st, ms)
	}
	resp, err := http.Get(srv.URL() + "/_stats?safety=0.5")
	if err != nil {
		t.Fatal(err)
	}
	var got geminisim.Stats
	_ = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if v := got.Models[model].Violations; len(v) == 0 || v[0].Limit != 2 {
		t.Errorf("safety over HTTP: %+v", v)
	}

	resp, err = http.Get(srv.URL() + "/_log")
	if err != nil {
		t.Fatal(err)
	}
	var log []geminisim.Entry
	_ = json.NewDecoder(resp.Body).Decode(&log)
	resp.Body.Close()
	if len(log) != 5 || log[4].Outcome != "quota" || log[4].Status != 429 || !cmp.Equal(log[4].Dimensions, []geminisim.Dimension{geminisim.RPM}) {
		t.Errorf("GET /_log = %+v", log)
	}
	resp, err = http.Post(srv.URL()+"/_reset", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(srv.Log()) != 0 {
		t.Error("reset kept the log")
	}
	if _, err := generate(gc, "after-reset", "hi"); err != nil {
		t.Errorf("reset kept the windows: %v", err)
	}
}

func TestTooLongPromptCountsAgainstTPM(t *testing.T) {
	srv, gc := start(t, geminisim.Options{Models: []geminisim.Model{{ID: model, InputTokenLimit: 15, Limits: geminisim.Limits{TPM: 30}}}})
	_, err := generate(gc, "long", strings.Repeat("abcd", 20)) // 20 tokens
	var ae genai.APIError
	if !errors.As(err, &ae) || ae.Code != 400 || ae.Status != "INVALID_ARGUMENT" || ae.Message != "The input token count (20) exceeds the maximum number of tokens allowed (15)." {
		t.Fatalf("too long: %v", err)
	}
	_, err = generate(gc, "11", strings.Repeat("abcd", 11))
	if f := gemini.Classify(err); f.Kind != gemini.QuotaPerMinute || f.QuotaID != "GenerateContentInputTokensPerModelPerMinute" {
		t.Errorf("20 + 11 tokens within TPM 30: %+v", f)
	}
	if _, err := generate(gc, "10", strings.Repeat("abcd", 10)); err != nil {
		t.Errorf("20 + 10 tokens within TPM 30: %v", err)
	}
	if ms := srv.Stats(1).Models[model]; ms.InputTokens != 30 || ms.Charged != 2 {
		t.Errorf("charged %d tokens in %d requests, want 30 in 2", ms.InputTokens, ms.Charged)
	}
}

func TestInvalidRequest(t *testing.T) {
	_, gc := start(t, geminisim.Options{Tokenizer: geminisim.EstimatorTokens})
	_, err := gc.Models.GenerateContent(context.Background(), model, nil, nil)
	var ae genai.APIError
	if !errors.As(err, &ae) || ae.Code != 400 || ae.Status != "INVALID_ARGUMENT" || !strings.Contains(ae.Message, "contents") {
		t.Fatalf("no contents: %v", err)
	}
	if f := gemini.Classify(err); f.Kind != gemini.Permanent {
		t.Errorf("Classify = %+v", f)
	}
	n, err := gc.Models.CountTokens(context.Background(), "models/"+model, genai.Text("abcdefgh 日本"), nil)
	if err != nil || n.TotalTokens != 5 {
		t.Errorf("countTokens = %+v, %v; want 5", n, err)
	}
}

func TestFreeTierNames(t *testing.T) {
	_, gc := start(t, geminisim.Options{FreeTier: true, Limits: geminisim.Limits{RPM: 1}})
	_, _ = generate(gc, "a", "hi")
	_, err := generate(gc, "b", "hi")
	f := gemini.Classify(err)
	if f.QuotaID != "GenerateRequestsPerMinutePerProjectPerModel-FreeTier" || !strings.Contains(f.Message, "generate_content_free_tier_requests") {
		t.Errorf("free tier: %+v", f)
	}
	if geminisim.QuotaID(geminisim.TPM, false) != "GenerateContentInputTokensPerModelPerMinute" {
		t.Error("QuotaID")
	}
}

func TestCountTokensRule(t *testing.T) {
	c := &genai.Content{Parts: []*genai.Part{{Text: "abcd"}, {InlineData: &genai.Blob{MIMEType: "image/png", Data: []byte{1}}}}}
	if got := geminisim.CountTokens(nil, []*genai.Content{c}); got != 1+gemini.MediaPartTokens {
		t.Errorf("CountTokens = %d", got)
	}
}
