package geminisim_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genai"

	"github.com/gemq-dev/gemq/infra/geminisim"
)

// manualClock is the stand-in's real clock in these tests: batches move only when the test says so.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// startBatch starts a stand-in on a manual clock with the given Batch API behaviour (PendingFor 30s and
// RunFor 2m unless set).
func startBatch(t *testing.T, b geminisim.Batch, mod func(*geminisim.Options)) (*geminisim.Server, *genai.Client, *manualClock) {
	t.Helper()
	clk := &manualClock{t: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	opts := geminisim.Options{Now: clk.Now, Batch: b}
	if mod != nil {
		mod(&opts)
	}
	srv, gc := start(t, opts)
	return srv, gc, clk
}

func prompts(n int, prefix string) []*genai.InlinedRequest {
	out := make([]*genai.InlinedRequest, n)
	for i := range out {
		out[i] = &genai.InlinedRequest{
			Contents: genai.Text(fmt.Sprintf("Classify item %d of the nightly corpus.", i)),
			Metadata: map[string]string{"key": fmt.Sprintf("%s-%d", prefix, i)},
		}
	}
	return out
}

func createInline(t *testing.T, gc *genai.Client, reqs []*genai.InlinedRequest) *genai.BatchJob {
	t.Helper()
	job, err := gc.Batches.Create(context.Background(), model, &genai.BatchJobSource{InlinedRequests: reqs},
		&genai.CreateBatchJobConfig{DisplayName: "nightly"})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return job
}

func get(t *testing.T, gc *genai.Client, name string) *genai.BatchJob {
	t.Helper()
	job, err := gc.Batches.Get(context.Background(), name, nil)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return job
}

func apiError(t *testing.T, err error) genai.APIError {
	t.Helper()
	var ae genai.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want a genai.APIError, got %v", err)
	}
	return ae
}

