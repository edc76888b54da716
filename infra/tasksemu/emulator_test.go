package tasksemu_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cloudtasks "cloud.google.com/go/cloudtasks/apiv2"
	"cloud.google.com/go/cloudtasks/apiv2/cloudtaskspb"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gemq-dev/gemq/infra/tasksemu"
)

const location = "projects/test-project/locations/us-central1"

// start runs an emulator and returns it with a real Cloud Tasks client connected to it.
func start(t *testing.T, opts tasksemu.Options) (*tasksemu.Server, *cloudtasks.Client) {
	t.Helper()
	emu := tasksemu.New(opts)
	addr, err := emu.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Stop)
	client, err := cloudtasks.NewClient(context.Background(), option.WithEndpoint(addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return emu, client
}

func createQueue(t *testing.T, c *cloudtasks.Client, id string, rl *cloudtaskspb.RateLimits, rc *cloudtaskspb.RetryConfig) string {
	t.Helper()
	q, err := c.CreateQueue(context.Background(), &cloudtaskspb.CreateQueueRequest{
		Parent: location,
		Queue:  &cloudtaskspb.Queue{Name: location + "/queues/" + id, RateLimits: rl, RetryConfig: rc},
	})
	if err != nil {
		t.Fatalf("CreateQueue: %v", err)
	}
	return q.Name
}

func fastRetry(attempts int32) *cloudtaskspb.RetryConfig {
	return &cloudtaskspb.RetryConfig{MaxAttempts: attempts, MinBackoff: durationpb.New(20 * time.Millisecond), MaxBackoff: durationpb.New(200 * time.Millisecond), MaxDoublings: 3}
}

// received is one request the target saw.
type received struct {
	at     time.Time
	method string
	header http.Header
	body   []byte
	err    error // the request context's error when the handler returned
}

// target is an HTTP endpoint recording what the emulator sends; respond decides the answer
// for the n-th request (from 1).
type target struct {
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    []received
	respond func(w http.ResponseWriter, r *http.Request, n int)
	active  int
	peak    int
}

func newTarget(t *testing.T, respond func(w http.ResponseWriter, r *http.Request, n int)) *target {
	tg := &target{respond: respond}
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		body, _ := io.ReadAll(r.Body)
		tg.mu.Lock()
		tg.active++
		tg.peak = max(tg.peak, tg.active)
		n := len(tg.reqs) + 1
		tg.reqs = append(tg.reqs, received{at: at, method: r.Method, header: r.Header.Clone(), body: body})
		tg.mu.Unlock()
		if tg.respond != nil {
			tg.respond(w, r, n)
		}
		tg.mu.Lock()
		tg.active--
		tg.reqs[n-1].err = r.Context().Err()
		tg.mu.Unlock()
	}))
	t.Cleanup(tg.srv.Close)
	return tg
}

func (tg *target) got() []received {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return append([]received(nil), tg.reqs...)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func httpTask(url string, body []byte) *cloudtaskspb.Task {
	return &cloudtaskspb.Task{MessageType: &cloudtaskspb.Task_HttpRequest{HttpRequest: &cloudtaskspb.HttpRequest{
		Url: url, HttpMethod: cloudtaskspb.HttpMethod_POST, Body: body,
		Headers: map[string]string{"Content-Type": "application/json"},
	}}}
}

func wantCode(t *testing.T, err error, want codes.Code, what string) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: code %v (err %v), want %v", what, got, err, want)
	}
}

