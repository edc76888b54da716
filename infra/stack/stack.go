// Package stack runs all of gemq on one machine, in one process, wired the
// way it is deployed: the real Ingest and Worker functions served by the
// functions framework, Redis, Pub/Sub (pstest or an emulator) with a push
// loop acting as the push subscription (infra/pushsub), the Cloud Tasks
// emulator (infra/tasksemu) through the real client, and the Gemini
// stand-in (infra/geminisim), or the real Gemini API / Vertex AI.
//
// It is what `gemq dev`, `gemq run` (`make run`) and the end-to-end tests
// start. Nothing is short-circuited: jobs go in through ingest's HTTP API,
// tasks travel as Pub/Sub messages and Cloud Tasks, and the functions read
// their configuration from the environment variables Terraform sets in the
// cloud (see CONTRACTS / README "Configuration").
//
// One Stack per process: the functions build their clients once per process
// from the environment, and functions-framework servers cannot be stopped,
// so Start refuses a second Stack while one is running, and a later Stack in
// the same process must use the same configuration as the first.
package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/cloudtasks/apiv2"
	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gemq-dev/gemq/infra/pushsub"
	"github.com/gemq-dev/gemq/infra/storagesub"
	"github.com/gemq-dev/gemq/infra/tasksemu"
	"github.com/gemq-dev/gemq/internal/config"
	"github.com/gemq-dev/gemq/internal/queue"
)

// Resource names the stack creates (ids in Options.Project).
const (
	TasksTopic             = "gemq-tasks"
	ResultsTopic           = "gemq-results"
	DeadLetterTopic        = "gemq-dead-letter"
	PushSubscription       = "gemq-tasks-push"
	DeadLetterSubscription = "gemq-dead-letter-sub"
	ResultsSubscription    = "gemq-results-sub"
	QueueLocation          = "us-central1"
	QueueID                = "gemq-deferred"
	DefaultProject         = "gemq-local"
	DefaultModel           = "gemini-2.5-flash"
	// LocalAPIKey is the API key the stand-in accepts and the worker sends.
	LocalAPIKey = "gemq-local-key"
	// DefaultClaimLead is the stack's GEMQ_CLAIM_LEAD (see Options.ClaimLead).
	DefaultClaimLead = time.Second
)

// Options configures a Stack. Zero values give a stack on free ports with
// the Gemini stand-in at small real-time limits.
type Options struct {
	// Getenv reads the user's environment (default os.Getenv): REDIS_ADDR
	// (and REDIS_PASSWORD) to use an existing Redis, PUBSUB_EMULATOR_HOST to
	// use a running Pub/Sub emulator, GEMINI_API_KEY or
	// GOOGLE_GENAI_USE_VERTEXAI=true (+ GOOGLE_CLOUD_PROJECT,
	// GOOGLE_CLOUD_LOCATION) for the real Gemini, GEMQ_QUOTAS or
	// GEMQ_QUOTAS_FILE for its quotas.
	Getenv func(string) string
	// Dir holds the log file and Redis' working directory (default a new
	// temporary directory, removed by Close when the stack made it).
	Dir string
	// Log receives the stack's own log lines and redis-server's output
	// (default Dir/gemq.log). Without Log the functions log to Dir/gemq.log
	// too (GEMQ_LOG_FILE); with it they log to standard output, as in the
	// cloud, unless Env sets GEMQ_LOG_FILE.
	Log io.Writer

	// Project is the Google Cloud project id the emulators use (default
	// "gemq-local"; the real project when using Vertex AI).
	Project string
	// Model is the model the stand-in serves and the quota covers (default
	// gemini-2.5-flash).
	Model string

	// IngestAddr, WorkerAddr, PubSubAddr, TasksAddr, GeminiAddr are the
	// listen addresses (default "127.0.0.1:0": a free port each).
	IngestAddr, WorkerAddr, PubSubAddr, TasksAddr, GeminiAddr string

	// Minute is how long a quota "minute" lasts, for the stand-in and the
	// limiter alike (default 1m; tests use e.g. 2s). Ignored with the real
	// Gemini.
	Minute time.Duration
	// RPM, TPM and RPD are the stand-in's limits: requests and input tokens
	// per Minute, requests per Pacific day (defaults 60, 100000, 100000).
	RPM, TPM, RPD int64
	// Safety is the limiter's safety factor (default 0.95).
	Safety float64
	// Guard is the limiter's guard time in real time (GEMQ_QUOTAS "guard");
	// 0 leaves the limiter's default (1s, unscaled).
	Guard time.Duration
	// Gemini configures the stand-in's latency and faults.
	Gemini GeminiOptions

	// GeminiTimeout is GEMQ_GEMINI_TIMEOUT (default 120s, scaled by Minute).
	GeminiTimeout time.Duration
	// MaxAttempts is GEMQ_MAX_ATTEMPTS (default 5).
	MaxAttempts int
	// RetryBase and RetryMax are GEMQ_RETRY_BASE and GEMQ_RETRY_MAX, the
	// worker's back-off after a transient Gemini failure (default 10s and
	// 10m, scaled by Minute). The back-off after a 429 without details
	// (GEMQ_CAPACITY_BACKOFF_BASE, _MAX: 5s and 5m) is scaled by Minute too;
	// So is the seed policy's re-queue delay (GEMQ_SEED_BACKOFF_BASE, _MAX:
	// 1s and 1m). Env overrides any of them.
	RetryBase, RetryMax time.Duration
	// ClaimLead is GEMQ_CLAIM_LEAD, how long before its reserved slot a
	// deferred task's Cloud Task is due (a callback that early waits for
	// the slot in the worker). Default DefaultClaimLead, in real time, not
	// scaled by Minute: what it absorbs here is the emulator's dispatch
	// and a loaded machine's scheduling jitter (hundreds of ms), which do
	// not shrink with the quota minute.
	ClaimLead time.Duration
	// Env adds or overrides environment variables of the functions.
	Env map[string]string
	// ResultsMaxDuration is the max_duration of the results topic's Cloud
	// Storage subscription (infra/storagesub), in stack time: how long a
	// results file stays open. Default 5 quota minutes, Terraform's 300s
	// scaled by Minute; at least one quota minute, as Pub/Sub requires.
	// Answers leave Redis three of them after their result was published
	// (GEMQ_RESULT_BODY_GRACE's default).
	ResultsMaxDuration time.Duration

	// Push configures the push subscription loop.
	Push PushOptions
}

