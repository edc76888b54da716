// Package config is gemq's typed configuration, read once from the
// environment by both functions (Terraform sets the variables; the local
// stack sets the same ones).
//
// Load parses every variable and checks what both functions need;
// LoadFor adds what one function needs (the worker needs the Cloud Tasks
// queue and Gemini credentials, ingest does not). Every problem is reported
// at once, as one *Error naming each variable.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/task"
	"github.com/gemq-dev/gemq/internal/tier"
)

// Function selects the requirements of one deployed function.
type Function int

// The functions.
const (
	Ingest Function = iota + 1 // the HTTP ingest function
	Worker                     // the task worker
)

// String returns "ingest" or "worker".
func (f Function) String() string {
	switch f {
	case Ingest:
		return "ingest"
	case Worker:
		return "worker"
	}
	return "Function(" + strconv.Itoa(int(f)) + ")"
}

// Estimator is how the worker estimates a request's input tokens.
type Estimator string

// The estimators.
const (
	EstimateLocal       Estimator = "local"        // cheap local count (internal/gemini.EstimateInputTokens)
	EstimateCountTokens Estimator = "count_tokens" // Gemini countTokens call
	// EstimateTokenizer counts text with genai's local tokenizer
	// (internal/gemini.LocalTokenizer), from the model file GEMQ_TOKENIZER_MODEL.
	EstimateTokenizer Estimator = "tokenizer"
)

// Policy is the limiter policy.
type Policy string

// The policies.
const (
	PolicyReserve Policy = "reserve" // gemq: reserve the earliest slot and defer to it
	PolicySeed    Policy = "seed"    // deny-and-retry, as the seed does (benchmarks only)
)