func TestDispatchAtScheduleTimeWithHeaders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	emu, c := start(t, tasksemu.Options{})
	tg := newTarget(t, nil)
	qname := createQueue(t, c, "sched", nil, nil)

	base := time.Now()
	offsets := []time.Duration{-time.Second, 0, 150 * time.Millisecond, 300 * time.Millisecond, 450 * time.Millisecond, 600 * time.Millisecond}
	want := map[string]time.Time{} // body → requested schedule time
	for i, off := range offsets {
		body := []byte(`{"i":` + strconv.Itoa(i) + `}`)
		task := httpTask(tg.srv.URL+"/cb?x=1", body)
		task.GetHttpRequest().Headers["X-Custom"] = "v" + strconv.Itoa(i)
		task.GetHttpRequest().Headers["User-Agent"] = "ignored"
		task.Name = qname + "/tasks/t" + strconv.Itoa(i)
		at := base.Add(off)
		task.ScheduleTime = timestamppb.New(at)
		created, err := c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: qname, Task: task})
		if err != nil {
			t.Fatalf("CreateTask: %v", err)
		}
		if off < 0 && created.ScheduleTime.AsTime().Before(base) {
			t.Errorf("past schedule_time not moved to now: %v", created.ScheduleTime.AsTime())
		}
		want[string(body)] = at
	}
	waitFor(t, 10*time.Second, "all dispatches", func() bool { return len(tg.got()) == len(offsets) })
	for _, r := range tg.got() {
		at := want[string(r.body)]
		if r.at.Before(at) {
			t.Errorf("task %s received at %v, %v before its schedule_time", r.body, r.at, at.Sub(r.at))
		}
		if late := r.at.Sub(at); late > time.Second && at.After(base) {
			t.Errorf("task %s received %v late", r.body, late)
		}
		h := r.header
		i := strings.Trim(string(r.body), `{}"i:`)
		for k, v := range map[string]string{
			"Content-Type":                    "application/json",
			"X-Custom":                        "v" + i,
			"User-Agent":                      "Google-Cloud-Tasks",
			"X-Cloudtasks-Queuename":          "sched",
			"X-Cloudtasks-Taskname":           "t" + i,
			"X-Cloudtasks-Taskretrycount":     "0",
			"X-Cloudtasks-Taskexecutioncount": "0",
		} {
			if got := h.Get(k); got != v {
				t.Errorf("task %s header %s = %q, want %q", r.body, k, got, v)
			}
		}
		if r.method != http.MethodPost {
			t.Errorf("method %s, want POST", r.method)
		}
		eta, err := strconv.ParseFloat(h.Get("X-Cloudtasks-Tasketa"), 64)
		if err != nil || eta < float64(at.Unix())-1 || eta > float64(r.at.Unix())+1 {
			t.Errorf("X-CloudTasks-TaskETA %q does not match schedule time %v", h.Get("X-Cloudtasks-Tasketa"), at)
		}
		if h.Get("Authorization") != "" {
			t.Errorf("unexpected Authorization header without an OIDC token")
		}
	}
	// The emulator's own log agrees: no dispatch before its schedule time.
	for _, d := range emu.Dispatches() {
		if d.DispatchTime.Before(d.ScheduleTime) {
			t.Errorf("%s dispatched at %v before schedule %v", d.Task, d.DispatchTime, d.ScheduleTime)
		}
	}
	waitFor(t, 5*time.Second, "queue drained", func() bool { return emu.Pending(qname) == 0 })
	_, err := c.GetTask(ctx, &cloudtaskspb.GetTaskRequest{Name: qname + "/tasks/t1"})
	wantCode(t, err, codes.NotFound, "GetTask after success")
}

