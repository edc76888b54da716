package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"cloud.google.com/go/cloudtasks/apiv2"
	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/infra/pushsub"
	"github.com/gemq-dev/gemq/infra/storagesub"
	"github.com/gemq-dev/gemq/infra/tasksemu"
	"github.com/gemq-dev/gemq/internal/config"
	"github.com/gemq-dev/gemq/internal/lifecycle"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/task"
)

// Names of what an Env creates, as the deployment names them.
const (
	project          = "gemq-chaos"
	model            = "gemini-2.5-flash"
	apiKey           = "gemq-chaos-key"
	tasksTopic       = "gemq-tasks"
	resultsTopic     = "gemq-results"
	deadLetterTopic  = "gemq-dead-letter"
	pushSubscription = "gemq-tasks-push"
	resultsSub       = "gemq-results-harness"
	deadLetterSub    = "gemq-dead-letter-harness"
	// replaySub is the operator's dead-letter subscription (Terraform's
	// dead_letter_subscription), which `gemq dlq replay` drains.
	replaySub = "gemq-dead-letter-sub"
)

// What Start creates, for tests outside this package that drive a system
// (e.g. `gemq dlq replay` against PubSubHost).
const (
	Project                = project
	TasksTopic             = tasksTopic
	DeadLetterTopic        = deadLetterTopic
	DeadLetterSubscription = replaySub
	queuePath              = "projects/" + project + "/locations/us-central1/queues/gemq-deferred"
)

// Config is the quota and time scale a scenario runs under.
type Config struct {
	// Minute is how long a quota minute lasts in real time, for the Gemini
	// stand-in and the limiter alike; every time-valued setting of gemq
	// (Gemini timeout, lease, back-offs, push retry policy) is scaled by
	// Minute/1m, except what a real client does in real time (go-redis
	// timeouts, the claim lead, process start-up).
	Minute time.Duration
	// RPM and TPM are the stand-in's per-minute limits (RPD is not binding).
	RPM, TPM int64
	// Safety is the limiter's safety factor.
	Safety float64
}

// DefaultConfig is the scale the suite runs at: a 6 s quota minute.
var DefaultConfig = Config{Minute: 6 * time.Second, RPM: 20, TPM: 1_000_000, Safety: 0.95}

// scaled maps a real-deployment duration onto the Config's time scale.
func (c Config) scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * float64(c.Minute) / float64(time.Minute))
}

// Env is one scenario's running system: real redis-server processes, the
// worker and ingest functions as gemqworker processes, pstest over gRPC,
// the Cloud Tasks emulator over gRPC, the Gemini stand-in over HTTP and
// the push loop, with TCP proxies in front of Redis, Pub/Sub and Cloud
// Tasks so those can be made unreachable or failed over.
type Env struct {
	Cfg    Config
	dir    string
	logw   *os.File
	start  time.Time
	events []Event
	evMu   sync.Mutex

	redis      *proc
	redisAddr  string
	redisFront *Proxy
	replica    *proc
	replAddr   string
	replLink   *Proxy

	ps       *pstest.Server
	psFront  *Proxy
	psClient *pubsub.Client

	tasks      *tasksemu.Server
	tasksFront *Proxy
	ctClient   *cloudtasks.Client

	Gemini    *geminisim.Server
	geminiURL string
	geminiHS  *http.Server
	inFlight  map[string]int // task id → generateContent calls Gemini is answering
	ifMu      sync.Mutex

	worker, ingest *function
	pusher         *pushsub.Pusher
	pushDone       chan error

	collector *collector
	poison    []poison
	// killedMidCall are the tasks whose Gemini call was in flight when a
	// worker was killed.
	killedMidCall map[string]bool
	// midnight is when (real time) Scenario.Midnight comes, if set.
	midnight time.Time
	cleanup  []func()
}

// Event is a fault's start or end, in real time and in the stand-in's time.
type Event struct {
	What        string
	At, SimTime time.Time
}

