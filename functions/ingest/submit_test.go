package ingest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

func TestBadInput(t *testing.T) {
	e := newEnv(t, func(d *deps) { d.maxRequests = 3 })
	jsonl := []string{"Content-Type", "application/jsonl"}
	ctJSON := []string{"Content-Type", "application/json"}
	bomb := gz(t, bytes.Repeat([]byte(" "), 3<<20)) // 3 MiB of spaces, about 3 kB compressed
	bigInline := `{"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "` +
		base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, task.MaxPublishBytes)) + `"}}]}]}`
	tests := []struct {
		name   string
		method string
		path   string
		hdr    []string
		body   string
		raw    []byte // instead of body
		code   int
		field  string
		line   int
		key    string
		msg    string // substring of the message
	}{
		{name: "malformed JSON", body: `{"model": "gemini-2.5-flash", "requests": [`, code: 400, field: "requests[0]", msg: "unexpected end"},
		{name: "not JSON at all", body: `model=gemini`, code: 400, msg: "expected a value"},
		{name: "empty body", body: ``, code: 400, msg: "empty input"},
		{name: "trailing data", body: jobJSON(m, "a", req("hi")) + ` {"x": 1}`, code: 400, msg: "after the JSON value"},
		{name: "JSONL sent as JSON", body: lines("a", req("x"), "b", req("y")), code: 400, field: "key", msg: "application/jsonl"},
		{name: "unknown top-level field", body: `{"model": "gemini-2.5-flash", "requets": []}`, code: 400, field: "requets", msg: "unknown field"},
		{name: "case-variant field", body: `{"Model": "gemini-2.5-flash", "requests": []}`, code: 400, field: "Model", msg: `did you mean "model"`},
		{name: "unknown field in item", body: `{"model": "gemini-2.5-flash", "requests": [{"key": "a", "request": {}, "metadata": {}}]}`, code: 400, field: "requests[0].metadata", msg: "unknown field"},
		{name: "unknown field in request", body: jobJSON(m, "a", req("x"), "b", `{"contents": [{"parts": [{"txt": "hi"}]}]}`), code: 400, field: "requests[1].request.contents[0].parts[0].txt", key: "b", msg: "unknown field"},
		{name: "duplicate key", body: `{"model": "gemini-2.5-flash", "model": "gemini-tiny", "requests": []}`, code: 400, field: "model", msg: "duplicate key"},
		{name: "case-variant duplicate key", body: jobJSON(m, "a", `{"contents": [], "Contents": [{"parts": [{"text": "x"}]}]}`), code: 400, field: "requests[0].request.Contents", key: "a", msg: "unknown field"},
		{name: "case-variant duplicate deep", body: jobJSON(m, "a", `{"contents": [{"parts": [{"text": "x", "TEXT": "y"}]}]}`), code: 400, field: "requests[0].request.contents[0].parts[0].TEXT", key: "a", msg: "unknown field"},
		{name: "invalid UTF-8", body: jobJSON(m, "a", req("ok"), "b", `{"contents": [{"parts": [{"text": "caf`+"\xe9"+`"}]}]}`), code: 400, field: "requests[1].request.contents[0].parts[0].text", msg: "invalid UTF-8"},
		{name: "lone surrogate", body: jobJSON(m, "a", `{"contents": [{"parts": [{"text": "\ud83d"}]}]}`), code: 400, field: "requests[0].request.contents[0].parts[0].text", msg: "surrogate"},
		{name: "no content type", hdr: []string{}, body: jobJSON(m, "a", req("x")), code: 415, field: "Content-Type"},
		{name: "wrong content type", hdr: []string{"Content-Type", "text/plain"}, body: jobJSON(m, "a", req("x")), code: 415, field: "Content-Type"},
		{name: "form content type", hdr: []string{"Content-Type", "application/x-www-form-urlencoded"}, body: "a=b", code: 415, field: "Content-Type"},
		{name: "wrong charset", hdr: []string{"Content-Type", "application/json; charset=latin1"}, body: jobJSON(m, "a", req("x")), code: 415, field: "Content-Type"},
		{name: "unsupported encoding", hdr: []string{"Content-Type", "application/json", "Content-Encoding", "br"}, body: jobJSON(m, "a", req("x")), code: 415, field: "Content-Encoding"},
		{name: "gzip bomb", hdr: []string{"Content-Type", "application/jsonl", "Content-Encoding", "gzip"}, raw: bomb, code: 413, msg: "decompressed"},
		{name: "not gzip", hdr: []string{"Content-Type", "application/json", "Content-Encoding", "gzip"}, body: jobJSON(m, "a", req("x")), code: 400, field: "Content-Encoding"},
		{name: "truncated gzip", hdr: []string{"Content-Type", "application/json", "Content-Encoding", "gzip"}, raw: gz(t, []byte(jobJSON(m, "a", req("x"))))[:30], code: 400, field: "Content-Encoding"},
		{name: "body over the cap", body: jobJSON(m, "a", req(strings.Repeat("x", 3<<20))), code: 413, msg: "larger than the limit"},
		{name: "empty batch", body: `{"model": "gemini-2.5-flash", "requests": []}`, code: 400, field: "requests", msg: "no requests"},
		{name: "no requests member", body: `{"model": "gemini-2.5-flash"}`, code: 400, field: "requests", msg: "no requests"},
		{name: "empty JSONL", hdr: jsonl, body: "\n\n", code: 400, msg: "no JSON lines"},
		{name: "oversized batch", body: jobJSON(m, "a", req("x"), "b", req("x"), "c", req("x"), "d", req("x")), code: 400, field: "requests", msg: "more than the limit of 3"},
		{name: "oversized JSONL batch", hdr: jsonl, path: "/v1/jobs?model=gemini-2.5-flash", body: lines("a", req("x"), "b", req("x"), "c", req("x"), "d", req("x")), code: 400, field: "requests", line: 4, msg: "more than 3"},
		{name: "empty prompt text", body: jobJSON(m, "a", req("")), code: 400, field: "requests[0].request.contents[0].parts[0]", key: "a", msg: "no data"},
		{name: "prompt without parts", body: jobJSON(m, "a", `{"contents": [{"role": "user", "parts": []}]}`), code: 400, field: "requests[0].request.contents[0].parts", key: "a", msg: "must not be empty"},
		{name: "no contents", body: jobJSON(m, "a", `{}`), code: 400, field: "requests[0].request.contents", key: "a", msg: "required"},
		{name: "null request", body: jobJSON(m, "a", `null`), code: 400, field: "requests[0].request", key: "a", msg: "required"},
		{name: "missing request", body: `{"model": "gemini-2.5-flash", "requests": [{"key": "a"}]}`, code: 400, field: "requests[0].request", key: "a", msg: "required"},
		{name: "request not an object", body: jobJSON(m, "a", `"hello"`), code: 400, field: "requests[0].request", msg: "JSON object"},
		{name: "prompt beyond the input limit", body: jobJSON(`"model": "gemini-tiny"`, "a", req("ok"), "b", req(strings.Repeat("word ", 100))), code: 400, field: "requests[1].request.contents", key: "b", msg: "over the limit of 95"},
		{name: "no model", body: jobJSON(``, "a", req("x")), code: 400, field: "model", msg: "required"},
		{name: "unknown model", body: jobJSON(`"model": "gemini-9-ultra"`, "a", req("x")), code: 400, field: "model", msg: "not allowed"},
		{name: "model with a quota but not allowed", body: jobJSON(`"model": "gemini-2.0-flash"`, "a", req("x")), code: 400, field: "model", msg: "not allowed"},
		{name: "malformed model", body: jobJSON(`"model": "gemini/../x"`, "a", req("x")), code: 400, field: "model"},
		{name: "model of the wrong type", body: `{"model": 5, "requests": []}`, code: 400, field: "model", msg: "expected a string"},
		{name: "temperature out of range", body: jobJSON(m, "a", `{"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"temperature": 3}}`), code: 400, field: "requests[0].request.generationConfig.temperature", key: "a"},
		{name: "topK of the wrong type", body: jobJSON(m, "a", `{"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"topK": "many"}}`), code: 400, field: "requests[0].request.generationConfig.topK"},
		{name: "job-level temperature out of range", body: jobJSON(m+`, "generation_config": {"temperature": 5}`, "a", req("x")), code: 400, field: "generation_config.temperature"},
		{name: "job-level unknown config field", body: jobJSON(m+`, "generation_config": {"temprature": 1}`, "a", req("x")), code: 400, field: "generation_config.temprature"},
		{name: "job-level bad system instruction", body: jobJSON(m+`, "system_instruction": {"parts": [{"text": "x", "extra": 1}]}`, "a", req("x")), code: 400, field: "system_instruction.parts[0].extra"},
		{name: "duplicate request keys", body: jobJSON(m, "a", req("x"), "b", req("y"), "a", req("z")), code: 400, field: "requests[2].key", key: "a", msg: "first used by requests[0]"},
		{name: "duplicate JSONL keys", hdr: jsonl, path: "/v1/jobs?model=gemini-2.5-flash", body: lines("a", req("x"), "a", req("y")), code: 400, field: "key", line: 2, key: "a", msg: "first used by line 1"},
		{name: "empty key", body: jobJSON(m, "", req("x")), code: 400, field: "requests[0].key", msg: "required"},
		{name: "key too long", body: jobJSON(m, strings.Repeat("k", task.MaxKeyBytes+1), req("x")), code: 400, field: "requests[0].key", msg: "over the limit"},
		{name: "key of the wrong type", body: `{"model": "gemini-2.5-flash", "requests": [{"key": 7, "request": {}}]}`, code: 400, field: "requests[0].key", msg: "expected a string"},
		{name: "job id with a hash tag", body: jobJSON(m+`, "job_id": "a}{b"`, "a", req("x")), code: 400, field: "job_id"},
		{name: "job id with a newline", body: jobJSON(m+`, "job_id": "a\nINFO fake log line"`, "a", req("x")), code: 400, field: "job_id"},
		{name: "job id too long", body: jobJSON(m+`, "job_id": "`+strings.Repeat("j", 65)+`"`, "a", req("x")), code: 400, field: "job_id"},
		{name: "job id in query", path: "/v1/jobs?job_id=bad%20id", hdr: jsonl, body: lines("a", req("x")), code: 400, field: "job_id"},
		{name: "query and body disagree", path: "/v1/jobs?model=gemini-tiny", body: jobJSON(m, "a", req("x")), code: 400, field: "model", msg: "differs"},
		{name: "unknown query parameter", path: "/v1/jobs?modle=x", body: jobJSON(m, "a", req("x")), code: 400, field: "modle"},
		{name: "repeated query parameter", path: "/v1/jobs?model=a&model=b", hdr: jsonl, body: lines("a", req("x")), code: 400, field: "model"},
		{name: "bad JSONL default config", path: "/v1/jobs?model=gemini-2.5-flash&generation_config=" + url.QueryEscape(`{"topP": 2}`), hdr: jsonl, body: lines("a", req("x")), code: 400, field: "generation_config.topP"},
		{name: "JSONL line with an unknown field", path: "/v1/jobs?model=gemini-2.5-flash", hdr: jsonl, body: lines("a", req("x")) + "{\"key\": \"b\", \"request\": {}, \"bad\": 1}\n", code: 400, field: "bad", line: 2},
		{name: "JSONL request error names the line", path: "/v1/jobs?model=gemini-2.5-flash", hdr: jsonl, body: lines("a", req("x"), "b", `{"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"candidateCount": 99}}`), code: 400, field: "request.generationConfig.candidateCount", line: 2, key: "b"},
		{name: "pretty-printed JSONL", path: "/v1/jobs?model=gemini-2.5-flash", hdr: jsonl, body: "{\n\"key\": \"a\", \"request\": {}}\n", code: 400, line: 1},
		{name: "task too large for Cloud Tasks", body: jobJSON(m, "small", req("x"), "big one", bigInline), code: 413, field: "requests[1].request", key: "big one", msg: `"big one"`},
		{name: "wrong method", method: http.MethodPut, body: jobJSON(m, "a", req("x")), code: 405},
		{name: "GET on the collection", method: http.MethodGet, code: 405},
		{name: "POST on a job", method: http.MethodPost, path: "/v1/jobs/j1", body: jobJSON(m, "a", req("x")), code: 405},
		{name: "unknown path", path: "/v2/jobs", body: jobJSON(m, "a", req("x")), code: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.t = t
			method, path, hdr, body := tt.method, tt.path, tt.hdr, tt.raw
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = "/v1/jobs"
			}
			if hdr == nil {
				hdr = ctJSON
			}
			if body == nil {
				body = []byte(tt.body)
			}
			w := e.do(method, path, body, hdr...)
			if w.Code != tt.code {
				t.Fatalf("%s %s = %d %s, want %d", method, path, w.Code, w.Body.String(), tt.code)
			}
			b := decodeErr(t, w)
			if b.Error.Field != tt.field || b.Error.Line != tt.line || (tt.key != "" && b.Error.Key != tt.key) || !strings.Contains(b.Error.Message, tt.msg) {
				t.Errorf("error = %+v, want field %q, line %d, key %q, message containing %q", b.Error, tt.field, tt.line, tt.key, tt.msg)
			}
			if tt.code == 405 && w.Header().Get("Allow") == "" {
				t.Error("405 without an Allow header")
			}
			if n := len(e.ps.Messages()); n != 0 {
				t.Errorf("%d messages published for a refused request", n)
			}
			if ks := e.keys(); len(ks) != 0 {
				t.Errorf("Redis holds %v after a refused request", ks)
			}
		})
	}
}

