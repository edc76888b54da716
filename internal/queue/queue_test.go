package queue_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cloudtasks "cloud.google.com/go/cloudtasks/apiv2"
	"cloud.google.com/go/cloudtasks/apiv2/cloudtaskspb"
	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gemq-dev/gemq/infra/tasksemu"
	"github.com/gemq-dev/gemq/internal/queue"
)

const project = "test-project"

func pubsubClient(t *testing.T) (*pstest.Server, *pubsub.Client) {
	t.Helper()
	srv := pstest.NewServer()
	t.Cleanup(func() { srv.Close() })
	c, err := queue.NewPubSubClient(context.Background(), project, option.WithEndpoint(srv.Addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return srv, c
}

func TestPublisherDeliversEveryMessageWithAttributes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, c := pubsubClient(t)
	if err := queue.EnsureTopic(ctx, c, "tasks"); err != nil {
		t.Fatal(err)
	}
	if err := queue.EnsureTopic(ctx, c, "tasks"); err != nil {
		t.Fatalf("EnsureTopic on an existing topic: %v", err)
	}
	p := queue.NewPublisher(c, "tasks", queue.ManyDelay)
	defer p.Stop()

	const n = 250
	msgs := make([]queue.Message, n)
	for i := range msgs {
		msgs[i] = queue.Message{Data: []byte(fmt.Sprintf(`{"i":%d}`, i)), Attributes: map[string]string{"i": strconv.Itoa(i), "kind": "task"}}
		if i%10 == 0 {
			msgs[i].OrderingKey = "job-" + strconv.Itoa(i%3)
		}
	}
	if err := p.Publish(ctx, msgs); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	// Publish returned, so the server already holds every message.
	got := srv.Messages()
	if len(got) != n {
		t.Fatalf("server holds %d messages, want %d", len(got), n)
	}
	seen := map[string]bool{}
	for _, m := range got {
		i := m.Attributes["i"]
		if want := fmt.Sprintf(`{"i":%s}`, i); string(m.Data) != want || m.Attributes["kind"] != "task" || m.ID == "" {
			t.Errorf("message %q: data %q attrs %v id %q", i, m.Data, m.Attributes, m.ID)
		}
		idx, _ := strconv.Atoi(i)
		if want := msgs[idx].OrderingKey; m.OrderingKey != want {
			t.Errorf("message %d ordering key %q, want %q", idx, m.OrderingKey, want)
		}
		seen[i] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct messages, want %d", len(seen), n)
	}
	if err := p.Publish(ctx, nil); err != nil {
		t.Errorf("Publish of nothing: %v", err)
	}
}

func TestPublisherReportsFailures(t *testing.T) {
	t.Parallel()
	_, c := pubsubClient(t)
	p := queue.NewPublisher(c, "no-such-topic", queue.ManyDelay)
	defer p.Stop()
	err := p.Publish(context.Background(), []queue.Message{{Data: []byte("a")}, {Data: []byte("b")}, {Data: []byte("c"), OrderingKey: "k"}})
	if err == nil {
		t.Fatal("Publish to a missing topic succeeded")
	}
	if !strings.Contains(err.Error(), "pubsub publish: 3 of 3 messages failed") || status.Code(unwrapFirst(err)) != codes.NotFound {
		t.Errorf("error %v does not count the failures or keep the cause", err)
	}
}

// unwrapFirst returns the first wrapped cause of a joined error chain.
func unwrapFirst(err error) error {
	for {
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			err = u.Unwrap()[0]
		case interface{ Unwrap() error }:
			if u.Unwrap() == nil {
				return err
			}
			err = u.Unwrap()
		default:
			return err
		}
	}
}

func TestEnsureSubscription(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, c := pubsubClient(t)
	for _, id := range []string{"tasks", "dead"} {
		if err := queue.EnsureTopic(ctx, c, id); err != nil {
			t.Fatal(err)
		}
	}
	opts := queue.SubscriptionOptions{AckDeadline: 60 * time.Second, DeadLetterTopicID: "dead", MaxDeliveryAttempts: 5,
		MinBackoff: time.Second, MaxBackoff: 10 * time.Second}
	for i := 0; i < 2; i++ {
		if err := queue.EnsureSubscription(ctx, c, "tasks-sub", "tasks", opts); err != nil {
			t.Fatalf("EnsureSubscription #%d: %v", i+1, err)
		}
	}
	sub, err := c.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: "projects/" + project + "/subscriptions/tasks-sub"})
	if err != nil {
		t.Fatal(err)
	}
	if sub.Topic != "projects/"+project+"/topics/tasks" || sub.AckDeadlineSeconds != 60 ||
		sub.GetDeadLetterPolicy().GetDeadLetterTopic() != "projects/"+project+"/topics/dead" || sub.GetDeadLetterPolicy().GetMaxDeliveryAttempts() != 5 ||
		sub.GetRetryPolicy().GetMinimumBackoff().AsDuration() != time.Second {
		t.Errorf("subscription: %v", sub)
	}
	if err := queue.EnsureSubscription(ctx, c, "orphan", "missing-topic", queue.SubscriptionOptions{}); err == nil {
		t.Error("EnsureSubscription on a missing topic succeeded")
	}
}