// envOptions are what a scenario sets before the system starts.
type envOptions struct {
	replica bool
	latency geminisim.Latency
	lease   time.Duration // 0: scaled default
	// pushAttempts is the push subscription's max_delivery_attempts
	// (0: Terraform's default, 10).
	pushAttempts int
	// midnight, rpd: see Scenario.Midnight, Scenario.RPD.
	midnight time.Time
	rpd      int64
}

// midnightAfter is how long after the stand-in starts a Scenario.Midnight
// comes, in real time: start-up (about 2 s), then the job's first two
// quota minutes.
const midnightAfter = 16 * time.Second

func startEnv(ctx context.Context, cfg Config, o envOptions, logDir string) (_ *Env, err error) {
	e := &Env{Cfg: cfg, killedMidCall: map[string]bool{}}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.dir, err = os.MkdirTemp(logDir, "gemq-chaos-"); err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	if e.logw, err = os.Create(filepath.Join(e.dir, "chaos.log")); err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	bin, err := buildOnce()
	if err != nil {
		return nil, err
	}

	// Redis behind its front proxy (Memorystore's stable address).
	if e.redis, e.redisAddr, err = startRedis(ctx, e.dir, e.logw); err != nil {
		return nil, err
	}
	if e.redisFront, err = StartProxy(e.redisAddr); err != nil {
		return nil, err
	}
	e.onClose(func() { e.redisFront.Close() })
	if o.replica {
		// The replica follows the primary through a link the harness can
		// cut, so that the primary takes writes the replica never sees.
		if e.replLink, err = StartProxy(e.redisAddr); err != nil {
			return nil, err
		}
		e.onClose(func() { e.replLink.Close() })
		host, port, _ := splitHostPort(e.replLink.Addr)
		if e.replica, e.replAddr, err = startRedis(ctx, e.dir, e.logw, "--replicaof", host, port); err != nil {
			return nil, err
		}
	}

	// Pub/Sub.
	e.ps = pstest.NewServer()
	e.onClose(func() { e.ps.Close() })
	if e.psFront, err = StartProxy(e.ps.Addr); err != nil {
		return nil, err
	}
	e.onClose(func() { e.psFront.Close() })
	if e.psClient, err = pubsub.NewClient(ctx, project, option.WithEndpoint(e.ps.Addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))); err != nil {
		return nil, fmt.Errorf("pubsub new client: %w", err)
	}
	e.onClose(func() { e.psClient.Close() })
	for _, t := range []string{tasksTopic, resultsTopic, deadLetterTopic} {
		if err := queue.EnsureTopic(ctx, e.psClient, t); err != nil {
			return nil, err
		}
	}
	// Results durable beyond Redis, as deployed: a Cloud Storage subscription
	// of the results topic (files closed every scaled minute) that the
	// functions read back after a state loss.
	archive, err := storagesub.StartLocal(ctx, e.psClient, storagesub.LocalOptions{
		Topic: resultsTopic, MaxDuration: cfg.scaled(time.Minute), Minute: cfg.Minute,
		Log: slog.New(slog.NewJSONHandler(e.logw, &slog.HandlerOptions{Level: slog.LevelWarn})).With("component", "storagesub"),
	})
	if err != nil {
		return nil, fmt.Errorf("results archive: %w", err)
	}
	e.onClose(archive.Close)
	geminiTimeout := cfg.scaled(config.DefaultGeminiTimeout)
	ackDeadline := min(max(geminiTimeout+30*time.Second, 10*time.Second), 600*time.Second)
	if err := queue.EnsureSubscription(ctx, e.psClient, pushSubscription, tasksTopic, queue.SubscriptionOptions{AckDeadline: ackDeadline}); err != nil {
		return nil, err
	}
	for sub, topic := range map[string]string{resultsSub: resultsTopic, deadLetterSub: deadLetterTopic, replaySub: deadLetterTopic} {
		if err := queue.EnsureSubscription(ctx, e.psClient, sub, topic, queue.SubscriptionOptions{AckDeadline: 60 * time.Second}); err != nil {
			return nil, err
		}
	}

	// Cloud Tasks.
	e.tasks = tasksemu.New(tasksemu.Options{
		MinDispatchDeadline: time.Second,
		Logger:              slog.New(slog.NewJSONHandler(e.logw, &slog.HandlerOptions{Level: slog.LevelWarn})).With("component", "tasksemu"),
	})
	endpoint, err := e.tasks.Start()
	if err != nil {
		return nil, fmt.Errorf("tasksemu start: %w", err)
	}
	e.onClose(e.tasks.Stop)
	if e.tasksFront, err = StartProxy(endpoint); err != nil {
		return nil, err
	}
	e.onClose(func() { e.tasksFront.Close() })
	if e.ctClient, err = queue.NewCloudTasksClient(ctx, endpoint); err != nil {
		return nil, err
	}
	e.onClose(func() { e.ctClient.Close() })
	if err := queue.EnsureQueue(ctx, e.ctClient, queuePath, queue.QueueOptions{
		MaxDispatchesPerSecond: 500, MaxConcurrentDispatches: 1000, MaxAttempts: -1,
		MinBackoff: cfg.scaled(time.Second), MaxBackoff: cfg.scaled(60 * time.Second),
	}); err != nil {
		return nil, err
	}

	// Gemini. For a Pacific-day scenario, the stand-in's time (which runs
	// Minute/1m as fast as real time) reaches o.midnight at real time
	// e.midnight, and the worker's limiter reads the calendar shifted so
	// that its midnight is that instant too (test clock hook).
	var start time.Time
	var shift time.Duration
	if !o.midnight.IsZero() {
		now := time.Now()
		e.midnight = now.Add(midnightAfter)
		start = o.midnight.Add(-time.Duration(float64(midnightAfter) * float64(time.Minute) / float64(cfg.Minute)))
		shift = o.midnight.Sub(e.midnight)
	}
	e.Gemini = geminisim.New(geminisim.Options{
		APIKey:  apiKey,
		Models:  []geminisim.Model{{ID: model, Limits: geminiLimits(cfg, o.rpd)}},
		Minute:  cfg.Minute,
		Start:   start,
		Latency: o.latency,
	})
	e.onClose(func() { e.Gemini.Close() })
	if e.geminiURL, err = e.serveGemini(); err != nil {
		return nil, err
	}
	e.onClose(func() { e.geminiHS.Close() })

	// The functions, with the environment Terraform gives them.
	workerPort, err := freePort()
	if err != nil {
		return nil, err
	}
	ingestPort, err := freePort()
	if err != nil {
		return nil, err
	}
	lease := o.lease
	if lease <= 0 {
		lease = cfg.scaled(config.DefaultGeminiTimeout + config.DefaultLeaseMargin)
	}
	fnEnv := map[string]string{
		"REDIS_ADDR":                 e.redisFront.Addr,
		"GOOGLE_CLOUD_PROJECT":       project,
		"GEMQ_TASKS_TOPIC":           tasksTopic,
		"GEMQ_RESULTS_TOPIC":         resultsTopic,
		"GEMQ_DEAD_LETTER_TOPIC":     deadLetterTopic,
		"GEMQ_TASKS_QUEUE":           queuePath,
		"GEMQ_WORKER_URL":            "http://127.0.0.1:" + workerPort,
		"GEMQ_CLOUDTASKS_ENDPOINT":   e.tasksFront.Addr,
		"PUBSUB_EMULATOR_HOST":       e.psFront.Addr,
		"GEMQ_QUOTAS":                quotas(cfg, o.rpd),
		"GEMQ_DEFAULT_MODEL":         model,
		"GEMINI_API_KEY":             apiKey,
		"GOOGLE_GEMINI_BASE_URL":     e.geminiURL,
		"GEMQ_GEMINI_TIMEOUT":        geminiTimeout.String(),
		"GEMQ_LEASE":                 lease.String(),
		"GEMQ_RETRY_BASE":            cfg.scaled(config.DefaultRetryBase).String(),
		"GEMQ_RETRY_MAX":             cfg.scaled(config.DefaultRetryMax).String(),
		"GEMQ_CAPACITY_BACKOFF_BASE": cfg.scaled(config.DefaultCapacityBackoffBase).String(),
		"GEMQ_CAPACITY_BACKOFF_MAX":  cfg.scaled(config.DefaultCapacityBackoffMax).String(),
		"GEMQ_SEED_BACKOFF_BASE":     cfg.scaled(config.DefaultSeedBackoffBase).String(),
		"GEMQ_SEED_BACKOFF_MAX":      cfg.scaled(config.DefaultSeedBackoffMax).String(),
		"GEMQ_CLAIM_LEAD":            time.Second.String(),
		"GEMQ_LOG_LEVEL":             "info",
		"GEMQ_LOG_FILE":              "",
	}
	if shift != 0 {
		fnEnv[config.EnvTestCalendarOffset] = shift.String()
	}
	maps.Copy(fnEnv, archive.Env(0))
	var envList []string
	for k, v := range fnEnv {
		envList = append(envList, k+"="+v)
	}
	e.worker = &function{target: "Worker", port: workerPort, bin: bin, env: envList, logw: e.logw}
	e.ingest = &function{target: "Ingest", port: ingestPort, bin: bin, env: envList, logw: e.logw}
	for _, f := range []*function{e.worker, e.ingest} {
		if err := f.start(); err != nil {
			return nil, err
		}
	}

	// The push subscription as Terraform deploys it: retry policy 10 s to
	// 600 s (scaled), dead-letter after push_max_delivery_attempts (10).
	if o.pushAttempts <= 0 {
		o.pushAttempts = 10
	}
	// The push loop reaches Pub/Sub through the proxy too: an outage stops
	// pushes as it would in the cloud. The harness' own reads stay direct.
	pushClient, err := pubsub.NewClient(ctx, project, option.WithEndpoint(e.psFront.Addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		return nil, fmt.Errorf("pubsub new client: %w", err)
	}
	e.onClose(func() { pushClient.Close() })
	if e.pusher, err = pushsub.New(ctx, pushClient, pushSubscription, pushsub.Options{
		Endpoint:            e.worker.url(),
		Concurrency:         32,
		AckDeadline:         ackDeadline,
		MinBackoff:          cfg.scaled(10 * time.Second),
		MaxBackoff:          cfg.scaled(600 * time.Second),
		DeadLetterTopic:     deadLetterTopic,
		MaxDeliveryAttempts: o.pushAttempts,
		Logger:              slog.New(slog.NewJSONHandler(e.logw, &slog.HandlerOptions{Level: slog.LevelWarn})).With("component", "pushsub"),
	}); err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(context.Background())
	e.pushDone = make(chan error, 1)
	go func() { e.pushDone <- e.pusher.Run(pctx) }()
	e.onClose(func() { cancel(); <-e.pushDone })

	e.collector = newCollector(e.psClient)
	e.collector.start()
	e.onClose(e.collector.stop)
	e.start = time.Now()
	return e, nil
}