// PushOptions configures the push loop standing in for the push subscription.
type PushOptions struct {
	// Concurrency bounds deliveries in flight (default 32).
	Concurrency int
	// MinBackoff, MaxBackoff are the subscription's retry policy (default
	// 10s and 600s as Pub/Sub's, scaled by Minute).
	MinBackoff, MaxBackoff time.Duration
	// MaxDeliveryAttempts before dead-lettering (default 5).
	MaxDeliveryAttempts int
	// DuplicateDelivery delivers every message twice.
	DuplicateDelivery bool
}

// Stack is a running local gemq. Its exported fields are read-only.
type Stack struct {
	// IngestURL is the ingest function's URL (the API is under /v1/jobs).
	IngestURL string
	// WorkerURL is the worker function's URL (push loop and Cloud Tasks target).
	WorkerURL string
	// RedisAddr, PubSubHost (PUBSUB_EMULATOR_HOST), TasksEndpoint
	// (GEMQ_CLOUDTASKS_ENDPOINT), GeminiURL (empty: real Gemini) and
	// StorageHost (STORAGE_EMULATOR_HOST, the Cloud Storage stand-in
	// holding the results files) locate the services.
	RedisAddr, PubSubHost, TasksEndpoint, GeminiURL, StorageHost string
	// ResultsBucket is the bucket the results files are written to.
	ResultsBucket string
	// Project, Model and QueuePath name what the stack created.
	Project, Model, QueuePath string
	// LogPath is the log file (empty when Options.Log was given).
	LogPath string
	// Env is the environment the functions run with (secrets included:
	// do not print it whole).
	Env map[string]string
	// Quotas is the GEMQ_QUOTAS JSON the limiter enforces (the file's
	// content when the functions read GEMQ_QUOTAS_FILE).
	Quotas string
	// Limits are the quota limits per minute, for reports.
	Limits Limits
	// Parts says where each service comes from: started here, or taken
	// from the user's environment (in the order Pub/Sub, Redis, Cloud
	// Tasks, Gemini).
	Parts []Part
	// Notes are things the user should know about their environment that
	// did not stop the stack (e.g. a quota variable the stand-in ignores).
	Notes []string

	opts    Options
	log     *slog.Logger
	logFile *os.File
	tmpDir  string

	redis    *redisServer
	results  *storagesub.Local
	pstest   *pstest.Server
	psClient *pubsub.Client
	tasks    *tasksemu.Server
	ctClient *cloudtasks.Client
	gemini   *geminiSide
	ingest   *front
	worker   *front
	pusher   *pushsub.Pusher
	events   *events

	pushCancel context.CancelFunc
	pushDone   chan error
	closeOnce  sync.Once
	closeErr   error
	// ownPushSub: the stack created the push subscription on an outside
	// Pub/Sub, and Close deletes it so that the next stack can use it.
	ownPushSub bool
}

