package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestResultsOfARunningJob(t *testing.T) {
	f, url := newFakeIngest(t)
	in := writeFile(t, "job.jsonl", jsonl("a", "b", "c", "d", "e"))
	if code, _, stderr := gemq(t, nil, "submit", in, "--url", url, "--job-id", "r1"); code != exitOK {
		t.Fatalf("submit: exit %d\n%s", code, stderr)
	}
	gemq(t, nil, "status", "r1", "--url", url) // 2 of 5 done

	// Without --partial: the results so far, a word on stderr, exit 7.
	code, stdout, stderr := gemq(t, nil, "results", "r1", "--url", url)
	if code != exitIncomplete || strings.Count(stdout, "\n") != 2 ||
		!strings.Contains(stderr, "job r1 is still running: these 2 result(s) are not all of them") ||
		!strings.Contains(stderr, "--partial") {
		t.Errorf("exit %d (want %d)\nstdout:\n%s\nstderr:\n%s", code, exitIncomplete, stdout, stderr)
	}
	// With --partial: accepted, still said.
	code, _, stderr = gemq(t, nil, "results", "r1", "--url", url, "--partial")
	if code != exitOK || !strings.Contains(stderr, "job r1 is still running: 2 result(s) so far (--partial)") {
		t.Errorf("--partial: exit %d\nstderr:\n%s", code, stderr)
	}
	// A done job whose stream the server says ended early is incomplete too.
	for range 3 {
		gemq(t, nil, "status", "r1", "--url", url)
	}
	f.mu.Lock()
	f.resultsComplete = "false"
	f.mu.Unlock()
	code, _, stderr = gemq(t, nil, "results", "r1", "--url", url, "-o", filepath.Join(t.TempDir(), "r.jsonl"))
	if code != exitIncomplete || !strings.Contains(stderr, "the results of job r1 ended early") {
		t.Errorf("truncated stream: exit %d\nstderr:\n%s", code, stderr)
	}
	f.mu.Lock()
	f.resultsComplete = "true"
	f.mu.Unlock()
	if code, _, stderr = gemq(t, nil, "results", "r1", "--url", url); code != exitOK {
		t.Errorf("done job: exit %d\nstderr:\n%s", code, stderr)
	}
}

func TestResultsFileMode(t *testing.T) {
	_, url := newFakeIngest(t)
	in := writeFile(t, "job.jsonl", jsonl("a", "b"))
	dir := t.TempDir()
	out := filepath.Join(dir, "results.jsonl")
	if code, _, stderr := gemq(t, nil, "submit", in, "--url", url, "--wait", "--interval", "1ms", "-o", out); code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("results file mode %v (%v), want 0644", fi.Mode().Perm(), err)
	}
	// Replacing a file keeps its mode.
	os.Chmod(out, 0o600)
	if code, _, stderr := gemq(t, nil, "submit", in, "--url", url, "--wait", "--interval", "1ms", "-o", out); code != exitOK {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Errorf("replaced file mode %v, want its own 0600", fi.Mode().Perm())
	}
}

// TestSubmitJSONJob: the README's JSON job format is accepted, sent as
// application/json with its own job id and model.
func TestSubmitJSONJob(t *testing.T) {
	f, url := newFakeIngest(t)
	in := writeFile(t, "job.json", `{
  "job_id": "json-1",
  "model": "gemini-2.5-flash",
  "requests": [
    {"key": "a", "request": {"contents": [{"parts": [{"text": "hi"}]}]}},
    {"key": "b", "request": {"contents": [{"parts": [{"text": "ho"}]}]}}
  ]
}`)
	code, stdout, stderr := gemq(t, nil, "submit", in, "--url", url)
	if code != exitOK || stdout != "json-1\n" || !strings.Contains(stderr, "accepted 2 request(s)") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if f.lastQuery != "" || f.jobs["json-1"] == nil || f.jobs["json-1"].model != "gemini-2.5-flash" {
		t.Errorf("query %q, jobs %v: the body's job id and model should be used", f.lastQuery, f.jobs)
	}
	for _, tc := range []struct{ body, want string }{
		{`{"requests": []}`, `"requests" is empty`},
		{`{"requests": [{"key": "a", "request": {}}, {"key": "a", "request": {}}]}`, `requests[1]: duplicate key "a" (first at requests[0])`},
		{`{"requests": [{"request": {}}]}`, `requests[0]: missing "key"`},
		{`{"requests": {"a": 1}}`, `"requests" must be an array`},
	} {
		code, _, stderr := gemq(t, nil, "submit", writeFile(t, "bad.json", tc.body), "--url", url)
		if code != exitInput || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %s (want %q)", tc.body, code, stderr, tc.want)
		}
	}
}