// Start starts a system as a scenario gets it, with the stand-in's base
// latency, under dir ("" for the temporary directory). Close it.
func Start(ctx context.Context, cfg Config, dir string) (*Env, error) {
	return startEnv(ctx, cfg, envOptions{latency: baseLatency}, dir)
}

// Close stops every part of the system.
func (e *Env) Close() { e.close() }

// PubSubHost is pstest's address (a PUBSUB_EMULATOR_HOST).
func (e *Env) PubSubHost() string { return e.ps.Addr }

// Submit submits a job of n tasks (keys Key(0..n-1)) through ingest.
func (e *Env) Submit(ctx context.Context, jobID string, n int) error {
	return submit(ctx, e.ingest.url(), jobID, n)
}

// Results returns the messages read from the results topic so far.
func (e *Env) Results() []Message {
	r, _ := e.collector.snapshot()
	return r
}

// quotas is the GEMQ_QUOTAS document matching the stand-in's limits (rpd:
// requests per Pacific day, 0 for none).
func quotas(c Config, rpd int64) string {
	dims := []map[string]any{
		{"name": "rpm", "unit": "requests", "limit": c.RPM, "period": c.Minute.String()},
		{"name": "tpm", "unit": "input_tokens", "limit": c.TPM, "period": c.Minute.String()},
	}
	if rpd > 0 {
		dims = append(dims, map[string]any{"name": "rpd", "unit": "requests", "limit": rpd, "per": "pacific_day"})
	}
	b, _ := json.Marshal(map[string]any{"safety": c.Safety, "scopes": []any{map[string]any{
		"project": "*", "model": model, "dimensions": dims,
	}}})
	return string(b)
}

