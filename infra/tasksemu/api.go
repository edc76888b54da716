package tasksemu

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/cloudtasks/apiv2/cloudtaskspb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var _ cloudtaskspb.CloudTasksServer = (*Server)(nil)

// Queue defaults the real service applies at creation (as `gcloud tasks queues describe` shows them).
const (
	defaultMaxDispatchesPerSecond = 500
	defaultMaxConcurrent          = 1000
	defaultMaxAttempts            = 100
	defaultMinBackoff             = 100 * time.Millisecond
	defaultMaxBackoff             = time.Hour
	defaultMaxDoublings           = 16
	maxDispatchesPerSecondLimit   = 500
	maxConcurrentLimit            = 5000
	maxURLLen                     = 2083
	maxHeadersBytes               = 80 << 10
	maxQueuePageSize              = 9800
	maxTaskPageSize               = 1000
)

var (
	errQueueNotFound = status.Error(codes.NotFound, "Requested entity was not found. (queue)")
	errTaskNotFound  = status.Error(codes.NotFound, "Requested entity was not found. (task)")
	errStopped       = status.Error(codes.Unavailable, "tasksemu: the emulator is stopping")
)

func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// ceilMicro rounds t up to the microsecond (the service's schedule_time precision),
// so that a dispatch at the stored time is never before the requested one.
func ceilMicro(t time.Time) time.Time {
	c := t.Truncate(time.Microsecond)
	if c.Before(t) {
		c = c.Add(time.Microsecond)
	}
	return c
}

func dur(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

// burstSize is the output-only max_burst_size: the service picks it from the rate;
// the emulator uses ceil(rate), between 1 and 100.
func burstSize(rate float64) int32 {
	return int32(max(1, min(100, math.Ceil(rate))))
}

// ---- queues ----

func validateRateLimits(rl *cloudtaskspb.RateLimits) error {
	if rl == nil {
		return nil
	}
	if r := rl.GetMaxDispatchesPerSecond(); r < 0 || r > maxDispatchesPerSecondLimit || math.IsNaN(r) {
		return status.Errorf(codes.InvalidArgument, "rate_limits.max_dispatches_per_second must be in (0, %d], got %v", maxDispatchesPerSecondLimit, r)
	}
	if c := rl.GetMaxConcurrentDispatches(); c < 0 || c > maxConcurrentLimit {
		return status.Errorf(codes.InvalidArgument, "rate_limits.max_concurrent_dispatches must be in [1, %d], got %d", maxConcurrentLimit, c)
	}
	return nil
}

func validateRetryConfig(field string, rc *cloudtaskspb.RetryConfig) error {
	if rc == nil {
		return nil
	}
	if rc.GetMaxAttempts() < -1 {
		return status.Errorf(codes.InvalidArgument, "%s.max_attempts must be >= -1, got %d", field, rc.GetMaxAttempts())
	}
	if rc.GetMaxDoublings() < 0 {
		return status.Errorf(codes.InvalidArgument, "%s.max_doublings must be >= 0, got %d", field, rc.GetMaxDoublings())
	}
	for name, d := range map[string]*durationpb.Duration{"min_backoff": rc.GetMinBackoff(), "max_backoff": rc.GetMaxBackoff(), "max_retry_duration": rc.GetMaxRetryDuration()} {
		if d == nil {
			continue
		}
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return status.Errorf(codes.InvalidArgument, "%s.%s must be a non-negative duration", field, name)
		}
	}
	if minB, maxB := dur(rc.GetMinBackoff()), dur(rc.GetMaxBackoff()); rc.GetMinBackoff() != nil && rc.GetMaxBackoff() != nil && minB > maxB {
		return status.Errorf(codes.InvalidArgument, "%s.min_backoff (%v) must not exceed max_backoff (%v)", field, minB, maxB)
	}
	return nil
}