// Part is where one service of the stack comes from.
type Part struct {
	// Name is "Pub/Sub", "Redis", "Cloud Tasks" or "Gemini".
	Name string
	// Local is true when the stack started it (in this process, or as a
	// child process that dies with it).
	Local bool
	// Where describes it: an address, and what runs there.
	Where string
	// Var is the environment variable it was taken from ("" when Local).
	Var string
}

// setByStack holds the variables Start set in this process' environment
// (for the functions, which read it), with their values, so that a later
// Start reading os.Getenv does not take its predecessor's Pub/Sub, Redis or
// local API key for the user's.
var (
	setMu      sync.Mutex
	setByStack = map[string]string{}
)

// userEnv is getenv without the values a Stack set itself.
func userEnv(getenv func(string) string) func(string) string {
	return func(k string) string {
		v := getenv(k)
		setMu.Lock()
		defer setMu.Unlock()
		if own, ok := setByStack[k]; ok && own == v {
			return ""
		}
		return v
	}
}

func setenv(k, v string) {
	setMu.Lock()
	defer setMu.Unlock()
	if v == "" {
		os.Unsetenv(k)
		delete(setByStack, k)
		return
	}
	os.Setenv(k, v)
	setByStack[k] = v
}

// Limits are the quota the stack runs under, per quota minute.
type Limits struct {
	RPM, TPM, RPD int64
	Minute        time.Duration
	Safety        float64
}

var live atomic.Bool