func TestTaskNamesAndDedup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	emu, c := start(t, tasksemu.Options{DedupWindow: 400 * time.Millisecond})
	tg := newTarget(t, nil)
	qname := createQueue(t, c, "names", nil, nil)
	create := func(name string, at time.Time) error {
		task := httpTask(tg.srv.URL, []byte("{}"))
		task.Name = name
		task.ScheduleTime = timestamppb.New(at)
		_, err := c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: qname, Task: task})
		return err
	}
	later := time.Now().Add(time.Hour)

	// Valid names, including the 500-character maximum.
	for _, id := range []string{"a", "A-b_9", strings.Repeat("x", 500)} {
		if err := create(qname+"/tasks/"+id, later); err != nil {
			t.Errorf("valid id %.20q: %v", id, err)
		}
	}
	// Invalid names → InvalidArgument.
	for _, name := range []string{
		qname + "/tasks/" + strings.Repeat("x", 501),
		qname + "/tasks/has.dot",
		qname + "/tasks/has space",
		qname + "/tasks/ümlaut",
		qname + "/tasks/",
		qname + "/t/abc",
		location + "/queues/other/tasks/abc", // not in the parent queue
		"abc",
	} {
		wantCode(t, create(name, later), codes.InvalidArgument, "name "+truncate(name))
	}

	// An existing name → AlreadyExists.
	wantCode(t, create(qname+"/tasks/a", later), codes.AlreadyExists, "duplicate pending name")

	// A name that ran stays taken within the window, and is free after it.
	if err := create(qname+"/tasks/ran", time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "dispatch", func() bool { return len(emu.Dispatches()) == 1 })
	wantCode(t, create(qname+"/tasks/ran", later), codes.AlreadyExists, "name that just ran")

	// A deleted name likewise.
	if err := c.DeleteTask(ctx, &cloudtaskspb.DeleteTaskRequest{Name: qname + "/tasks/a"}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, create(qname+"/tasks/a", later), codes.AlreadyExists, "name just deleted")
	err := c.DeleteTask(ctx, &cloudtaskspb.DeleteTaskRequest{Name: qname + "/tasks/a"})
	wantCode(t, err, codes.NotFound, "DeleteTask twice")

	time.Sleep(450 * time.Millisecond)
	if err := create(qname+"/tasks/ran", later); err != nil {
		t.Errorf("name after the dedup window: %v", err)
	}
	if err := create(qname+"/tasks/a", later); err != nil {
		t.Errorf("deleted name after the dedup window: %v", err)
	}

	// Unnamed tasks get a generated id in the queue.
	task := httpTask(tg.srv.URL, nil)
	task.ScheduleTime = timestamppb.New(later)
	got, err := c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: qname, Task: task})
	if err != nil || !strings.HasPrefix(got.GetName(), qname+"/tasks/") {
		t.Errorf("unnamed task: %v, %v", got.GetName(), err)
	}

	// Unknown queue and unknown task → NotFound.
	_, err = c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: location + "/queues/missing", Task: httpTask(tg.srv.URL, nil)})
	wantCode(t, err, codes.NotFound, "CreateTask in a missing queue")
	_, err = c.GetTask(ctx, &cloudtaskspb.GetTaskRequest{Name: qname + "/tasks/nope"})
	wantCode(t, err, codes.NotFound, "GetTask missing")

	// 3 valid + ran + 2 after the window + unnamed created; 3 de-duplicated.
	if st := emu.Stats(); st.Created != 7 || st.AlreadyExists != 3 || st.Succeeded != 1 {
		t.Errorf("Stats = %+v, want 7 created, 3 already-exists, 1 succeeded", st)
	}
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func TestInvalidInput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, c := start(t, tasksemu.Options{})
	qname := createQueue(t, c, "invalid", nil, nil)
	url := "http://127.0.0.1:1/never"
	create := func(mod func(*cloudtaskspb.Task)) error {
		task := httpTask(url, []byte("{}"))
		task.ScheduleTime = timestamppb.New(time.Now().Add(time.Hour))
		mod(task)
		_, err := c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: qname, Task: task})
		return err
	}
	hr := func(task *cloudtaskspb.Task) *cloudtaskspb.HttpRequest { return task.GetHttpRequest() }

	wantCode(t, create(func(task *cloudtaskspb.Task) { hr(task).Body = make([]byte, 1<<20+1) }), codes.InvalidArgument, "task over 1 MB")
	if err := create(func(task *cloudtaskspb.Task) { hr(task).Body = make([]byte, 1<<20-4096) }); err != nil {
		t.Errorf("task just under 1 MB: %v", err)
	}
	wantCode(t, create(func(task *cloudtaskspb.Task) {
		task.ScheduleTime = timestamppb.New(time.Now().Add(30*24*time.Hour + time.Minute))
	}), codes.InvalidArgument, "schedule_time beyond 30 days")
	if err := create(func(task *cloudtaskspb.Task) {
		task.ScheduleTime = timestamppb.New(time.Now().Add(29 * 24 * time.Hour))
	}); err != nil {
		t.Errorf("schedule_time in 29 days: %v", err)
	}
	wantCode(t, create(func(task *cloudtaskspb.Task) { hr(task).Url = "ftp://x/y" }), codes.InvalidArgument, "non-http url")
	wantCode(t, create(func(task *cloudtaskspb.Task) { hr(task).HttpMethod = cloudtaskspb.HttpMethod_GET }), codes.InvalidArgument, "GET with body")
	wantCode(t, create(func(task *cloudtaskspb.Task) { task.DispatchDeadline = durationpb.New(5 * time.Second) }), codes.InvalidArgument, "dispatch_deadline under 15s")
	wantCode(t, create(func(task *cloudtaskspb.Task) { task.DispatchDeadline = durationpb.New(31 * time.Minute) }), codes.InvalidArgument, "dispatch_deadline over 30m")
	wantCode(t, create(func(task *cloudtaskspb.Task) { task.MessageType = nil }), codes.InvalidArgument, "no http_request")
	_, err := c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: "projects/p/queues/q", Task: httpTask(url, nil)})
	wantCode(t, err, codes.InvalidArgument, "bad parent")

	// Queues.
	_, err = c.CreateQueue(ctx, &cloudtaskspb.CreateQueueRequest{Parent: location, Queue: &cloudtaskspb.Queue{Name: qname}})
	wantCode(t, err, codes.AlreadyExists, "CreateQueue twice")
	_, err = c.CreateQueue(ctx, &cloudtaskspb.CreateQueueRequest{Parent: location, Queue: &cloudtaskspb.Queue{Name: location + "/queues/bad_name"}})
	wantCode(t, err, codes.InvalidArgument, "queue id with underscore")
	_, err = c.CreateQueue(ctx, &cloudtaskspb.CreateQueueRequest{Parent: location, Queue: &cloudtaskspb.Queue{
		Name: location + "/queues/fast", RateLimits: &cloudtaskspb.RateLimits{MaxDispatchesPerSecond: 501}}})
	wantCode(t, err, codes.InvalidArgument, "rate over 500")
	_, err = c.GetQueue(ctx, &cloudtaskspb.GetQueueRequest{Name: location + "/queues/missing"})
	wantCode(t, err, codes.NotFound, "GetQueue missing")
}