// Config is the configuration of both functions. Each field names its
// environment variable and default. Load returns it fully defaulted; it is a
// plain value, safe to copy and share.
type Config struct {
	// RedisAddr is host:port of Redis/Memorystore. REDIS_ADDR, required.
	RedisAddr string
	// RedisPassword is the AUTH string. REDIS_PASSWORD, default empty. Secret.
	RedisPassword string
	// RedisTLS connects with TLS (Memorystore in-transit encryption).
	// REDIS_TLS, default false.
	RedisTLS bool
	// RedisTLSCA is the PEM of the server CA, used with RedisTLS instead of
	// the system pool. REDIS_TLS_CA, default empty (system pool).
	RedisTLSCA string

	// Project is the Google Cloud project (Pub/Sub, Cloud Tasks, default
	// quota project). GOOGLE_CLOUD_PROJECT, required.
	Project string
	// TasksTopic is the Pub/Sub topic id of task messages.
	// GEMQ_TASKS_TOPIC, default "gemq-tasks".
	TasksTopic string
	// ResultsTopic is the Pub/Sub topic id of results.
	// GEMQ_RESULTS_TOPIC, default "gemq-results".
	ResultsTopic string
	// DeadLetterTopic is the Pub/Sub topic id the worker publishes a copy
	// of every message it cannot process to, with the reason (the push
	// subscription's dead-letter topic). GEMQ_DEAD_LETTER_TOPIC, default
	// "gemq-dead-letter".
	DeadLetterTopic string
	// TasksQueue is the Cloud Tasks queue, projects/P/locations/L/queues/Q.
	// GEMQ_TASKS_QUEUE, required by the worker.
	TasksQueue string
	// WorkerURL is the URL Cloud Tasks posts deferred tasks to.
	// GEMQ_WORKER_URL, required by the worker.
	WorkerURL string
	// TasksServiceAccount is the service account email of the Cloud Task
	// OIDC token; empty sends no token (local). GEMQ_TASKS_SERVICE_ACCOUNT,
	// default empty.
	TasksServiceAccount string
	// CloudTasksEndpoint is host:port of a Cloud Tasks emulator (insecure
	// gRPC); empty uses the real service. GEMQ_CLOUDTASKS_ENDPOINT, default empty.
	CloudTasksEndpoint string
	// PubSubEmulatorHost is informational: the Pub/Sub client library reads
	// PUBSUB_EMULATOR_HOST itself. Default empty.
	PubSubEmulatorHost string

	// Quotas is the parsed quota configuration. GEMQ_QUOTAS (JSON) or
	// GEMQ_QUOTAS_FILE (path); exactly one is required.
	Quotas limiter.Config
	// AllowedModels are the models ingest accepts, each with a quota for
	// Project. GEMQ_ALLOWED_MODELS (comma-separated), default the models
	// in Quotas.
	AllowedModels []string
	// DefaultModel is the model of a job that names none; empty means jobs
	// must name one. GEMQ_DEFAULT_MODEL, default empty.
	DefaultModel string

	// GeminiAPIKey is the Gemini API key. GEMINI_API_KEY, required by the
	// worker unless Vertex. Secret.
	GeminiAPIKey string
	// Vertex uses Vertex AI (Location, ADC credentials) instead of the
	// Gemini API. GOOGLE_GENAI_USE_VERTEXAI, default false.
	Vertex bool
	// Location is the Vertex AI location. GOOGLE_CLOUD_LOCATION, default
	// "us-central1".
	Location string
	// GeminiBaseURL overrides the Gemini base URL (the local stand-in).
	// GOOGLE_GEMINI_BASE_URL, default empty.
	GeminiBaseURL string
	// GeminiTimeout bounds one Gemini call. GEMQ_GEMINI_TIMEOUT, default 120s.
	GeminiTimeout time.Duration
	// FlexTimeout bounds one Gemini call at the flex tier, whose latency
	// target is minutes (internal/tier); a flex call that times out is
	// deferred like a shed one, not counted as a failure. At least
	// GeminiTimeout; keep it under the worker's function timeout.
	// GEMQ_FLEX_TIMEOUT, default 240s.
	FlexTimeout time.Duration
	// Prices are the standard-tier prices of the models, for the cost
	// estimates of the job status. GEMQ_PRICES (JSON: {"model": {"input":
	// 0.3, "cached": 0.03, "output": 2.5}}, US dollars per million tokens)
	// replaces entries of DefaultPrices.
	Prices map[string]tier.Price
	// Lease is how long a worker holds a task; longer than GeminiTimeout.
	// GEMQ_LEASE, default GeminiTimeout + 60s.
	Lease time.Duration
	// ResultTTL is how long results and task state live in Redis.
	// GEMQ_RESULT_TTL, default 168h.
	ResultTTL time.Duration
	// ResultsBucket is the Cloud Storage bucket the results topic's Cloud
	// Storage subscription writes to (Terraform's results_to_storage).
	// Set: a published result's answer leaves Redis after ResultBodyGrace
	// and ingest reads finished results back from the bucket
	// (internal/archive); empty: answers stay in Redis for ResultTTL.
	// GEMQ_RESULTS_BUCKET, default empty.
	ResultsBucket string
	// ResultsPrefix, ResultsDatetimeFormat and ResultsMaxDuration are the
	// subscription's filename_prefix, filename_datetime_format and
	// max_duration, which say where a result published at a given time
	// lands. GEMQ_RESULTS_PREFIX, default "results/";
	// GEMQ_RESULTS_DATETIME_FORMAT, default "YYYY-MM-DD/hh_mm_ssZ";
	// GEMQ_RESULTS_MAX_DURATION, default 5m.
	ResultsPrefix         string
	ResultsDatetimeFormat string
	ResultsMaxDuration    time.Duration
	// ResultBodyGrace is how long a finished task's answer stays in Redis
	// after its result was published, when ResultsBucket is set: long
	// enough for the subscription to write it (a file closes within
	// ResultsMaxDuration of the publish; the default of three of them
	// leaves two more for a subscription that fell behind).
	// GEMQ_RESULT_BODY_GRACE, default 3 × ResultsMaxDuration; longer than
	// ResultsMaxDuration.
	ResultBodyGrace time.Duration
	// MaxAttempts bounds attempts on transient Gemini failures before
	// dead-lettering. GEMQ_MAX_ATTEMPTS, default 5.
	MaxAttempts int
	// RetryBase and RetryMax shape the back-off before retrying a transient
	// Gemini failure (5xx, timeout, connection error): attempt n comes back
	// after RetryBase·2^(n-1), capped at RetryMax, with equal jitter (half
	// fixed, half random). GEMQ_RETRY_BASE, default 10s; GEMQ_RETRY_MAX,
	// default 10m; RetryBase > 0 and RetryMax >= RetryBase.
	RetryBase, RetryMax time.Duration
	// CapacityBackoffBase and CapacityBackoffMax shape the back-off after a
	// 429 without quota details (Gemini out of capacity; not a failed
	// attempt) or a failed countTokens call, the same way, by the task's
	// number of deferrals. GEMQ_CAPACITY_BACKOFF_BASE, default 5s;
	// GEMQ_CAPACITY_BACKOFF_MAX, default 5m; base > 0 and max >= base.
	CapacityBackoffBase, CapacityBackoffMax time.Duration
	// ClaimLead is how long before its reserved slot a deferred task's
	// Cloud Task is scheduled; the callback that arrives within ClaimLead
	// (+ ClaimSlack) before the slot waits for it in the function and
	// claims it in the same invocation. It absorbs Cloud Tasks' dispatch of
	// a burst: reservations bunch at window boundaries (a whole window's
	// worth reserved for one instant) and a queue dispatches at most 500
	// tasks/s, so ~1,500 tasks due at once take ~3 s to arrive; without a
	// lead the later ones arrive after the claim window (slot + guard/4),
	// are queued again and cost a third invocation. The price is up to
	// ClaimLead of function time per deferred task. GEMQ_CLAIM_LEAD, default
	// 3s, > 0; GEMQ_LEASE must exceed GEMQ_GEMINI_TIMEOUT + ClaimLead +
	// ClaimSlack (a callback may wait that long, then call Gemini, while it
	// holds the lease), and so must the function's own timeout (Terraform's
	// worker.timeout_seconds).
	ClaimLead time.Duration
	// SeedBackoffBase and SeedBackoffMax shape the re-queue delay of the
	// seed policy (GEMQ_LIMIT_POLICY=seed, benchmarks only): a refused task
	// comes back after base·2^(n-1), capped at max, with equal jitter, n
	// its number of deferrals. GEMQ_SEED_BACKOFF_BASE, default 1s;
	// GEMQ_SEED_BACKOFF_MAX, default 1m; base > 0 and max >= base. Unused by
	// the reserve policy.
	SeedBackoffBase, SeedBackoffMax time.Duration
	// TokenEstimator is how input tokens are estimated. GEMQ_TOKEN_ESTIMATOR,
	// default "local".
	TokenEstimator Estimator
	// TokenizerModel is the path of Gemma 3's SentencePiece model file for
	// GEMQ_TOKEN_ESTIMATOR=tokenizer (required then, unused otherwise).
	// GEMQ_TOKENIZER_MODEL, default empty.
	TokenizerModel string
	// LimitPolicy is the limiter policy. GEMQ_LIMIT_POLICY, default "reserve".
	LimitPolicy Policy
	// LimiterBaseline switches off the limiter's learned estimates, AIMD and
	// quota-value lowering (limiter.WithoutAdaptation): gemq as it was before
	// they existed, which the benchmarks measure against in the same run.
	// GEMQ_LIMITER_BASELINE, default false; benchmarks only.
	LimiterBaseline bool
	// MaxBodyBytes caps an ingest request body (after decompression).
	// GEMQ_MAX_BODY_BYTES, default 33554432 (32 MiB).
	MaxBodyBytes int64
	// LogLevel is the minimum log level. GEMQ_LOG_LEVEL (debug, info, warn,
	// error), default info.
	LogLevel slog.Level
	// LogFile is where the functions write their JSON log lines: empty for
	// standard output (what Cloud Functions read: leave it empty in the
	// cloud), else a file path, created if missing and appended to (the
	// local stack's log file). GEMQ_LOG_FILE, default empty. See OpenLog.
	LogFile string
	// MetricsExport is where the worker's metrics go: "" (default: not
	// exported; the local view reads them in process) or "otlp" (pushed to
	// MetricsEndpoint with the service account's credentials: Terraform
	// sets it). GEMQ_METRICS_EXPORT.
	MetricsExport string
	// MetricsEndpoint is the OTLP gRPC endpoint. GEMQ_METRICS_ENDPOINT,
	// default telemetry.googleapis.com:443 (Cloud Monitoring).
	MetricsEndpoint string
	// MetricsInterval is the time between exports. GEMQ_METRICS_INTERVAL,
	// default 60s, at least 10s (Cloud Monitoring takes a point per series
	// at most every 5s).
	MetricsInterval time.Duration
	// Batch configures the Batch tier (GEMQ_BATCH_*, see Batch).
	Batch Batch
}