// Start starts every part of the stack and returns when ingest and the
// worker answer. Close it to stop. On error, whatever was started is stopped.
//
// Everything the user configured is checked first, before anything is
// started: the quota variables (as the functions read them), fixed listen
// ports (a *ListenError), and the outside services the environment names
// (an *EnvError naming the variable). The functions' whole configuration
// is validated before the push loop starts.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	if !live.CompareAndSwap(false, true) {
		return nil, errors.New("stack: another Stack is running in this process")
	}
	s := &Stack{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := s.start(ctx, opts); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Stack) start(ctx context.Context, opts Options) error {
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	opts.Getenv = userEnv(opts.Getenv)
	if vertex := strings.EqualFold(opts.Getenv("GOOGLE_GENAI_USE_VERTEXAI"), "true"); vertex || opts.Getenv("GEMINI_API_KEY") != "" {
		// The real Gemini keeps real time; Vertex AI needs the real project.
		opts.Minute = time.Minute
		if p := opts.Getenv("GOOGLE_CLOUD_PROJECT"); vertex && opts.Project == "" && p != "" {
			opts.Project = p
		}
	}
	opts = withDefaults(opts)
	s.opts = opts
	getenv := opts.Getenv
	s.Project, s.Model = opts.Project, opts.Model
	s.Limits = Limits{RPM: opts.RPM, TPM: opts.TPM, RPD: opts.RPD, Minute: opts.Minute, Safety: opts.Safety}

	// Files and logs.
	if opts.Dir == "" {
		dir, err := os.MkdirTemp("", "gemq-stack-")
		if err != nil {
			return fmt.Errorf("stack: temp dir: %w", err)
		}
		opts.Dir, s.tmpDir = dir, dir
	}
	logw := opts.Log
	if logw == nil {
		s.LogPath = filepath.Join(opts.Dir, "gemq.log")
		f, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("stack: log file: %w", err)
		}
		s.logFile, logw = f, f
	}
	s.log = slog.New(slog.NewJSONHandler(logw, &slog.HandlerOptions{Level: slog.LevelInfo})).With("component", "stack")
	// go-redis reports dial failures on its own logger (stderr by default):
	// they belong in the log file, the error returned says what failed.
	redisLog.Store(s.log)
	redisLoggerOnce.Do(func() { redis.SetLogger(redisLogger{}) })

	// The user's configuration, before anything starts.
	gem, err := planGemini(opts)
	if err != nil {
		return err
	}
	s.Notes = append(s.Notes, gem.notes...)
	extPubSub, extTasks, extRedis := getenv("PUBSUB_EMULATOR_HOST"), getenv("GEMQ_CLOUDTASKS_ENDPOINT"), getenv("REDIS_ADDR")
	listens := []struct{ part, option, addr string }{
		{"ingest", "IngestAddr", opts.IngestAddr},
		{"worker", "WorkerAddr", opts.WorkerAddr},
	}
	if extPubSub == "" {
		listens = append(listens, struct{ part, option, addr string }{"Pub/Sub (pstest)", "PubSubAddr", opts.PubSubAddr})
	}
	if extTasks == "" {
		listens = append(listens, struct{ part, option, addr string }{"Cloud Tasks emulator", "TasksAddr", opts.TasksAddr})
	}
	if gem.real == "" {
		listens = append(listens, struct{ part, option, addr string }{"Gemini stand-in", "GeminiAddr", opts.GeminiAddr})
	}
	for _, l := range listens {
		if err := checkListen(l.part, l.option, l.addr); err != nil {
			return err
		}
	}
	if extPubSub != "" {
		if err := dialCheck("PUBSUB_EMULATOR_HOST", extPubSub, "start that Pub/Sub emulator, or unset PUBSUB_EMULATOR_HOST so that gemq starts its own (pstest)"); err != nil {
			return err
		}
	}
	if extTasks != "" {
		if err := dialCheck("GEMQ_CLOUDTASKS_ENDPOINT", extTasks, "start that Cloud Tasks emulator, or unset GEMQ_CLOUDTASKS_ENDPOINT so that gemq starts its own"); err != nil {
			return err
		}
	}

	// Redis.
	if extRedis != "" {
		if err := pingRedis(ctx, extRedis, getenv("REDIS_PASSWORD")); err != nil {
			return err
		}
		s.RedisAddr = extRedis
		s.Parts = append(s.Parts, Part{Name: "Redis", Where: extRedis, Var: "REDIS_ADDR"})
	} else {
		r, err := startRedis(ctx, "", opts.Dir, logw)
		if err != nil {
			return err
		}
		s.redis, s.RedisAddr = r, r.addr
		s.Parts = append(s.Parts, Part{Name: "Redis", Local: true, Where: r.addr + " (redis-server, a child process)"})
	}

	// Pub/Sub.
	setup := ctx
	if extPubSub != "" {
		s.PubSubHost = extPubSub
		s.Parts = append([]Part{{Name: "Pub/Sub", Where: extPubSub, Var: "PUBSUB_EMULATOR_HOST"}}, s.Parts...)
		// An outside emulator that accepts connections but does not answer
		// must not hang the start for the client's minute-long default.
		var cancel context.CancelFunc
		setup, cancel = context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
	} else {
		srv, err := startPstest(opts.PubSubAddr)
		if err != nil {
			return err
		}
		s.pstest, s.PubSubHost = srv, srv.Addr
		s.Parts = append([]Part{{Name: "Pub/Sub", Local: true, Where: srv.Addr + " (pstest, in this process)"}}, s.Parts...)
	}
	pubsubErr := func(err error) error {
		if extPubSub == "" || ctx.Err() != nil {
			return err
		}
		return &EnvError{Var: "PUBSUB_EMULATOR_HOST", Value: extPubSub, Problem: err.Error(),
			Fix: "is a Pub/Sub emulator (gRPC) running there? Otherwise unset PUBSUB_EMULATOR_HOST so that gemq starts its own"}
	}
	// The functions' clients read PUBSUB_EMULATOR_HOST themselves; so does
	// ours, so it must be set before any client is made.
	setenv("PUBSUB_EMULATOR_HOST", s.PubSubHost)
	psc, err := queue.NewPubSubClient(setup, s.Project)
	if err != nil {
		return pubsubErr(err)
	}
	s.psClient = psc
	for _, t := range []string{TasksTopic, ResultsTopic, DeadLetterTopic} {
		if err := queue.EnsureTopic(setup, psc, t); err != nil {
			return pubsubErr(err)
		}
	}
	if extPubSub != "" {
		// Every subscription of the tasks topic gets every task: a push
		// subscription that exists already belongs to another stack, whose
		// worker would take this stack's tasks (and this one its).
		_, err := psc.SubscriptionAdminClient.GetSubscription(setup, &pubsubpb.GetSubscriptionRequest{
			Subscription: "projects/" + s.Project + "/subscriptions/" + PushSubscription})
		switch {
		case err == nil:
			return &EnvError{Var: "PUBSUB_EMULATOR_HOST", Value: extPubSub,
				Problem: fmt.Sprintf("that Pub/Sub already has the subscription %s of project %s: another gemq stack (a `gemq dev`?) delivers the tasks published there to its own worker, so this stack's tasks would go to it and wait forever", PushSubscription, s.Project),
				Fix:     "unset PUBSUB_EMULATOR_HOST (gemq starts its own Pub/Sub), or stop the other stack; if none runs, a stack that crashed left the subscription behind: restart the emulator"}
		case status.Code(err) != codes.NotFound:
			return pubsubErr(fmt.Errorf("pubsub get subscription %s: %w", PushSubscription, err))
		}
		s.ownPushSub = true
	}
	// The push subscription: its ack deadline covers a Gemini call; retry and
	// dead-letter policies are applied by the push loop (pstest's own
	// dead-lettering repeats messages, so none is set on the subscription).
	ackDeadline := min(max(opts.GeminiTimeout+30*time.Second, 10*time.Second), 600*time.Second)
	if err := queue.EnsureSubscription(setup, psc, PushSubscription, TasksTopic, queue.SubscriptionOptions{
		AckDeadline: ackDeadline,
		MinBackoff:  opts.Push.MinBackoff, MaxBackoff: opts.Push.MaxBackoff,
	}); err != nil {
		return pubsubErr(err)
	}
	for sub, topic := range map[string]string{DeadLetterSubscription: DeadLetterTopic, ResultsSubscription: ResultsTopic} {
		if err := queue.EnsureSubscription(setup, psc, sub, topic, queue.SubscriptionOptions{AckDeadline: 60 * time.Second}); err != nil {
			return pubsubErr(err)
		}
	}

	// Cloud Storage, and the results topic's Cloud Storage subscription.
	if s.results, err = storagesub.StartLocal(setup, psc, storagesub.LocalOptions{Topic: ResultsTopic,
		MaxDuration: opts.ResultsMaxDuration, Minute: opts.Minute,
		Log: slog.New(slog.NewJSONHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn})).With("component", "storagesub"),
	}); err != nil {
		return pubsubErr(err)
	}
	s.StorageHost, s.ResultsBucket = s.results.Storage.Host, s.results.Bucket
	s.Parts = append(s.Parts, Part{Name: "Storage", Local: true, Where: s.results.Where()})

	// Cloud Tasks.
	tasksSetup := ctx
	if s.TasksEndpoint = extTasks; s.TasksEndpoint == "" {
		s.tasks = tasksemu.New(tasksemu.Options{
			Addr:                opts.TasksAddr,
			MinDispatchDeadline: time.Second,
			Logger:              slog.New(slog.NewJSONHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn})).With("component", "tasksemu"),
		})
		if s.TasksEndpoint, err = s.tasks.Start(); err != nil {
			return &ListenError{Part: "Cloud Tasks emulator", Option: "TasksAddr", Addr: opts.TasksAddr, Err: err}
		}
		s.Parts = append(s.Parts, Part{Name: "Cloud Tasks", Local: true, Where: s.TasksEndpoint + " (gemq's emulator, in this process)"})
	} else {
		s.Parts = append(s.Parts, Part{Name: "Cloud Tasks", Where: extTasks, Var: "GEMQ_CLOUDTASKS_ENDPOINT"})
		var cancel context.CancelFunc
		tasksSetup, cancel = context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
	}
	tasksErr := func(err error) error {
		if extTasks == "" || ctx.Err() != nil {
			return err
		}
		return &EnvError{Var: "GEMQ_CLOUDTASKS_ENDPOINT", Value: extTasks, Problem: err.Error(),
			Fix: "is a Cloud Tasks emulator (gRPC) running there? Otherwise unset GEMQ_CLOUDTASKS_ENDPOINT so that gemq starts its own"}
	}
	if s.ctClient, err = queue.NewCloudTasksClient(tasksSetup, s.TasksEndpoint); err != nil {
		return tasksErr(err)
	}
	s.QueuePath = fmt.Sprintf("projects/%s/locations/%s/queues/%s", s.Project, QueueLocation, QueueID)
	if err := queue.EnsureQueue(tasksSetup, s.ctClient, s.QueuePath, queue.QueueOptions{
		MaxDispatchesPerSecond:  500,
		MaxConcurrentDispatches: 1000,
		MaxAttempts:             -1,
		MinBackoff:              scale(time.Second, opts.Minute),
		MaxBackoff:              scale(60*time.Second, opts.Minute),
	}); err != nil {
		return tasksErr(err)
	}

	// Gemini.
	if s.gemini, err = startGemini(ctx, opts, gem, logw); err != nil {
		return err
	}
	s.GeminiURL = s.gemini.url
	s.Parts = append(s.Parts, gem.part(s.GeminiURL))

	// Front servers first, so GEMQ_WORKER_URL is known before the functions
	// read their configuration.
	fns, err := serveFunctionsLazy()
	if err != nil {
		return err
	}
	if s.ingest, err = startFront(opts.IngestAddr, fns.addr(TargetIngest), false, s.log); err != nil {
		return &ListenError{Part: "ingest", Option: "IngestAddr", Addr: opts.IngestAddr, Err: err}
	}
	if s.worker, err = startFront(opts.WorkerAddr, fns.addr(TargetWorker), true, s.log); err != nil {
		return &ListenError{Part: "worker", Option: "WorkerAddr", Addr: opts.WorkerAddr, Err: err}
	}
	s.IngestURL, s.WorkerURL = s.ingest.url, s.worker.url

	// The functions' environment, as Terraform sets it in the cloud.
	s.Quotas = s.gemini.quotas
	env := map[string]string{
		"REDIS_ADDR":                 s.RedisAddr,
		"REDIS_PASSWORD":             getenv("REDIS_PASSWORD"),
		"GOOGLE_CLOUD_PROJECT":       s.Project,
		"GEMQ_TASKS_TOPIC":           TasksTopic,
		"GEMQ_RESULTS_TOPIC":         ResultsTopic,
		"GEMQ_TASKS_QUEUE":           s.QueuePath,
		"GEMQ_WORKER_URL":            s.WorkerURL,
		"GEMQ_CLOUDTASKS_ENDPOINT":   s.TasksEndpoint,
		"PUBSUB_EMULATOR_HOST":       s.PubSubHost,
		"GEMQ_QUOTAS":                s.gemini.quotasInline,
		"GEMQ_QUOTAS_FILE":           s.gemini.quotasFile,
		"GEMQ_DEFAULT_MODEL":         s.Model,
		"GEMQ_GEMINI_TIMEOUT":        opts.GeminiTimeout.String(),
		"GEMQ_MAX_ATTEMPTS":          strconv.Itoa(opts.MaxAttempts),
		"GEMQ_RETRY_BASE":            opts.RetryBase.String(),
		"GEMQ_RETRY_MAX":             opts.RetryMax.String(),
		"GEMQ_CAPACITY_BACKOFF_BASE": scale(config.DefaultCapacityBackoffBase, opts.Minute).String(),
		"GEMQ_CAPACITY_BACKOFF_MAX":  scale(config.DefaultCapacityBackoffMax, opts.Minute).String(),
		"GEMQ_SEED_BACKOFF_BASE":     scale(config.DefaultSeedBackoffBase, opts.Minute).String(),
		"GEMQ_SEED_BACKOFF_MAX":      scale(config.DefaultSeedBackoffMax, opts.Minute).String(),
		"GEMQ_CLAIM_LEAD":            opts.ClaimLead.String(),
		// The Batch tier in stack time: collect window, poll back-off.
		"GEMQ_BATCH_COLLECT":  scale(config.DefaultBatchCollect, opts.Minute).String(),
		"GEMQ_BATCH_POLL_MIN": scale(config.DefaultBatchPollMin, opts.Minute).String(),
		"GEMQ_BATCH_POLL_MAX": scale(config.DefaultBatchPollMax, opts.Minute).String(),
		"GEMQ_LOG_LEVEL":      "info",
		// The functions' JSON lines go to the stack's log file, not to the
		// process' stdout (the terminal of gemq run, the output of go test).
		"GEMQ_LOG_FILE": s.LogPath,
	}
	for k, v := range s.gemini.env {
		env[k] = v
	}
	for k, v := range s.results.Env(0) {
		env[k] = v
	}
	for k, v := range opts.Env {
		env[k] = v
	}
	s.Env = env
	// The functions read this environment, the user's shell variables
	// included (a GEMQ_LEASE, say): check it as they will, before saying
	// the stack is up, rather than answer the first job with a 500.
	look := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		return os.Getenv(k)
	}
	for _, f := range []config.Function{config.Ingest, config.Worker} {
		if _, err := config.LoadFor(f, look); err != nil {
			var ce *config.Error
			vars := []string{}
			if errors.As(err, &ce) {
				for _, p := range ce.Problems {
					vars = append(vars, p.Var)
				}
			}
			return &EnvError{Var: strings.Join(vars, ", "), Problem: fmt.Sprintf("the %s function would refuse this configuration: %v", f, err),
				Fix: "fix or unset the variable(s) named (README: Configuration)"}
		}
	}
	for k, v := range env {
		setenv(k, v)
	}

	// The push subscription.
	s.pusher, err = pushsub.New(ctx, psc, PushSubscription, pushsub.Options{
		Endpoint:            s.WorkerURL,
		Concurrency:         opts.Push.Concurrency,
		DeadLetterTopic:     DeadLetterTopic,
		MaxDeliveryAttempts: opts.Push.MaxDeliveryAttempts,
		DuplicateDelivery:   opts.Push.DuplicateDelivery,
		Logger:              slog.New(slog.NewJSONHandler(logw, &slog.HandlerOptions{Level: slog.LevelWarn})).With("component", "pushsub"),
	})
	if err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(context.Background())
	s.pushCancel, s.pushDone = cancel, make(chan error, 1)
	go func() { s.pushDone <- s.pusher.Run(pctx) }()

	if s.LogPath != "" {
		if s.events, err = followLog(s.LogPath); err != nil {
			return err
		}
	}
	s.log.Info("stack started", "ingest", s.IngestURL, "worker", s.WorkerURL, "redis", s.RedisAddr,
		"pubsub", s.PubSubHost, "cloudtasks", s.TasksEndpoint, "gemini", s.GeminiURL)
	return nil
}