// withQueueDefaults fills unset rate-limit and retry fields as the service does.
func withQueueDefaults(q *cloudtaskspb.Queue) {
	if q.RateLimits == nil {
		q.RateLimits = &cloudtaskspb.RateLimits{}
	}
	rl := q.RateLimits
	if rl.MaxDispatchesPerSecond == 0 {
		rl.MaxDispatchesPerSecond = defaultMaxDispatchesPerSecond
	}
	if rl.MaxConcurrentDispatches == 0 {
		rl.MaxConcurrentDispatches = defaultMaxConcurrent
	}
	rl.MaxBurstSize = burstSize(rl.MaxDispatchesPerSecond)
	if q.RetryConfig == nil {
		q.RetryConfig = &cloudtaskspb.RetryConfig{}
	}
	rc := q.RetryConfig
	if rc.MaxAttempts == 0 {
		rc.MaxAttempts = defaultMaxAttempts
	}
	if rc.MinBackoff == nil {
		rc.MinBackoff = durationpb.New(defaultMinBackoff)
	}
	if rc.MaxBackoff == nil {
		rc.MaxBackoff = durationpb.New(max(defaultMaxBackoff, dur(rc.MinBackoff)))
	}
	if rc.MaxDoublings == 0 {
		rc.MaxDoublings = defaultMaxDoublings
	}
	if rc.MaxRetryDuration == nil {
		rc.MaxRetryDuration = durationpb.New(0)
	}
}

func validateQueueBody(q *cloudtaskspb.Queue) error {
	if q.GetHttpTarget() != nil {
		return status.Error(codes.Unimplemented, "tasksemu: queue-level http_target overrides are not emulated")
	}
	if err := validateRateLimits(q.GetRateLimits()); err != nil {
		return err
	}
	return validateRetryConfig("retry_config", q.GetRetryConfig())
}

// CreateQueue creates a queue in state RUNNING, filling the service's defaults.
func (s *Server) CreateQueue(_ context.Context, req *cloudtaskspb.CreateQueueRequest) (*cloudtaskspb.Queue, error) {
	if err := parseLocation(req.GetParent()); err != nil {
		return nil, err
	}
	in := req.GetQueue()
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "queue is required")
	}
	loc, err := parseQueueName(in.GetName())
	if err != nil {
		return nil, err
	}
	if loc != req.GetParent() {
		return nil, status.Errorf(codes.InvalidArgument, "queue name %q is not in parent %q", in.GetName(), req.GetParent())
	}
	if err := validateQueueBody(in); err != nil {
		return nil, err
	}
	q := proto.Clone(in).(*cloudtaskspb.Queue)
	q.State = cloudtaskspb.Queue_RUNNING
	q.PurgeTime = nil
	withQueueDefaults(q)

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, errStopped
	}
	if _, ok := s.queues[q.Name]; ok {
		return nil, status.Error(codes.AlreadyExists, "Requested entity already exists (queue)")
	}
	s.addQueueLocked(q)
	return proto.Clone(q).(*cloudtaskspb.Queue), nil
}