// Defaults.
const (
	DefaultTasksTopic    = "gemq-tasks"
	DefaultResultsTopic  = "gemq-results"
	DefaultDeadLetters   = "gemq-dead-letter"
	DefaultLocation      = "us-central1"
	DefaultGeminiTimeout = 120 * time.Second
	DefaultFlexTimeout   = 240 * time.Second
	DefaultLeaseMargin   = 60 * time.Second // Lease = GeminiTimeout + DefaultLeaseMargin
	DefaultResultTTL     = 168 * time.Hour

	DefaultResultsPrefix         = "results/"
	DefaultResultsDatetimeFormat = "YYYY-MM-DD/hh_mm_ssZ"
	DefaultResultsMaxDuration    = 5 * time.Minute
	DefaultMaxAttempts           = 5
	DefaultMaxBodyBytes          = 32 << 20

	DefaultRetryBase           = 10 * time.Second
	DefaultRetryMax            = 10 * time.Minute
	DefaultCapacityBackoffBase = 5 * time.Second
	DefaultCapacityBackoffMax  = 5 * time.Minute
	DefaultClaimLead           = 3 * time.Second
	DefaultMetricsEndpoint     = "telemetry.googleapis.com:443"
	DefaultMetricsInterval     = time.Minute
	DefaultSeedBackoffBase     = time.Second
	DefaultSeedBackoffMax      = time.Minute
	// DefaultQuotaRetry is the pause after a per-minute 429 that says no
	// retry delay.
	DefaultQuotaRetry = 60 * time.Second
	// DefaultCallTimeout bounds one Cloud Tasks or Pub/Sub call of the
	// worker, so an outage answers well before the push deadline.
	DefaultCallTimeout = 30 * time.Second
)

