package job

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/task"
)

const testModel = "gemini-2.5-flash"

func rules() Rules {
	return Rules{Allowed: []string{testModel}, MaxRequests: 10, NewID: func() string { return "fresh" }}
}

// limits is an InputLimits answering limit, or err.
type limits struct {
	limit int64
	err   error
}

func (l limits) InputTokenLimit(context.Context, string) (int64, string, error) {
	return l.limit, "the test limit", l.err
}

func TestBuildRefusesWithKind(t *testing.T) {
	ok := `{"contents":[{"parts":[{"text":"hello"}]}]}`
	huge := fmt.Sprintf(`{"contents":[{"parts":[{"text":%q}]}]}`, strings.Repeat("x", task.MaxPublishBytes))
	for _, tc := range []struct {
		name   string
		rules  func(*Rules)
		body   string
		kind   Kind
		field  string
		reason string
	}{
		{name: "model not allowed", body: `{"model":"gemini-other","requests":[{"key":"a","request":` + ok + `}]}`, kind: Invalid, field: "model", reason: "model"},
		{name: "too many", rules: func(r *Rules) { r.MaxRequests = 1 }, body: `{"model":"` + testModel + `","requests":[{"key":"a","request":` + ok + `},{"key":"b","request":` + ok + `}]}`, kind: Invalid, field: "requests", reason: "too_many_requests"},
		{name: "limit lookup fails", rules: func(r *Rules) { r.Limits = limits{err: errors.New("down")} }, body: `{"model":"` + testModel + `","requests":[{"key":"a","request":` + ok + `}]}`, kind: Unavailable, reason: "model_info"},
		{name: "prompt over the limit", rules: func(r *Rules) { r.Limits = limits{limit: 1} }, body: `{"model":"` + testModel + `","requests":[{"key":"a","request":` + ok + `}]}`, kind: Invalid, field: "requests[0].request.contents", reason: "request"},
		{name: "task too large", body: `{"model":"` + testModel + `","requests":[{"key":"a","request":` + huge + `}]}`, kind: TooLarge, field: "requests[0].request", reason: "task_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rules()
			if tc.rules != nil {
				tc.rules(&r)
			}
			_, err := r.Build(t.Context(), JSON, []byte(tc.body), Params{})
			var je *Error
			if !errors.As(err, &je) {
				t.Fatalf("Build = %v, want *Error", err)
			}
			if je.Kind != tc.kind || je.Field != tc.field || je.Reason != tc.reason {
				t.Errorf("Build = %+v, want kind %d field %q reason %q", je, tc.kind, tc.field, tc.reason)
			}
		})
	}
}

// The content hash is the idempotency key: the same job in either format
// hashes the same, any change to its content does not, and every task
// carries the hash and the job's size.
func TestBuildHash(t *testing.T) {
	r := rules()
	build := func(f Format, body string, p Params) *Job {
		t.Helper()
		j, err := r.Build(t.Context(), f, []byte(body), p)
		if err != nil {
			t.Fatalf("Build(%s): %v", body, err)
		}
		return j
	}
	req := `{"contents":[{"parts":[{"text":"hi"}]}]}`
	a := build(JSON, `{"job_id":"j1","model":"`+testModel+`","requests":[{"key":"a","request":`+req+`},{"key":"b","request":`+req+`}]}`, Params{})
	b := build(JSONL, `{"key":"a","request":`+req+"}\n"+`{"key":"b","request":`+req+"}\n", Params{JobID: "j1", Model: testModel})
	c := build(JSONL, `{"key":"a","request":`+req+"}\n"+`{"key":"c","request":`+req+"}\n", Params{JobID: "j1", Model: testModel})
	if a.Hash != b.Hash {
		t.Errorf("JSON and JSONL of one job hash differently: %s, %s", a.Hash, b.Hash)
	}
	if a.Hash == c.Hash {
		t.Errorf("jobs with different keys hash the same")
	}
	for i, tk := range a.Tasks {
		env, err := task.Decode(tk.Data)
		if err != nil {
			t.Fatalf("task %d: %v", i, err)
		}
		if env.JobHash != a.Hash || env.JobTotal != 2 || env.TaskID != tk.ID || tk.ID != task.TaskID("j1", env.Key) {
			t.Errorf("task %d = %+v (id %s), want job hash %s, total 2", i, env, tk.ID, a.Hash)
		}
	}
	if j := build(JSON, `{"model":"`+testModel+`","requests":[{"key":"a","request":`+req+`}]}`, Params{}); j.ID != "fresh" {
		t.Errorf("job without id got %q, want NewID's", j.ID)
	}
}