func (s *Server) addQueueLocked(pb *cloudtaskspb.Queue) {
	q := &queue{
		pb:     pb,
		tasks:  map[string]*task{},
		tokens: float64(pb.RateLimits.MaxBurstSize),
		refill: time.Now(),
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	s.queues[pb.Name] = q
	s.wg.Add(1)
	go s.loop(q)
}

// UpdateQueue updates rate_limits, retry_config and stackdriver_logging_config (all
// set fields when update_mask is empty, else the masked paths), creating the queue
// when it does not exist.
func (s *Server) UpdateQueue(ctx context.Context, req *cloudtaskspb.UpdateQueueRequest) (*cloudtaskspb.Queue, error) {
	in := req.GetQueue()
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "queue is required")
	}
	loc, err := parseQueueName(in.GetName())
	if err != nil {
		return nil, err
	}
	if err := validateQueueBody(in); err != nil {
		return nil, err
	}
	paths := req.GetUpdateMask().GetPaths()
	for _, p := range paths {
		if !strings.HasPrefix(p, "rate_limits") && !strings.HasPrefix(p, "retry_config") && p != "stackdriver_logging_config" && p != "name" {
			return nil, status.Errorf(codes.InvalidArgument, "update_mask path %q is not supported by the emulator", p)
		}
	}
	s.mu.Lock()
	q, ok := s.queues[in.GetName()]
	s.mu.Unlock()
	if !ok {
		return s.CreateQueue(ctx, &cloudtaskspb.CreateQueueRequest{Parent: loc, Queue: in})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queues[in.GetName()] != q {
		return nil, status.Error(codes.Aborted, "queue changed concurrently")
	}
	masked := func(path string) bool {
		if len(paths) == 0 {
			return true
		}
		for _, p := range paths {
			if p == path || strings.HasPrefix(path, p+".") {
				return true
			}
		}
		return false
	}
	next := proto.Clone(q.pb).(*cloudtaskspb.Queue)
	if rl := in.GetRateLimits(); rl != nil || len(paths) > 0 {
		if masked("rate_limits.max_dispatches_per_second") && (len(paths) > 0 || rl.GetMaxDispatchesPerSecond() != 0) {
			next.RateLimits.MaxDispatchesPerSecond = rl.GetMaxDispatchesPerSecond()
		}
		if masked("rate_limits.max_concurrent_dispatches") && (len(paths) > 0 || rl.GetMaxConcurrentDispatches() != 0) {
			next.RateLimits.MaxConcurrentDispatches = rl.GetMaxConcurrentDispatches()
		}
	}
	if rc := in.GetRetryConfig(); rc != nil || len(paths) > 0 {
		nr := next.RetryConfig
		if masked("retry_config.max_attempts") && (len(paths) > 0 || rc.GetMaxAttempts() != 0) {
			nr.MaxAttempts = rc.GetMaxAttempts()
		}
		if masked("retry_config.max_doublings") && (len(paths) > 0 || rc.GetMaxDoublings() != 0) {
			nr.MaxDoublings = rc.GetMaxDoublings()
		}
		if masked("retry_config.min_backoff") && (len(paths) > 0 || rc.GetMinBackoff() != nil) {
			nr.MinBackoff = rc.GetMinBackoff()
		}
		if masked("retry_config.max_backoff") && (len(paths) > 0 || rc.GetMaxBackoff() != nil) {
			nr.MaxBackoff = rc.GetMaxBackoff()
		}
		if masked("retry_config.max_retry_duration") && (len(paths) > 0 || rc.GetMaxRetryDuration() != nil) {
			nr.MaxRetryDuration = rc.GetMaxRetryDuration()
		}
	}
	if masked("stackdriver_logging_config") && (len(paths) > 0 || in.GetStackdriverLoggingConfig() != nil) {
		next.StackdriverLoggingConfig = in.GetStackdriverLoggingConfig()
	}
	withQueueDefaults(next)
	if err := validateQueueBody(next); err != nil {
		return nil, err
	}
	q.pb = next
	q.tokens = min(q.tokens, float64(next.RateLimits.MaxBurstSize))
	q.poke()
	return proto.Clone(next).(*cloudtaskspb.Queue), nil
}

// GetQueue returns a queue.
func (s *Server) GetQueue(_ context.Context, req *cloudtaskspb.GetQueueRequest) (*cloudtaskspb.Queue, error) {
	return s.withQueue(req.GetName(), func(q *queue) {})
}