// ClaimSlack is added to ClaimLead when the worker decides whether a Cloud
// Task callback that came early for its reservation waits for it: it covers
// the clocks of the function, Cloud Tasks and Redis disagreeing a little.
const ClaimSlack = 250 * time.Millisecond

// Problem is one invalid or missing variable.
type Problem struct {
	Var string // the environment variable, e.g. "REDIS_ADDR"
	Msg string // what is wrong, e.g. "required"
}

// Error lists every configuration problem found.
type Error struct {
	Problems []Problem
}

// Error implements error: "config: REDIS_ADDR: required; GEMQ_LEASE: …".
func (e *Error) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Var + ": " + p.Msg
	}
	return "config: " + strings.Join(parts, "; ")
}

// problems collects Problems; err returns nil when there are none.
type problems []Problem

func (ps *problems) add(v, format string, args ...any) {
	*ps = append(*ps, Problem{Var: v, Msg: fmt.Sprintf(format, args...)})
}

func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	return &Error{Problems: ps}
}

// Load reads the configuration through getenv (os.Getenv in production) and
// checks everything both functions need. Any problems are returned together
// as one *Error.
func Load(getenv func(string) string) (Config, error) {
	var ps problems
	c := load(getenv, &ps)
	return c, ps.err()
}

// LoadFor is Load followed by the requirements of function f, all problems
// reported in one *Error.
func LoadFor(f Function, getenv func(string) string) (Config, error) {
	var ps problems
	c := load(getenv, &ps)
	c.validateFor(f, &ps)
	return c, ps.err()
}

// BodyGrace is how long a published result's answer stays in Redis: the
// ResultBodyGrace when results reach a bucket gemq reads back
// (ResultsBucket), else zero (answers stay for ResultTTL).
func (c Config) BodyGrace() time.Duration {
	if c.ResultsBucket == "" {
		return 0
	}
	return c.ResultBodyGrace
}

// ValidateFor checks what function f needs beyond Load, returning an *Error
// or nil.
func (c Config) ValidateFor(f Function) error {
	var ps problems
	c.validateFor(f, &ps)
	return ps.err()
}

func (c Config) validateFor(f Function, ps *problems) {
	switch f {
	case Ingest:
	case Worker:
		if c.TasksQueue == "" {
			ps.add("GEMQ_TASKS_QUEUE", "required by the worker")
		}
		if c.WorkerURL == "" {
			ps.add("GEMQ_WORKER_URL", "required by the worker")
		}
		if c.GeminiAPIKey == "" && !c.Vertex {
			ps.add("GEMINI_API_KEY", "required by the worker unless GOOGLE_GENAI_USE_VERTEXAI=true")
		}
	default:
		ps.add("", "unknown function %v", f)
	}
}

var queueRE = regexp.MustCompile(`^projects/[a-z0-9:.-]+/locations/[a-z0-9-]+/queues/[A-Za-z0-9-]{1,100}$`)

