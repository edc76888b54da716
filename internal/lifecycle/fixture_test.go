package lifecycle

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	cloudtasks "cloud.google.com/go/cloudtasks/apiv2"
	"cloud.google.com/go/cloudtasks/apiv2/cloudtaskspb"
	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/redis/go-redis/v9"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/infra/tasksemu"
	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/logging"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/redistest"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

const (
	testProject = "test-project"
	testQueue   = "projects/test-project/locations/us-central1/queues/gemq-tasks"
	testTopic   = "gemq-results"
	// testDeadLetters is the dead-letter topic.
	testDeadLetters = "gemq-dead-letter"
	apiKey          = "test-key"

	// Models of the test quota configuration and the Gemini stand-in.
	modelOpen   = "gemini-2.5-flash" // unlimited on both sides
	modelTight  = "m-tight"          // limiter: 1 request per 2 s (reservations)
	modelDaily  = "m-daily"          // limiter: 1 request per Pacific day (denials)
	modelSmall  = "m-small"          // limiter: 50 input tokens per minute (rejections)
	modelSimRPM = "m-sim-rpm"        // stand-in: 1 request per minute (429 per minute)
	modelSimRPD = "m-sim-rpd"        // stand-in: 1 request per day (429 per day)
	modelZero   = "m-zero"           // stand-in: no quota (429 limit: 0)
	modelGone   = "m-gone"           // in the quota config, unknown to the stand-in (404)
)

// quotaJSON's guard of 400 ms makes the claim window ±100 ms, so tests
// that sleep until a reserved slot claim it even on a loaded 2-core machine
// under -race.
const quotaJSON = `{
  "safety": 1,
  "horizon": "15m",
  "guard": "400ms",
  "scopes": [
    {"project": "*", "model": "gemini-2.5-flash", "dimensions": [
      {"name": "rpm", "unit": "requests", "limit": 100000, "period": "1m"}]},
    {"project": "*", "model": "m-tight", "dimensions": [
      {"name": "rp2s", "unit": "requests", "limit": 1, "period": "2s"}]},
    {"project": "*", "model": "m-daily", "dimensions": [
      {"name": "rpd", "unit": "requests", "limit": 1, "per": "pacific_day"}]},
    {"project": "*", "model": "m-small", "dimensions": [
      {"name": "tpm", "unit": "input_tokens", "limit": 50, "period": "1m"}]},
    {"project": "*", "model": "m-sim-rpm", "dimensions": [
      {"name": "rpm", "unit": "requests", "limit": 100000, "period": "1m"}]},
    {"project": "*", "model": "m-sim-rpd", "dimensions": [
      {"name": "rpm", "unit": "requests", "limit": 100000, "period": "1m"}]},
    {"project": "*", "model": "m-zero", "dimensions": [
      {"name": "rpm", "unit": "requests", "limit": 100000, "period": "1m"}]},
    {"project": "*", "model": "m-gone", "dimensions": [
      {"name": "rpm", "unit": "requests", "limit": 100000, "period": "1m"}]}
  ]
}`

// fixture is one worker wired to real services: redis-server, pstest through
// the Pub/Sub client, the Cloud Tasks emulator through the Cloud Tasks client
// (its queue paused, so scheduled tasks stay put for inspection), and the
// Gemini stand-in through the genai client.
type fixture struct {
	t     *testing.T
	redis *redistest.Server
	rdb   *redis.Client
	store *store.Store
	lim   *limiter.Limiter
	ps    *pstest.Server
	pub   *queue.Publisher
	// deadPub publishes to testDeadLetters.
	deadPub *queue.Publisher
	tasks   *tasksemu.Server
	ct      *cloudtasks.Client
	// ctEndpoint is the Cloud Tasks emulator's host:port.
	ctEndpoint string
	sim        *geminisim.Server
	gem        *gemini.Client
	m          *Machine
	limCfg     limiter.Config
	logMu      sync.Mutex
	logBuf     bytes.Buffer
}

// fixtureOptions tweak a fixture.
type fixtureOptions struct {
	sim       geminisim.Options // Models and APIKey are filled in
	opts      Options           // machine options; Project is filled in
	psOptions []pstest.ServerReactorOption
}

