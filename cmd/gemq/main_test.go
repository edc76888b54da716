package main

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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeIngest implements the ingest HTTP API contract under a path prefix:
// every status poll finishes up to two more tasks; keys containing "fail"
// finish with an error.
type fakeIngest struct {
	mu        sync.Mutex
	jobs      map[string]*fakeJob
	posts     int
	failPosts int // answer this many POSTs with 503 first
	lastQuery string
	lastCE    string
	lastAuth  string
	// resultsComplete is the X-Gemq-Results-Complete trailer ("true").
	resultsComplete string
}

type fakeJob struct {
	model string
	body  string
	keys  []string
	done  int
}

func newFakeIngest(t *testing.T) (*fakeIngest, string) {
	f := &fakeIngest{jobs: map[string]*fakeJob{}, resultsComplete: "true"}
	srv := httptest.NewServer(http.StripPrefix("/Ingest", f))
	t.Cleanup(srv.Close)
	return f, srv.URL + "/Ingest"
}

func apiErr(w http.ResponseWriter, code int, status, msg, field string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "status": status, "message": msg, "field": field}})
}

func (f *fakeIngest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastAuth = r.Header.Get("Authorization")
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/jobs":
		f.posts++
		if f.failPosts > 0 {
			f.failPosts--
			http.Error(w, "upstream unavailable", http.StatusServiceUnavailable)
			return
		}
		ct := r.Header.Get("Content-Type")
		if ct != "application/jsonl" && ct != "application/json" {
			apiErr(w, 415, "INVALID_ARGUMENT", "wrong content type "+ct, "")
			return
		}
		f.lastQuery, f.lastCE = r.URL.RawQuery, r.Header.Get("Content-Encoding")
		var rd io.Reader = r.Body
		if f.lastCE == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				apiErr(w, 400, "INVALID_ARGUMENT", "bad gzip", "")
				return
			}
			rd = zr
		}
		body, _ := io.ReadAll(rd)
		job := &fakeJob{model: r.URL.Query().Get("model"), body: string(body)}
		id := r.URL.Query().Get("job_id")
		if ct == "application/json" {
			// The JSON job format: turned into JSONL lines here.
			var jb struct {
				JobID    string            `json:"job_id"`
				Model    string            `json:"model"`
				Requests []json.RawMessage `json:"requests"`
			}
			if err := json.Unmarshal(body, &jb); err != nil {
				apiErr(w, 400, "INVALID_ARGUMENT", "not a JSON job: "+err.Error(), "")
				return
			}
			if id == "" {
				id = jb.JobID
			}
			if job.model == "" {
				job.model = jb.Model
			}
			var lines []byte
			for _, r := range jb.Requests {
				lines = append(append(lines, r...), '\n')
			}
			body = lines
		}
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(nil, 8<<20)
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			var l struct {
				Key     string         `json:"key"`
				Request map[string]any `json:"request"`
			}
			json.Unmarshal(sc.Bytes(), &l)
			if _, ok := l.Request["contents"]; !ok {
				apiErr(w, 400, "INVALID_ARGUMENT", "contents is required", fmt.Sprintf("requests[%d].request.contents", len(job.keys)))
				return
			}
			job.keys = append(job.keys, l.Key)
		}
		if old, ok := f.jobs[id]; ok && old.body != job.body {
			apiErr(w, 409, "ALREADY_EXISTS", "job "+id+" exists with different content", "job_id")
			return
		} else if !ok {
			f.jobs[id] = job
		}
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(map[string]any{"job_id": id, "accepted": len(job.keys)})
	case r.Method == http.MethodGet && len(parts) >= 3 && parts[0] == "v1" && parts[1] == "jobs":
		job := f.jobs[parts[2]]
		if job == nil {
			apiErr(w, 404, "NOT_FOUND", "no job "+parts[2], "job_id")
			return
		}
		if len(parts) == 4 && parts[3] == "results" {
			// As ingest: whether more results may come, and a trailer
			// saying whether every finished task was sent.
			w.Header().Set("Content-Type", "application/jsonl")
			state := "running"
			if job.done == len(job.keys) {
				state = "done"
			}
			w.Header().Set("X-Gemq-Job-State", state)
			w.Header().Set("Trailer", "X-Gemq-Results-Complete")
			defer func() { w.Header().Set("X-Gemq-Results-Complete", f.resultsComplete) }()
			for _, k := range job.keys[:job.done] {
				if strings.Contains(k, "fail") {
					fmt.Fprintf(w, `{"key":%q,"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}`+"\n", k)
				} else {
					fmt.Fprintf(w, `{"key":%q,"response":{"candidates":[]}}`+"\n", k)
				}
			}
			return
		}
		job.done = min(job.done+2, len(job.keys))
		var ok, failed int
		for _, k := range job.keys[:job.done] {
			if strings.Contains(k, "fail") {
				failed++
			} else {
				ok++
			}
		}
		state := "running"
		if job.done == len(job.keys) {
			state = "done"
		}
		json.NewEncoder(w).Encode(map[string]any{
			"job_id": parts[2], "model": job.model, "state": state,
			"counts": map[string]int{
				"total": len(job.keys), "queued": len(job.keys) - job.done, "waiting": 0, "running": 0,
				"succeeded": ok, "failed": failed,
			},
			"created_at": time.Now().Add(-time.Minute), "updated_at": time.Now(),
		})
	default:
		apiErr(w, 405, "METHOD_NOT_ALLOWED", "no", "")
	}
}