// startPstest starts pstest on addr ("": a free port). pstest panics when
// it cannot listen; that is an error here, naming the address.
func startPstest(addr string) (srv *pstest.Server, err error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	defer func() {
		if r := recover(); r != nil {
			srv, err = nil, &ListenError{Part: "Pub/Sub (pstest)", Option: "PubSubAddr", Addr: addr, Err: fmt.Errorf("%v", r)}
		}
	}()
	return pstest.NewServerWithAddress(addr), nil
}

// redisLog is where go-redis' own log lines go: the running stack's log.
var (
	redisLog        atomic.Pointer[slog.Logger]
	redisLoggerOnce sync.Once
)

type redisLogger struct{}

func (redisLogger) Printf(_ context.Context, format string, v ...any) {
	if l := redisLog.Load(); l != nil {
		l.Warn(fmt.Sprintf(format, v...), "source", "go-redis")
	}
}

func withDefaults(o Options) Options {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Project == "" {
		o.Project = DefaultProject
	}
	if o.Model == "" {
		o.Model = DefaultModel
	}
	if o.Minute <= 0 {
		o.Minute = time.Minute
	}
	if o.RPM <= 0 {
		o.RPM = 60
	}
	if o.TPM <= 0 {
		o.TPM = 100_000
	}
	if o.RPD <= 0 {
		o.RPD = 100_000
	}
	if o.Safety <= 0 {
		o.Safety = 0.95
	}
	if o.GeminiTimeout <= 0 {
		o.GeminiTimeout = scale(120*time.Second, o.Minute)
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = config.DefaultMaxAttempts
	}
	if o.RetryBase <= 0 {
		o.RetryBase = scale(config.DefaultRetryBase, o.Minute)
	}
	if o.RetryMax <= 0 {
		o.RetryMax = max(scale(config.DefaultRetryMax, o.Minute), o.RetryBase)
	}
	if o.ClaimLead <= 0 {
		o.ClaimLead = DefaultClaimLead
	}
	if o.Push.Concurrency <= 0 {
		o.Push.Concurrency = 32
	}
	if o.Push.MinBackoff <= 0 {
		o.Push.MinBackoff = scale(10*time.Second, o.Minute)
	}
	if o.Push.MaxBackoff <= 0 {
		o.Push.MaxBackoff = scale(600*time.Second, o.Minute)
	}
	if o.Push.MaxDeliveryAttempts <= 0 {
		o.Push.MaxDeliveryAttempts = 5
	}
	return o
}