func splitHostPort(addr string) (string, string, error) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[:i], addr[i+1:], nil
		}
	}
	return "", "", fmt.Errorf("address %q has no port", addr)
}

// mark records a fault event.
func (e *Env) mark(what string) {
	e.evMu.Lock()
	defer e.evMu.Unlock()
	e.events = append(e.events, Event{What: what, At: time.Now(), SimTime: e.Gemini.Now()})
	fmt.Fprintf(e.logw, "chaos: %s at +%s\n", what, time.Since(e.start).Round(time.Millisecond))
}

// Events returns the faults injected so far.
func (e *Env) Events() []Event {
	e.evMu.Lock()
	defer e.evMu.Unlock()
	return append([]Event(nil), e.events...)
}

// serveGemini serves the stand-in behind a handler that knows which tasks'
// generateContent calls are in flight at Gemini (the stand-in records a
// call only when it ends).
func (e *Env) serveGemini() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("gemini listen: %w", err)
	}
	e.inFlight = map[string]int{}
	e.geminiHS = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(geminisim.TaskIDHeader)
		if id == "" || !strings.HasSuffix(r.URL.Path, ":generateContent") {
			e.Gemini.ServeHTTP(w, r)
			return
		}
		e.ifMu.Lock()
		e.inFlight[id]++
		e.ifMu.Unlock()
		defer func() {
			e.ifMu.Lock()
			if e.inFlight[id]--; e.inFlight[id] == 0 {
				delete(e.inFlight, id)
			}
			e.ifMu.Unlock()
		}()
		e.Gemini.ServeHTTP(w, r)
	})}
	go e.geminiHS.Serve(lis)
	return "http://" + lis.Addr().String(), nil
}