func TestQueueDefaultsListAndViews(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, c := start(t, tasksemu.Options{})
	for _, id := range []string{"b", "a", "c"} {
		createQueue(t, c, id, nil, nil)
	}
	q, err := c.GetQueue(ctx, &cloudtaskspb.GetQueueRequest{Name: location + "/queues/a"})
	if err != nil {
		t.Fatal(err)
	}
	if q.State != cloudtaskspb.Queue_RUNNING || q.RateLimits.MaxDispatchesPerSecond != 500 || q.RateLimits.MaxConcurrentDispatches != 1000 ||
		q.RetryConfig.MaxAttempts != 100 || q.RetryConfig.MinBackoff.AsDuration() != 100*time.Millisecond ||
		q.RetryConfig.MaxBackoff.AsDuration() != time.Hour || q.RetryConfig.MaxDoublings != 16 {
		t.Errorf("queue defaults: %v", q)
	}
	var names []string
	it := c.ListQueues(ctx, &cloudtaskspb.ListQueuesRequest{Parent: location, PageSize: 2})
	for {
		q, err := it.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, q.Name[strings.LastIndex(q.Name, "/")+1:])
	}
	if strings.Join(names, ",") != "a,b,c" {
		t.Errorf("ListQueues = %v, want a,b,c", names)
	}

	qname := location + "/queues/a"
	task := httpTask("http://127.0.0.1:1/x", []byte("secret body"))
	task.Name = qname + "/tasks/one"
	task.ScheduleTime = timestamppb.New(time.Now().Add(time.Hour))
	if _, err := c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: qname, Task: task}); err != nil {
		t.Fatal(err)
	}
	basic, err := c.GetTask(ctx, &cloudtaskspb.GetTaskRequest{Name: task.Name})
	if err != nil {
		t.Fatal(err)
	}
	if basic.View != cloudtaskspb.Task_BASIC || len(basic.GetHttpRequest().GetBody()) != 0 {
		t.Errorf("BASIC view returned the body: %v", basic)
	}
	full, err := c.GetTask(ctx, &cloudtaskspb.GetTaskRequest{Name: task.Name, ResponseView: cloudtaskspb.Task_FULL})
	if err != nil {
		t.Fatal(err)
	}
	if string(full.GetHttpRequest().GetBody()) != "secret body" || full.DispatchDeadline.AsDuration() != 10*time.Minute {
		t.Errorf("FULL view: %v", full)
	}
	n := 0
	tit := c.ListTasks(ctx, &cloudtaskspb.ListTasksRequest{Parent: qname})
	for {
		_, err := tit.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 {
		t.Errorf("ListTasks: %d tasks, want 1", n)
	}
}

func TestRateLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	emu, c := start(t, tasksemu.Options{})
	tg := newTarget(t, nil)
	const rate, n = 10.0, 25
	qname := createQueue(t, c, "rated", &cloudtaskspb.RateLimits{MaxDispatchesPerSecond: rate}, nil)
	q, _ := c.GetQueue(ctx, &cloudtaskspb.GetQueueRequest{Name: qname})
	burst := float64(q.RateLimits.MaxBurstSize)
	if burst < 1 || burst > 100 {
		t.Fatalf("max_burst_size = %v", burst)
	}
	for i := 0; i < n; i++ {
		if _, err := c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: qname, Task: httpTask(tg.srv.URL, nil)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 15*time.Second, "all dispatches", func() bool { return len(emu.Dispatches()) == n })
	var times []time.Time
	for _, d := range emu.Dispatches() {
		times = append(times, d.DispatchTime)
	}
	slicesSortTimes(times)
	// Token bucket: any k consecutive dispatches span at least (k-burst)/rate seconds.
	for i := range times {
		for j := i; j < len(times); j++ {
			k := float64(j - i + 1)
			if minSpan := (k - burst) / rate; minSpan > 0 && times[j].Sub(times[i]).Seconds() < minSpan-0.01 {
				t.Fatalf("%v dispatches within %v, rate %v/s burst %v allows no less than %.3fs", k, times[j].Sub(times[i]), rate, burst, minSpan)
			}
		}
	}
}

func slicesSortTimes(ts []time.Time) {
	for i := 1; i < len(ts); i++ {
		for j := i; j > 0 && ts[j].Before(ts[j-1]); j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
}

func TestMaxConcurrentDispatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	emu, c := start(t, tasksemu.Options{})
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) { time.Sleep(100 * time.Millisecond) })
	qname := createQueue(t, c, "conc", &cloudtaskspb.RateLimits{MaxConcurrentDispatches: 2}, nil)
	for i := 0; i < 6; i++ {
		if _, err := c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: qname, Task: httpTask(tg.srv.URL, nil)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "all dispatches", func() bool { return len(emu.Dispatches()) == 6 })
	tg.mu.Lock()
	peak := tg.peak
	tg.mu.Unlock()
	if peak != 2 {
		t.Errorf("peak concurrent requests at the target = %d, want 2", peak)
	}
}

