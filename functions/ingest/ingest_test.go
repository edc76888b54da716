package ingest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"

	"github.com/gemq-dev/gemq/internal/redistest"
)

const (
	model     = "gemini-2.5-flash"
	tinyModel = "gemini-tiny" // a 95-token input capacity, for the input limit test
	topic     = "gemq-tasks"
)

const quotas = `{"safety": 0.95, "scopes": [
  {"project": "*", "model": "gemini-2.5-flash", "dimensions": [
    {"name": "rpm", "unit": "requests", "limit": 1000, "period": "1m"},
    {"name": "tpm", "unit": "input_tokens", "limit": 1000000, "period": "1m"}]},
  {"project": "*", "model": "gemini-tiny", "dimensions": [
    {"name": "tpm", "unit": "input_tokens", "limit": 100, "period": "1m"}]},
  {"project": "*", "model": "gemini-2.0-flash", "dimensions": [
    {"name": "rpm", "unit": "requests", "limit": 10, "period": "1m"}]}]}`

// env is one test's ingest server with a real Redis and a pstest Pub/Sub
// reached through the real client.
type env struct {
	t   *testing.T
	srv *server
	ps  *pstest.Server
	rdb *redis.Client
	st  *store.Store
	pub *queue.Publisher
}

func newEnv(t *testing.T, opts ...func(*deps)) *env {
	t.Helper()
	ctx := t.Context()
	rdb := redistest.Start(t).Client(t)
	ps := pstest.NewServer()
	t.Cleanup(func() { ps.Close() })
	conn, err := grpc.NewClient(ps.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	client, err := pubsub.NewClient(ctx, "test-project", option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if err := queue.EnsureTopic(ctx, client, topic); err != nil {
		t.Fatal(err)
	}
	pub := queue.NewPublisher(client, topic, queue.ManyDelay)
	t.Cleanup(pub.Stop)
	qc, err := limiter.ParseConfig([]byte(quotas))
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(rdb, store.Options{TTL: time.Hour})
	d := deps{
		store:        st,
		marks:        redisMarks{rdb: rdb, ttl: time.Hour},
		publisher:    pub,
		limits:       quotaLimits{cfg: qc, project: "test-project"},
		allowed:      []string{model, tinyModel},
		maxBodyBytes: 2 << 20,
		maxRequests:  400,
	}
	for _, o := range opts {
		o(&d)
	}
	return &env{t: t, srv: newServer(d), ps: ps, rdb: rdb, st: st, pub: pub}
}

// do sends one request to the handler; hdr holds header name/value pairs.
func (e *env) do(method, path string, body []byte, hdr ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	r := httptest.NewRequestWithContext(e.t.Context(), method, path, bytes.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	e.srv.ServeHTTP(w, r)
	return w
}

func (e *env) postJSON(body string, hdr ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	return e.do(http.MethodPost, "/v1/jobs", []byte(body), append([]string{"Content-Type", "application/json"}, hdr...)...)
}

// published returns the envelopes pstest has received, decoded.
func (e *env) published() []task.Envelope {
	e.t.Helper()
	var out []task.Envelope
	for _, m := range e.ps.Messages() {
		env, err := task.Decode(m.Data)
		if err != nil {
			e.t.Fatalf("published message does not decode: %v", err)
		}
		if m.Attributes["job_id"] != env.JobID || m.Attributes["task_id"] != env.TaskID {
			e.t.Errorf("attributes %v do not match the envelope (%s, %s)", m.Attributes, env.JobID, env.TaskID)
		}
		out = append(out, env)
	}
	return out
}

// keys returns every key in Redis.
func (e *env) keys() []string {
	e.t.Helper()
	ks, err := e.rdb.Keys(context.Background(), "*").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	sort.Strings(ks)
	return ks
}

type errBody struct {
	Error struct {
		Code    int    `json:"code"`
		Status  string `json:"status"`
		Message string `json:"message"`
		Field   string `json:"field"`
		Line    int    `json:"line"`
		Key     string `json:"key"`
	} `json:"error"`
}

func decodeErr(t *testing.T, w *httptest.ResponseRecorder) errBody {
	t.Helper()
	var b errBody
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil {
		t.Fatalf("error body %q: %v", w.Body.String(), err)
	}
	if b.Error.Code != w.Code || b.Error.Status == "" || b.Error.Message == "" {
		t.Errorf("error body %s: code/status/message missing or wrong for HTTP %d", w.Body.String(), w.Code)
	}
	return b
}

func gz(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// req builds a request object with one user text part.
func req(text string) string {
	b, _ := json.Marshal(text)
	return `{"contents": [{"role": "user", "parts": [{"text": ` + string(b) + `}]}]}`
}

// jobJSON builds a JSON job body with the given items ("key" → request JSON).
func jobJSON(head string, items ...string) string {
	var b strings.Builder
	b.WriteString("{" + head)
	if head != "" {
		b.WriteString(", ")
	}
	b.WriteString(`"requests": [`)
	for i := 0; i+1 < len(items); i += 2 {
		if i > 0 {
			b.WriteString(", ")
		}
		k, _ := json.Marshal(items[i])
		fmt.Fprintf(&b, `{"key": %s, "request": %s}`, k, items[i+1])
	}
	b.WriteString("]}")
	return b.String()
}

func lines(items ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(items); i += 2 {
		k, _ := json.Marshal(items[i])
		fmt.Fprintf(&b, "{\"key\": %s, \"request\": %s}\n", k, items[i+1])
	}
	return b.String()
}

const m = `"model": "gemini-2.5-flash"`

// seed finishes tasks of a job through the store, as the worker would.
func seed(t *testing.T, st *store.Store, jobID string, succeed map[string]string, fail map[string]string) {
	t.Helper()
	ctx := t.Context()
	finish := func(key string, ok bool, payload string) {
		ref := store.Ref{JobID: jobID, TaskID: task.TaskID(jobID, key), Key: key, Model: model}
		lr, err := st.LeaseTask(ctx, ref, store.LeaseRequest{Holder: "w1", TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			_, err = st.Complete(ctx, ref, lr.Token, []byte(payload))
		} else {
			_, err = st.Fail(ctx, ref, lr.Token, []byte(payload))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range succeed {
		finish(k, true, v)
	}
	for k, v := range fail {
		finish(k, false, v)
	}
}

func TestStatusAndResults(t *testing.T) {
	e := newEnv(t)
	weird := "key/with slash?and#hash %2F"
	decodeAccepted(t, e.postJSON(jobJSON(`"job_id": "st-1", `+m, "a", req("1"), "b", req("2"), weird, req("3"), "d", req("4"))))
	resp := `{"candidates":[{"content":{"role":"model","parts":[{"text":"hi"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1}}`
	errJSON := `{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}`
	seed(t, e.st, "st-1", map[string]string{"a": resp, weird: resp}, map[string]string{"b": errJSON})
	ref := store.Ref{JobID: "st-1", TaskID: task.TaskID("st-1", "d"), Key: "d", Model: model}
	lr, err := e.st.LeaseTask(t.Context(), ref, store.LeaseRequest{Holder: "w2", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}

	w := e.do(http.MethodGet, "/v1/jobs/st-1", nil)
	if w.Code != http.StatusOK {
		t.Fatalf("GET job = %d %s", w.Code, w.Body)
	}
	var v map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	wantCounts := map[string]any{"total": 4.0, "queued": 0.0, "waiting": 0.0, "running": 1.0, "succeeded": 2.0, "failed": 1.0}
	if diff := cmp.Diff(wantCounts, v["counts"]); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	if v["job_id"] != "st-1" || v["model"] != model || v["state"] != "running" || v["created_at"] == nil || v["updated_at"] == nil {
		t.Errorf("job view %v", v)
	}
	if _, ok := v["finished_at"]; ok {
		t.Errorf("finished_at set on a running job: %v", v)
	}

	got := results(t, e, "st-1", "running")
	want := []string{
		`{"key":"a","response":` + resp + `}`,
		`{"key":"b","error":` + errJSON + `}`,
		`{"key":` + mustJSON(weird) + `,"response":` + resp + `}`,
	}
	sort.Strings(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}

	// One request, by key (escaped in the path).
	w = e.do(http.MethodGet, "/v1/jobs/st-1/requests/"+url.PathEscape(weird), nil)
	if w.Code != http.StatusOK {
		t.Fatalf("GET request = %d %s", w.Code, w.Body)
	}
	if diff := cmp.Diff(`{"key":`+mustJSON(weird)+`,"state":"succeeded","response":`+resp+`}`, strings.TrimSpace(w.Body.String())); diff != "" {
		t.Errorf("GET request (-want +got):\n%s", diff)
	}
	w = e.do(http.MethodGet, "/v1/jobs/st-1/requests/b", nil)
	if got := strings.TrimSpace(w.Body.String()); got != `{"key":"b","state":"failed","error":`+errJSON+`}` {
		t.Errorf("GET failed request = %s", got)
	}
	w = e.do(http.MethodGet, "/v1/jobs/st-1/requests/d", nil)
	if got := strings.TrimSpace(w.Body.String()); got != `{"key":"d","state":"running"}` {
		t.Errorf("GET running request = %s", got)
	}

	// Finish the last one: the job is done.
	if _, err := e.st.Complete(t.Context(), ref, lr.Token, []byte(resp)); err != nil {
		t.Fatal(err)
	}
	w = e.do(http.MethodGet, "/Ingest/v1/jobs/st-1", nil)
	v = nil
	json.Unmarshal(w.Body.Bytes(), &v)
	if v["state"] != "done" || v["finished_at"] == nil {
		t.Errorf("finished job view %v", v)
	}
	if got := results(t, e, "st-1", "done"); len(got) != 4 {
		t.Errorf("results of the finished job: %d lines, want 4", len(got))
	}
}

func mustJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// results GETs a job's results and returns its lines, sorted.
func results(t *testing.T, e *env, jobID, state string) []string {
	t.Helper()
	ts := httptest.NewServer(e.srv)
	defer ts.Close()
	resp, err := http.Get(ts.URL + "/v1/jobs/" + jobID + "/results")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/jsonl") {
		t.Fatalf("GET results = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if got := resp.Header.Get("X-Gemq-Job-State"); got != state {
		t.Errorf("X-Gemq-Job-State = %q, want %q", got, state)
	}
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var v struct {
			Key      string          `json:"key"`
			Response json.RawMessage `json:"response"`
			Error    json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil || (v.Response == nil) == (v.Error == nil) {
			t.Errorf("result line %s: want exactly one of response and error (%v)", sc.Text(), err)
		}
		out = append(out, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if got := resp.Trailer.Get("X-Gemq-Results-Complete"); got != "true" {
		t.Errorf("trailer X-Gemq-Results-Complete = %q, want true", got)
	}
	sort.Strings(out)
	return out
}

func TestResultsManyPages(t *testing.T) {
	e := newEnv(t, func(d *deps) { d.maxRequests = 2000 })
	var items []string
	succeed := map[string]string{}
	for i := range resultsPageSize + 50 {
		k := fmt.Sprintf("k%04d", i)
		items = append(items, k, req("x"))
		succeed[k] = `{"candidates":[]}`
	}
	decodeAccepted(t, e.postJSON(jobJSON(`"job_id": "pages", `+m, items...)))
	seed(t, e.st, "pages", succeed, nil)
	if got := results(t, e, "pages", "done"); len(got) != len(succeed) {
		t.Errorf("results: %d lines, want %d", len(got), len(succeed))
	}
}

func TestLookupErrors(t *testing.T) {
	e := newEnv(t)
	decodeAccepted(t, e.postJSON(jobJSON(`"job_id": "look", `+m, "a", req("x"))))
	for _, tc := range []struct {
		path  string
		code  int
		field string
	}{
		{"/v1/jobs/nope", 404, "job_id"},
		{"/v1/jobs/nope/results", 404, "job_id"},
		{"/v1/jobs/nope/requests/a", 404, "job_id"},
		{"/v1/jobs/look/requests/zzz", 404, "key"},
		{"/v1/jobs/bad%7Bid%7D", 400, "job_id"},
		{"/v1/jobs/look/other", 404, ""},
		{"/v1/jobs/look/requests/a/b", 404, ""},
		{"/v1/jobsx", 404, ""},
	} {
		w := e.do(http.MethodGet, tc.path, nil)
		if w.Code != tc.code {
			t.Errorf("GET %s = %d %s, want %d", tc.path, w.Code, w.Body, tc.code)
			continue
		}
		if b := decodeErr(t, w); b.Error.Field != tc.field {
			t.Errorf("GET %s: field %q, want %q", tc.path, b.Error.Field, tc.field)
		}
	}
	w := e.do(http.MethodGet, "/v1/jobs/look/requests/a", nil)
	if got := strings.TrimSpace(w.Body.String()); w.Code != 200 || got != `{"key":"a","state":"queued"}` {
		t.Errorf("GET queued request = %d %s", w.Code, got)
	}
}

func TestParseRoute(t *testing.T) {
	tests := []struct {
		path string
		want route
		ok   bool
	}{
		{"/v1/jobs", route{name: "jobs", allow: "POST"}, true},
		{"/v1/jobs/", route{name: "jobs", allow: "POST"}, true},
		{"/Ingest/v1/jobs", route{name: "jobs", allow: "POST"}, true},
		{"/x/v1/jobsy/v1/jobs/j", route{name: "job", jobID: "j", allow: "GET"}, true},
		{"/v1/jobs/j/results", route{name: "results", jobID: "j", allow: "GET"}, true},
		{"/v1/jobs/j/requests/a%2Fb%20c", route{name: "request", jobID: "j", key: "a/b c", allow: "GET"}, true},
		{"/v1/jobs/j/requests/", route{}, false},
		{"/v1/jobs/j/requests/%zz", route{}, false},
		{"/v1/jobs/j:cancel", route{name: "cancel", jobID: "j", allow: "POST"}, true},
		{"/v1/jobs/j%3Acancel", route{name: "cancel", jobID: "j", allow: "POST"}, true},
		{"/", route{}, false},
	}
	for _, tt := range tests {
		got, ok := parseRoute(tt.path)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseRoute(%q) = %+v, %v; want %+v, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
}

func TestLogsCarryNoInput(t *testing.T) {
	var buf syncBuffer
	e := newEnv(t, func(d *deps) { d.log = newTestLogger(&buf) })
	secret := "SECRET-PROMPT-TEXT"
	decodeAccepted(t, e.postJSON(jobJSON(`"job_id": "logs-1", `+m, "KEY-"+secret, req(secret))))
	e.postJSON(jobJSON(`"job_id": "logs-2", `+m, "KEY-"+secret, req(secret), "KEY-"+secret, req(secret)))
	e.postJSON(jobJSON(`"job_id": "logs-3", `+m, "k", `{"contents": [{"parts": [{"text": "`+secret+`", "`+secret+`": 1}]}]}`))
	e.do(http.MethodGet, "/v1/jobs/logs-1/requests/KEY-"+secret, nil)
	e.do(http.MethodGet, "/v1/jobs/"+secret+"%7B/results", nil)
	out := buf.String()
	if strings.Contains(out, secret) {
		t.Errorf("logs contain input:\n%s", out)
	}
	for _, want := range []string{`"severity":"INFO"`, `"message":"job accepted"`, `"job_id":"logs-1"`, `"job_id":"(invalid)"`} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s:\n%s", want, out)
		}
	}
}

func TestFromEnv(t *testing.T) {
	env := map[string]string{
		"REDIS_ADDR":           "127.0.0.1:1",
		"GOOGLE_CLOUD_PROJECT": "p",
		"GEMQ_QUOTAS":          quotas,
		"PUBSUB_EMULATOR_HOST": "127.0.0.1:1",
		"GEMQ_ALLOWED_MODELS":  "gemini-2.5-flash",
		"GEMQ_MAX_BODY_BYTES":  "1000",
	}
	t.Setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:1")
	s, err := fromEnv(t.Context(), func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatalf("fromEnv: %v", err)
	}
	if s.maxBodyBytes != 1000 || len(s.allowed) != 1 || s.allowed[0] != model {
		t.Errorf("server settings: max body %d, allowed %v", s.maxBodyBytes, s.allowed)
	}
	delete(env, "REDIS_ADDR")
	if _, err := fromEnv(t.Context(), func(k string) string { return env[k] }, io.Discard); err == nil || !strings.Contains(err.Error(), "REDIS_ADDR") {
		t.Errorf("fromEnv without REDIS_ADDR = %v, want an error naming it", err)
	}
}

// TestHandleMisconfigured drives the registered function without
// configuration: a JSON 500 naming what is missing, and nothing cached, so
// a later request builds the server again.
func TestHandleMisconfigured(t *testing.T) {
	for _, v := range []string{"REDIS_ADDR", "GOOGLE_CLOUD_PROJECT", "GEMQ_QUOTAS", "GEMQ_QUOTAS_FILE"} {
		t.Setenv(v, "")
	}
	for range 2 {
		w := httptest.NewRecorder()
		handle(w, httptest.NewRequest(http.MethodGet, "/v1/jobs/x", nil))
		if w.Code != http.StatusInternalServerError {
			t.Fatalf("handle = %d %s, want 500", w.Code, w.Body)
		}
		if b := decodeErr(t, w); !strings.Contains(b.Error.Message, "REDIS_ADDR") {
			t.Errorf("error %q does not name REDIS_ADDR", b.Error.Message)
		}
		if built.Built() {
			t.Fatal("a failed build was cached")
		}
	}
}

// TestKeysAreHashed submits keys that would break Redis hash tags, log lines
// and Cloud Task names: they are accepted, and appear in no Redis key name.
func TestKeysAreHashed(t *testing.T) {
	e := newEnv(t)
	keys := []string{"a}{b", "line\nbreak", "tab\there", "../../etc", "ключ", "*"}
	var items []string
	for _, k := range keys {
		items = append(items, k, req("x"))
	}
	decodeAccepted(t, e.postJSON(jobJSON(`"job_id": "keys-1", `+m, items...)))
	for _, rk := range e.keys() {
		if !strings.HasPrefix(rk, "gemq:job:{keys-1}:") && rk != publishedKey("keys-1") {
			t.Errorf("unexpected Redis key %q", rk)
		}
		for _, k := range keys {
			if strings.Contains(rk, k) {
				t.Errorf("Redis key %q contains the request key %q", rk, k)
			}
		}
	}
	for _, env := range e.published() {
		if !task.ValidTaskID(env.TaskID) {
			t.Errorf("task id %q is not a hash", env.TaskID)
		}
	}
	w := e.do(http.MethodGet, "/v1/jobs/keys-1/requests/"+url.PathEscape("a}{b"), nil)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"state":"queued"`) {
		t.Errorf("GET by a key with braces = %d %s", w.Code, w.Body)
	}
}