func load(getenv func(string) string, ps *problems) Config {
	str := func(v, def string) string {
		if s := strings.TrimSpace(getenv(v)); s != "" {
			return s
		}
		return def
	}
	boolean := func(v string) bool {
		s := str(v, "false")
		b, err := strconv.ParseBool(s)
		if err != nil {
			ps.add(v, "want true or false, got %q", s)
		}
		return b
	}
	duration := func(v string, def time.Duration) time.Duration {
		s := str(v, "")
		if s == "" {
			return def
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			ps.add(v, "want a positive Go duration such as 90s or 2h, got %q", s)
			return def
		}
		return d
	}
	integer := func(v string, def, lo, hi int64) int64 {
		s := str(v, "")
		if s == "" {
			return def
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < lo || n > hi {
			ps.add(v, "want an integer from %d to %d, got %q", lo, hi, s)
			return def
		}
		return n
	}
	required := func(v string) string {
		s := str(v, "")
		if s == "" {
			ps.add(v, "required")
		}
		return s
	}

	c := Config{
		RedisAddr:           required("REDIS_ADDR"),
		RedisPassword:       getenv("REDIS_PASSWORD"),
		RedisTLS:            boolean("REDIS_TLS"),
		RedisTLSCA:          str("REDIS_TLS_CA", ""),
		Project:             required("GOOGLE_CLOUD_PROJECT"),
		TasksTopic:          str("GEMQ_TASKS_TOPIC", DefaultTasksTopic),
		ResultsTopic:        str("GEMQ_RESULTS_TOPIC", DefaultResultsTopic),
		DeadLetterTopic:     str("GEMQ_DEAD_LETTER_TOPIC", DefaultDeadLetters),
		TasksQueue:          str("GEMQ_TASKS_QUEUE", ""),
		WorkerURL:           str("GEMQ_WORKER_URL", ""),
		TasksServiceAccount: str("GEMQ_TASKS_SERVICE_ACCOUNT", ""),
		CloudTasksEndpoint:  str("GEMQ_CLOUDTASKS_ENDPOINT", ""),
		PubSubEmulatorHost:  str("PUBSUB_EMULATOR_HOST", ""),
		DefaultModel:        str("GEMQ_DEFAULT_MODEL", ""),
		GeminiAPIKey:        strings.TrimSpace(getenv("GEMINI_API_KEY")),
		Vertex:              boolean("GOOGLE_GENAI_USE_VERTEXAI"),
		Location:            str("GOOGLE_CLOUD_LOCATION", DefaultLocation),
		GeminiBaseURL:       str("GOOGLE_GEMINI_BASE_URL", ""),
		GeminiTimeout:       duration("GEMQ_GEMINI_TIMEOUT", DefaultGeminiTimeout),
		FlexTimeout:         duration("GEMQ_FLEX_TIMEOUT", DefaultFlexTimeout),
		ResultTTL:           duration("GEMQ_RESULT_TTL", DefaultResultTTL),
		ResultsBucket:       str("GEMQ_RESULTS_BUCKET", ""),
		ResultsPrefix:       str("GEMQ_RESULTS_PREFIX", DefaultResultsPrefix),
		ResultsMaxDuration:  duration("GEMQ_RESULTS_MAX_DURATION", DefaultResultsMaxDuration),
		MaxAttempts:         int(integer("GEMQ_MAX_ATTEMPTS", DefaultMaxAttempts, 1, task.MaxCount)),
		TokenEstimator:      Estimator(str("GEMQ_TOKEN_ESTIMATOR", string(EstimateLocal))),
		LimitPolicy:         Policy(str("GEMQ_LIMIT_POLICY", string(PolicyReserve))),
		LimiterBaseline:     boolean("GEMQ_LIMITER_BASELINE"),
		TokenizerModel:      str("GEMQ_TOKENIZER_MODEL", ""),
		MaxBodyBytes:        integer("GEMQ_MAX_BODY_BYTES", DefaultMaxBodyBytes, 1, 1<<40),
		RetryBase:           duration("GEMQ_RETRY_BASE", DefaultRetryBase),
		RetryMax:            duration("GEMQ_RETRY_MAX", DefaultRetryMax),
		CapacityBackoffBase: duration("GEMQ_CAPACITY_BACKOFF_BASE", DefaultCapacityBackoffBase),
		CapacityBackoffMax:  duration("GEMQ_CAPACITY_BACKOFF_MAX", DefaultCapacityBackoffMax),
		ClaimLead:           duration("GEMQ_CLAIM_LEAD", DefaultClaimLead),
		SeedBackoffBase:     duration("GEMQ_SEED_BACKOFF_BASE", DefaultSeedBackoffBase),
		SeedBackoffMax:      duration("GEMQ_SEED_BACKOFF_MAX", DefaultSeedBackoffMax),
		LogFile:             str("GEMQ_LOG_FILE", ""),
		MetricsExport:       str("GEMQ_METRICS_EXPORT", ""),
		MetricsEndpoint:     str("GEMQ_METRICS_ENDPOINT", DefaultMetricsEndpoint),
		MetricsInterval:     duration("GEMQ_METRICS_INTERVAL", DefaultMetricsInterval),
	}
	if c.MetricsExport != "" && c.MetricsExport != "otlp" {
		ps.add("GEMQ_METRICS_EXPORT", "want empty (off) or otlp, got %q", c.MetricsExport)
	}
	if _, _, err := net.SplitHostPort(c.MetricsEndpoint); err != nil {
		ps.add("GEMQ_METRICS_ENDPOINT", "want host:port, got %q", c.MetricsEndpoint)
	}
	if c.MetricsInterval < 10*time.Second {
		ps.add("GEMQ_METRICS_INTERVAL", "%v: want at least 10s", c.MetricsInterval)
	}
	c.Batch = loadBatch(duration, integer, ps)
	c.Lease = duration("GEMQ_LEASE", c.GeminiTimeout+DefaultLeaseMargin)
	c.ResultsDatetimeFormat = str("GEMQ_RESULTS_DATETIME_FORMAT", DefaultResultsDatetimeFormat)
	c.ResultBodyGrace = duration("GEMQ_RESULT_BODY_GRACE", 3*c.ResultsMaxDuration)
	if c.ResultBodyGrace <= c.ResultsMaxDuration {
		ps.add("GEMQ_RESULT_BODY_GRACE", "%v must be longer than GEMQ_RESULTS_MAX_DURATION (%v): an answer may leave Redis only once the results file holding it is written",
			c.ResultBodyGrace, c.ResultsMaxDuration)
	}
	if c.Lease <= c.GeminiTimeout+c.ClaimLead+ClaimSlack {
		ps.add("GEMQ_LEASE", "%v must be longer than GEMQ_GEMINI_TIMEOUT (%v) + GEMQ_CLAIM_LEAD (%v) + %v of slack: a Cloud Task callback may wait for its slot, then call Gemini, under one lease",
			c.Lease, c.GeminiTimeout, c.ClaimLead, ClaimSlack)
	}
	if getenv("GEMQ_FLEX_TIMEOUT") == "" {
		c.FlexTimeout = max(c.FlexTimeout, c.GeminiTimeout)
	}
	if c.FlexTimeout < c.GeminiTimeout {
		ps.add("GEMQ_FLEX_TIMEOUT", "%v must not be shorter than GEMQ_GEMINI_TIMEOUT (%v): flex answers more slowly than standard", c.FlexTimeout, c.GeminiTimeout)
	}
	c.Prices = maps.Clone(DefaultPrices)
	if s := getenv("GEMQ_PRICES"); s != "" {
		var extra map[string]tier.Price
		if err := json.Unmarshal([]byte(s), &extra); err != nil {
			ps.add("GEMQ_PRICES", "want JSON {\"model\": {\"input\": …, \"cached\": …, \"output\": …}} in US dollars per million tokens: %v", err)
		}
		for m, p := range extra {
			if p.Input < 0 || p.Cached < 0 || p.Output < 0 {
				ps.add("GEMQ_PRICES", "negative price for model %q", m)
			}
			c.Prices[m] = p
		}
	}
	if c.RetryMax < c.RetryBase {
		ps.add("GEMQ_RETRY_MAX", "%v must not be shorter than GEMQ_RETRY_BASE (%v)", c.RetryMax, c.RetryBase)
	}
	if c.CapacityBackoffMax < c.CapacityBackoffBase {
		ps.add("GEMQ_CAPACITY_BACKOFF_MAX", "%v must not be shorter than GEMQ_CAPACITY_BACKOFF_BASE (%v)", c.CapacityBackoffMax, c.CapacityBackoffBase)
	}
	if c.SeedBackoffMax < c.SeedBackoffBase {
		ps.add("GEMQ_SEED_BACKOFF_MAX", "%v must not be shorter than GEMQ_SEED_BACKOFF_BASE (%v)", c.SeedBackoffMax, c.SeedBackoffBase)
	}

	if c.RedisAddr != "" {
		if _, _, err := net.SplitHostPort(c.RedisAddr); err != nil {
			ps.add("REDIS_ADDR", "want host:port, got %q", c.RedisAddr)
		}
	}
	if c.RedisTLSCA != "" {
		if !c.RedisTLS {
			ps.add("REDIS_TLS_CA", "set, but REDIS_TLS is not true")
		} else if !x509.NewCertPool().AppendCertsFromPEM([]byte(c.RedisTLSCA)) {
			ps.add("REDIS_TLS_CA", "no PEM certificate found")
		}
	}
	if c.TasksQueue != "" && !queueRE.MatchString(c.TasksQueue) {
		ps.add("GEMQ_TASKS_QUEUE", "want projects/PROJECT/locations/LOCATION/queues/QUEUE, got %q", c.TasksQueue)
	}
	if c.WorkerURL != "" {
		if u, err := url.Parse(c.WorkerURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			ps.add("GEMQ_WORKER_URL", "want an absolute http(s) URL, got %q", c.WorkerURL)
		}
	}
	if c.GeminiBaseURL != "" {
		if u, err := url.Parse(c.GeminiBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			ps.add("GOOGLE_GEMINI_BASE_URL", "want an absolute http(s) URL, got %q", c.GeminiBaseURL)
		}
	}
	switch {
	case c.TokenEstimator != EstimateLocal && c.TokenEstimator != EstimateCountTokens && c.TokenEstimator != EstimateTokenizer:
		ps.add("GEMQ_TOKEN_ESTIMATOR", "want local, count_tokens or tokenizer, got %q", c.TokenEstimator)
	case c.TokenEstimator == EstimateTokenizer && c.TokenizerModel == "":
		ps.add("GEMQ_TOKENIZER_MODEL", "required with GEMQ_TOKEN_ESTIMATOR=tokenizer: the path of Gemma 3's tokenizer model file (see README, Token estimates)")
	}
	if c.LimitPolicy != PolicyReserve && c.LimitPolicy != PolicySeed {
		ps.add("GEMQ_LIMIT_POLICY", "want reserve or seed, got %q", c.LimitPolicy)
	}
	if s := str("GEMQ_LOG_LEVEL", "info"); !validLevel(s) || c.LogLevel.UnmarshalText([]byte(s)) != nil {
		ps.add("GEMQ_LOG_LEVEL", "want debug, info, warn or error, got %q", s)
	}

	quotas, err := LoadQuotas(getenv)
	if err != nil {
		*ps = append(*ps, err.(*Error).Problems...)
		return c
	}
	c.Quotas = quotas
	c.AllowedModels = quotas.Models()
	before := len(*ps)
	if s := str("GEMQ_ALLOWED_MODELS", ""); s != "" {
		c.AllowedModels = nil
		for m := range strings.SplitSeq(s, ",") {
			m = strings.TrimSpace(m)
			switch {
			case m == "":
			case !task.ValidModel(m):
				ps.add("GEMQ_ALLOWED_MODELS", "invalid model id %q", m)
			default:
				if _, ok := quotas.Quota(limiter.Scope{Project: c.Project, Model: m}); !ok {
					ps.add("GEMQ_ALLOWED_MODELS", "model %q has no quota in the quota configuration", m)
				}
				c.AllowedModels = append(c.AllowedModels, m)
			}
		}
	}
	if len(c.AllowedModels) == 0 && len(*ps) == before {
		ps.add("GEMQ_ALLOWED_MODELS", "no model allowed (the quota configuration names none)")
	}
	if c.DefaultModel != "" && !c.ModelAllowed(c.DefaultModel) {
		ps.add("GEMQ_DEFAULT_MODEL", "%q is not an allowed model (%s)", c.DefaultModel, strings.Join(c.AllowedModels, ", "))
	}
	return c
}

// LoadQuotas reads the quota configuration as the functions do, for them
// and for anything that must agree with them (the local stack):
// GEMQ_QUOTAS holds the JSON itself, GEMQ_QUOTAS_FILE the path of a file
// holding it, and exactly one of the two must be set (both set is refused,
// never resolved by precedence). The error is an *Error with one Problem
// naming the variable at fault: GEMQ_QUOTAS_FILE for a file that cannot
// be read or parsed, GEMQ_QUOTAS otherwise.
func LoadQuotas(getenv func(string) string) (limiter.Config, error) {
	inline, file := strings.TrimSpace(getenv("GEMQ_QUOTAS")), strings.TrimSpace(getenv("GEMQ_QUOTAS_FILE"))
	env := func(v string) string {
		switch v {
		case "GEMQ_QUOTAS":
			return inline
		case "GEMQ_QUOTAS_FILE":
			return file
		}
		return getenv(v)
	}
	q, err := limiter.LoadConfig(env)
	if err == nil {
		return q, nil
	}
	v := "GEMQ_QUOTAS"
	if file != "" && inline == "" {
		v = "GEMQ_QUOTAS_FILE"
	}
	return limiter.Config{}, &Error{Problems: []Problem{{Var: v, Msg: err.Error()}}}
}

func validLevel(s string) bool {
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
		return true
	}
	return false
}

