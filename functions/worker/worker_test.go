package worker

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/infra/tasksemu"
	"github.com/gemq-dev/gemq/internal/config"
	"github.com/gemq-dev/gemq/internal/lifecycle"
	"github.com/gemq-dev/gemq/internal/logging"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/redistest"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

const (
	testProject = "test-project"
	testQueue   = "projects/test-project/locations/us-central1/queues/gemq-tasks"
	apiKey      = "test-key"
	model       = "gemini-2.5-flash"
	quotaJSON   = `{"scopes":[{"project":"*","model":"gemini-2.5-flash","dimensions":[{"name":"rpm","unit":"requests","limit":100000,"period":"1m"}]}]}`
)

func workerEnv(kv ...string) func(string) string {
	m := map[string]string{
		"REDIS_ADDR":           "127.0.0.1:1",
		"GOOGLE_CLOUD_PROJECT": testProject,
		"GEMQ_QUOTAS":          quotaJSON,
		"GEMQ_TASKS_QUEUE":     testQueue,
		"GEMQ_WORKER_URL":      "http://127.0.0.1:1/",
		"GEMINI_API_KEY":       apiKey,
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// env is the worker's real services: redis-server, pstest (with the
// results and dead-letter topics), the Cloud Tasks emulator and the Gemini
// stand-in, as the entry point's environment.
type env struct {
	redis *redistest.Server
	ps    *pstest.Server
	vars  map[string]string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{redis: redistest.Start(t), ps: pstest.NewServer()}
	t.Cleanup(func() { e.ps.Close() })
	psc, err := pubsub.NewClient(ctx, testProject, option.WithEndpoint(e.ps.Addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { psc.Close() })
	for _, topic := range []string{config.DefaultResultsTopic, config.DefaultDeadLetters} {
		if err := queue.EnsureTopic(ctx, psc, topic); err != nil {
			t.Fatal(err)
		}
	}
	tasks := tasksemu.New(tasksemu.Options{Logger: logging.Discard()})
	addr, err := tasks.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tasks.Stop)
	ct, err := queue.NewCloudTasksClient(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ct.Close() })
	if err := queue.EnsureQueue(ctx, ct, testQueue, queue.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	sim := geminisim.New(geminisim.Options{APIKey: apiKey, Models: []geminisim.Model{{ID: model}}})
	url, err := sim.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	e.vars = map[string]string{
		"REDIS_ADDR":               e.redis.Addr,
		"GOOGLE_CLOUD_PROJECT":     testProject,
		"PUBSUB_EMULATOR_HOST":     e.ps.Addr,
		"GEMQ_TASKS_QUEUE":         testQueue,
		"GEMQ_WORKER_URL":          "http://127.0.0.1:9/worker",
		"GEMQ_CLOUDTASKS_ENDPOINT": addr,
		"GEMQ_QUOTAS":              quotaJSON,
		"GEMINI_API_KEY":           apiKey,
		"GOOGLE_GEMINI_BASE_URL":   url,
		"GEMQ_LOG_LEVEL":           "error",
	}
	return e
}

// onTopic returns the messages published to a topic.
func (e *env) onTopic(topic string) []*pstest.Message {
	var out []*pstest.Message
	for _, m := range e.ps.Messages() {
		if m.Topic == "projects/"+testProject+"/topics/"+topic {
			out = append(out, m)
		}
	}
	return out
}

func envelope(t *testing.T, jobID, key string) []byte {
	t.Helper()
	b, err := task.Encode(task.Envelope{V: task.Version, JobID: jobID, Key: key, Model: model,
		Request: json.RawMessage(`{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pushBody(data []byte, id string, attempt int) []byte {
	b, _ := json.Marshal(map[string]any{
		"message":         map[string]any{"data": base64.StdEncoding.EncodeToString(data), "messageId": id},
		"subscription":    "projects/test-project/subscriptions/gemq-tasks-push",
		"deliveryAttempt": attempt,
	})
	return b
}

// post sends body to the handler and returns the status and outcome.
func post(h http.Handler, body []byte, header map[string]string) (int, string) {
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out struct{ Outcome string }
	json.Unmarshal(rec.Body.Bytes(), &out)
	return rec.Code, out.Outcome
}

func TestNotPost(t *testing.T) {
	h := &handler{log: logging.Discard()}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusMethodNotAllowed || !strings.Contains(rec.Body.String(), outcomeMethodError) {
		t.Fatalf("GET answered %d %s", rec.Code, rec.Body)
	}
}

// decode turns a push body or a Cloud Tasks callback into a delivery: its
// identity and attempt, the message data, and why it is invalid if it is.
func TestDecode(t *testing.T) {
	data := envelope(t, "job-d", "k")
	tests := []struct {
		name    string
		body    []byte
		header  map[string]string
		want    lifecycle.Delivery
		invalid string
	}{
		{"push", pushBody(data, "m7", 3), nil,
			lifecycle.Delivery{Source: lifecycle.PubSub, ID: "m7", Attempt: 3, Data: data}, ""},
		{"callback", data, map[string]string{headerTaskName: "t-1", headerTaskRetry: "2", headerTaskETA: "1800000000.250000"},
			lifecycle.Delivery{Source: lifecycle.CloudTasks, ID: "t-1", Attempt: 2, Data: data, ScheduledAt: time.UnixMilli(1_800_000_000_250)}, ""},
		{"not JSON", []byte("{not json"), nil,
			lifecycle.Delivery{Source: lifecycle.PubSub, Data: []byte("{not json")}, "push envelope"},
		{"no message", []byte(`{"subscription":"s"}`), nil,
			lifecycle.Delivery{Source: lifecycle.PubSub, Data: []byte(`{"subscription":"s"}`)}, "no message"},
		{"not an envelope", pushBody([]byte("hello"), "m8", 1), nil,
			lifecycle.Delivery{Source: lifecycle.PubSub, ID: "m8", Attempt: 1, Data: []byte("hello")}, "malformed JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(tt.body))
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			d, err := decode(req)
			if err != nil {
				t.Fatal(err)
			}
			if !d.ScheduledAt.Equal(tt.want.ScheduledAt) {
				t.Errorf("scheduled at %v, want %v", d.ScheduledAt, tt.want.ScheduledAt)
			}
			if d.Source != tt.want.Source || d.ID != tt.want.ID || d.Attempt != tt.want.Attempt || !bytes.Equal(d.Data, tt.want.Data) {
				t.Errorf("delivery = %s %q attempt %d data %q; want %s %q attempt %d data %q",
					d.Source, d.ID, d.Attempt, d.Data, tt.want.Source, tt.want.ID, tt.want.Attempt, tt.want.Data)
			}
			if tt.invalid == "" && (d.Invalid != nil || d.Envelope.Key != "k") {
				t.Errorf("invalid = %v, envelope key %q; want a valid envelope", d.Invalid, d.Envelope.Key)
			}
			if tt.invalid != "" && (d.Invalid == nil || !strings.Contains(d.Invalid.Error(), tt.invalid)) {
				t.Errorf("invalid = %v, want an error containing %q", d.Invalid, tt.invalid)
			}
		})
	}
}

// Messages the worker cannot process are dead-lettered as copies with their
// reason, never only logged: garbage, and a message over the size limit.
func TestUnprocessableMessagesAreDeadLettered(t *testing.T) {
	e := newEnv(t)
	for k, v := range e.vars {
		t.Setenv(k, v)
	}
	t.Cleanup(built.Reset)
	h := http.HandlerFunc(handle)
	big := bytes.Repeat([]byte("x"), task.MaxEnvelopeBytes+10)
	cases := []struct {
		body []byte
		kind string
	}{
		{[]byte("{not json"), "undecodable"},
		{pushBody([]byte(`{"v":1}`), "m1", 1), "undecodable"},
		{pushBody(big, "m2", 1), "oversized"},
	}
	for _, c := range cases {
		if code, out := post(h, c.body, nil); code != http.StatusOK || out != lifecycle.OutPoison {
			t.Errorf("answer %d %q, want 200 %q", code, out, lifecycle.OutPoison)
		}
	}
	dead := e.onTopic(config.DefaultDeadLetters)
	if len(dead) != len(cases) {
		t.Fatalf("dead-lettered %d copies, want %d", len(dead), len(cases))
	}
	for i, m := range dead {
		if m.Attributes[lifecycle.AttrDeadLetterKind] != cases[i].kind || m.Attributes[lifecycle.AttrDeadLetterReason] == "" {
			t.Errorf("copy %d attributes = %v, want kind %s with a reason", i, m.Attributes, cases[i].kind)
		}
	}
	if !bytes.Equal(dead[2].Data, big) {
		t.Errorf("the oversized copy has %d bytes, want the message's %d", len(dead[2].Data), len(big))
	}
}

// The registered entry point builds its clients from the environment on
// first use (never at init), once, even under concurrent first requests.
func TestEntryPointBuildsLazilyFromTheEnvironment(t *testing.T) {
	e := newEnv(t)
	if built.Built() {
		t.Fatal("a handler was built before the first request (at init?)")
	}
	t.Cleanup(built.Reset)
	for k, v := range e.vars {
		t.Setenv(k, v)
	}
	var wg sync.WaitGroup
	codes := make([]int, 4)
	for i := range codes {
		wg.Go(func() {
			codes[i], _ = post(http.HandlerFunc(handle), pushBody(envelope(t, "job-entry", fmt.Sprintf("k%d", i)), fmt.Sprint(i), 1), nil)
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("request %d answered %d", i, c)
		}
	}
	st := store.New(e.redis.Client(t), store.Options{})
	j, err := st.GetJob(context.Background(), "job-entry")
	if err != nil || j.Counts.Succeeded != 4 {
		t.Errorf("job = %+v, %v; want 4 succeeded", j, err)
	}
	if n := len(e.onTopic(config.DefaultResultsTopic)); n != 4 {
		t.Errorf("published = %d, want 4", n)
	}
}

func TestEntryPointMisconfiguredAnswersNon2xx(t *testing.T) {
	t.Cleanup(built.Reset)
	t.Setenv("REDIS_ADDR", "")
	t.Setenv("GOOGLE_CLOUD_PROJECT", "")
	rec := httptest.NewRecorder()
	handle(rec, httptest.NewRequest(http.MethodPost, "/", strings.NewReader("{}")))
	if rec.Code < 500 {
		t.Fatalf("answered %d, want 5xx so nothing is lost", rec.Code)
	}
	if built.Built() {
		t.Fatal("a failed build was cached")
	}
}