func TestRetriesWithBackoffAndMaxAttempts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	emu, c := start(t, tasksemu.Options{})
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 2 {
			w.WriteHeader(http.StatusBadRequest) // a response that counts as an execution
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
	})
	rc := &cloudtaskspb.RetryConfig{MaxAttempts: 5, MinBackoff: durationpb.New(40 * time.Millisecond),
		MaxBackoff: durationpb.New(250 * time.Millisecond), MaxDoublings: 2}
	qname := createQueue(t, c, "retry", nil, rc)
	task := httpTask(tg.srv.URL, []byte("x"))
	task.Name = qname + "/tasks/failing"
	if _, err := c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: qname, Task: task}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "task deleted after max attempts", func() bool { return emu.Pending(qname) == 0 })
	time.Sleep(300 * time.Millisecond) // no further attempt may come
	got := tg.got()
	if len(got) != 5 {
		t.Fatalf("%d attempts, want max_attempts = 5", len(got))
	}
	// Intervals: 40ms, 80ms, 160ms (doubled twice), then 160+160=320 capped at 250ms.
	wantGaps := []time.Duration{40, 80, 160, 250}
	ds := emu.Dispatches()
	for i, g := range wantGaps {
		gap := ds[i+1].DispatchTime.Sub(ds[i].ResponseTime)
		if min := g * time.Millisecond; gap < min || gap > min+400*time.Millisecond {
			t.Errorf("gap before attempt %d = %v, want about %v", i+2, gap, min)
		}
	}
	for i, r := range got {
		if rc := r.header.Get("X-CloudTasks-TaskRetryCount"); rc != strconv.Itoa(i) {
			t.Errorf("attempt %d: retry count %s", i+1, rc)
		}
		wantExec := "0"
		if i >= 2 {
			wantExec = "1" // only the 400 counted; 5xx do not
		}
		if ec := r.header.Get("X-CloudTasks-TaskExecutionCount"); ec != wantExec {
			t.Errorf("attempt %d: execution count %s, want %s", i+1, ec, wantExec)
		}
	}
	if prev := got[1].header.Get("X-CloudTasks-TaskPreviousResponse"); prev != "500" {
		t.Errorf("previous response header %q, want 500", prev)
	}
	_, err := c.GetTask(ctx, &cloudtaskspb.GetTaskRequest{Name: task.Name})
	wantCode(t, err, codes.NotFound, "GetTask after retries exhausted")
	if st := emu.Stats(); st.Exhausted != 1 || st.Attempts != 5 || st.Succeeded != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestMaxRetryDuration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	emu, c := start(t, tasksemu.Options{})
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) { w.WriteHeader(http.StatusInternalServerError) })
	rc := &cloudtaskspb.RetryConfig{MaxAttempts: -1, MaxRetryDuration: durationpb.New(400 * time.Millisecond),
		MinBackoff: durationpb.New(100 * time.Millisecond), MaxBackoff: durationpb.New(100 * time.Millisecond)}
	qname := createQueue(t, c, "retrydur", nil, rc)
	if _, err := c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: qname, Task: httpTask(tg.srv.URL, nil)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "task dropped after max_retry_duration", func() bool { return emu.Pending(qname) == 0 })
	ds := emu.Dispatches()
	span := ds[len(ds)-1].ResponseTime.Sub(ds[0].DispatchTime)
	if len(ds) < 3 || span < 400*time.Millisecond || span > 2*time.Second {
		t.Errorf("%d attempts over %v, want attempts until 400ms had passed", len(ds), span)
	}
	_ = tg
}

func TestRetryAfterHonoured(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	emu, c := start(t, tasksemu.Options{})
	for _, code := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
			if n == 1 {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(code)
			}
		})
		qname := createQueue(t, c, "ra"+strconv.Itoa(code), nil, fastRetry(5))
		if _, err := c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: qname, Task: httpTask(tg.srv.URL, nil)}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "second attempt", func() bool { return len(tg.got()) == 2 })
		got := tg.got()
		if gap := got[1].at.Sub(got[0].at); gap < time.Second {
			t.Errorf("status %d with Retry-After: 1 retried after %v", code, gap)
		}
		waitFor(t, 5*time.Second, "done", func() bool { return emu.Pending(qname) == 0 })
	}
}

func TestDispatchDeadline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	emu, c := start(t, tasksemu.Options{MinDispatchDeadline: 50 * time.Millisecond})
	tg := newTarget(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
	})
	qname := createQueue(t, c, "deadline", nil, fastRetry(3))
	task := httpTask(tg.srv.URL, nil)
	task.DispatchDeadline = durationpb.New(200 * time.Millisecond)
	if _, err := c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: qname, Task: task}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "two attempts", func() bool { return len(emu.Dispatches()) == 2 })
	d := emu.Dispatches()[0]
	if d.Err != "DEADLINE_EXCEEDED" || d.StatusCode != 0 {
		t.Errorf("first attempt: status %d err %q, want DEADLINE_EXCEEDED", d.StatusCode, d.Err)
	}
	if took := d.ResponseTime.Sub(d.DispatchTime); took < 200*time.Millisecond || took > 2*time.Second {
		t.Errorf("deadline enforced after %v, want about 200ms", took)
	}
	if second := emu.Dispatches()[1]; second.StatusCode != 200 {
		t.Errorf("second attempt status %d", second.StatusCode)
	}
	waitFor(t, 5*time.Second, "target saw the cancellation", func() bool { return tg.got()[0].err != nil })
}

func TestPauseResumePurgeRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	emu, c := start(t, tasksemu.Options{})
	tg := newTarget(t, nil)
	qname := createQueue(t, c, "pause", nil, nil)
	q, err := c.PauseQueue(ctx, &cloudtaskspb.PauseQueueRequest{Name: qname})
	if err != nil || q.State != cloudtaskspb.Queue_PAUSED {
		t.Fatalf("PauseQueue: %v %v", q.GetState(), err)
	}
	for i := 0; i < 3; i++ {
		task := httpTask(tg.srv.URL, nil)
		task.Name = qname + "/tasks/p" + strconv.Itoa(i)
		if _, err := c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: qname, Task: task}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(tg.got()); n != 0 {
		t.Fatalf("paused queue dispatched %d tasks", n)
	}
	// RunTask forces one even though the queue is paused.
	if _, err := c.RunTask(ctx, &cloudtaskspb.RunTaskRequest{Name: qname + "/tasks/p0"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "forced dispatch", func() bool { return len(emu.Dispatches()) == 1 })
	if d := emu.Dispatches(); !d[0].Forced {
		t.Errorf("dispatch not marked forced: %+v", d[0])
	}
	if _, err := c.ResumeQueue(ctx, &cloudtaskspb.ResumeQueueRequest{Name: qname}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "resumed dispatches", func() bool { return len(tg.got()) == 3 })

	// Purge drops everything not yet dispatched.
	if _, err := c.PauseQueue(ctx, &cloudtaskspb.PauseQueueRequest{Name: qname}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		task := httpTask(tg.srv.URL, nil)
		task.Name = qname + "/tasks/purged" + strconv.Itoa(i)
		if _, err := c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: qname, Task: task}); err != nil {
			t.Fatal(err)
		}
	}
	q, err = c.PurgeQueue(ctx, &cloudtaskspb.PurgeQueueRequest{Name: qname})
	if err != nil || q.PurgeTime == nil {
		t.Fatalf("PurgeQueue: %v %v", q, err)
	}
	if _, err := c.ResumeQueue(ctx, &cloudtaskspb.ResumeQueueRequest{Name: qname}); err != nil {
		t.Fatal(err)
	}
	it := c.ListTasks(ctx, &cloudtaskspb.ListTasksRequest{Parent: qname})
	if _, err := it.Next(); err != iterator.Done {
		t.Errorf("ListTasks after purge: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(tg.got()); n != 3 {
		t.Errorf("purged tasks were dispatched: %d requests", n)
	}
	task := httpTask(tg.srv.URL, nil)
	task.Name = qname + "/tasks/purged0"
	_, err = c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: qname, Task: task})
	wantCode(t, err, codes.AlreadyExists, "reusing a purged name")
}

func TestOIDCToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	emu, c := start(t, tasksemu.Options{})
	tg := newTarget(t, nil)
	qname := createQueue(t, c, "oidc", nil, nil)
	const email = "invoker@test-project.iam.gserviceaccount.com"
	for _, aud := range []string{"", "https://worker.example"} {
		task := httpTask(tg.srv.URL+"/w", nil)
		task.GetHttpRequest().Headers["Authorization"] = "Bearer overridden"
		task.GetHttpRequest().AuthorizationHeader = &cloudtaskspb.HttpRequest_OidcToken{OidcToken: &cloudtaskspb.OidcToken{ServiceAccountEmail: email, Audience: aud}}
		if _, err := c.CreateTask(ctx, &cloudtaskspb.CreateTaskRequest{Parent: qname, Task: task}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "dispatch", func() bool { return emu.Pending(qname) == 0 })
	}
	got := tg.got()
	if len(got) != 2 {
		t.Fatalf("%d requests", len(got))
	}
	for i, wantAud := range []string{tg.srv.URL + "/w", "https://worker.example"} {
		h := got[i].header.Get("Authorization")
		if !strings.HasPrefix(h, "Bearer ") || h == "Bearer overridden" {
			t.Fatalf("Authorization header %q", h)
		}
		claims, err := emu.VerifyOIDCToken(strings.TrimPrefix(h, "Bearer "))
		if err != nil {
			t.Fatalf("VerifyOIDCToken: %v", err)
		}
		if claims.Audience != wantAud || claims.Email != email || !claims.EmailVerified || claims.Issuer != tasksemu.OIDCIssuer ||
			claims.Expiry <= time.Now().Unix() || claims.Subject == "" {
			t.Errorf("claims %+v, want aud %q email %q", claims, wantAud, email)
		}
	}
	if _, err := emu.VerifyOIDCToken("a.b.c"); err == nil {
		t.Error("VerifyOIDCToken accepted garbage")
	}
}