// ModelAllowed reports whether ingest accepts model m.
func (c Config) ModelAllowed(m string) bool {
	for _, a := range c.AllowedModels {
		if a == m {
			return true
		}
	}
	return false
}

// RedisOptions returns go-redis options for c: address, password, and with
// RedisTLS a TLS 1.2+ configuration trusting RedisTLSCA (or the system pool).
func (c Config) RedisOptions() (*redis.Options, error) {
	// MaxRetries -1: go-redis would otherwise run a script again after a read
	// timeout, and the limiter's and the store's scripts are not idempotent
	// (a paused Redis would run both copies on resume). A failed call fails
	// the delivery, which Pub/Sub or Cloud Tasks redelivers.
	o := &redis.Options{Addr: c.RedisAddr, Password: c.RedisPassword, MaxRetries: -1}
	if !c.RedisTLS {
		return o, nil
	}
	host, _, err := net.SplitHostPort(c.RedisAddr)
	if err != nil {
		return nil, fmt.Errorf("config: REDIS_ADDR: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if c.RedisTLSCA != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(c.RedisTLSCA)) {
			return nil, errors.New("config: REDIS_TLS_CA: no PEM certificate found")
		}
		tc.RootCAs = pool
	}
	o.TLSConfig = tc
	return o, nil
}