// gemq runs one command line and returns its exit code, stdout and stderr.
func gemq(t *testing.T, envs map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runMain(context.Background(), args, env{
		stdout: &out, stderr: &errb, getenv: func(k string) string { return envs[k] },
	})
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func jsonl(keys ...string) string {
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, `{"key":%q,"request":{"contents":[{"role":"user","parts":[{"text":"hello %s"}]}]}}`+"\n", k, k)
	}
	return b.String()
}

func TestSubmitWaitWritesResults(t *testing.T) {
	f, url := newFakeIngest(t)
	in := writeFile(t, "job.jsonl", jsonl("a", "b", "c", "d", "e"))
	out := filepath.Join(t.TempDir(), "results.jsonl")
	code, stdout, stderr := gemq(t, nil, "submit", in, "--url", url, "--model", "gemini-2.5-flash",
		"--job-id", "j1", "--wait", "-o", out, "--interval", "1ms")
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	if stdout != "j1\n" {
		t.Errorf("stdout = %q, want the job id", stdout)
	}
	if f.lastQuery != "job_id=j1&model=gemini-2.5-flash" || f.lastCE != "" {
		t.Errorf("query %q, Content-Encoding %q", f.lastQuery, f.lastCE)
	}
	for _, want := range []string{"accepted 5 request(s)", "100%", "5/5", "wrote 5 result(s)"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n != 5 {
		t.Errorf("results file has %d lines, want 5:\n%s", n, data)
	}
}

func TestJobWithFailuresExitsOne(t *testing.T) {
	_, url := newFakeIngest(t)
	in := writeFile(t, "job.jsonl", jsonl("ok1", "fail1", "ok2"))
	envs := map[string]string{"GEMQ_URL": url}
	if code, _, stderr := gemq(t, envs, "submit", "--job-id", "j2", in, "--wait", "--interval", "1ms"); code != exitJobFailures ||
		!strings.Contains(stderr, "1 of 3 task(s) failed") {
		t.Errorf("submit --wait: exit %d, stderr:\n%s", code, stderr)
	}
	code, stdout, _ := gemq(t, envs, "status", "j2")
	if code != exitJobFailures || !strings.Contains(stdout, "3 total: 2 succeeded, 1 failed") || !strings.Contains(stdout, "state     done") {
		t.Errorf("status: exit %d, stdout:\n%s", code, stdout)
	}
	code, stdout, stderr := gemq(t, envs, "results", "j2")
	if code != exitJobFailures || strings.Count(stdout, "\n") != 3 || !strings.Contains(stderr, "3 result(s), 1 with an error") {
		t.Errorf("results: exit %d, stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

func TestStatusJSONAndResultsFile(t *testing.T) {
	_, url := newFakeIngest(t)
	in := writeFile(t, "job.jsonl", jsonl("a", "b"))
	envs := map[string]string{"GEMQ_URL": url}
	if code, _, stderr := gemq(t, envs, "submit", in, "--job-id", "j3"); code != 0 {
		t.Fatalf("submit: %d %s", code, stderr)
	}
	code, stdout, _ := gemq(t, envs, "status", "j3", "--json")
	var st jobStatus
	if err := json.Unmarshal([]byte(stdout), &st); err != nil || code != 0 {
		t.Fatalf("status --json: exit %d, %v:\n%s", code, err, stdout)
	}
	if diff := cmp.Diff(jobCounts{Total: 2, Succeeded: 2}, st.Counts); diff != "" || st.State != "done" {
		t.Errorf("status %s (-want +got):\n%s", st.State, diff)
	}
	out := filepath.Join(t.TempDir(), "r.jsonl")
	if code, _, stderr := gemq(t, envs, "results", "j3", "-o", out); code != 0 || !strings.Contains(stderr, "wrote 2 result(s) to "+out) {
		t.Errorf("results -o: exit %d, stderr %s", code, stderr)
	}
}

func TestBadFiles(t *testing.T) {
	_, url := newFakeIngest(t)
	for _, tc := range []struct {
		name, content, want string
	}{
		{"not json", jsonl("a") + "{oops\n", "job.jsonl:2: not a JSON object"},
		{"no key", `{"request":{"contents":[]}}` + "\n", `job.jsonl:1: missing "key"`},
		{"request not object", `{"key":"a","request":"hi"}` + "\n", `"request" must be a JSON object`},
		{"duplicate key", jsonl("a", "b", "a"), `job.jsonl:3: duplicate key "a" (first on line 1)`},
		{"empty", "\n\n", "holds no requests"},
		{"two values", `{"key":"a","request":{}} {"key":"b","request":{}}` + "\n", "more than one JSON value"},
		{"binary", "\xff\xfe", "not UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := writeFile(t, "job.jsonl", tc.content)
			code, _, stderr := gemq(t, nil, "submit", in, "--url", url)
			if code != exitInput || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant %q", code, stderr, tc.want)
			}
		})
	}
	code, _, stderr := gemq(t, nil, "submit", filepath.Join(t.TempDir(), "missing.jsonl"), "--url", url)
	if code != exitInput || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing file: exit %d, stderr %s", code, stderr)
	}
}

func TestIngestRejectionNamesTheLine(t *testing.T) {
	_, url := newFakeIngest(t)
	// requests[1] is on line 3 (line 2 is blank).
	in := writeFile(t, "job.jsonl", jsonl("a")+"\n"+`{"key":"b","request":{"contentz":[]}}`+"\n")
	code, _, stderr := gemq(t, nil, "submit", in, "--url", url)
	if code != exitInput || !strings.Contains(stderr, "HTTP 400 INVALID_ARGUMENT: contents is required (field requests[1].request.contents, "+in+" line 3)") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}

func TestConflictAndIdempotentResubmit(t *testing.T) {
	f, url := newFakeIngest(t)
	in := writeFile(t, "job.jsonl", jsonl("a"))
	for range 2 {
		if code, _, stderr := gemq(t, nil, "submit", in, "--url", url, "--job-id", "same"); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	}
	other := writeFile(t, "other.jsonl", jsonl("b"))
	code, _, stderr := gemq(t, nil, "submit", other, "--url", url, "--job-id", "same")
	if code != exitInput || !strings.Contains(stderr, "HTTP 409") {
		t.Errorf("conflict: exit %d, stderr %s", code, stderr)
	}
	if f.posts != 3 {
		t.Errorf("posts = %d", f.posts)
	}
}

func TestSubmitRetries5xxWithTheSameJobID(t *testing.T) {
	f, url := newFakeIngest(t)
	f.failPosts = 1
	in := writeFile(t, "job.jsonl", jsonl("a"))
	code, stdout, stderr := gemq(t, nil, "submit", in, "--url", url)
	if code != 0 || f.posts != 2 {
		t.Fatalf("exit %d after %d posts: %s", code, f.posts, stderr)
	}
	id := strings.TrimSpace(stdout)
	if !strings.HasPrefix(id, "job-") || f.jobs[id] == nil {
		t.Errorf("job id %q not the one ingest stored (%v)", id, f.jobs)
	}
}

func TestLargeFilesAreGzipped(t *testing.T) {
	f, url := newFakeIngest(t)
	var keys []string
	for i := range 12000 {
		keys = append(keys, fmt.Sprintf("key-%05d-%s", i, strings.Repeat("x", 60)))
	}
	in := writeFile(t, "big.jsonl", jsonl(keys...))
	code, _, stderr := gemq(t, nil, "submit", in, "--url", url)
	if code != 0 || f.lastCE != "gzip" || !strings.Contains(stderr, "accepted 12000") {
		t.Errorf("exit %d, Content-Encoding %q, stderr %s", code, f.lastCE, stderr)
	}
}

func TestUnreachableAndHTTPErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	dead := srv.URL
	srv.Close()
	in := writeFile(t, "job.jsonl", jsonl("a"))
	code, _, stderr := gemq(t, nil, "submit", in, "--url", dead)
	if code != exitHTTP || !strings.Contains(stderr, "cannot reach ingest at "+dead) {
		t.Errorf("unreachable submit: exit %d, stderr %s", code, stderr)
	}
	code, _, stderr = gemq(t, nil, "status", "x", "--url", dead)
	if code != exitHTTP || !strings.Contains(stderr, "cannot reach ingest") {
		t.Errorf("unreachable status: exit %d, stderr %s", code, stderr)
	}
	_, url := newFakeIngest(t)
	code, _, stderr = gemq(t, nil, "status", "nope", "--url", url)
	if code != exitHTTP || !strings.Contains(stderr, "HTTP 404 NOT_FOUND: no job nope") {
		t.Errorf("unknown job: exit %d, stderr %s", code, stderr)
	}
	code, _, stderr = gemq(t, nil, "results", "nope", "--url", url)
	if code != exitHTTP || !strings.Contains(stderr, "HTTP 404") {
		t.Errorf("unknown job results: exit %d, stderr %s", code, stderr)
	}
	// A non-JSON error body is shown as text.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "Service Unavailable", 503)
	}))
	defer plain.Close()
	code, _, stderr = gemq(t, nil, "status", "x", "--url", plain.URL)
	if code != exitHTTP || !strings.Contains(stderr, "HTTP 503: Service Unavailable") {
		t.Errorf("503: exit %d, stderr %s", code, stderr)
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		envs     map[string]string
		code     int
		inStdout string
		inStderr string
	}{
		{nil, nil, exitUsage, "", "Usage:"},
		{[]string{"frobnicate"}, nil, exitUsage, "", `unknown command "frobnicate"`},
		{[]string{"--help"}, nil, exitOK, "Exit codes:", ""},
		{[]string{"help", "submit"}, nil, exitOK, "-job-id", ""},
		{[]string{"submit", "--help"}, nil, exitOK, "Usage: gemq submit FILE [--url URL]", ""},
		{[]string{"status", "-h"}, nil, exitOK, "-json", ""},
		{[]string{"results", "--help"}, nil, exitOK, "-o string", ""},
		{[]string{"submit", "a.jsonl"}, nil, exitUsage, "", "no ingest URL: pass --url or set GEMQ_URL"},
		{[]string{"submit"}, nil, exitUsage, "", "gemq submit: missing FILE\n  usage: gemq submit FILE"},
		{[]string{"status"}, nil, exitUsage, "", "gemq status: missing JOB\n  usage: gemq status JOB (gemq status --help lists the flags)\n"},
		{[]string{"results"}, nil, exitUsage, "", "gemq results: missing JOB"},
		{[]string{"submit", "a", "b", "--url", "http://x"}, nil, exitUsage, "", "too many arguments: a b"},
		{[]string{"run", "extra"}, nil, exitUsage, "", `unexpected argument "extra": gemq run takes flags only`},
		// A flag's bad value says what the flag wants, without the whole usage.
		{[]string{"run", "--minute", "10"}, nil, exitUsage, "", "gemq run: invalid value \"10\" for --minute: want a duration with a unit, such as 10s, 1m or 500ms\n  (gemq run --help lists the flags)\n"},
		{[]string{"dev", "--rpm", "many"}, nil, exitUsage, "", `invalid value "many" for --rpm: want a whole number`},
		// Values the stack would replace silently are refused.
		{[]string{"run", "--rpm", "0"}, nil, exitUsage, "", "--rpm 0: want a positive number"},
		{[]string{"dev", "--tpm", "-5"}, nil, exitUsage, "", "--tpm -5: want a positive number"},
		{[]string{"run", "--minute", "0s"}, nil, exitUsage, "", "--minute 0s: want a positive duration"},
		{[]string{"status", "j", "--url", "http://127.0.0.1:8080/v1/jobs"}, nil, exitUsage, "", `ends in an API path: give the function's base URL, http://127.0.0.1:8080 (gemq adds /v1/jobs itself)`},
		{[]string{"status", "j", "--url", "https://x.run.app/Ingest/v1/jobs/j"}, nil, exitUsage, "", `give the function's base URL, https://x.run.app/Ingest `},
		{[]string{"submit", "a", "--bogus"}, nil, exitUsage, "", "flag provided but not defined: -bogus"},
		{[]string{"submit", "a", "-o", "r.jsonl"}, map[string]string{"GEMQ_URL": "http://localhost:1"}, exitUsage, "", "-o needs --wait"},
		{[]string{"status", "j", "--url", "ftp://x"}, nil, exitUsage, "", "invalid ingest URL"},
	} {
		code, stdout, stderr := gemq(t, tc.envs, tc.args...)
		if code != exitOK && strings.Contains(stderr, "Usage:") && len(tc.args) > 0 && tc.code == exitUsage && !strings.Contains(tc.inStderr, "unknown command") {
			t.Errorf("gemq %q printed the whole usage for one mistake:\n%s", tc.args, stderr)
		}
		if code != tc.code || !strings.Contains(stdout, tc.inStdout) || !strings.Contains(stderr, tc.inStderr) {
			t.Errorf("gemq %q: exit %d (want %d)\nstdout:\n%s\nstderr:\n%s", tc.args, code, tc.code, stdout, stderr)
		}
	}
}