// scale maps a real-time duration onto a stack whose minute lasts minute.
func scale(d, minute time.Duration) time.Duration {
	return time.Duration(float64(d) * float64(minute) / float64(time.Minute))
}

// quotasJSON is the GEMQ_QUOTAS document for model with limits per minute.
func quotasJSON(model string, rpm, tpm, rpd int64, minute time.Duration, safety float64, guard time.Duration) string {
	type dim struct {
		Name   string `json:"name"`
		Unit   string `json:"unit"`
		Limit  int64  `json:"limit"`
		Period string `json:"period,omitempty"`
		Per    string `json:"per,omitempty"`
	}
	doc := map[string]any{
		"safety": safety,
		"scopes": []any{map[string]any{
			"project": "*", "model": model,
			"dimensions": []dim{
				{Name: "rpm", Unit: "requests", Limit: rpm, Period: minute.String()},
				{Name: "tpm", Unit: "input_tokens", Limit: tpm, Period: minute.String()},
				{Name: "rpd", Unit: "requests", Limit: rpd, Per: "pacific_day"},
			},
		}},
	}
	if guard > 0 {
		doc["guard"] = guard.String()
	}
	b, _ := json.Marshal(doc)
	return string(b)
}

// Stats are the stack's counters, for progress and summaries.
type Stats struct {
	// IngestCalls counts HTTP requests to ingest.
	IngestCalls int64
	// WorkerCalls counts worker invocations; WorkerTaskCalls of them came
	// from Cloud Tasks, the rest from the push loop.
	WorkerCalls, WorkerTaskCalls int64
	// WorkerTime is the total time the worker spent handling its calls,
	// each from the request reaching the worker's front proxy to the end
	// of its answer (what Cloud Functions bills as function time; a
	// callback waiting for its reserved slot counts). WorkerTimePerCall is
	// WorkerTime divided by the calls answered, WorkerTimeMax the longest
	// call; calls still in flight count in neither.
	WorkerTime, WorkerTimePerCall, WorkerTimeMax time.Duration
	// Push is the push loop's counters.
	Push pushsub.Stats
	// Tasks is the Cloud Tasks emulator's (zero with an external one).
	Tasks tasksemu.Stats
	// Gemini is the stand-in's (zero with the real Gemini).
	Gemini GeminiStats
}