// TestBatchInlineLifecycle creates a batch of inline requests and follows it, through the real genai client,
// from PENDING through RUNNING to SUCCEEDED; the responses come back in input order with their metadata, and
// nothing was charged against the interactive windows.
func TestBatchInlineLifecycle(t *testing.T) {
	srv, gc, clk := startBatch(t, geminisim.Batch{}, func(o *geminisim.Options) { o.Limits = geminisim.Limits{RPM: 1} })
	reqs := prompts(5, "task")
	job := createInline(t, gc, reqs)
	if !strings.HasPrefix(job.Name, "batches/") || job.State != genai.JobStatePending || job.DisplayName != "nightly" ||
		job.Model != "models/"+model || job.CreateTime.IsZero() || job.Dest != nil {
		t.Fatalf("created: %+v", job)
	}
	clk.Add(31 * time.Second)
	if got := get(t, gc, job.Name); got.State != genai.JobStateRunning || got.Dest != nil {
		t.Fatalf("after 31s: state %s, dest %+v", got.State, got.Dest)
	}
	clk.Add(2 * time.Minute)
	done := get(t, gc, job.Name)
	if done.State != genai.JobStateSucceeded || done.EndTime.IsZero() || done.Dest == nil || len(done.Dest.InlinedResponses) != len(reqs) {
		t.Fatalf("after 2m31s: %+v", done)
	}
	var tokens int64
	for i, r := range done.Dest.InlinedResponses {
		want := countTokens(reqs[i].Contents)
		tokens += want
		if r.Metadata["key"] != reqs[i].Metadata["key"] || r.Error != nil || r.Response == nil || r.Response.Text() == "" ||
			r.Response.UsageMetadata == nil || int64(r.Response.UsageMetadata.PromptTokenCount) != want {
			t.Errorf("response %d: %+v (want key %s, %d prompt tokens)", i, r, reqs[i].Metadata["key"], want)
		}
	}
	st := srv.Stats(1)
	if st.Requests != 0 || st.Batch == nil || st.Batch.Entries["ok"] != len(reqs) || st.Batch.InputTokens != tokens ||
		st.AnsweredTasks != len(reqs) || len(st.AnsweredTwice) != 0 || st.Batch.States[geminisim.BatchSucceeded] != 1 {
		t.Errorf("stats: requests %d, batch %+v, answered %d twice %v", st.Requests, st.Batch, st.AnsweredTasks, st.AnsweredTwice)
	}
	resp, err := http.Get(srv.URL() + "/_stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var over geminisim.Stats
	if err := json.NewDecoder(resp.Body).Decode(&over); err != nil || over.Batch == nil || over.Batch.Entries["ok"] != len(reqs) || over.AnsweredTasks != len(reqs) {
		t.Errorf("GET /_stats: %+v, %v", over.Batch, err)
	}
	// The batch left the interactive minute empty: the one request per minute is still there.
	if _, err := generate(gc, "task-0", "hi"); err != nil {
		t.Errorf("interactive call after the batch: %v", err)
	}
	if st := srv.Stats(1); st.AnsweredTasks != len(reqs) || st.AnsweredTwice["task-0"] != 2 {
		t.Errorf("task-0 answered by the batch and interactively: answered %d, twice %v", st.AnsweredTasks, st.AnsweredTwice)
	}
}

// countTokens is the stand-in's own count of contents.
func countTokens(c []*genai.Content) int64 { return geminisim.CountTokensIndependent(nil, c) }

// TestBatchFileInput uploads a JSONL input file with the Files API, runs a batch over it and downloads the
// results file: one line per input line, in order, {"key", "response"} or {"key", "error"}.
func TestBatchFileInput(t *testing.T) {
	_, gc, clk := startBatch(t, geminisim.Batch{}, nil)
	ctx := context.Background()
	input := `{"key": "a", "request": {"contents": [{"parts": [{"text": "Describe photosynthesis."}]}]}}
{"key": "b", "request": {"contents": [{"parts": [{"text": "Name a pizza."}]}], "generation_config": {"max_output_tokens": 5}}}
{"key": "c", "request": {"contents": [{"parts": [{"text": "broken"}]}], "bogus": 1}}
{"key": "d", "request": {"contents": []}}
`
	f, err := gc.Files.Upload(ctx, strings.NewReader(input), &genai.UploadFileConfig{MIMEType: "jsonl", DisplayName: "corpus"})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if !strings.HasPrefix(f.Name, "files/") || f.SizeBytes == nil || *f.SizeBytes != int64(len(input)) || f.State != genai.FileStateActive {
		t.Fatalf("uploaded: %+v", f)
	}
	if got, err := gc.Files.Get(ctx, f.Name, nil); err != nil || got.DisplayName != "corpus" {
		t.Fatalf("get file: %+v, %v", got, err)
	}
	job, err := gc.Batches.Create(ctx, model, &genai.BatchJobSource{FileName: f.Name}, &genai.CreateBatchJobConfig{DisplayName: "from-file"})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	clk.Add(3 * time.Minute)
	done := get(t, gc, job.Name)
	if done.State != genai.JobStateSucceeded || done.Dest == nil || !strings.HasPrefix(done.Dest.FileName, "files/batch-") {
		t.Fatalf("done: %+v", done)
	}
	data, err := gc.Files.Download(ctx, genai.NewDownloadURIFromFile(&genai.File{DownloadURI: done.Dest.FileName}), nil)
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	type line struct {
		Key      string                         `json:"key"`
		Response *genai.GenerateContentResponse `json:"response"`
		Error    *genai.JobError                `json:"error"`
	}
	var lines []line
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("results line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	if len(lines) != 4 {
		t.Fatalf("results file has %d lines, want 4:\n%s", len(lines), data)
	}
	for i, l := range lines {
		key := string(rune('a' + i))
		ok := i < 2
		if l.Key != key || (l.Response != nil) != ok || (l.Error != nil) == ok {
			t.Errorf("line %d: %+v, want key %s, response %v", i, l, key, ok)
		}
		if !ok && (l.Error.Code == nil || *l.Error.Code != 3) {
			t.Errorf("line %d: error %+v, want code 3 (INVALID_ARGUMENT)", i, l.Error)
		}
	}
	if fr := lines[1].Response.Candidates[0].FinishReason; fr != genai.FinishReasonMaxTokens {
		t.Errorf("line b: finish reason %s, want MAX_TOKENS (generation_config.max_output_tokens 5, snake_case as in the docs)", fr)
	}
	if _, err := gc.Files.Delete(ctx, f.Name, nil); err != nil {
		t.Errorf("delete file: %v", err)
	}
	_, err = gc.Files.Get(ctx, f.Name, nil)
	if ae := apiError(t, err); ae.Code != 403 || ae.Status != "PERMISSION_DENIED" {
		t.Errorf("get a deleted file: %+v", ae)
	}
}

// TestBatchPartialFailures answers entries with an error status at the configured rate; the rest carry
// responses, and the recorder counts both.
func TestBatchPartialFailures(t *testing.T) {
	srv, gc, clk := startBatch(t, geminisim.Batch{FailureRate: 0.3}, nil)
	reqs := prompts(200, "p")
	job := createInline(t, gc, reqs)
	clk.Add(3 * time.Minute)
	done := get(t, gc, job.Name)
	if done.State != genai.JobStateSucceeded || done.Dest == nil || len(done.Dest.InlinedResponses) != len(reqs) {
		t.Fatalf("done: state %s dest %v", done.State, done.Dest != nil)
	}
	failed := 0
	for i, r := range done.Dest.InlinedResponses {
		switch {
		case r.Metadata["key"] != fmt.Sprintf("p-%d", i):
			t.Fatalf("response %d has key %q", i, r.Metadata["key"])
		case r.Error != nil:
			failed++
			if r.Response != nil || r.Error.Code == nil || *r.Error.Code != 13 || r.Error.Message == "" {
				t.Errorf("failed entry %d: %+v", i, r)
			}
		case r.Response == nil:
			t.Errorf("entry %d has neither response nor error", i)
		}
	}
	if failed < 35 || failed > 85 {
		t.Errorf("%d of 200 entries failed at rate 0.3", failed)
	}
	st := srv.Stats(1)
	if st.Batch.Entries["error"] != failed || st.Batch.Entries["ok"] != 200-failed || st.AnsweredTasks != 200-failed {
		t.Errorf("stats: %+v, answered %d; want %d errors", st.Batch.Entries, st.AnsweredTasks, failed)
	}
}

// TestBatchExpiry ends a batch that has not finished within ExpireAfter as EXPIRED, with no results.
func TestBatchExpiry(t *testing.T) {
	srv, gc, clk := startBatch(t, geminisim.Batch{RunFor: time.Hour, ExpireAfter: 10 * time.Minute}, nil)
	job := createInline(t, gc, prompts(4, "x"))
	clk.Add(9 * time.Minute)
	if got := get(t, gc, job.Name); got.State != genai.JobStateRunning {
		t.Fatalf("after 9m: %s", got.State)
	}
	clk.Add(2 * time.Minute)
	got := get(t, gc, job.Name)
	if got.State != genai.JobStateExpired || got.Dest != nil || !got.EndTime.Equal(got.CreateTime.Add(10*time.Minute)) {
		t.Fatalf("after 11m: state %s, dest %+v, created %v ended %v", got.State, got.Dest, got.CreateTime, got.EndTime)
	}
	clk.Add(2 * time.Hour)
	if got := get(t, gc, job.Name); got.State != genai.JobStateExpired || got.Dest != nil {
		t.Fatalf("an expired batch changed: %s", got.State)
	}
	st := srv.Stats(1)
	if st.Batch.Entries["expired"] != 4 || st.AnsweredTasks != 0 || st.Batch.States[geminisim.BatchExpired] != 1 {
		t.Errorf("stats: %+v, answered %d", st.Batch, st.AnsweredTasks)
	}
}

// TestBatchCancelAndDelete cancels a running batch (no results, even after its end time), lists batches
// page by page, and deletes one.
func TestBatchCancelAndDelete(t *testing.T) {
	srv, gc, clk := startBatch(t, geminisim.Batch{}, nil)
	ctx := context.Background()
	a := createInline(t, gc, prompts(3, "a"))
	b := createInline(t, gc, prompts(2, "b"))
	c := createInline(t, gc, prompts(1, "c"))
	clk.Add(time.Minute)
	if err := gc.Batches.Cancel(ctx, a.Name, nil); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if got := get(t, gc, a.Name); got.State != genai.JobStateCancelled || got.Dest != nil || got.EndTime.IsZero() {
		t.Fatalf("cancelled: %+v", got)
	}
	clk.Add(5 * time.Minute)
	if got := get(t, gc, a.Name); got.State != genai.JobStateCancelled || got.Dest != nil {
		t.Fatalf("cancelled batch after its end time: %s", got.State)
	}

	var names []string
	p, err := gc.Batches.List(ctx, &genai.ListBatchJobsConfig{PageSize: 2})
	for ; err == nil; p, err = p.Next(ctx) {
		if len(p.Items) > 2 {
			t.Fatalf("page of %d with pageSize 2", len(p.Items))
		}
		for _, j := range p.Items {
			names = append(names, j.Name)
		}
	}
	if !errors.Is(err, genai.ErrPageDone) || strings.Join(names, " ") != strings.Join([]string{c.Name, b.Name, a.Name}, " ") {
		t.Fatalf("listed %v (%v), want newest first %s %s %s", names, err, c.Name, b.Name, a.Name)
	}

	if _, err := gc.Batches.Delete(ctx, b.Name, nil); err != nil {
		t.Fatalf("delete: %v", err)
	}
	_, err = gc.Batches.Get(ctx, b.Name, nil)
	if ae := apiError(t, err); ae.Code != 404 || ae.Status != "NOT_FOUND" {
		t.Errorf("get a deleted batch: %+v", ae)
	}
	st := srv.Stats(1)
	if st.Batch.Entries["cancelled"] != 3 || st.Batch.Entries["ok"] != 3 || st.AnsweredTasks != 3 {
		t.Errorf("stats: %+v, answered %d; want 3 cancelled (a), 2+1 ok (b ended before its delete, c)", st.Batch.Entries, st.AnsweredTasks)
	}
}

// TestBatchEnqueuedTokenLimit refuses a create that would put a model's pending and running batches over its
// enqueued-token limit with 429 RESOURCE_EXHAUSTED, until enough batches end; other models are not affected.
func TestBatchEnqueuedTokenLimit(t *testing.T) {
	reqs := prompts(3, "e")
	var perBatch int64
	for _, r := range reqs {
		perBatch += countTokens(r.Contents)
	}
	srv, gc, clk := startBatch(t, geminisim.Batch{EnqueuedTokens: perBatch*2 - 1}, nil)
	createInline(t, gc, reqs)
	_, err := gc.Batches.Create(context.Background(), model, &genai.BatchJobSource{InlinedRequests: reqs}, &genai.CreateBatchJobConfig{DisplayName: "second"})
	ae := apiError(t, err)
	if ae.Code != 429 || ae.Status != "RESOURCE_EXHAUSTED" || len(ae.Details) != 2 {
		t.Fatalf("second create over the limit: %+v", ae)
	}
	v, _ := ae.Details[1]["violations"].([]any)
	if len(v) != 1 || v[0].(map[string]any)["quotaId"] != "BatchEnqueuedTokensPerModel" ||
		v[0].(map[string]any)["quotaValue"] != fmt.Sprint(perBatch*2-1) {
		t.Errorf("quota failure: %+v", ae.Details[1])
	}
	if _, err := gc.Batches.Create(context.Background(), "gemini-2.5-pro", &genai.BatchJobSource{InlinedRequests: reqs},
		&genai.CreateBatchJobConfig{DisplayName: "other-model"}); err != nil {
		t.Errorf("another model's batch: %v", err)
	}
	clk.Add(3 * time.Minute) // the first batch ends, its tokens leave the queue
	if _, err := gc.Batches.Create(context.Background(), model, &genai.BatchJobSource{InlinedRequests: reqs}, &genai.CreateBatchJobConfig{DisplayName: "third"}); err != nil {
		t.Errorf("create after the first batch ended: %v", err)
	}
	if st := srv.Stats(1); st.Batch.Refused["enqueued_tokens"] != 1 || st.Batch.Created != 3 || st.Batch.Enqueued[model] != perBatch {
		t.Errorf("stats: %+v", st.Batch)
	}
}

// TestBatchBadInput checks the answers to bad creates and bad entries.
func TestBatchBadInput(t *testing.T) {
	_, gc, clk := startBatch(t, geminisim.Batch{MaxInlineBytes: 4 << 10}, nil)
	ctx := context.Background()
	cfg := func(extras genai.ExtrasRequestProvider) *genai.CreateBatchJobConfig {
		c := &genai.CreateBatchJobConfig{DisplayName: "bad"}
		if extras != nil {
			c.HTTPOptions = &genai.HTTPOptions{ExtrasRequestProvider: extras}
		}
		return c
	}
	src := &genai.BatchJobSource{InlinedRequests: prompts(1, "k")}
	inputConfig := func(body map[string]any) map[string]any {
		return body["batch"].(map[string]any)["inputConfig"].(map[string]any)
	}
	for _, tc := range []struct {
		name   string
		model  string
		src    *genai.BatchJobSource
		config *genai.CreateBatchJobConfig
		code   int
		status string
	}{
		{name: "unknown model", model: "gemini-0-nope", src: src, config: cfg(nil), code: 404, status: "NOT_FOUND"},
		{name: "no display name", model: model, src: src, config: &genai.CreateBatchJobConfig{}, code: 400, status: "INVALID_ARGUMENT"},
		{name: "empty requests", model: model, src: src, code: 400, status: "INVALID_ARGUMENT", config: cfg(func(b map[string]any) map[string]any {
			inputConfig(b)["requests"] = map[string]any{"requests": []any{}}
			return b
		})},
		{name: "unknown request field", model: model, src: src, code: 400, status: "INVALID_ARGUMENT", config: cfg(func(b map[string]any) map[string]any {
			rs := inputConfig(b)["requests"].(map[string]any)["requests"].([]map[string]any)
			rs[0]["request"].(map[string]any)["bogus"] = true
			return b
		})},
		{name: "over the inline size limit", model: model, code: 400, status: "INVALID_ARGUMENT", config: cfg(nil),
			src: &genai.BatchJobSource{InlinedRequests: []*genai.InlinedRequest{{Contents: genai.Text(strings.Repeat("long ", 1000))}}}},
		{name: "unknown file", model: model, src: &genai.BatchJobSource{FileName: "files/nosuchfile"}, config: cfg(nil), code: 403, status: "PERMISSION_DENIED"},
	} {
		_, err := gc.Batches.Create(ctx, tc.model, tc.src, tc.config)
		if ae := apiError(t, err); ae.Code != tc.code || ae.Status != tc.status {
			t.Errorf("%s: got %d %s (%s), want %d %s", tc.name, ae.Code, ae.Status, ae.Message, tc.code, tc.status)
		}
	}
	// genai itself refuses a batch with neither requests nor a file, before any call.
	if _, err := gc.Batches.Create(ctx, model, &genai.BatchJobSource{}, cfg(nil)); err == nil || errors.As(err, new(genai.APIError)) {
		t.Errorf("empty source: %v, want genai's own error", err)
	}

	// An invalid request value fails its entry (code 3), not the batch.
	job := createInline(t, gc, []*genai.InlinedRequest{{Contents: []*genai.Content{{Role: "user"}}, Metadata: map[string]string{"key": "no-parts"}}, prompts(1, "fine")[0]})
	// A file with no valid line: the batch is created and fails.
	f, err := gc.Files.Upload(ctx, strings.NewReader("not json\n{\"key\": 1}\n"), &genai.UploadFileConfig{MIMEType: "jsonl"})
	if err != nil {
		t.Fatal(err)
	}
	bad, err := gc.Batches.Create(ctx, model, &genai.BatchJobSource{FileName: f.Name}, cfg(nil))
	if err != nil {
		t.Fatalf("create over a malformed file: %v", err)
	}
	clk.Add(3 * time.Minute)
	got := get(t, gc, job.Name)
	if got.State != genai.JobStateSucceeded || len(got.Dest.InlinedResponses) != 2 {
		t.Fatalf("batch with an invalid entry: %+v", got)
	}
	if r := got.Dest.InlinedResponses[0]; r.Error == nil || *r.Error.Code != 3 || r.Response != nil {
		t.Errorf("invalid entry: %+v", r)
	}
	if r := got.Dest.InlinedResponses[1]; r.Response == nil {
		t.Errorf("valid entry next to an invalid one: %+v", r)
	}
	if got := get(t, gc, bad.Name); got.State != genai.JobStateFailed || got.Dest != nil {
		t.Errorf("batch over a malformed file: %s %+v", got.State, got.Dest)
	}

	// The API key is checked as for generateContent.
	_, wrong, _ := startBatch(t, geminisim.Batch{}, func(o *geminisim.Options) { o.APIKey = "secret" })
	_, err = wrong.Batches.Create(ctx, model, src, cfg(nil))
	if ae := apiError(t, err); ae.Code != 400 || ae.Status != "INVALID_ARGUMENT" {
		t.Errorf("create with a wrong key: %+v", ae)
	}
	if _, err := wrong.Batches.Get(ctx, job.Name, nil); err == nil {
		t.Errorf("get with a wrong key succeeded")
	}
}

// TestBatchScaledTime runs a batch on the real clock with a quota minute of 200 ms: one stand-in minute
// pending and three running take about 800 ms, and a poller sees each state in turn.
func TestBatchScaledTime(t *testing.T) {
	_, gc := start(t, geminisim.Options{Minute: 200 * time.Millisecond, Batch: geminisim.Batch{PendingFor: time.Minute, RunFor: 3 * time.Minute}})
	began := time.Now()
	job := createInline(t, gc, prompts(3, "s"))
	seen := []genai.JobState{job.State}
	for job.State != genai.JobStateSucceeded && time.Since(began) < 5*time.Second {
		time.Sleep(10 * time.Millisecond)
		job = get(t, gc, job.Name)
		if job.State != seen[len(seen)-1] {
			seen = append(seen, job.State)
		}
	}
	took := time.Since(began)
	if fmt.Sprint(seen) != fmt.Sprint([]genai.JobState{genai.JobStatePending, genai.JobStateRunning, genai.JobStateSucceeded}) ||
		took < 800*time.Millisecond || took > 5*time.Second {
		t.Errorf("states %v in %v, want PENDING, RUNNING, SUCCEEDED in about 800 ms", seen, took)
	}
}

// TestFilesResumableUpload uploads a file larger than genai's 8 MB chunk (two chunks, the second at offset
// 8 MB) and lists files page by page.
func TestFilesResumableUpload(t *testing.T) {
	_, gc := start(t, geminisim.Options{})
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789abcdef"), 9<<16) // 9 MB
	big, err := gc.Files.Upload(ctx, bytes.NewReader(data), &genai.UploadFileConfig{MIMEType: "application/octet-stream"})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	sum := sha256.Sum256(data)
	if big.SizeBytes == nil || *big.SizeBytes != int64(len(data)) || big.Sha256Hash != base64.StdEncoding.EncodeToString(sum[:]) ||
		big.ExpirationTime.Sub(big.CreateTime) != 48*time.Hour {
		t.Fatalf("uploaded: size %v hash %s, created %v expires %v", big.SizeBytes, big.Sha256Hash, big.CreateTime, big.ExpirationTime)
	}
	small, err := gc.Files.Upload(ctx, strings.NewReader("{}\n"), &genai.UploadFileConfig{MIMEType: "jsonl", Name: "mine"})
	if err != nil || small.Name != "files/mine" {
		t.Fatalf("upload with a name: %+v, %v", small, err)
	}
	var names []string
	p, err := gc.Files.List(ctx, &genai.ListFilesConfig{PageSize: 1})
	for ; err == nil; p, err = p.Next(ctx) {
		for _, f := range p.Items {
			names = append(names, f.Name)
		}
	}
	if !errors.Is(err, genai.ErrPageDone) || len(names) != 2 || !slices.Contains(names, big.Name) || !slices.Contains(names, "files/mine") {
		t.Errorf("listed %v (%v)", names, err)
	}
}

// TestBatchLimits refuses a batch beyond the concurrent-batch limit and answers an entry over the model's
// input token limit with code 3.
func TestBatchLimits(t *testing.T) {
	_, gc, clk := startBatch(t, geminisim.Batch{MaxConcurrent: 1}, func(o *geminisim.Options) {
		o.Models = []geminisim.Model{{ID: model, InputTokenLimit: 12}}
	})
	long := &genai.InlinedRequest{Contents: genai.Text(strings.Repeat("word ", 40)), Metadata: map[string]string{"key": "long"}}
	job := createInline(t, gc, []*genai.InlinedRequest{long, prompts(1, "short")[0]})
	_, err := gc.Batches.Create(context.Background(), model, &genai.BatchJobSource{InlinedRequests: prompts(1, "x")}, &genai.CreateBatchJobConfig{DisplayName: "two"})
	ae := apiError(t, err)
	if ae.Code != 429 || ae.Status != "RESOURCE_EXHAUSTED" || !strings.Contains(fmt.Sprint(ae.Details), "ConcurrentBatchRequestsPerProject") {
		t.Errorf("a second active batch with MaxConcurrent 1: %+v", ae)
	}
	clk.Add(3 * time.Minute)
	got := get(t, gc, job.Name)
	if got.State != genai.JobStateSucceeded || len(got.Dest.InlinedResponses) != 2 {
		t.Fatalf("%+v", got)
	}
	if r := got.Dest.InlinedResponses[0]; r.Error == nil || *r.Error.Code != 3 || !strings.Contains(r.Error.Message, "exceeds the maximum number of tokens allowed (12)") {
		t.Errorf("entry over the input token limit: %+v", r.Error)
	}
	if r := got.Dest.InlinedResponses[1]; r.Response == nil {
		t.Errorf("short entry: %+v", r)
	}
	if _, err := gc.Batches.Create(context.Background(), model, &genai.BatchJobSource{InlinedRequests: prompts(1, "x")}, &genai.CreateBatchJobConfig{DisplayName: "after"}); err != nil {
		t.Errorf("create once the first batch ended: %v", err)
	}
}

// TestBatchWholeFailureAndReset fails whole batches at BatchFailureRate 1 (no results, every entry counted
// failed), and Reset forgets batches like the log.
func TestBatchWholeFailureAndReset(t *testing.T) {
	srv, gc, clk := startBatch(t, geminisim.Batch{BatchFailureRate: 1}, nil)
	job := createInline(t, gc, prompts(4, "f"))
	clk.Add(3 * time.Minute)
	if got := get(t, gc, job.Name); got.State != genai.JobStateFailed || got.Dest != nil || got.EndTime.IsZero() {
		t.Fatalf("%+v", got)
	}
	if st := srv.Stats(1); st.Batch.Entries["failed"] != 4 || st.Batch.States[geminisim.BatchFailed] != 1 || st.AnsweredTasks != 0 {
		t.Errorf("stats: %+v", st.Batch)
	}
	srv.Reset()
	_, err := gc.Batches.Get(context.Background(), job.Name, nil)
	if ae := apiError(t, err); ae.Code != 404 {
		t.Errorf("get after Reset: %+v", ae)
	}
	if st := srv.Stats(1); st.Batch != nil {
		t.Errorf("batch stats after Reset: %+v", st.Batch)
	}
}