// callsInFlight returns the tasks whose Gemini calls are in flight now.
func (e *Env) callsInFlight() map[string]bool {
	e.ifMu.Lock()
	defer e.ifMu.Unlock()
	m := make(map[string]bool, len(e.inFlight))
	for id := range e.inFlight {
		m[id] = true
	}
	return m
}

// KillWorkerMidCall waits (up to 30 s) until Gemini is answering at least
// one call, then KillWorker; the tasks whose calls were in flight are
// remembered for the judge.
func (e *Env) KillWorkerMidCall(ctx context.Context, down time.Duration) error {
	for deadline := time.Now().Add(30 * time.Second); len(e.callsInFlight()) == 0; {
		if time.Now().After(deadline) || !sleepCtx(ctx, 5*time.Millisecond) {
			return errors.New("chaos: no Gemini call in flight to kill the worker under")
		}
	}
	return e.KillWorker(ctx, down)
}

// KillWorker SIGKILLs the worker process (requests in flight get no
// answer) and starts a new one at the same URL after down.
func (e *Env) KillWorker(ctx context.Context, down time.Duration) error {
	e.worker.kill()
	e.mark("worker killed")
	e.evMu.Lock()
	for id := range e.callsInFlight() {
		e.killedMidCall[id] = true
	}
	e.evMu.Unlock()
	if !sleepCtx(ctx, down) {
		return ctx.Err()
	}
	if err := e.worker.start(); err != nil {
		return err
	}
	e.mark("worker restarted")
	return nil
}

// KillRedis SIGKILLs redis-server and, after down, starts an empty one
// behind the same address.
func (e *Env) KillRedis(ctx context.Context, down time.Duration) error {
	return e.restartRedis(ctx, down, "empty", nil)
}