// Stats returns the counters so far.
func (s *Stack) Stats() Stats {
	st := Stats{
		IngestCalls:     s.ingest.calls.Load(),
		WorkerCalls:     s.worker.calls.Load(),
		WorkerTaskCalls: s.worker.tasks.Load(),
		Push:            s.pusher.Stats(),
	}
	st.WorkerTime, st.WorkerTimeMax = s.worker.handling()
	if n := s.worker.handled.Load(); n > 0 {
		st.WorkerTimePerCall = st.WorkerTime / time.Duration(n)
	}
	if s.tasks != nil {
		st.Tasks = s.tasks.Stats()
	}
	st.Gemini = s.gemini.stats()
	return st
}

// WorkerInvocations returns how many times the worker was invoked for each
// task id, and how many invocations carried no readable task (poison).
func (s *Stack) WorkerInvocations() (perTask map[string]int, unparsed int) {
	s.worker.mu.Lock()
	defer s.worker.mu.Unlock()
	perTask = make(map[string]int, len(s.worker.invoked))
	for k, v := range s.worker.invoked {
		perTask[k] = v
	}
	return perTask, s.worker.unparsed
}

// JobEvents returns what the functions have logged so far about job id's
// failures and deferrals, as they happen. It is zero when the functions do
// not log to the stack's own log file (Options.Log given).
func (s *Stack) JobEvents(id string) JobEvents { return s.events.job(id) }

