package ingest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/gemq-dev/gemq/infra/storagesub"
	"github.com/gemq-dev/gemq/internal/archive"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

var testLayout = archive.Layout{Prefix: "results/", DatetimeFormat: "YYYY-MM-DD/hh_mm_ssZ", MaxDuration: time.Minute}

const grace = 200 * time.Millisecond

// archiveEnv is newEnv with answers leaving Redis grace after publishing
// (as the worker's store does with GEMQ_RESULTS_BUCKET) and ingest reading
// them back from a Cloud Storage stand-in through the real client.
type archiveEnv struct {
	*env
	st     *store.Store // with BodyGrace
	bucket archiveBucket
}

type archiveBucket struct {
	t    *testing.T
	st   *storagesub.Storage
	name string
	n    int
}

func newArchiveEnv(t *testing.T) *archiveEnv {
	t.Helper()
	stor, client := storagesub.ForTest(t, "results-bucket")
	var st *store.Store
	e := newEnv(t, func(d *deps) {
		rdb := d.marks.(redisMarks).rdb.(*redis.Client)
		st = store.New(rdb, store.Options{TTL: time.Hour, BodyGrace: grace})
		d.store, d.restore = st, st
		d.archive = archive.New(client.Bucket("results-bucket"), testLayout)
	})
	return &archiveEnv{env: e, st: st, bucket: archiveBucket{t: t, st: stor, name: "results-bucket"}}
}

// put writes lines into an object named as the Cloud Storage subscription
// names them, for a batch started now.
func (b *archiveBucket) put(lines ...string) {
	b.t.Helper()
	c, err := b.st.Client(b.t.Context())
	if err != nil {
		b.t.Fatal(err)
	}
	defer c.Close()
	b.n++
	name := fmt.Sprintf("results/%s_%08d-0000-4000-8000-000000000000.jsonl", archive.FormatDatetime(testLayout.DatetimeFormat, time.Now()), b.n)
	w := c.Bucket(b.name).Object(name).NewWriter(b.t.Context())
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	if err := w.Close(); err != nil {
		b.t.Fatal(err)
	}
}

// publish marks tasks published (the worker's step after publishing to the
// results topic) and returns their topic lines.
func (e *archiveEnv) publish(jobID string, keys ...string) []string {
	e.t.Helper()
	var out []string
	for _, k := range keys {
		ref := store.Ref{JobID: jobID, TaskID: task.TaskID(jobID, k), Key: k, Model: model}
		rec, err := e.st.Result(e.t.Context(), jobID, k)
		if err != nil || rec.Archived {
			e.t.Fatalf("Result(%s) = %+v, %v", k, rec, err)
		}
		if err := e.st.MarkPublished(e.t.Context(), ref); err != nil {
			e.t.Fatal(err)
		}
		l := rec.Line()
		l.JobID = jobID
		b, _ := json.Marshal(l) // as the worker publishes it
		out = append(out, string(b))
	}
	return out
}