// BenchmarkBuildJSONL builds a 10,000-request JSONL job shaped like the one
// make bench's overhead run submits: ingest's CPU per job, without HTTP,
// Redis or Pub/Sub.
func BenchmarkBuildJSONL(b *testing.B) {
	const n = 10_000
	var body strings.Builder
	for i := range n {
		fmt.Fprintf(&body, `{"key":"k%06d","request":{"contents":[{"role":"user","parts":[{"text":"Task %d: %s"}]}],"generationConfig":{"maxOutputTokens":16}}}`+"\n",
			i, i, strings.Repeat("alpha beta gamma delta ", 8))
	}
	r := Rules{Allowed: []string{testModel}, MaxRequests: n}
	data := []byte(body.String())
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := r.Build(context.Background(), JSONL, data, Params{JobID: "bench", Model: testModel}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tasks/s")
}

// Each task's fingerprint is the one the worker computes from its
// envelope (whatever the request's spacing and HTML characters), and Stamp
// adds the creation time within the room Build kept: an envelope that
// fits only without that room is refused as too large.
func TestBuildFingerprintsAndStamp(t *testing.T) {
	r := rules()
	body := `{"job_id":"j1","model":"` + testModel + `","requests":[` +
		`{"key":"a","request":{ "contents" : [{"parts":[{"text":"<a & b>\u2028"}]}] }},` +
		`{"key":"b","request":{"contents":[{"parts":[{"text":"plain"}]}]}}]}`
	j, err := r.Build(t.Context(), JSON, []byte(body), Params{})
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 12, 3, 4, 30, 0, 250e6, time.UTC)
	j.Stamp(created)
	fps := j.Fingerprints()
	for i, tk := range j.Tasks {
		env, err := task.Decode(tk.Data)
		if err != nil {
			t.Fatalf("task %d after Stamp: %v", i, err)
		}
		if fp := task.RequestFingerprint(env.Model, env.Request); tk.Fingerprint != fp || fps[i] != fp {
			t.Errorf("task %d fingerprint %q (Fingerprints %q), the worker's %q", i, tk.Fingerprint, fps[i], fp)
		}
		if !env.JobCreatedTime().Equal(created) || env.JobHash != j.Hash {
			t.Errorf("task %d job_created %q, hash %q; want %v, %s", i, env.JobCreated, env.JobHash, created, j.Hash)
		}
	}
	if fps[0] == fps[1] {
		t.Error("two different requests have one fingerprint")
	}

	// A request whose envelope with the job's hash fits exactly, with no
	// room left for the creation time.
	fit := func(n int) string {
		return `{"job_id":"j2","model":"` + testModel + `","requests":[{"key":"a","request":{"contents":[{"parts":[{"text":"` +
			strings.Repeat("x", n) + `"}]}]}}]}`
	}
	probe, err := r.Build(t.Context(), JSON, []byte(fit(1000)), Params{})
	if err != nil {
		t.Fatal(err)
	}
	n := 1000 + task.MaxPublishBytes - len(probe.Tasks[0].Data)
	var je *Error
	if _, err := r.Build(t.Context(), JSON, []byte(fit(n)), Params{}); !errors.As(err, &je) || je.Kind != TooLarge {
		t.Errorf("Build of an envelope without room for job_created = %v, want TooLarge", err)
	}
	ok, err := r.Build(t.Context(), JSON, []byte(fit(n-task.JobCreatedBytes)), Params{})
	if err != nil {
		t.Fatalf("Build of an envelope with just the room: %v", err)
	}
	ok.Stamp(created)
	if err := task.CheckPublishSize(ok.Tasks[0].Data); err != nil {
		t.Errorf("stamped envelope: %v", err)
	}
}

// A job's requests are validated on every core, and the error reported is
// still the first in order: a request error before a key error, and of two
// request errors in different parts of the job, the earlier.
func TestBuildReportsTheFirstErrorInOrder(t *testing.T) {
	const n = 4096
	r := Rules{Allowed: []string{testModel}, MaxRequests: n}
	line := func(i int, key, text string) string {
		return fmt.Sprintf(`{"key":%q,"request":{"contents":[{"role":%q,"parts":[{"text":"t%d"}]}]}}`, key, text, i)
	}
	body := func(bad map[int]string) []byte {
		var b strings.Builder
		for i := range n {
			key, role := fmt.Sprintf("k%d", i), "user"
			switch bad[i] {
			case "role":
				role = "robot"
			case "dup":
				key = "k0"
			}
			b.WriteString(line(i, key, role) + "\n")
		}
		return []byte(b.String())
	}
	for _, tc := range []struct {
		name string
		bad  map[int]string
		line int
	}{
		{"request errors in both halves", map[int]string{3000: "role", 1500: "role"}, 1501},
		{"request error before a key error", map[int]string{2100: "dup", 2050: "role"}, 2051},
		{"key error before a request error", map[int]string{2050: "dup", 2100: "role"}, 2051},
		{"the last request", map[int]string{n - 1: "role"}, n},
	} {
		_, err := r.Build(t.Context(), JSONL, body(tc.bad), Params{JobID: "order", Model: testModel})
		var je *Error
		if !errors.As(err, &je) || je.Line != tc.line {
			t.Errorf("%s: %v, want the error on line %d", tc.name, err, tc.line)
		}
	}
	j, err := r.Build(t.Context(), JSONL, body(nil), Params{JobID: "order", Model: testModel})
	if err != nil {
		t.Fatal(err)
	}
	for i, tk := range j.Tasks {
		env, err := task.Decode(tk.Data)
		if err != nil || env.Key != fmt.Sprintf("k%d", i) || tk.ID != env.TaskID || tk.Fingerprint != task.RequestFingerprint(env.Model, env.Request) {
			t.Fatalf("task %d: key %q id %s fingerprint %s, %v", i, env.Key, tk.ID, tk.Fingerprint, err)
		}
	}
}