// SetDuplicateDelivery makes the push loop deliver every message twice (or
// stop doing so), as at-least-once delivery may.
func (s *Stack) SetDuplicateDelivery(on bool) { s.pusher.SetDuplicateDelivery(on) }

// PubSubClient returns the stack's Pub/Sub client (for publishing tasks
// straight to the topic or reading the dead-letter and results
// subscriptions). It is closed by Close.
func (s *Stack) PubSubClient() *pubsub.Client { return s.psClient }

// Close stops the stack: the push loop, then Cloud Tasks dispatches, then
// the front servers (waiting for requests in flight), the stand-in, Pub/Sub
// and Redis. The functions-framework servers stay (they cannot be stopped)
// but receive nothing more. Close is idempotent.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		defer live.Store(false)
		var errs []error
		if s.pushCancel != nil {
			s.pushCancel()
			if err := <-s.pushDone; err != nil {
				errs = append(errs, err)
			}
		}
		if s.tasks != nil {
			s.tasks.Stop()
		}
		// After the push loop: results published until now reach the bucket.
		s.results.Close()
		if s.ownPushSub && s.psClient != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := s.psClient.SubscriptionAdminClient.DeleteSubscription(ctx, &pubsubpb.DeleteSubscriptionRequest{
				Subscription: "projects/" + s.Project + "/subscriptions/" + PushSubscription})
			cancel()
			if err != nil && status.Code(err) != codes.NotFound {
				errs = append(errs, fmt.Errorf("pubsub delete subscription %s: %w", PushSubscription, err))
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, f := range []*front{s.ingest, s.worker} {
			if err := f.stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop front server: %w", err))
			}
		}
		s.events.close()
		if s.ctClient != nil {
			s.ctClient.Close()
		}
		if s.gemini != nil {
			s.gemini.stop()
		}
		if s.psClient != nil {
			s.psClient.Close()
		}
		if s.pstest != nil {
			s.pstest.Close()
		}
		s.redis.stop()
		redisLog.CompareAndSwap(s.log, nil)
		if s.log != nil {
			s.log.Info("stack stopped")
		}
		if s.logFile != nil {
			s.logFile.Close()
		}
		if s.tmpDir != "" {
			os.RemoveAll(s.tmpDir)
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// fnAddrs are the funcframework servers' addresses by target.
type fnAddrs map[string]string

func (f fnAddrs) addr(target string) string { return f[target] }

func serveFunctionsLazy() (fnAddrs, error) {
	a, err := serveFunctions()
	if err != nil {
		return nil, fmt.Errorf("stack: serve functions: %w (are functions/ingest and functions/worker linked in?)", err)
	}
	return fnAddrs(a), nil
}