// withQueue validates name, runs f on the queue under the lock and returns a copy of it.
func (s *Server) withQueue(name string, f func(*queue)) (*cloudtaskspb.Queue, error) {
	if _, err := parseQueueName(name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q, ok := s.queues[name]
	if !ok {
		return nil, errQueueNotFound
	}
	f(q)
	return proto.Clone(q.pb).(*cloudtaskspb.Queue), nil
}

// ListQueues lists the queues of a location in lexicographical order.
func (s *Server) ListQueues(_ context.Context, req *cloudtaskspb.ListQueuesRequest) (*cloudtaskspb.ListQueuesResponse, error) {
	if err := parseLocation(req.GetParent()); err != nil {
		return nil, err
	}
	if req.GetFilter() != "" {
		return nil, status.Error(codes.Unimplemented, "tasksemu: ListQueues filter is not emulated")
	}
	start, size, err := page(req.GetPageToken(), req.GetPageSize(), maxQueuePageSize)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	var names []string
	for name := range s.queues {
		if strings.HasPrefix(name, req.GetParent()+"/queues/") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	resp := &cloudtaskspb.ListQueuesResponse{}
	for i := start; i < len(names) && i < start+size; i++ {
		resp.Queues = append(resp.Queues, proto.Clone(s.queues[names[i]].pb).(*cloudtaskspb.Queue))
	}
	s.mu.Unlock()
	if start+size < len(names) {
		resp.NextPageToken = strconv.Itoa(start + size)
	}
	return resp, nil
}

func page(token string, size, maxSize int32) (start, n int, err error) {
	if size < 0 {
		return 0, 0, status.Error(codes.InvalidArgument, "page_size must not be negative")
	}
	if size == 0 || size > maxSize {
		size = maxSize
	}
	if token != "" {
		start, err = strconv.Atoi(token)
		if err != nil || start < 0 {
			return 0, 0, status.Errorf(codes.InvalidArgument, "invalid page_token %q", token)
		}
	}
	return start, int(size), nil
}

// DeleteQueue deletes a queue and its tasks; in-flight dispatches finish unobserved.
func (s *Server) DeleteQueue(_ context.Context, req *cloudtaskspb.DeleteQueueRequest) (*emptypb.Empty, error) {
	_, err := s.withQueue(req.GetName(), func(q *queue) {
		delete(s.queues, q.pb.Name)
		close(q.done)
	})
	if err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// PurgeQueue deletes every task of the queue (their names stay reserved for the dedup window).
func (s *Server) PurgeQueue(_ context.Context, req *cloudtaskspb.PurgeQueueRequest) (*cloudtaskspb.Queue, error) {
	return s.withQueue(req.GetName(), func(q *queue) {
		now := time.Now()
		for _, t := range q.tasks {
			s.forget(q, t, now)
		}
		q.pb.PurgeTime = timestamp(now.Truncate(time.Microsecond))
	})
}

// PauseQueue stops dispatching from the queue; tasks can still be added.
func (s *Server) PauseQueue(_ context.Context, req *cloudtaskspb.PauseQueueRequest) (*cloudtaskspb.Queue, error) {
	return s.withQueue(req.GetName(), func(q *queue) { q.pb.State = cloudtaskspb.Queue_PAUSED })
}

// ResumeQueue sets the queue RUNNING again.
func (s *Server) ResumeQueue(_ context.Context, req *cloudtaskspb.ResumeQueueRequest) (*cloudtaskspb.Queue, error) {
	return s.withQueue(req.GetName(), func(q *queue) {
		q.pb.State = cloudtaskspb.Queue_RUNNING
		q.poke()
	})
}

// ---- tasks ----

func bodyAllowed(m cloudtaskspb.HttpMethod) bool {
	return m == cloudtaskspb.HttpMethod_POST || m == cloudtaskspb.HttpMethod_PUT || m == cloudtaskspb.HttpMethod_PATCH
}

func (s *Server) validateHTTPRequest(hr *cloudtaskspb.HttpRequest) error {
	u, err := url.Parse(hr.GetUrl())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return status.Errorf(codes.InvalidArgument, "HttpRequest.url must begin with \"http://\" or \"https://\" and name a host, got %q", truncate(hr.GetUrl(), 200))
	}
	if len(hr.GetUrl()) > maxURLLen {
		return status.Errorf(codes.InvalidArgument, "HttpRequest.url is longer than %d characters", maxURLLen)
	}
	if _, ok := cloudtaskspb.HttpMethod_name[int32(hr.GetHttpMethod())]; !ok {
		return status.Errorf(codes.InvalidArgument, "unknown HttpRequest.http_method %d", hr.GetHttpMethod())
	}
	m := hr.GetHttpMethod()
	if m == cloudtaskspb.HttpMethod_HTTP_METHOD_UNSPECIFIED {
		m = cloudtaskspb.HttpMethod_POST
	}
	if len(hr.GetBody()) > 0 && !bodyAllowed(m) {
		return status.Errorf(codes.InvalidArgument, "HttpRequest.body is only allowed with POST, PUT or PATCH, not %v", m)
	}
	size := 0
	for k, v := range hr.GetHeaders() {
		size += len(k) + len(v)
		if k == "" || strings.ContainsAny(k, " :\r\n") || strings.ContainsAny(v, "\r\n") {
			return status.Errorf(codes.InvalidArgument, "invalid HTTP header %q", truncate(k, 100))
		}
	}
	if size >= maxHeadersBytes {
		return status.Error(codes.InvalidArgument, "HttpRequest.headers must be smaller than 80KB")
	}
	return nil
}

func randomTaskID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatUint(binary.BigEndian.Uint64(b[:])>>1, 10)
}

// CreateTask adds an HTTP task to a queue. See the package documentation for the
// validation and de-duplication rules.
func (s *Server) CreateTask(_ context.Context, req *cloudtaskspb.CreateTaskRequest) (*cloudtaskspb.Task, error) {
	if _, err := parseQueueName(req.GetParent()); err != nil {
		return nil, err
	}
	in := req.GetTask()
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "task is required")
	}
	if in.GetAppEngineHttpRequest() != nil {
		return nil, status.Error(codes.Unimplemented, "tasksemu: App Engine tasks are not emulated; use http_request")
	}
	hr := in.GetHttpRequest()
	if hr == nil {
		return nil, status.Error(codes.InvalidArgument, "task.http_request is required")
	}
	if err := s.validateHTTPRequest(hr); err != nil {
		return nil, err
	}
	if in.GetName() != "" {
		parent, err := parseTaskName(in.GetName())
		if err != nil {
			return nil, err
		}
		if parent != req.GetParent() {
			return nil, status.Errorf(codes.InvalidArgument, "task name %q is not in queue %q", truncate(in.GetName(), 600), req.GetParent())
		}
	}
	now := time.Now()
	sched := now
	if ts := in.GetScheduleTime(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "invalid schedule_time: %v", err)
		}
		if at := ts.AsTime(); at.After(now.Add(MaxScheduleAhead)) {
			return nil, status.Errorf(codes.InvalidArgument,
				"The task's schedule_time (%s) must be no later than 30 days from now.", at.UTC().Format(time.RFC3339))
		} else if at.After(now) {
			sched = at
		}
	}
	sched = ceilMicro(sched)
	deadline := DefaultDispatchDeadline
	if d := in.GetDispatchDeadline(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "invalid dispatch_deadline: %v", err)
		}
		deadline = d.AsDuration().Truncate(time.Millisecond)
		if deadline < s.opts.MinDispatchDeadline || deadline > DefaultMaxDispatchDeadline {
			return nil, status.Errorf(codes.InvalidArgument, "dispatch_deadline must be in the interval [%v, %v], got %v",
				s.opts.MinDispatchDeadline, DefaultMaxDispatchDeadline, deadline)
		}
	}
	if err := validateRetryConfig("task.retry_config", in.GetRetryConfig()); err != nil {
		return nil, err
	}
	if size := proto.Size(in); size > s.opts.MaxTaskSize {
		return nil, status.Errorf(codes.InvalidArgument, "Task size too large: %d bytes; the maximum task size is %d bytes", size, s.opts.MaxTaskSize)
	}

	stored := &cloudtaskspb.HttpRequest{
		Url:        hr.GetUrl(),
		HttpMethod: hr.GetHttpMethod(),
		Headers:    maps(hr.GetHeaders()),
		Body:       slices.Clone(hr.GetBody()),
	}
	if stored.HttpMethod == cloudtaskspb.HttpMethod_HTTP_METHOD_UNSPECIFIED {
		stored.HttpMethod = cloudtaskspb.HttpMethod_POST
	}
	switch a := hr.GetAuthorizationHeader().(type) {
	case *cloudtaskspb.HttpRequest_OidcToken:
		stored.AuthorizationHeader = &cloudtaskspb.HttpRequest_OidcToken{OidcToken: proto.Clone(a.OidcToken).(*cloudtaskspb.OidcToken)}
	case *cloudtaskspb.HttpRequest_OauthToken:
		stored.AuthorizationHeader = &cloudtaskspb.HttpRequest_OauthToken{OauthToken: proto.Clone(a.OauthToken).(*cloudtaskspb.OAuthToken)}
	}
	pb := &cloudtaskspb.Task{
		Name:             in.GetName(),
		MessageType:      &cloudtaskspb.Task_HttpRequest{HttpRequest: stored},
		ScheduleTime:     timestamp(sched),
		CreateTime:       timestamp(now.Truncate(time.Second)),
		DispatchDeadline: durationpb.New(deadline),
	}
	if rc := in.GetRetryConfig(); rc != nil {
		pb.RetryConfig = proto.Clone(rc).(*cloudtaskspb.RetryConfig)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, errStopped
	}
	q, ok := s.queues[req.GetParent()]
	if !ok {
		return nil, errQueueNotFound
	}
	if s.creates++; s.creates%4096 == 0 {
		s.sweepTombstones(now)
	}
	if pb.Name == "" {
		for pb.Name == "" || s.nameTaken(q, pb.Name, now) {
			pb.Name = req.GetParent() + "/tasks/" + randomTaskID()
		}
	} else if s.nameTaken(q, pb.Name, now) {
		s.stats.AlreadyExists++
		return nil, status.Error(codes.AlreadyExists, "Requested entity already exists (task name exists or was used recently)")
	}
	t := &task{pb: pb, index: -1}
	s.stats.Created++
	q.tasks[pb.Name] = t
	q.schedule(t, sched)
	return view(pb, req.GetResponseView()), nil
}