func newFixture(t *testing.T, fo fixtureOptions) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{t: t}

	f.redis = redistest.Start(t)
	f.rdb = f.redis.Client(t)
	f.store = store.New(f.rdb, store.Options{})
	cfg, err := limiter.ParseConfig([]byte(quotaJSON))
	if err != nil {
		t.Fatal(err)
	}
	f.limCfg = cfg
	f.lim = limiter.New(f.rdb, cfg)

	f.ps = pstest.NewServer(fo.psOptions...)
	t.Cleanup(func() { f.ps.Close() })
	psc, err := pubsub.NewClient(ctx, testProject, option.WithEndpoint(f.ps.Addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { psc.Close() })
	if err := queue.EnsureTopic(ctx, psc, testTopic); err != nil {
		t.Fatal(err)
	}
	f.pub = queue.NewPublisher(psc, testTopic, queue.OneDelay)
	t.Cleanup(f.pub.Stop)
	if err := queue.EnsureTopic(ctx, psc, testDeadLetters); err != nil {
		t.Fatal(err)
	}
	f.deadPub = queue.NewPublisher(psc, testDeadLetters, queue.OneDelay)
	t.Cleanup(f.deadPub.Stop)

	f.tasks = tasksemu.New(tasksemu.Options{Logger: logging.Discard()})
	addr, err := f.tasks.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.tasks.Stop)
	f.ctEndpoint = addr
	f.ct, err = queue.NewCloudTasksClient(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.ct.Close() })
	if err := queue.EnsureQueue(ctx, f.ct, testQueue, queue.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ct.PauseQueue(ctx, &cloudtaskspb.PauseQueueRequest{Name: testQueue}); err != nil {
		t.Fatal(err)
	}

	so := fo.sim
	so.APIKey = apiKey
	so.Models = []geminisim.Model{
		{ID: modelOpen}, {ID: modelTight}, {ID: modelDaily}, {ID: modelSmall},
		{ID: modelSimRPM, Limits: geminisim.Limits{RPM: 1}},
		{ID: modelSimRPD, Limits: geminisim.Limits{RPD: 1}},
		{ID: modelZero, NoQuota: true},
	}
	f.sim = geminisim.New(so)
	url, err := f.sim.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.sim.Close() })
	opts := fo.opts
	if opts.GeminiTimeout == 0 {
		opts.GeminiTimeout = 5 * time.Second
	}
	f.gem, err = gemini.NewClient(ctx, gemini.Config{APIKey: apiKey, BaseURL: url, Timeout: opts.GeminiTimeout})
	if err != nil {
		t.Fatal(err)
	}

	opts.Project = testProject
	if opts.ClaimLead == 0 {
		// Short, so that a modelTight reservation (about 2s ahead) is
		// deferred to a Cloud Task, as most tests expect, rather than
		// waited for in the handler.
		opts.ClaimLead = 300 * time.Millisecond
	}
	if opts.CallTimeout == 0 {
		opts.CallTimeout = 3 * time.Second
	}
	f.m = New(Deps{
		Store: f.store, Permits: f.lim, Gemini: f.gem,
		Scheduler: queue.NewScheduler(f.ct, testQueue, "http://127.0.0.1:9/worker", ""),
		Results:   f.pub, DeadLetters: f.deadPub,
	}, opts, logging.New(testWriter{t, &f.logMu, &f.logBuf}, slog.LevelDebug))
	return f
}