func TestTaskName(t *testing.T) {
	t.Parallel()
	valid := regexp.MustCompile(`^[A-Za-z0-9_-]{1,500}$`)
	ids := []string{"", "a", "job-1/req-2", "ünïcødé {hash} tag\n", strings.Repeat("x", 10000), "a:1", "a", "a:"}
	seen := map[string]string{}
	for _, id := range ids {
		for n := -1; n < 3; n++ {
			name := queue.TaskName(id, n)
			if !valid.MatchString(name) {
				t.Errorf("TaskName(%.20q, %d) = %q is not a valid task id", id, n, name)
			}
			if name != queue.TaskName(id, n) {
				t.Errorf("TaskName(%.20q, %d) not deterministic", id, n)
			}
			key := id + "\x00" + strconv.Itoa(n)
			if other, ok := seen[name]; ok && other != key {
				t.Errorf("TaskName collision: %q", name)
			}
			seen[name] = key
		}
	}
}

// tasksEnv is a Cloud Tasks emulator, a real client on it, a queue and a recording target.
type tasksEnv struct {
	emu       *tasksemu.Server
	sched     func(sa string) *queue.Scheduler
	queue     string
	target    *httptest.Server
	emuClient *cloudtasks.Client
	mu        sync.Mutex
	got       []receivedReq
}

type receivedReq struct {
	at     time.Time
	header http.Header
	body   string
}

func newTasksEnv(t *testing.T) *tasksEnv {
	t.Helper()
	ctx := context.Background()
	env := &tasksEnv{emu: tasksemu.New(tasksemu.Options{})}
	addr, err := env.emu.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.emu.Stop)
	client, err := queue.NewCloudTasksClient(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	env.queue = "projects/" + project + "/locations/us-central1/queues/gemq-tasks"
	opts := queue.QueueOptions{MaxDispatchesPerSecond: 100, MaxConcurrentDispatches: 10, MaxAttempts: 3, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}
	for i := 0; i < 2; i++ {
		if err := queue.EnsureQueue(ctx, client, env.queue, opts); err != nil {
			t.Fatalf("EnsureQueue #%d: %v", i+1, err)
		}
	}
	q, err := client.GetQueue(ctx, &cloudtaskspb.GetQueueRequest{Name: env.queue})
	if err != nil {
		t.Fatal(err)
	}
	if q.RateLimits.MaxDispatchesPerSecond != 100 || q.RetryConfig.MaxAttempts != 3 || q.RetryConfig.MinBackoff.AsDuration() != 50*time.Millisecond {
		t.Errorf("EnsureQueue settings not applied: %v", q)
	}
	env.target = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		env.mu.Lock()
		env.got = append(env.got, receivedReq{at: time.Now(), header: r.Header.Clone(), body: string(body)})
		env.mu.Unlock()
	}))
	t.Cleanup(env.target.Close)
	env.sched = func(sa string) *queue.Scheduler {
		return queue.NewScheduler(client, env.queue, env.target.URL+"/worker", sa)
	}
	env.emuClient = client
	return env
}

func (e *tasksEnv) received() []receivedReq {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]receivedReq(nil), e.got...)
}

func TestSchedulerCreatesTheTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newTasksEnv(t)
	const sa = "gemq-tasks@test-project.iam.gserviceaccount.com"
	s := env.sched(sa)
	name := queue.TaskName("job-1/task-7", 1)
	at := time.Now().Add(400 * time.Millisecond).Truncate(time.Microsecond)
	body := `{"v":1,"task_id":"job-1/task-7"}`
	if err := s.Schedule(ctx, name, at, []byte(body)); err != nil {
		t.Fatalf("Schedule: %v", err)
	}

	task, err := env.emuClient.GetTask(ctx, &cloudtaskspb.GetTaskRequest{Name: env.queue + "/tasks/" + name, ResponseView: cloudtaskspb.Task_FULL})
	if err != nil {
		t.Fatalf("GetTask: %v", err)
	}
	hr := task.GetHttpRequest()
	wantHeaders := map[string]string{"Content-Type": "application/json"}
	if diff := cmp.Diff(wantHeaders, hr.GetHeaders()); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
	if string(hr.GetBody()) != body || hr.GetUrl() != env.target.URL+"/worker" || hr.GetHttpMethod() != cloudtaskspb.HttpMethod_POST {
		t.Errorf("task request: %v", hr)
	}
	if got := task.GetScheduleTime().AsTime(); !got.Equal(at) {
		t.Errorf("schedule_time %v, want %v", got, at)
	}
	if o := hr.GetOidcToken(); o.GetServiceAccountEmail() != sa || o.GetAudience() != env.target.URL+"/worker" {
		t.Errorf("OIDC token %v", o)
	}

	// Scheduling the same name again (a retried deferral) is success and creates nothing.
	for i := 0; i < 3; i++ {
		if err := s.Schedule(ctx, name, at.Add(time.Minute), []byte(`{"other":true}`)); err != nil {
			t.Fatalf("Schedule duplicate: %v", err)
		}
	}

	deadline := time.Now().Add(10 * time.Second)
	for env.emu.Pending(env.queue) != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// Still a duplicate after it ran (dedup window).
	if err := s.Schedule(ctx, name, time.Time{}, []byte(`{"other":true}`)); err != nil {
		t.Fatalf("Schedule after run: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	got := env.received()
	if len(got) != 1 {
		t.Fatalf("target received %d requests, want 1", len(got))
	}
	r := got[0]
	if r.at.Before(at) {
		t.Errorf("delivered at %v, before schedule time %v", r.at, at)
	}
	if r.body != body || r.header.Get("Content-Type") != "application/json" || r.header.Get("X-CloudTasks-TaskName") != name {
		t.Errorf("delivered %q with headers %v", r.body, r.header)
	}
	claims, err := env.emu.VerifyOIDCToken(strings.TrimPrefix(r.header.Get("Authorization"), "Bearer "))
	if err != nil {
		t.Fatalf("OIDC token: %v", err)
	}
	if claims.Email != sa || claims.Audience != env.target.URL+"/worker" {
		t.Errorf("OIDC claims %+v", claims)
	}
}

func TestSchedulerWithoutServiceAccountAndErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newTasksEnv(t)
	s := env.sched("")
	if err := s.Schedule(ctx, queue.TaskName("t", 0), time.Now(), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(env.received()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := env.received(); len(got) != 1 || got[0].header.Get("Authorization") != "" {
		t.Fatalf("want one request without Authorization, got %d", len(got))
	}

	err := s.Schedule(ctx, "bad.name", time.Now(), nil)
	if err == nil || !strings.HasPrefix(err.Error(), "cloudtasks create task: ") || status.Code(unwrapFirst(err)) != codes.InvalidArgument {
		t.Errorf("invalid name: %v", err)
	}
	err = s.Schedule(ctx, "x", time.Now().Add(31*24*time.Hour), nil)
	if status.Code(unwrapFirst(err)) != codes.InvalidArgument {
		t.Errorf("31 days ahead: %v", err)
	}
	missing := queue.NewScheduler(env.emuClient, "projects/"+project+"/locations/us-central1/queues/missing", env.target.URL, "")
	if err := missing.Schedule(ctx, "x", time.Now(), nil); status.Code(unwrapFirst(err)) != codes.NotFound {
		t.Errorf("missing queue: %v", err)
	}
}

// Create reports whether it made the task: true the first time, false (no
// error) for the same name again, also after it ran; errors as Schedule.
func TestSchedulerCreateReportsDuplicates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newTasksEnv(t)
	s := env.sched("")
	name := queue.TaskName("job-1/task-8", 2)
	created, err := s.Create(ctx, name, time.Now().Add(100*time.Millisecond), []byte(`{"first":true}`))
	if err != nil || !created {
		t.Fatalf("Create = %v, %v; want created", created, err)
	}
	for range 2 {
		created, err = s.Create(ctx, name, time.Now(), []byte(`{"second":true}`))
		if err != nil || created {
			t.Fatalf("Create again = %v, %v; want not created, no error", created, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(env.received()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if created, err = s.Create(ctx, name, time.Time{}, []byte(`{"third":true}`)); err != nil || created {
		t.Fatalf("Create after it ran = %v, %v; want not created, no error", created, err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := env.received(); len(got) != 1 || got[0].body != `{"first":true}` {
		t.Fatalf("target received %v, want only the first body", got)
	}
	if created, err = s.Create(ctx, "bad.name", time.Now(), nil); err == nil || created || status.Code(unwrapFirst(err)) != codes.InvalidArgument {
		t.Errorf("invalid name: %v, %v", created, err)
	}
}
