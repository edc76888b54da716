// Package tasksemu is a local emulator of Google Cloud Tasks (API v2) for HTTP targets.
//
// It implements cloudtaskspb.CloudTasksServer over gRPC, so programs use the real
// cloud.google.com/go/cloudtasks client against it:
//
//	emu := tasksemu.New(tasksemu.Options{})
//	addr, err := emu.Start()
//	defer emu.Stop()
//	client, err := cloudtasks.NewClient(ctx, option.WithEndpoint(addr), option.WithoutAuthentication(),
//		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
//
// Tasks are POSTed (or sent with the task's method) to their URL at schedule_time and
// never before, under the queue's rate limits and retry configuration, with the
// X-CloudTasks-* headers and, when the task asks for one, an OIDC token signed by a
// key local to the emulator (not by Google: verify it with Server.VerifyOIDCToken,
// never with Google's certificates). See README.md, "Cloud Tasks emulator", for what
// is and is not emulated.
package tasksemu

import (
	"container/heap"
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"cloud.google.com/go/cloudtasks/apiv2/cloudtaskspb"
	"google.golang.org/grpc"
)

// Defaults of the real service, used when Options leave a field zero.
const (
	// DefaultDedupWindow is how long the name of a task that ran or was deleted stays
	// reserved (CreateTask with it answers ALREADY_EXISTS).
	DefaultDedupWindow = time.Hour
	// DefaultMaxTaskSize is the largest task accepted, in bytes of its encoded proto (1 MB).
	DefaultMaxTaskSize = 1 << 20
	// DefaultMinDispatchDeadline and DefaultMaxDispatchDeadline bound an HTTP task's
	// dispatch_deadline; DefaultDispatchDeadline is used when the task sets none.
	DefaultMinDispatchDeadline = 15 * time.Second
	DefaultMaxDispatchDeadline = 30 * time.Minute
	DefaultDispatchDeadline    = 10 * time.Minute
	// MaxScheduleAhead is how far in the future schedule_time may be (30 days).
	MaxScheduleAhead = 30 * 24 * time.Hour
)

// Options configures a Server. The zero value gives the real service's behaviour.
type Options struct {
	// Addr is the address Start listens on; default "127.0.0.1:0" (a free port).
	Addr string
	// DedupWindow: see DefaultDedupWindow.
	DedupWindow time.Duration
	// MaxTaskSize: see DefaultMaxTaskSize.
	MaxTaskSize int
	// MinDispatchDeadline lowers the real 15 s floor of dispatch_deadline, so tests can
	// exercise deadlines quickly. Default DefaultMinDispatchDeadline.
	MinDispatchDeadline time.Duration
	// HTTPClient sends the dispatches; default a client with its own transport. Its
	// Timeout should be zero: the task's dispatch_deadline is applied per request.
	HTTPClient *http.Client
	// SigningKey signs OIDC tokens; default an RSA key generated once per process.
	SigningKey *rsa.PrivateKey
	// Logger receives one debug line per dispatch and warnings; default slog.Default().
	// Task bodies are never logged.
	Logger *slog.Logger
	// DispatchLogLimit bounds the attempts Dispatches keeps (the oldest are dropped);
	// default DefaultDispatchLogLimit. Stats counts every attempt regardless.
	DispatchLogLimit int
}

// DefaultDispatchLogLimit is the default of Options.DispatchLogLimit.
const DefaultDispatchLogLimit = 200_000

// Stats are running totals over the emulator's life, across all queues.
type Stats struct {
	Created       int // tasks created by CreateTask
	AlreadyExists int // CreateTask calls answered ALREADY_EXISTS (de-duplicated)
	Attempts      int // dispatch attempts finished (including RunTask's)
	Succeeded     int // tasks completed by a 2xx response
	Exhausted     int // tasks deleted because their retries ran out
}