// NewRedis returns a Redis client for c (see RedisOptions). It does not
// connect until first used.
func NewRedis(c Config) (*redis.Client, error) {
	o, err := c.RedisOptions()
	if err != nil {
		return nil, err
	}
	return redis.NewClient(o), nil
}

// OpenLog returns where the functions write their logs: stdout when path
// (Config.LogFile) is empty, else the file at path, created (mode 0644) if
// missing and opened for appending, so that several writers (both
// functions, the local stack) can share it line by line. Closing the
// result closes the file; it never closes stdout. The error names
// GEMQ_LOG_FILE.
func OpenLog(path string, stdout io.Writer) (io.WriteCloser, error) {
	if path == "" {
		return nopCloser{stdout}, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("config: GEMQ_LOG_FILE: %w", err)
	}
	return f, nil
}

// SetupLog is where a function reports that its setup failed, when the
// configuration may not have loaded: GEMQ_LOG_FILE read through getenv and
// opened as OpenLog does, or stdout when it is unset or cannot be opened
// (which may be the failure being reported). Close it after writing.
func SetupLog(getenv func(string) string, stdout io.Writer) io.WriteCloser {
	w, err := OpenLog(strings.TrimSpace(getenv("GEMQ_LOG_FILE")), stdout)
	if err != nil {
		return nopCloser{stdout}
	}
	return w
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// LogValue implements slog.LogValuer: the configuration without secrets
// (password and API key are reported only as set or not).
func (c Config) LogValue() slog.Value {
	set := func(s string) string {
		if s == "" {
			return "unset"
		}
		return "set"
	}
	return slog.GroupValue(
		slog.String("redis_addr", c.RedisAddr),
		slog.String("redis_password", set(c.RedisPassword)),
		slog.Bool("redis_tls", c.RedisTLS),
		slog.String("project", c.Project),
		slog.String("tasks_topic", c.TasksTopic),
		slog.String("results_topic", c.ResultsTopic),
		slog.String("dead_letter_topic", c.DeadLetterTopic),
		slog.String("tasks_queue", c.TasksQueue),
		slog.String("worker_url", c.WorkerURL),
		slog.String("cloudtasks_endpoint", c.CloudTasksEndpoint),
		slog.Any("allowed_models", c.AllowedModels),
		slog.String("default_model", c.DefaultModel),
		slog.String("gemini_api_key", set(c.GeminiAPIKey)),
		slog.Bool("vertex", c.Vertex),
		slog.String("location", c.Location),
		slog.String("gemini_base_url", c.GeminiBaseURL),
		slog.Duration("gemini_timeout", c.GeminiTimeout),
		slog.Duration("flex_timeout", c.FlexTimeout),
		slog.Duration("lease", c.Lease),
		slog.Duration("result_ttl", c.ResultTTL),
		slog.String("results_bucket", c.ResultsBucket),
		slog.String("results_prefix", c.ResultsPrefix),
		slog.String("results_datetime_format", c.ResultsDatetimeFormat),
		slog.Duration("results_max_duration", c.ResultsMaxDuration),
		slog.Duration("result_body_grace", c.ResultBodyGrace),
		slog.Int("max_attempts", c.MaxAttempts),
		slog.Duration("retry_base", c.RetryBase),
		slog.Duration("retry_max", c.RetryMax),
		slog.Duration("capacity_backoff_base", c.CapacityBackoffBase),
		slog.Duration("capacity_backoff_max", c.CapacityBackoffMax),
		slog.Duration("claim_lead", c.ClaimLead),
		slog.Duration("seed_backoff_base", c.SeedBackoffBase),
		slog.Duration("seed_backoff_max", c.SeedBackoffMax),
		slog.String("token_estimator", string(c.TokenEstimator)),
		slog.String("limit_policy", string(c.LimitPolicy)),
		slog.Bool("limiter_baseline", c.LimiterBaseline),
		slog.String("tokenizer_model", c.TokenizerModel),
		slog.Int64("max_body_bytes", c.MaxBodyBytes),
		slog.String("log_level", c.LogLevel.String()),
		slog.String("log_file", c.LogFile),
		slog.String("metrics_export", c.MetricsExport),
		slog.String("metrics_endpoint", c.MetricsEndpoint),
		slog.Duration("metrics_interval", c.MetricsInterval),
		slog.Duration("batch_collect", c.Batch.Collect),
		slog.Duration("batch_poll_min", c.Batch.PollMin),
		slog.Duration("batch_poll_max", c.Batch.PollMax),
		slog.Int64("batch_enqueued_tokens", c.Batch.EnqueuedTokens),
	)
}