// waitCompacted waits until the grace has passed for every published task.
func (e *archiveEnv) waitCompacted(jobID string, keys ...string) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, k := range keys {
		for {
			rec, err := e.st.Result(e.t.Context(), jobID, k)
			if err != nil {
				e.t.Fatal(err)
			}
			if rec.Archived {
				break
			}
			if time.Now().After(deadline) {
				e.t.Fatalf("task %s not compacted after its grace", k)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// getResults returns the result lines (sorted) and the completeness trailer.
func (e *archiveEnv) getResults(jobID string) ([]string, string) {
	e.t.Helper()
	ts := httptest.NewServer(e.srv)
	defer ts.Close()
	resp, err := http.Get(ts.URL + "/v1/jobs/" + jobID + "/results")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET results = %d", resp.StatusCode)
	}
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	sort.Strings(out)
	return out, resp.Trailer.Get("X-Gemq-Results-Complete")
}

// Results whose answers left Redis come back from the archive, each once,
// in the Batch API format; one the archive does not hold yet makes the
// stream say it is incomplete, and that request a 503, never a silent gap.
func TestResultsFromTheArchiveAfterCompaction(t *testing.T) {
	e := newArchiveEnv(t)
	decodeAccepted(t, e.postJSON(jobJSON(`"job_id": "arch-1", `+m, "a", req("1"), "b/2", req("2"), "c", req("3"), "d", req("4"), "e", req("5"))))
	resp := `{"candidates":[{"content":{"role":"model","parts":[{"text":"hi"}]}}]}`
	errJSON := `{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}`
	seed(t, e.st, "arch-1", map[string]string{"a": resp, "b/2": resp, "e": resp}, map[string]string{"c": errJSON})
	want := []string{
		`{"key":"a","response":` + resp + `}`,
		`{"key":"b/2","response":` + resp + `}`,
		`{"key":"c","error":` + errJSON + `}`,
		`{"key":"e","response":` + resp + `}`,
	}
	before, complete := e.getResults("arch-1")
	if diff := cmp.Diff(want, before); diff != "" || complete != "true" {
		t.Fatalf("results from Redis (-want +got):\n%s\ncomplete %q", diff, complete)
	}

	topic := e.publish("arch-1", "a", "b/2", "c")
	// As the subscription writes them: at least once (a twice), among
	// other jobs' results.
	e.bucket.put(topic[0], `{"job_id":"arch-10","key":"a","response":{}}`, topic[1])
	e.bucket.put(topic[2], topic[0])
	e.waitCompacted("arch-1", "a", "b/2", "c")
	if n, err := e.rdb.Exists(t.Context(), "gemq:job:{arch-1}:task:"+task.TaskID("arch-1", "a")).Result(); err != nil || n != 0 {
		t.Fatalf("task a's record still in Redis after the grace (%d, %v)", n, err)
	}

	got, complete := e.getResults("arch-1")
	if diff := cmp.Diff(want, got); diff != "" || complete != "true" {
		t.Errorf("results after compaction (-want +got):\n%s\ncomplete %q", diff, complete)
	}
	w := e.do(http.MethodGet, "/v1/jobs/arch-1/requests/b%2F2", nil)
	if got := strings.TrimSpace(w.Body.String()); w.Code != http.StatusOK || got != `{"key":"b/2","state":"succeeded","response":`+resp+`}` {
		t.Errorf("GET compacted request = %d %s", w.Code, got)
	}
	w = e.do(http.MethodGet, "/v1/jobs/arch-1/requests/c", nil)
	if got := strings.TrimSpace(w.Body.String()); got != `{"key":"c","state":"failed","error":`+errJSON+`}` {
		t.Errorf("GET compacted failed request = %s", got)
	}

	// e is published and compacted but its file is not written yet.
	e.publish("arch-1", "e")
	e.waitCompacted("arch-1", "e")
	got, complete = e.getResults("arch-1")
	if diff := cmp.Diff(want[:3], got); diff != "" || complete != "false" {
		t.Errorf("results with one answer missing from the archive (-want +got):\n%s\ncomplete %q, want false", diff, complete)
	}
	if w := e.do(http.MethodGet, "/v1/jobs/arch-1/requests/e", nil); w.Code != http.StatusServiceUnavailable {
		t.Errorf("GET a request the archive does not hold yet = %d %s, want 503", w.Code, w.Body)
	}
}

// Without an archive (GEMQ_RESULTS_BUCKET unset) answers stay in Redis, so
// nothing changes; if a record expired anyway the stream says incomplete.
func TestResultsWithoutArchiveSayIncomplete(t *testing.T) {
	e := newEnv(t)
	decodeAccepted(t, e.postJSON(jobJSON(`"job_id": "noarch", `+m, "a", req("1"), "b", req("2"))))
	seed(t, e.st, "noarch", map[string]string{"a": `{}`, "b": `{}`}, nil)
	if err := e.rdb.Del(t.Context(), "gemq:job:{noarch}:task:"+task.TaskID("noarch", "a")).Err(); err != nil {
		t.Fatal(err)
	}
	ae := &archiveEnv{env: e}
	got, complete := ae.getResults("noarch")
	if len(got) != 1 || complete != "false" {
		t.Errorf("results = %v, complete %q; want b only, incomplete", got, complete)
	}
}

// After Redis lost a job, its status counts the results the archive holds
// (each task once, with those finished since), so it equals the truth once
// the files are written; the explanation says what is counted.
func TestStatusAfterStateLossCountsTheArchive(t *testing.T) {
	e := newArchiveEnv(t)
	decodeAccepted(t, e.postJSON(jobJSON(`"job_id": "lost-1", `+m, "a", req("1"), "b", req("2"), "c", req("3"))))
	seed(t, e.st, "lost-1", map[string]string{"a": `{"candidates":[]}`}, map[string]string{"b": `{"code":400,"message":"bad"}`})
	e.bucket.put(e.publish("lost-1", "a", "b")...)
	j, err := e.st.GetJob(t.Context(), "lost-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	// A delivery of c after the loss re-creates the job's record, lost.
	c := store.Ref{JobID: "lost-1", TaskID: task.TaskID("lost-1", "c"), Key: "c", Model: model, JobHash: j.ContentHash, JobTotal: 3}
	lr, err := e.st.LeaseTask(t.Context(), c, store.LeaseRequest{Holder: "w", TTL: time.Minute})
	if err != nil || lr.Outcome != store.Applied {
		t.Fatalf("lease after the loss = %+v, %v", lr, err)
	}
	// Resubmitting: refused while the archive may lack results from just
	// before the loss; then accepted, every task published again, and the
	// worker would find a and b finished (never run twice).
	e.srv.archiveLag = time.Hour
	body := jobJSON(`"job_id": "lost-1", `+m, "a", req("1"), "b", req("2"), "c", req("3"))
	if w := e.postJSON(body); w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Errorf("resubmission right after the loss = %d %s, want 503 with Retry-After", w.Code, w.Body)
	}
	e.srv.archiveLag = 0
	before := len(e.ps.Messages())
	decodeAccepted(t, e.postJSON(body))
	if n := len(e.ps.Messages()) - before; n != 3 {
		t.Errorf("resubmission published %d messages, want the 3 tasks again", n)
	}
	for _, k := range []string{"a", "b"} {
		ref := store.Ref{JobID: "lost-1", TaskID: task.TaskID("lost-1", k), Key: k, Model: model, JobHash: j.ContentHash, JobTotal: 3}
		if lr, err := e.st.LeaseTask(t.Context(), ref, store.LeaseRequest{Holder: "again", TTL: time.Minute}); err != nil || lr.Outcome != store.AlreadyDone || !lr.Published {
			t.Errorf("task %s after the resubmission: %+v, %v; want already done and published", k, lr, err)
		}
	}
	var v jobView
	get := func() {
		t.Helper()
		w := e.do(http.MethodGet, "/v1/jobs/lost-1", nil)
		if w.Code != http.StatusOK {
			t.Fatalf("GET job = %d %s", w.Code, w.Body)
		}
		v = jobView{}
		if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
	}
	get()
	if want := (store.Counts{Total: 3, Running: 1, Succeeded: 1, Failed: 1}); v.State != "state_lost" || v.Counts != want ||
		!strings.Contains(v.StateLost, "2 task(s) whose results were published before the loss") {
		t.Errorf("status after the loss = %+v, want state_lost with %+v and an explanation", v, want)
	}
	if _, err := e.st.Complete(t.Context(), c, lr.Token, []byte(`{"candidates":[]}`)); err != nil {
		t.Fatal(err)
	}
	get()
	if want := (store.Counts{Total: 3, Succeeded: 2, Failed: 1}); v.State != "done" || v.Counts != want || v.StateLostAt == nil {
		t.Errorf("status once every task has a result = %+v, want done with %+v, state_lost_at kept", v, want)
	}
	got, complete := e.getResults("lost-1")
	if len(got) != 3 || complete != "true" {
		t.Errorf("results after the loss = %v (complete %q), want all three", got, complete)
	}
}