func TestAllowHeader(t *testing.T) {
	e := newEnv(t)
	if w := e.do(http.MethodDelete, "/v1/jobs", nil); w.Header().Get("Allow") != "POST" {
		t.Errorf("Allow = %q, want POST", w.Header().Get("Allow"))
	}
	if w := e.do(http.MethodPost, "/v1/jobs/x/results", nil); w.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("Allow = %q, want GET, HEAD", w.Header().Get("Allow"))
	}
}

func decodeAccepted(t *testing.T, w *httptest.ResponseRecorder) accepted {
	t.Helper()
	if w.Code != http.StatusAccepted {
		t.Fatalf("POST = %d %s, want 202", w.Code, w.Body.String())
	}
	var a accepted
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestSubmitJSON(t *testing.T) {
	e := newEnv(t)
	body := jobJSON(`"job_id": "nightly-1", "model": "models/gemini-2.5-flash",
		"system_instruction": {"parts": [{"text": "Be brief."}]},
		"generation_config": {"temperature": 0.5, "max_output_tokens": 100}`,
		"a", req("first"),
		"b/with slash", `{"contents": [{"parts": [{"text": "second"}]}], "generationConfig": {"temperature": 1.5}, "systemInstruction": {"parts": [{"text": "Own."}]}}`,
		"c", `{"contents": [{"parts": [{"text": "third"}]}], "generation_config": {"maxOutputTokens": 7, "thinkingConfig": {"thinkingBudget": 0}}}`)
	a := decodeAccepted(t, e.postJSON(body))
	if diff := cmp.Diff(accepted{JobID: "nightly-1", Accepted: 3}, a); diff != "" {
		t.Errorf("202 body (-want +got):\n%s", diff)
	}
	got := map[string]string{}
	for _, env := range e.published() {
		if env.JobID != "nightly-1" || env.Model != model || env.TaskID != task.TaskID("nightly-1", env.Key) {
			t.Errorf("envelope %+v: wrong job, model or task id", env)
		}
		got[env.Key] = string(env.Request)
	}
	want := map[string]string{
		"a":            `{"contents":[{"role":"user","parts":[{"text":"first"}]}],"generationConfig":{"temperature":0.5,"max_output_tokens":100},"systemInstruction":{"parts":[{"text":"Be brief."}]}}`,
		"b/with slash": `{"contents":[{"parts":[{"text":"second"}]}],"generationConfig":{"max_output_tokens":100,"temperature":1.5},"systemInstruction":{"parts":[{"text":"Own."}]}}`,
		"c":            `{"contents":[{"parts":[{"text":"third"}]}],"generation_config":{"maxOutputTokens":7,"temperature":0.5,"thinkingConfig":{"thinkingBudget":0}},"systemInstruction":{"parts":[{"text":"Be brief."}]}}`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("published requests, defaults applied (-want +got):\n%s", diff)
	}
	j, err := e.st.GetJob(t.Context(), "nightly-1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(store.Counts{Total: 3, Queued: 3}, j.Counts); diff != "" {
		t.Errorf("stored counts (-want +got):\n%s", diff)
	}
}

func TestSubmitWithoutJobID(t *testing.T) {
	e := newEnv(t)
	a1 := decodeAccepted(t, e.postJSON(jobJSON(m, "a", req("x"))))
	a2 := decodeAccepted(t, e.postJSON(jobJSON(m, "a", req("x"))))
	if !task.ValidJobID(a1.JobID) || a1.JobID == a2.JobID {
		t.Errorf("generated job ids %q, %q: want two distinct valid ids", a1.JobID, a2.JobID)
	}
	if n := len(e.published()); n != 2 {
		t.Errorf("published %d, want 2", n)
	}
}

func TestSubmitDefaultModel(t *testing.T) {
	e := newEnv(t, func(d *deps) { d.defaultModel = model })
	a := decodeAccepted(t, e.postJSON(jobJSON(``, "a", req("x"))))
	if envs := e.published(); len(envs) != 1 || envs[0].Model != model || envs[0].JobID != a.JobID {
		t.Errorf("published %+v, want one task for %s with the default model", envs, a.JobID)
	}
}

// TestSubmitBatchFile submits the example Batch API input file unchanged, as
// JSONL and gzip-compressed JSONL, under a prefix as the local stack serves it.
func TestSubmitBatchFile(t *testing.T) {
	data, err := os.ReadFile("../../examples/prompts.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	n := bytes.Count(bytes.TrimSpace(data), []byte("\n")) + 1
	e := newEnv(t)
	for _, tc := range []struct {
		name, jobID, ctype string
		gzip               bool
	}{
		{"jsonl", "batch-plain", "application/jsonl", false},
		{"ndjson gzip", "batch-gzip", "application/x-ndjson; charset=utf-8", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			body, hdr := data, []string{"Content-Type", tc.ctype}
			if tc.gzip {
				body, hdr = gz(t, data), append(hdr, "Content-Encoding", "gzip")
			}
			w := e.do(http.MethodPost, "/Ingest/v1/jobs?model=gemini-2.5-flash&job_id="+tc.jobID, body, hdr...)
			if a := decodeAccepted(t, w); a != (accepted{JobID: tc.jobID, Accepted: n}) {
				t.Errorf("202 body %+v, want %d accepted for %s", a, n, tc.jobID)
			}
		})
	}
	e.t = t
	keys := map[string]map[string]bool{}
	for _, env := range e.published() {
		if keys[env.JobID] == nil {
			keys[env.JobID] = map[string]bool{}
		}
		keys[env.JobID][env.Key] = true
	}
	if len(keys["batch-plain"]) != n || len(keys["batch-gzip"]) != n {
		t.Errorf("published %d and %d distinct keys, want %d each", len(keys["batch-plain"]), len(keys["batch-gzip"]), n)
	}
}

func TestIdempotentRetryAndConflict(t *testing.T) {
	e := newEnv(t)
	body := jobJSON(`"job_id": "retry-1", `+m, "a", req("x"), "b", req("y"))
	first := e.postJSON(body)
	decodeAccepted(t, first)
	// The same job as JSONL is the same content.
	again := e.do(http.MethodPost, "/v1/jobs?job_id=retry-1&model=gemini-2.5-flash", []byte(lines("a", req("x"), "b", req("y"))), "Content-Type", "application/jsonl")
	if again.Code != first.Code || again.Body.String() != first.Body.String() {
		t.Errorf("retry = %d %s, want the first answer %d %s", again.Code, again.Body, first.Code, first.Body)
	}
	if n := len(e.published()); n != 2 {
		t.Errorf("published %d messages after a retry, want 2 (nothing republished)", n)
	}
	for _, changed := range []string{
		jobJSON(`"job_id": "retry-1", `+m, "a", req("x"), "b", req("z")),
		jobJSON(`"job_id": "retry-1", `+m, "a", req("x")),
		jobJSON(`"job_id": "retry-1", `+m, "b", req("y"), "a", req("x")),
		jobJSON(`"job_id": "retry-1", "model": "gemini-tiny"`, "a", req("x"), "b", req("y")),
		jobJSON(`"job_id": "retry-1", `+m+`, "generation_config": {"temperature": 1}`, "a", req("x"), "b", req("y")),
	} {
		w := e.postJSON(changed)
		if w.Code != http.StatusConflict {
			t.Fatalf("same id, different content = %d %s, want 409", w.Code, w.Body)
		}
		if b := decodeErr(t, w); b.Error.Field != "job_id" || b.Error.Status != "ALREADY_EXISTS" {
			t.Errorf("409 body %+v, want field job_id, status ALREADY_EXISTS", b.Error)
		}
	}
	if n := len(e.published()); n != 2 {
		t.Errorf("published %d messages after conflicts, want 2", n)
	}
}

// flakyPublisher publishes the first half of the messages of its first call
// and then fails, as an instance dying mid-publish would.
type flakyPublisher struct {
	pub   publisher
	mu    sync.Mutex
	calls int
}

func (f *flakyPublisher) Publish(ctx context.Context, msgs []queue.Message) error {
	f.mu.Lock()
	f.calls++
	first := f.calls == 1
	f.mu.Unlock()
	if first {
		if err := f.pub.Publish(ctx, msgs[:len(msgs)/2]); err != nil {
			return err
		}
		return errors.New("pubsub publish: connection reset")
	}
	return f.pub.Publish(ctx, msgs)
}

func TestRetryAfterPartialPublish(t *testing.T) {
	var flaky *flakyPublisher
	e := newEnv(t, func(d *deps) {
		flaky = &flakyPublisher{pub: d.publisher}
		d.publisher = flaky
	})
	body := jobJSON(`"job_id": "crash-1", `+m, "a", req("1"), "b", req("2"), "c", req("3"), "d", req("4"))
	w := e.postJSON(body)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("POST with a failing publish = %d %s, want 503", w.Code, w.Body)
	}
	if b := decodeErr(t, w); b.Error.Status != "UNAVAILABLE" {
		t.Errorf("503 body %+v", b.Error)
	}
	if n := len(e.published()); n != 2 {
		t.Fatalf("published %d before the failure, want 2", n)
	}
	decodeAccepted(t, e.postJSON(body))
	ids := map[string]int{}
	for _, env := range e.published() {
		ids[env.TaskID]++
	}
	if len(ids) != 4 {
		t.Errorf("distinct tasks published = %d, want 4", len(ids))
	}
	// Now complete: a further retry publishes nothing.
	total := len(e.published())
	decodeAccepted(t, e.postJSON(body))
	if n := len(e.published()); n != total {
		t.Errorf("published %d after a retry of a complete job, want %d", n, total)
	}
	j, err := e.st.GetJob(t.Context(), "crash-1")
	if err != nil || j.Counts.Total != 4 {
		t.Fatalf("job after retries = %+v, %v; want total 4", j.Counts, err)
	}
	// Every message, the retry's too, carries the record's creation time
	// (for a worker that finds the record lost), and the record holds every
	// task's request fingerprint from before the first publish.
	fps := e.rdb.HGetAll(t.Context(), "gemq:job:{crash-1}:fps").Val()
	for _, env := range e.published() {
		if !env.JobCreatedTime().Equal(j.CreatedAt) {
			t.Errorf("task %s: job_created %q, want the record's %v", env.Key, env.JobCreated, j.CreatedAt)
		}
		if want := task.RequestFingerprint(env.Model, env.Request)[:16]; fps[env.TaskID] != want {
			t.Errorf("task %s: recorded fingerprint %q, want %q", env.Key, fps[env.TaskID], want)
		}
	}
	if len(fps) != 4 {
		t.Errorf("%d fingerprints recorded, want 4", len(fps))
	}
}

func TestConcurrentIdenticalSubmissions(t *testing.T) {
	e := newEnv(t)
	body := jobJSON(`"job_id": "race-1", `+m, "a", req("1"), "b", req("2"))
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Go(func() {
			r := httptest.NewRequest(http.MethodPost, "/v1/jobs", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			e.srv.ServeHTTP(w, r)
			codes[i] = w.Code
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusAccepted {
			t.Errorf("submission %d = %d, want 202", i, c)
		}
	}
	ids := map[string]bool{}
	for _, env := range e.published() {
		ids[env.TaskID] = true
	}
	if len(ids) != 2 {
		t.Errorf("distinct tasks published = %d, want 2", len(ids))
	}
}