// Dispatch is one recorded attempt, for tests and the local stack.
type Dispatch struct {
	Queue        string    // full queue name
	Task         string    // full task name
	Attempt      int       // 1 for the first dispatch of the task, then 2, 3, ...
	ScheduleTime time.Time // the schedule_time the attempt was due at
	DispatchTime time.Time // when the emulator started the HTTP request
	ResponseTime time.Time // when the response (or the failure) came back
	StatusCode   int       // HTTP status; 0 when no response (deadline, connection error)
	Err          string    // transport error or "DEADLINE_EXCEEDED"; empty when a response came
	Forced       bool      // dispatched by RunTask
}

// Server is the emulator. It is safe for concurrent use. Create it with New.
type Server struct {
	cloudtaskspb.UnimplementedCloudTasksServer

	opts   Options
	log    *slog.Logger
	httpc  *http.Client
	key    func() (*rsa.PrivateKey, error)
	ctx    context.Context // cancelled by Stop: aborts waits and in-flight dispatches
	cancel context.CancelFunc
	wg     sync.WaitGroup // queue loops and in-flight dispatches

	grpcOnce sync.Once
	grpc     *grpc.Server

	mu         sync.Mutex
	queues     map[string]*queue    // by full name
	tombstones map[string]time.Time // task name → when it may be reused
	creates    int                  // CreateTask calls, to sweep tombstones now and then
	dispatches []Dispatch
	stats      Stats
	stopped    bool
}

// queue is the state of one queue; guarded by Server.mu.
type queue struct {
	pb      *cloudtaskspb.Queue
	tasks   map[string]*task
	pending taskHeap // tasks waiting for their schedule_time (not in flight)
	running int      // dispatches in flight
	tokens  float64  // token bucket for max_dispatches_per_second
	refill  time.Time
	seq     uint64
	wake    chan struct{} // buffered(1): state changed, re-evaluate
	done    chan struct{} // closed when the queue is deleted
}

// task is one task; guarded by Server.mu.
type task struct {
	pb        *cloudtaskspb.Task // stored task; ScheduleTime/counters updated in place
	sched     time.Time          // == pb.ScheduleTime
	seq       uint64             // FIFO among equal schedule times
	index     int                // position in queue.pending, -1 when not pending
	inflight  int
	firstTry  time.Time // first dispatch, for max_retry_duration
	execs     int       // responses other than 5xx (X-CloudTasks-TaskExecutionCount)
	prevCode  int       // previous attempt's HTTP status (X-CloudTasks-TaskPreviousResponse)
	retryHint time.Duration
}

// New returns a Server with no queues. Call Serve or Start to accept RPCs.
func New(opts Options) *Server {
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = DefaultDedupWindow
	}
	if opts.MaxTaskSize <= 0 {
		opts.MaxTaskSize = DefaultMaxTaskSize
	}
	if opts.MinDispatchDeadline <= 0 {
		opts.MinDispatchDeadline = DefaultMinDispatchDeadline
	}
	if opts.DispatchLogLimit <= 0 {
		opts.DispatchLogLimit = DefaultDispatchLogLimit
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	s := &Server{
		opts:       opts,
		log:        opts.Logger,
		httpc:      opts.HTTPClient,
		queues:     map[string]*queue{},
		tombstones: map[string]time.Time{},
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.httpc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 256
		s.httpc = &http.Client{Transport: tr}
	}
	if opts.SigningKey != nil {
		s.key = func() (*rsa.PrivateKey, error) { return opts.SigningKey, nil }
	} else {
		s.key = processKey
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

func (s *Server) grpcServer() *grpc.Server {
	s.grpcOnce.Do(func() {
		s.grpc = grpc.NewServer()
		cloudtaskspb.RegisterCloudTasksServer(s.grpc, s)
	})
	return s.grpc
}

// Serve answers Cloud Tasks gRPC calls on lis until Stop; it returns nil after Stop.
func (s *Server) Serve(lis net.Listener) error {
	err := s.grpcServer().Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tasksemu serve: %w", err)
	}
	return nil
}

// Start listens on Options.Addr, serves in the background and returns the address
// ("host:port") to give the client's option.WithEndpoint.
func (s *Server) Start() (string, error) {
	lis, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return "", fmt.Errorf("tasksemu listen: %w", err)
	}
	go func() {
		if err := s.Serve(lis); err != nil {
			s.log.Warn("tasksemu: serve stopped", "error", err)
		}
	}()
	return lis.Addr().String(), nil
}