// testWriter sends log lines to t.Log and keeps them.
type testWriter struct {
	t   *testing.T
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.mu.Lock()
	w.buf.Write(p)
	w.mu.Unlock()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// logs returns every log line written so far.
func (f *fixture) logs() string {
	f.logMu.Lock()
	defer f.logMu.Unlock()
	return f.logBuf.String()
}

// envelope returns a task envelope for a one-prompt request.
func envelope(jobID, key, model, prompt string) task.Envelope {
	req := fmt.Sprintf(`{"contents":[{"role":"user","parts":[{"text":%q}]}]}`, prompt)
	e := task.Envelope{V: task.Version, JobID: jobID, Key: key, Model: model, Request: json.RawMessage(req)}
	e.Normalize()
	return e
}

// pushBody is a Pub/Sub push delivery of data: message id "m1", no
// deliveryAttempt (a subscription without a dead-letter policy).
func pushBody(data []byte) []byte { return pushBodyWith(data, "m1", 0) }

// pushBodyAttempt is pushBody with a deliveryAttempt.
func pushBodyAttempt(data []byte, attempt int) []byte { return pushBodyWith(data, "m1", attempt) }

// pushBodyWith is a Pub/Sub push delivery of data as message id, attempt.
func pushBodyWith(data []byte, id string, attempt int) []byte {
	b, _ := json.Marshal(map[string]any{
		"message": map[string]any{
			"data":        base64.StdEncoding.EncodeToString(data),
			"attributes":  map[string]string{},
			"messageId":   id,
			"publishTime": time.Now().UTC().Format(time.RFC3339Nano),
		},
		"subscription":    "projects/test-project/subscriptions/gemq-tasks-push",
		"deliveryAttempt": attempt,
	})
	return b
}

func encode(t *testing.T, e task.Envelope) []byte {
	t.Helper()
	b, err := task.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// result is what the handler answered.
type result struct {
	status  int
	outcome string
}

// serve hands a delivery to the machine as the worker would, from the
// body and headers of an HTTP request: a Cloud Tasks callback when the
// X-CloudTasks-TaskName header is set, else a Pub/Sub push.
func (f *fixture) serve(ctx context.Context, body []byte, header http.Header) result {
	get := func(k string) string {
		if v := header[k]; len(v) > 0 {
			return v[0]
		}
		return header.Get(k)
	}
	d := Delivery{Source: CloudTasks, ID: get(headerTaskName), Data: body}
	if d.ID == "" {
		var push struct {
			Message struct {
				Data      []byte `json:"data"`
				MessageID string `json:"messageId"`
			} `json:"message"`
			DeliveryAttempt int `json:"deliveryAttempt"`
		}
		if err := json.Unmarshal(body, &push); err != nil {
			return f.handle(ctx, Delivery{Source: PubSub, Data: body, Invalid: err})
		}
		d = Delivery{Source: PubSub, ID: push.Message.MessageID, Data: push.Message.Data, Attempt: push.DeliveryAttempt}
	} else if n, err := strconv.Atoi(get("X-CloudTasks-TaskRetryCount")); err == nil {
		d.Attempt = n
	}
	if d.Envelope, d.Invalid = task.Decode(d.Data); errors.Is(d.Invalid, task.ErrTooLarge) {
		d.Kind = KindOversized
	}
	return f.handle(ctx, d)
}

// handle hands d to the machine.
func (f *fixture) handle(ctx context.Context, d Delivery) result {
	o := f.m.Handle(ctx, d)
	if o.Redeliver {
		return result{http.StatusServiceUnavailable, o.Name}
	}
	return result{http.StatusOK, o.Name}
}

// headerTaskName is Cloud Tasks' task name header.
const headerTaskName = "X-CloudTasks-TaskName"

// push delivers e as a Pub/Sub push message.
func (f *fixture) push(e task.Envelope) result {
	return f.serve(context.Background(), pushBody(encode(f.t, e)), nil)
}

// callback delivers a Cloud Task body as Cloud Tasks does.
func (f *fixture) callback(name string, body []byte) result {
	return f.serve(context.Background(), body, http.Header{headerTaskName: {name}})
}

// record returns the stored task.
func (f *fixture) record(e task.Envelope) store.Record {
	f.t.Helper()
	r, err := f.store.Result(context.Background(), e.JobID, e.Key)
	if err != nil {
		f.t.Fatalf("store result: %v", err)
	}
	return r
}

func (f *fixture) counts(jobID string) store.Counts {
	f.t.Helper()
	j, err := f.store.GetJob(context.Background(), jobID)
	if err != nil {
		f.t.Fatalf("store get job: %v", err)
	}
	return j.Counts
}

// published returns the messages published to the results topic.
func (f *fixture) published() []*pstest.Message { return f.onTopic(testTopic) }

// deadLettered returns the messages published to the dead-letter topic.
func (f *fixture) deadLettered() []*pstest.Message { return f.onTopic(testDeadLetters) }

// onTopic returns the messages published to a topic, oldest first.
func (f *fixture) onTopic(topic string) []*pstest.Message {
	var msgs []*pstest.Message
	for _, m := range f.ps.Messages() {
		if m.Topic == "projects/"+testProject+"/topics/"+topic {
			msgs = append(msgs, m)
		}
	}
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].PublishTime.Before(msgs[j].PublishTime) })
	return msgs
}

// scheduled returns the Cloud Tasks in the queue, with their bodies.
func (f *fixture) scheduled() []*cloudtaskspb.Task {
	f.t.Helper()
	it := f.ct.ListTasks(context.Background(), &cloudtaskspb.ListTasksRequest{Parent: testQueue, ResponseView: cloudtaskspb.Task_FULL})
	var out []*cloudtaskspb.Task
	for {
		tk, err := it.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			f.t.Fatalf("list tasks: %v", err)
		}
		out = append(out, tk)
	}
	return out
}

// generateCalls returns the stand-in's generateContent log entries for a task.
func (f *fixture) generateCalls(taskID string) []geminisim.Entry {
	var out []geminisim.Entry
	for _, e := range f.sim.Log() {
		if e.Method == "generateContent" && e.TaskID == taskID {
			out = append(out, e)
		}
	}
	return out
}

// allGenerateCalls counts every generateContent the stand-in received.
func (f *fixture) allGenerateCalls() int {
	n := 0
	for _, e := range f.sim.Log() {
		if e.Method == "generateContent" {
			n++
		}
	}
	return n
}

// taskBody decodes a Cloud Task's body as an envelope.
func taskBody(t *testing.T, tk *cloudtaskspb.Task) task.Envelope {
	t.Helper()
	e, err := task.Decode(tk.GetHttpRequest().GetBody())
	if err != nil {
		t.Fatalf("cloud task body: %v", err)
	}
	return e
}

// shortName is the task id part of a full Cloud Task name.
func shortName(full string) string {
	for i := len(full) - 1; i >= 0; i-- {
		if full[i] == '/' {
			return full[i+1:]
		}
	}
	return full
}

// errorObject is a stored or published error.
type errorObject struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Status  string `json:"status,omitempty"`
}

// errorOf decodes a stored error.
func errorOf(t *testing.T, raw json.RawMessage) errorObject {
	t.Helper()
	var e errorObject
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatalf("stored error %s: %v", raw, err)
	}
	return e
}

// line decodes a published result line.
func line(t *testing.T, data []byte) store.ResultLine {
	t.Helper()
	var l store.ResultLine
	if err := json.Unmarshal(data, &l); err != nil {
		t.Fatalf("published line %s: %v", data, err)
	}
	return l
}