func TestResubmitSaysNothingWasSent(t *testing.T) {
	_, url := newFakeIngest(t)
	in := writeFile(t, "job.jsonl", jsonl("a", "b", "c"))
	_, _, stderr := gemq(t, nil, "submit", in, "--url", url, "--job-id", "again")
	if !strings.Contains(stderr, "job again accepted 3 request(s)") {
		t.Fatalf("first submission: %s", stderr)
	}
	code, _, stderr := gemq(t, nil, "submit", in, "--url", url, "--job-id", "again")
	if code != exitOK || !strings.Contains(stderr, "job again already existed with this content: nothing was sent again (3 request(s)") ||
		strings.Contains(stderr, "accepted") {
		t.Errorf("resubmission: exit %d, stderr %s", code, stderr)
	}
}

func TestUnspecifiedAddressIsLocal(t *testing.T) {
	for _, u := range []string{"http://0.0.0.0:8080", "http://[::]:8080"} {
		c, err := newClient(context.Background(), u, func(string) string { return "" })
		if err != nil || c.http.Transport != nil {
			t.Errorf("%s: treated as a deployed URL (%v)", u, err)
		}
	}
}

// TestRealGeminiNeedsAFlag: with a key in the environment, gemq run
// refuses a job larger than a quota minute, saying what it would spend,
// before anything starts.
func TestRealGeminiNeedsAFlag(t *testing.T) {
	var keys []string
	for i := range 300 {
		keys = append(keys, "k"+strings.Repeat("x", i%3)+string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	big := writeFile(t, "big.jsonl", jsonl(keys...))
	code, _, stderr := gemq(t, map[string]string{"GEMINI_API_KEY": "secret-key"}, "run", "--file", big)
	for _, want := range []string{
		"GEMINI_API_KEY is set, so this job would go to the real Gemini API: 300 requests to gemini-2.5-flash",
		"127% of the 237 requests a day gemq may use (the free tier gemq assumes without GEMQ_QUOTAS)",
		"taking at least 33m", "Pass --real-gemini", "unset GEMINI_API_KEY", "at most 9 requests",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if code != exitUsage || strings.Contains(stderr, "secret-key") {
		t.Errorf("exit %d (want %d), or the key printed:\n%s", code, exitUsage, stderr)
	}
	code, _, stderr = gemq(t, map[string]string{"GOOGLE_GENAI_USE_VERTEXAI": "true"}, "run", "--file", big)
	if code != exitUsage || !strings.Contains(stderr, "GOOGLE_GENAI_USE_VERTEXAI=true is set, so this job would go to the real Vertex AI") {
		t.Errorf("Vertex: exit %d\n%s", code, stderr)
	}

	// Small jobs, the flag, or a quota that holds the job pass the guard.
	small, _ := readJobFile(writeFile(t, "small.jsonl", jsonl("a", "b", "c")))
	bigF, _ := readJobFile(big)
	key := map[string]string{"GEMINI_API_KEY": "k"}
	quota := map[string]string{"GEMINI_API_KEY": "k", "GEMQ_QUOTAS": `{"scopes":[{"project":"*","model":"gemini-2.5-flash","dimensions":[
		{"name":"rpm","unit":"requests","limit":1000,"period":"1m"},{"name":"rpd","unit":"requests","limit":10000,"per":"pacific_day"}]}]}`}
	for _, tc := range []struct {
		name  string
		env   map[string]string
		f     *jobFile
		allow bool
	}{
		{"small job", key, small, false},
		{"--real-gemini", key, bigF, true},
		{"quota holds it", quota, bigF, false},
		{"no key", nil, bigF, false},
	} {
		e := env{getenv: func(k string) string { return tc.env[k] }}
		if err := guardRealGemini(e, tc.f, "gemini-2.5-flash", tc.allow); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestRunOutsideTheRepository: the default job is a file of the
// repository; elsewhere gemq run says so instead of a bare open error.
func TestRunOutsideTheRepository(t *testing.T) {
	t.Chdir(t.TempDir())
	code, _, stderr := gemq(t, nil, "run")
	if code != exitInput || !strings.Contains(stderr, "examples/prompts.jsonl not found in") ||
		!strings.Contains(stderr, "run gemq run from the repository's root, or pass --file YOUR-JOB.jsonl") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}

// TestSubmitTheReadmesJSONJob: the JSON job the README shows under
// "Submitting" is accepted by gemq submit as it stands.
func TestSubmitTheReadmesJSONJob(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "**Submitting.** Either JSON")
	_, block, ok2 := strings.Cut(after, "```json\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README: no JSON job under **Submitting.**")
	}
	f, url := newFakeIngest(t)
	code, stdout, stderr := gemq(t, nil, "submit", writeFile(t, "job.json", block), "--url", url)
	if code != exitOK || stdout != "nightly-2024-06-01\n" || f.jobs["nightly-2024-06-01"] == nil {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// TestProgressETAFromReservedSlots: with gemq run's live figures the ETA is
// the last reserved slot (queued tasks follow at the quota's pace), not a
// moving average; failures print as they happen, once each.
func TestProgressETAFromReservedSlots(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start.Add(30 * time.Second)
	var buf bytes.Buffer
	p := newProgress(&buf, false, start)
	c := jobCounts{Total: 300, Succeeded: 100, Waiting: 200}
	lv := &live{LastSlot: now.Add(95 * time.Second), PerMinute: 570}
	p.update(now, c, lv)
	if !strings.Contains(buf.String(), "ETA 1m35s") {
		t.Errorf("ETA not from the last slot:\n%s", buf.String())
	}
	// Queued tasks, not reserved yet, take the quota's time after the last slot.
	if d, ok := eta(now, jobCounts{Total: 300, Succeeded: 100, Waiting: 143, Queued: 57}, 0, lv); !ok || d != 95*time.Second+6*time.Second {
		t.Errorf("eta with queued tasks = %v, %v; want 1m41s", d, ok)
	}
	// Without a slot or a rate there is no ETA; at a low rate it comes from
	// the whole run rather than a window in which nothing finished.
	if _, ok := eta(now, c, 0, &live{}); ok {
		t.Error("an ETA from nothing")
	}
	q := newProgress(&bytes.Buffer{}, false, start)
	q.rate(start, 0)
	q.rate(start.Add(30*time.Second), 3)
	if r := q.rate(start.Add(89*time.Second), 3); r <= 0 {
		t.Errorf("rate %v after a quiet minute, want the run's average", r)
	}
	if got := fmtRate(3.0 / 89); got != "2/min" {
		t.Errorf("fmtRate = %q", got)
	}

	buf.Reset()
	lv = &live{Transient: 2, Throttled: 1, Last: "transient: error sending request", LastSlot: now.Add(time.Minute)}
	p.update(now.Add(6*time.Second), c, lv)
	p.update(now.Add(12*time.Second), c, lv)
	out := buf.String()
	if strings.Count(out, "gemq: transient: error sending request (so far: 429s 1, transient errors 2, dead letters 0)") != 1 {
		t.Errorf("the failure should print once, as it happens:\n%s", out)
	}
	if !strings.Contains(out, "· 429s 1 · transient errors 2") {
		t.Errorf("progress line lacks the failure counts:\n%s", out)
	}
}

// TestUtilisationOverFullWindowsOnly: a burst shorter than a window is not
// a rate; a tail shorter than a window is left out.
func TestUtilisationOverFullWindowsOnly(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var burst []call
	for i := range 100 { // 100 calls in 40 s: "150%" as a mean over the span
		burst = append(burst, call{at: t0.Add(time.Duration(i) * 400 * time.Millisecond), tokens: 10})
	}
	if u := fullWindows(burst, time.Minute); u.windows != 0 || u.span < 0.6 || u.span > 0.7 {
		t.Errorf("burst: %+v, want no full window and a span of 0.66", u)
	}
	var long []call
	for i := range 250 { // 95 a minute for 2 minutes, then 60 in the next 0.6 minute
		at := t0.Add(time.Duration(i) * time.Minute / 95)
		if i >= 190 {
			at = t0.Add(2*time.Minute + time.Duration(i-190)*600*time.Millisecond)
		}
		long = append(long, call{at: at, tokens: 100})
	}
	u := fullWindows(long, time.Minute)
	if u.windows != 2 || u.requests != 95 || u.tokens != 9500 {
		t.Errorf("long: %+v, want 2 windows of 95 requests and 9500 tokens", u)
	}
	if u := fullWindows(nil, time.Minute); u != (utilisation{}) {
		t.Errorf("no calls: %+v", u)
	}
}

// TestBadQuotaConfigStopsTheStack: gemq dev exits 6 naming the quota
// variable, before saying the stack runs (the stand-in ignores the value,
// but a typo should not wait for the day it matters).
func TestBadQuotaConfigStopsTheStack(t *testing.T) {
	bad := writeFile(t, "quotas.json", `{"scopes": [`)
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"GEMQ_QUOTAS": "{"}, "GEMQ_QUOTAS: quota config"},
		{map[string]string{"GEMQ_QUOTAS_FILE": bad}, "GEMQ_QUOTAS_FILE: " + bad + ": quota config: invalid JSON"},
		{map[string]string{"GEMINI_API_KEY": "k", "GEMQ_QUOTAS": "{}", "GEMQ_QUOTAS_FILE": bad}, "set only one of GEMQ_QUOTAS and GEMQ_QUOTAS_FILE"},
	} {
		code, stdout, stderr := gemq(t, tc.env, "dev", "--ingest-addr", "127.0.0.1:0", "--pubsub-addr", "127.0.0.1:0")
		if code != exitStack || !strings.Contains(stderr, tc.want) || strings.Contains(stdout, "running") {
			t.Errorf("%v: exit %d (want %d)\nstdout:\n%s\nstderr:\n%s", tc.env, code, exitStack, stdout, stderr)
		}
	}
}

// TestLogDirRemovedOnSuccess: a temporary log directory goes when the
// command ends well and stays (its log named) when it fails; --dir stays.
func TestLogDirRemovedOnSuccess(t *testing.T) {
	f := &stackFlags{dir: new(string)}
	for _, ok := range []bool{true, false} {
		d, err := f.logDir()
		if err != nil || !d.temp {
			t.Fatalf("logDir = %+v, %v", d, err)
		}
		got := d.done(ok)
		_, statErr := os.Stat(d.path)
		if ok && (statErr == nil || !strings.Contains(got, "removed")) {
			t.Errorf("success: %s still there (%q)", d.path, got)
		}
		if !ok && (statErr != nil || got != filepath.Join(d.path, "gemq.log")) {
			t.Errorf("failure: %s gone or not named (%q)", d.path, got)
		}
		os.RemoveAll(d.path)
	}
	*f.dir = t.TempDir()
	d, _ := f.logDir()
	d.done(true)
	if _, err := os.Stat(*f.dir); err != nil {
		t.Errorf("--dir removed: %v", err)
	}
}

// TestMakeRunKeepsExitCodes: make run runs the built binary, whose exit
// code make reports ("Error N"); `go run` would have turned every code into 1.
func TestMakeRunKeepsExitCodes(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	_, recipe, _ := strings.Cut(string(mk), "\nrun:\n")
	recipe, _, _ = strings.Cut(recipe, "\n\n")
	if strings.Contains(recipe, "go run") || strings.Contains(recipe, "$(GO) run") || !strings.Contains(recipe, "./bin/gemq run $(RUN_ARGS)") {
		t.Errorf("make run's recipe:\n%s", recipe)
	}
}

// gemq status on a job whose state Redis lost says so and what to do, and
// exits 8: a script must not take it for a finished job.
func TestStatusStateLost(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"job_id":"j","model":"m","state":"state_lost","counts":{"total":5,"succeeded":2,"queued":3},"state_lost":"Redis lost this job's state; resubmit the same job"}`)
	}))
	defer srv.Close()
	code, stdout, stderr := gemq(t, nil, "status", "j", "--url", srv.URL)
	if code != exitStateLost || !strings.Contains(stdout, "state_lost") || !strings.Contains(stderr, "resubmit the same job") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want %d, the state, and what to do", code, stdout, stderr, exitStateLost)
	}
}

// gemq cancel posts to /v1/jobs/{id}:cancel and prints the status; a job
// that had finished (409) is exit 4, an unknown one (404) exit 3.
func TestCancel(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.EscapedPath())
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.EscapedPath() {
		case "/v1/jobs/j:cancel":
			fmt.Fprint(w, `{"job_id":"j","model":"m","state":"cancelling","cancelled_at":"2026-12-03T01:00:00Z","counts":{"total":5,"succeeded":2,"queued":3}}`)
		case "/v1/jobs/done:cancel":
			w.WriteHeader(http.StatusConflict)
			fmt.Fprint(w, `{"error":{"code":409,"status":"FAILED_PRECONDITION","message":"job done has finished: nothing to cancel"}}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":{"code":404,"status":"NOT_FOUND","message":"job nope not found"}}`)
		}
	}))
	defer srv.Close()
	code, stdout, stderr := gemq(t, nil, "cancel", "j", "--url", srv.URL)
	if code != exitOK || !strings.Contains(stdout, "cancelling") || !strings.Contains(stdout, "cancelled ") {
		t.Errorf("cancel j: exit %d, stdout %q, stderr %q; want 0 and the cancelling status", code, stdout, stderr)
	}
	if code, _, stderr := gemq(t, nil, "cancel", "done", "--url", srv.URL); code != exitInput || !strings.Contains(stderr, "nothing to cancel") {
		t.Errorf("cancel done: exit %d, stderr %q; want %d and ingest's message", code, stderr, exitInput)
	}
	if code, _, _ := gemq(t, nil, "cancel", "nope", "--url", srv.URL); code != exitHTTP {
		t.Errorf("cancel nope: exit %d, want %d", code, exitHTTP)
	}
	want := []string{"POST /v1/jobs/j:cancel", "POST /v1/jobs/done:cancel", "POST /v1/jobs/nope:cancel"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("requests %v, want %v", got, want)
	}
}