func maps(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// view returns a copy of t in the requested view: BASIC (the default) omits the body.
func view(t *cloudtaskspb.Task, v cloudtaskspb.Task_View) *cloudtaskspb.Task {
	out := proto.Clone(t).(*cloudtaskspb.Task)
	if v != cloudtaskspb.Task_FULL {
		v = cloudtaskspb.Task_BASIC
		if hr := out.GetHttpRequest(); hr != nil {
			hr.Body = nil
		}
	}
	out.View = v
	return out
}

// withTask validates name, finds the task and runs f on it under the lock.
func (s *Server) withTask(name string, f func(q *queue, t *task) error) error {
	qname, err := parseTaskName(name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q, ok := s.queues[qname]
	if !ok {
		return errQueueNotFound
	}
	t, ok := q.tasks[name]
	if !ok {
		return errTaskNotFound
	}
	return f(q, t)
}

// GetTask returns a task that has not yet completed, failed permanently or been deleted.
func (s *Server) GetTask(_ context.Context, req *cloudtaskspb.GetTaskRequest) (*cloudtaskspb.Task, error) {
	var out *cloudtaskspb.Task
	err := s.withTask(req.GetName(), func(_ *queue, t *task) error {
		out = view(t.pb, req.GetResponseView())
		return nil
	})
	return out, err
}

// DeleteTask deletes a task; its name stays reserved for the dedup window.
func (s *Server) DeleteTask(_ context.Context, req *cloudtaskspb.DeleteTaskRequest) (*emptypb.Empty, error) {
	err := s.withTask(req.GetName(), func(q *queue, t *task) error {
		s.forget(q, t, time.Now())
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// RunTask dispatches a task now, ignoring the queue's state and rate limits.
func (s *Server) RunTask(_ context.Context, req *cloudtaskspb.RunTaskRequest) (*cloudtaskspb.Task, error) {
	var out *cloudtaskspb.Task
	err := s.withTask(req.GetName(), func(q *queue, t *task) error {
		if s.stopped {
			return errStopped
		}
		q.unpend(t)
		a := s.beginLocked(q, t, time.Now(), true)
		out = view(t.pb, req.GetResponseView())
		go s.send(a)
		return nil
	})
	return out, err
}

// ListTasks lists a queue's tasks ordered by schedule time.
func (s *Server) ListTasks(_ context.Context, req *cloudtaskspb.ListTasksRequest) (*cloudtaskspb.ListTasksResponse, error) {
	if _, err := parseQueueName(req.GetParent()); err != nil {
		return nil, err
	}
	start, size, err := page(req.GetPageToken(), req.GetPageSize(), maxTaskPageSize)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	q, ok := s.queues[req.GetParent()]
	if !ok {
		return nil, errQueueNotFound
	}
	all := make([]*task, 0, len(q.tasks))
	for _, t := range q.tasks {
		all = append(all, t)
	}
	slices.SortFunc(all, func(a, b *task) int {
		if c := a.sched.Compare(b.sched); c != 0 {
			return c
		}
		return strings.Compare(a.pb.Name, b.pb.Name)
	})
	resp := &cloudtaskspb.ListTasksResponse{}
	for i := start; i < len(all) && i < start+size; i++ {
		resp.Tasks = append(resp.Tasks, view(all[i].pb, req.GetResponseView()))
	}
	if start+size < len(all) {
		resp.NextPageToken = strconv.Itoa(start + size)
	}
	return resp, nil
}