// restartRedis SIGKILLs redis-server and starts it again after down in the
// same directory (so from its snapshot, if one was saved), behind the same
// address, once check (when set) accepts the new server.
func (e *Env) restartRedis(ctx context.Context, down time.Duration, how string, check func(addr string) error) error {
	e.redis.kill()
	e.mark("redis killed")
	if !sleepCtx(ctx, down) {
		return ctx.Err()
	}
	p, addr, err := startRedis(ctx, e.dir, e.logw)
	if err != nil {
		return err
	}
	e.redis, e.redisAddr = p, addr
	if check != nil {
		if err := check(addr); err != nil {
			return err
		}
	}
	e.redisFront.SetBackend(addr)
	e.mark("redis restarted " + how)
	return nil
}

// quietBeforeKill is how long no Gemini call must have been in flight
// before RestartRedisFromSnapshot kills Redis: the worker's settle after an
// answer takes milliseconds.
const quietBeforeKill = 250 * time.Millisecond

// RestartRedisFromSnapshot saves an RDB snapshot of the primary (SAVE),
// lets the job run on for lag (writes the snapshot does not hold), then
// SIGKILLs redis-server and, down later, starts it again from that
// snapshot behind the same address: a restart from persistence, losing
// the writes since the last save while keeping the replication id.
func (e *Env) RestartRedisFromSnapshot(ctx context.Context, lag, down time.Duration) error {
	if err := redisDo(ctx, e.redisAddr, "SAVE"); err != nil {
		return err
	}
	e.mark("redis snapshot saved (SAVE)")
	if !sleepCtx(ctx, lag) {
		return ctx.Err()
	}
	// The kill falls between calls: a call in flight (or one just answered,
	// whose result the worker is still writing) when Redis dies is made
	// again after the restart, by design; waiting for a quiet moment makes
	// the scenario test the rollback, not that race. If none comes, the
	// tasks in flight are remembered, like a worker killed mid-call.
	for quiet, deadline := time.Now(), time.Now().Add(2*lag); ; {
		if len(e.callsInFlight()) > 0 {
			quiet = time.Now()
		}
		if time.Since(quiet) >= quietBeforeKill || time.Now().After(deadline) {
			break
		}
		if !sleepCtx(ctx, 5*time.Millisecond) {
			return ctx.Err()
		}
	}
	e.evMu.Lock()
	for id := range e.callsInFlight() {
		e.killedMidCall[id] = true
	}
	e.evMu.Unlock()
	return e.restartRedis(ctx, down, "from the snapshot", func(addr string) error {
		if n, err := redisKeys(ctx, addr); err != nil || n == 0 {
			return fmt.Errorf("chaos: redis restarted from the snapshot holds %d keys (%v): not the fault designed", n, err)
		}
		return nil
	})
}

// FlushRedis runs FLUSHALL on the primary.
func (e *Env) FlushRedis(ctx context.Context) error {
	if err := redisDo(ctx, e.redisAddr, "FLUSHALL"); err != nil {
		return err
	}
	e.mark("redis FLUSHALL")
	return nil
}

// PauseRedis stops redis-server (SIGSTOP) for d: connections stay open and
// commands hang, then run when it resumes.
func (e *Env) PauseRedis(ctx context.Context, d time.Duration) error {
	if err := e.redis.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	e.mark("redis paused (SIGSTOP)")
	sleepCtx(ctx, d)
	if err := e.redis.signal(syscall.SIGCONT); err != nil {
		return err
	}
	e.mark("redis resumed (SIGCONT)")
	return nil
}

// PromoteReplica cuts the replication link, lets the primary take writes
// the replica never sees for lag, then kills the primary and promotes the
// replica behind the same address: a failover losing the last writes.
func (e *Env) PromoteReplica(ctx context.Context, lag time.Duration) error {
	if e.replica == nil {
		return errors.New("chaos: PromoteReplica needs a scenario started with a replica")
	}
	e.replLink.Block()
	e.mark("replication link cut")
	if !sleepCtx(ctx, lag) {
		return ctx.Err()
	}
	e.redis.kill()
	if err := redisDo(ctx, e.replAddr, "REPLICAOF", "NO", "ONE"); err != nil {
		return err
	}
	e.redis, e.redisAddr, e.replica = e.replica, e.replAddr, nil
	e.redisFront.SetBackend(e.redisAddr)
	e.mark("primary killed, replica promoted")
	return nil
}