// Stop stops serving, cancels in-flight dispatches and waits for the emulator's
// goroutines to end. Tasks not yet dispatched are dropped. Stop is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	already := s.stopped
	s.stopped = true
	s.mu.Unlock()
	if already {
		return
	}
	s.grpcServer().Stop()
	s.cancel()
	s.wg.Wait()
}

// Stats returns the running totals.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// record appends d to the dispatch log, dropping the oldest half when it is full.
func (s *Server) record(d Dispatch) {
	if len(s.dispatches) >= s.opts.DispatchLogLimit {
		keep := s.opts.DispatchLogLimit / 2
		s.dispatches = append(s.dispatches[:0:0], s.dispatches[len(s.dispatches)-keep:]...)
	}
	s.dispatches = append(s.dispatches, d)
	s.stats.Attempts++
}

// Dispatches returns a copy of the attempts recorded so far (at most
// Options.DispatchLogLimit, the most recent), in the order the attempts finished.
func (s *Server) Dispatches() []Dispatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Dispatch(nil), s.dispatches...)
}

// Pending returns how many tasks the queue holds (waiting or in flight), or -1 when
// the queue does not exist. Meant for tests waiting for a queue to drain.
func (s *Server) Pending(queueName string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, ok := s.queues[queueName]
	if !ok {
		return -1
	}
	return len(q.tasks)
}

// poke wakes the queue's dispatch loop; callers hold s.mu or not, it never blocks.
func (q *queue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// taskHeap orders pending tasks by schedule time, then creation order.
type taskHeap []*task

func (h taskHeap) Len() int { return len(h) }
func (h taskHeap) Less(i, j int) bool {
	if !h[i].sched.Equal(h[j].sched) {
		return h[i].sched.Before(h[j].sched)
	}
	return h[i].seq < h[j].seq
}
func (h taskHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *taskHeap) Push(x any) {
	t := x.(*task)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *taskHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}

// schedule puts t in the pending heap at time at (or moves it there).
func (q *queue) schedule(t *task, at time.Time) {
	t.sched = at
	t.pb.ScheduleTime = timestamp(at)
	if t.index >= 0 {
		heap.Fix(&q.pending, t.index)
	} else {
		q.seq++
		t.seq = q.seq
		heap.Push(&q.pending, t)
	}
	q.poke()
}

// unpend removes t from the pending heap if it is there.
func (q *queue) unpend(t *task) {
	if t.index >= 0 {
		heap.Remove(&q.pending, t.index)
	}
}

// forget removes t from the queue and reserves its name for the dedup window.
func (s *Server) forget(q *queue, t *task, now time.Time) {
	q.unpend(t)
	delete(q.tasks, t.pb.Name)
	s.tombstones[t.pb.Name] = now.Add(s.opts.DedupWindow)
}

// nameTaken reports whether a task name exists or is within its dedup window.
func (s *Server) nameTaken(q *queue, name string, now time.Time) bool {
	if _, ok := q.tasks[name]; ok {
		return true
	}
	until, ok := s.tombstones[name]
	if !ok {
		return false
	}
	if now.Before(until) {
		return true
	}
	delete(s.tombstones, name)
	return false
}

func (s *Server) sweepTombstones(now time.Time) {
	for name, until := range s.tombstones {
		if !now.Before(until) {
			delete(s.tombstones, name)
		}
	}
}