func TestSubcommandHelpPrintedOnceOnStdout(t *testing.T) {
	for _, cmd := range []string{"run", "dev", "submit", "status", "results"} {
		code, stdout, stderr := gemq(t, nil, cmd, "--help")
		if code != exitOK || strings.Count(stdout, "Usage: gemq "+cmd) != 1 || stderr != "" {
			t.Errorf("gemq %s --help: exit %d, usage printed %d times on stdout (want 1), stderr %q",
				cmd, code, strings.Count(stdout, "Usage: gemq "+cmd), stderr)
		}
	}
}

func TestDeployedURLNeedsCredentials(t *testing.T) {
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(t.TempDir(), "missing.json"))
	code, _, stderr := gemq(t, nil, "status", "j", "--url", "https://gemq-ingest.example.invalid")
	if code != exitAuth || !strings.Contains(stderr, "cannot get a Google ID token for https://gemq-ingest.example.invalid") ||
		!strings.Contains(stderr, "GEMQ_ID_TOKEN") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestIDTokenAttachedForDeployedURLs(t *testing.T) {
	c, err := newClient(context.Background(), "https://ingest.example.com/prefix/", func(k string) string {
		return map[string]string{"GEMQ_ID_TOKEN": "tok123"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	var gotAuth, gotURL string
	c.http.Transport.(*tokenTransport).base = roundTripFunc(func(r *http.Request) (*http.Response, error) {
		gotAuth, gotURL = r.Header.Get("Authorization"), r.URL.String()
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(`{"job_id":"j","state":"done"}`)), Header: http.Header{}}, nil
	})
	if _, err := c.status(context.Background(), "j"); err != nil {
		t.Fatal(err)
	}
	if gotAuth != "Bearer tok123" || gotURL != "https://ingest.example.com/prefix/v1/jobs/j" {
		t.Errorf("Authorization %q, URL %q", gotAuth, gotURL)
	}
	local, err := newClient(context.Background(), "http://127.0.0.1:8080/Ingest", func(string) string { return "" })
	if err != nil || local.http.Transport != nil {
		t.Errorf("loopback URL got a token transport (%v)", err)
	}
}

func TestProgressLine(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	p := newProgress(&buf, false, start)
	p.update(start, jobCounts{Total: 100, Queued: 100}, nil)
	p.update(start.Add(10*time.Second), jobCounts{Total: 100, Succeeded: 40, Failed: 10, Waiting: 30, Running: 5, Queued: 15}, nil)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines:\n%s", buf.String())
	}
	want := "██████████████░░░░░░░░░░░░░░  50% 50/100 · done 40 · waiting for quota 30 · running 5 · queued 15 · failed 10 · 5.0/s · ETA 10s · 10s"
	if lines[1] != want {
		t.Errorf("progress line\n got %q\nwant %q", lines[1], want)
	}
	if !strings.Contains(lines[0], "ETA –") {
		t.Errorf("first line without a rate: %q", lines[0])
	}
	for d, want := range map[time.Duration]string{
		1500 * time.Millisecond: "1.5s", 42 * time.Second: "42s", 125 * time.Second: "2m05s", 3723 * time.Second: "1h02m03s",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