// Outage makes a service behind a proxy unreachable for d.
func (e *Env) Outage(ctx context.Context, p *Proxy, name string, d time.Duration) error {
	p.Block()
	e.mark(name + " unreachable")
	sleepCtx(ctx, d)
	p.Unblock()
	e.mark(name + " back")
	return nil
}

// ReplayDeadLetters does what an operator's `gemq dlq replay` does: every
// task envelope in the dead-letter subscription goes back to the tasks
// topic.
func (e *Env) ReplayDeadLetters(ctx context.Context) (pushsub.ReplayResult, error) {
	res, err := pushsub.Replay(ctx, e.psClient, replaySub, tasksTopic, pushsub.ReplayOptions{
		Check: func(data []byte, attrs map[string]string) string {
			if kind := attrs[lifecycle.AttrDeadLetterKind]; kind != "" {
				return "dead-lettered by the worker as " + kind
			}
			if _, err := task.Decode(data); err != nil {
				return err.Error()
			}
			return ""
		},
	})
	e.mark(fmt.Sprintf("dead letters replayed: %d (kept %d)", res.Replayed, len(res.Kept)))
	return res, err
}

// GeminiBehaviour changes the stand-in's latency and faults from now on.
func (e *Env) GeminiBehaviour(what string, l geminisim.Latency, f geminisim.Faults, capacity float64) {
	e.Gemini.SetBehaviour(l, f, capacity)
	e.mark(what)
}

// Publish publishes raw data to the tasks topic, as a user may.
func (e *Env) Publish(ctx context.Context, data []byte) error {
	return e.PublishTo(ctx, tasksTopic, data, nil)
}

// PublishTo publishes data with attributes to a topic of the system.
func (e *Env) PublishTo(ctx context.Context, topic string, data []byte, attrs map[string]string) error {
	_, err := e.psClient.TopicAdminClient.Publish(ctx, &pubsubpb.PublishRequest{
		Topic:    "projects/" + project + "/topics/" + topic,
		Messages: []*pubsubpb.PubsubMessage{{Data: data, Attributes: attrs}},
	})
	if err != nil {
		return fmt.Errorf("pubsub Publish %s: %w", topic, err)
	}
	return nil
}

// poison is a message that cannot be processed, named for the report.
type poison struct {
	name string
	data []byte
}

// PublishPoison publishes a message that cannot be processed; the judge
// requires a copy of it on the dead-letter topic.
func (e *Env) PublishPoison(ctx context.Context, name string, data []byte) error {
	e.evMu.Lock()
	e.poison = append(e.poison, poison{name, data})
	e.evMu.Unlock()
	return e.Publish(ctx, data)
}

// published returns what PublishPoison published.
func (e *Env) published() []poison {
	e.evMu.Lock()
	defer e.evMu.Unlock()
	return append([]poison(nil), e.poison...)
}

// close stops everything that was started, newest first, then the
// processes that faults may have replaced meanwhile.
func (e *Env) close() {
	for i := len(e.cleanup) - 1; i >= 0; i-- {
		e.cleanup[i]()
	}
	for _, f := range []*function{e.worker, e.ingest} {
		if f != nil && f.p != nil {
			f.kill()
		}
	}
	e.redis.kill()
	e.replica.kill()
	if e.logw != nil {
		e.logw.Close()
	}
}

// onClose registers what close must undo.
func (e *Env) onClose(f func()) { e.cleanup = append(e.cleanup, f) }

// sleepCtx waits d, or less if ctx ends first; it reports whether ctx is
// still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	wait, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	<-wait.Done()
	return ctx.Err() == nil
}
