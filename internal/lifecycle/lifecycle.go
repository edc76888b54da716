// Package lifecycle is the task state machine: what one delivery of a task
// message (a Pub/Sub push, or a Cloud Tasks callback) does to its task, from
// lease to result. The worker function only adapts HTTP to Machine.Handle.
//
// # States
//
// A task's state lives in Redis (internal/store); every transition is one
// script conditioned on the expected state and on the holder's fencing
// token, so a stale holder's write is refused, never applied:
//
//	             lease                mark calling          settle (token)
//	queued ─────────────▶ running ────────────────▶ calling ─────────────▶ succeeded | failed
//	  ▲                    │  ▲ │                      │
//	  │ release (token)    │  │ └── settle (token) ────┼──▶ failed (invalid, rejected, …)
//	  └────────────────────┘  │                        │
//	                          │ lease: Cloud Task N     │ mark waiting N (token), then create Cloud Task N
//	                          └────────── waiting(N) ◀─┘ (also from running: reserved, denied, back-off)
//
// Write-ahead: each side effect comes after the durable transition that
// expects it. "waiting for deferral N" is written before Cloud Task N is
// created (if the creation fails, the mark is taken back; if the process
// dies in between, a later attempt of the same delivery resumes at once, and
// past the wait's deadline any delivery takes the task over). "calling with
// token T" is written before Gemini is called. The result is stored (once,
// conditioned on T) before it is published, and the published flag after.
//
// Deliveries know themselves: the store records the holder's delivery
// identity and attempt. A later attempt of the delivery that holds the lease
// (its process died, its answer was lost) resumes at once instead of waiting
// out the lease; the task's own Cloud Task N leases a task waiting for N; a
// true foreigner (a duplicate) is acknowledged, and when it found the task
// held by another live lease a lease check comes back once that lease has
// surely expired. A resumed or taken-over task that was calling may have
// reached Gemini: its permit is treated as spent and a new one is taken, so
// the quota holds; the duplicate call is logged ("possible duplicate call").
//
// Nothing vanishes: every message that cannot be processed (undecodable,
// over the size limit, not one of its job's tasks, a malformed copy of a
// task, a copy with another request than the one the task's first lease
// recorded) is published as a copy to the dead-letter topic with its
// reason. When
// Redis cannot be reached the task is parked as a Cloud Task and acknowledged
// rather than answered non-2xx, so a Redis outage does not burn Pub/Sub's
// delivery attempts; only when Cloud Tasks is unreachable too does the
// delivery answer non-2xx.
//
// A batch-tier task is not admitted: it joins a batch group, and the
// group's own Cloud Tasks (seal, polls) send it through the Gemini Batch API
// and settle it through the same fenced lease (batch.go).
//
// Admission (when a leased task may call Gemini) is an Admission: Reserve,
// gemq's policy (reservations claimed on arrival, a shared cool-down on 429),
// or Seed, the deny-and-retry baseline the benchmarks compare against.
package lifecycle

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/gemq-dev/gemq/internal/config"
	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

// The dependencies, each the narrow part of the real type it uses (the real
// types are asserted below).
var (
	_ Store     = (*store.Store)(nil)
	_ Permits   = (*limiter.Limiter)(nil)
	_ Generator = (*gemini.Client)(nil)
	_ Tokenizer = (*gemini.LocalTokenizer)(nil)
	_ Scheduler = (*queue.Scheduler)(nil)
	_ Publisher = (*queue.Publisher)(nil)
)

// Store keeps task states, leases, write-once results and their published
// flags (*store.Store).
type Store interface {
	LeaseTask(ctx context.Context, r store.Ref, req store.LeaseRequest) (store.LeaseResult, error)
	MarkCalling(ctx context.Context, r store.Ref, tok store.Token, lease time.Duration) (store.Outcome, error)
	MarkWaitingFor(ctx context.Context, r store.Ref, tok store.Token, deferral int, until time.Time) (store.Outcome, error)
	ReleaseLease(ctx context.Context, r store.Ref, tok store.Token) (store.Outcome, error)
	CompleteWithUsage(ctx context.Context, r store.Ref, tok store.Token, response []byte, u store.Usage) (store.Outcome, error)
	Fail(ctx context.Context, r store.Ref, tok store.Token, errJSON []byte) (store.Outcome, error)
	Result(ctx context.Context, jobID, key string) (store.Record, error)
	MarkPublished(ctx context.Context, r store.Ref) error
	// The claim lead learned by the fleet (leadTracker).
	LeadStore
}

// Permits is the quota limiter (*limiter.Limiter).
type Permits interface {
	Acquire(ctx context.Context, scope limiter.Scope, cost limiter.Cost) (limiter.Permit, error)
	Claim(ctx context.Context, p limiter.Permit) (limiter.Permit, error)
	Reconcile(ctx context.Context, p limiter.Permit, actualInputTokens int64) error
	Release(ctx context.Context, p limiter.Permit) error
	Cooldown(ctx context.Context, scope limiter.Scope, until time.Time, reason string) error
	Estimate(ctx context.Context, scope limiter.Scope, kind string, raw int64) (limiter.Cost, error)
	Settle(ctx context.Context, p limiter.Permit, actualInputTokens int64) error
	Throttled(ctx context.Context, scope limiter.Scope, t limiter.Throttle429) (limiter.Adaptation, error)
}

// Tokenizer makes a request's local estimate (*gemini.LocalTokenizer).
type Tokenizer interface {
	EstimateKind(r *gemini.Request) (kind string, raw int64, err error)
}

// Generator calls Gemini (*gemini.Client).
type Generator interface {
	Generate(ctx context.Context, taskID, model string, r *gemini.Request) (*gemini.Response, error)
	CountTokens(ctx context.Context, model string, r *gemini.Request) (int64, error)
}

// Scheduler creates named Cloud Tasks (*queue.Scheduler); ALREADY_EXISTS is
// success, reported as created false.
type Scheduler interface {
	Create(ctx context.Context, name string, at time.Time, body []byte) (created bool, err error)
}

// Publisher publishes to a topic (*queue.Publisher): the results topic, and
// the dead-letter topic.
type Publisher interface {
	Publish(ctx context.Context, msgs []queue.Message) error
}

// Deps are the Machine's dependencies; all are required.
type Deps struct {
	Store       Store
	Permits     Permits
	Gemini      Generator
	Scheduler   Scheduler
	Results     Publisher
	DeadLetters Publisher
	// Batch are the Batch tier's (optional: without them batch-tier tasks
	// run at standard).
	Batch BatchDeps
}

// Options tune a Machine. Zero values take internal/config's defaults.
type Options struct {
	// Project is the quota project of the limiter scope (GOOGLE_CLOUD_PROJECT).
	Project string
	// Policy is the admission policy (GEMQ_LIMIT_POLICY).
	Policy config.Policy
	// Vertex: Gemini is Vertex AI (GOOGLE_GENAI_USE_VERTEXAI), where every
	// 429 is a capacity signal (Dynamic Shared Quota).
	Vertex bool
	// CountTokens: estimate with the countTokens API, not locally.
	CountTokens bool
	// Tokenizer, when set (GEMQ_TOKEN_ESTIMATOR=tokenizer), makes the local
	// estimate with genai's local tokenizer instead of characters/4.
	Tokenizer Tokenizer
	// GeminiTimeout bounds one Gemini call (GEMQ_GEMINI_TIMEOUT).
	GeminiTimeout time.Duration
	// FlexTimeout bounds one Gemini call at the flex tier
	// (GEMQ_FLEX_TIMEOUT); at least GeminiTimeout.
	FlexTimeout time.Duration
	// Lease is how long a delivery holds a task (GEMQ_LEASE); > GeminiTimeout.
	Lease time.Duration
	// MaxAttempts bounds transient failures before dead-letter (GEMQ_MAX_ATTEMPTS).
	MaxAttempts int
	// RetryBase, RetryMax shape the transient-failure back-off.
	RetryBase, RetryMax time.Duration
	// CapacityBase, CapacityMax shape the back-off after a 429 without
	// details or a failed countTokens.
	CapacityBase, CapacityMax time.Duration
	// QuotaRetry is the pause after a per-minute 429 without RetryInfo.
	QuotaRetry time.Duration
	// SeedBase, SeedMax shape the seed policy's re-queue delay.
	SeedBase, SeedMax time.Duration
	// ClaimLead bounds how long before its reserved slot a deferred task's
	// Cloud Task is due (the lead actually used is learned from Cloud
	// Tasks' dispatch lag, never more than this), and is how early (+
	// config.ClaimSlack) a delivery may be and still wait for its slot
	// instead of being deferred again.
	ClaimLead time.Duration
	// CallTimeout bounds one Cloud Tasks or Pub/Sub call, so an outage
	// answers non-2xx well before the push deadline.
	CallTimeout time.Duration
	// Batch configures the Batch tier (GEMQ_BATCH_*).
	Batch config.Batch
}

// OptionsFrom maps the configuration onto Options.
func OptionsFrom(cfg config.Config) Options {
	return Options{
		Project:       cfg.Project,
		Policy:        cfg.LimitPolicy,
		CountTokens:   cfg.TokenEstimator == config.EstimateCountTokens,
		Vertex:        cfg.Vertex,
		GeminiTimeout: cfg.GeminiTimeout,
		FlexTimeout:   cfg.FlexTimeout,
		Lease:         cfg.Lease,
		MaxAttempts:   cfg.MaxAttempts,
		RetryBase:     cfg.RetryBase,
		RetryMax:      cfg.RetryMax,
		CapacityBase:  cfg.CapacityBackoffBase,
		CapacityMax:   cfg.CapacityBackoffMax,
		SeedBase:      cfg.SeedBackoffBase,
		SeedMax:       cfg.SeedBackoffMax,
		ClaimLead:     cfg.ClaimLead,
		Batch:         cfg.Batch,
	}
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.Policy == "" {
		o.Policy = config.PolicyReserve
	}
	def(&o.GeminiTimeout, config.DefaultGeminiTimeout)
	def(&o.Lease, o.GeminiTimeout+config.DefaultLeaseMargin)
	def(&o.FlexTimeout, config.DefaultFlexTimeout)
	o.FlexTimeout = max(o.FlexTimeout, o.GeminiTimeout)
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = config.DefaultMaxAttempts
	}
	def(&o.RetryBase, config.DefaultRetryBase)
	def(&o.RetryMax, max(config.DefaultRetryMax, o.RetryBase))
	def(&o.CapacityBase, config.DefaultCapacityBackoffBase)
	def(&o.CapacityMax, max(config.DefaultCapacityBackoffMax, o.CapacityBase))
	def(&o.QuotaRetry, config.DefaultQuotaRetry)
	def(&o.SeedBase, config.DefaultSeedBackoffBase)
	def(&o.SeedMax, max(config.DefaultSeedBackoffMax, o.SeedBase))
	def(&o.ClaimLead, config.DefaultClaimLead)
	def(&o.CallTimeout, config.DefaultCallTimeout)
	b := &o.Batch
	def(&b.Collect, config.DefaultBatchCollect)
	def(&b.PollMin, config.DefaultBatchPollMin)
	def(&b.PollMax, max(config.DefaultBatchPollMax, b.PollMin))
	defInt := func(n *int64, v int64) {
		if *n <= 0 {
			*n = v
		}
	}
	defInt(&b.MaxEntries, config.DefaultBatchMaxEntries)
	defInt(&b.MaxBytes, config.DefaultBatchMaxBytes)
	defInt(&b.InlineBytes, config.DefaultBatchInlineBytes)
	defInt(&b.EnqueuedTokens, config.DefaultBatchEnqueuedTokens)
	return o
}

// Machine runs deliveries through the task lifecycle. It is safe for
// concurrent use.
type Machine struct {
	deps  Deps
	admit Admission
	opts  Options
	log   *slog.Logger
	now   func() time.Time
	// lead learns Cloud Tasks' dispatch lag: how long before its slot a
	// reservation's Cloud Task is due (at most Options.ClaimLead).
	lead *leadTracker
	// openGroups remembers the open batch group last seen per scope
	// (limiter.Scope → group id), a hint that saves a round trip.
	openGroups sync.Map
}

// New returns a Machine on deps. A nil log discards.
func New(deps Deps, opts Options, log *slog.Logger) *Machine {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Machine{deps: deps, opts: opts.withDefaults(), log: log, now: time.Now}
	m.lead = newLeadTracker(m.opts.ClaimLead, deps.Store)
	if m.opts.Policy == config.PolicySeed {
		m.admit = seed{m}
	} else {
		m.admit = reserve{m}
	}
	return m
}

// Options returns the options in force (defaults filled in).
func (m *Machine) Options() Options { return m.opts }

// Source says how a delivery arrived.
type Source string

// The sources.
const (
	PubSub     Source = "pubsub"     // a Pub/Sub push delivery
	CloudTasks Source = "cloudtasks" // a Cloud Tasks callback
)

// Delivery is one attempt to deliver one task message.
type Delivery struct {
	Source Source
	// ID is the Pub/Sub message id or the Cloud Task's name: the same for
	// every attempt of one message or Cloud Task.
	ID string
	// Attempt numbers the attempts of one delivery: Pub/Sub's
	// deliveryAttempt (0 when the subscription has no dead-letter policy),
	// or Cloud Tasks' retry count.
	Attempt int
	// ScheduledAt is a Cloud Task's schedule time (X-CloudTasks-TaskETA),
	// zero when unknown; the machine learns the dispatch lag from it.
	ScheduledAt time.Time
	// Data is the task message as delivered (the envelope's bytes), kept for
	// dead-letter copies.
	Data []byte
	// Envelope is the decoded task; valid when Invalid is nil.
	Envelope task.Envelope
	// Invalid, when set, says why the message can never be processed
	// (undecodable, oversized): it is dead-lettered.
	Invalid error
	// Kind classifies Invalid for the dead-letter copy: KindUndecodable
	// when zero.
	Kind DeadLetterKind
	// Batch, when set, makes the delivery a batch group's step (a Cloud
	// Task of the Batch tier: seal or poll), not a task message.
	Batch *BatchStep
}

// holder is the delivery's identity in the store.
func (d Delivery) holder() string { return string(d.Source) + "/" + d.ID }

// Outcome is what happened to a delivery. Redeliver asks for the message
// again (an infrastructure failure; answer non-2xx); otherwise acknowledge.
type Outcome struct {
	Name      string
	Redeliver bool
}

// Outcome names, reported in answers and logs.
const (
	OutSucceeded  = "succeeded"
	OutFailed     = "failed"
	OutDeadLetter = "dead_letter"
	OutPoison     = "poison"    // dead-lettered copy: the message can never be processed
	OutDuplicate  = "duplicate" // already terminal, or waiting for another delivery
	OutHeld       = "held"      // another delivery's lease is live
	OutDeferred   = "deferred"  // Cloud Task created for later
	OutParked     = "parked"    // Redis unreachable: parked as a Cloud Task
	OutRedeliver  = "redeliver" // infrastructure failure
	OutAbandoned  = "abandoned" // the request's context ended mid-way
	OutStale      = "stale"     // another delivery took the task over meanwhile
	OutForeign    = "foreign"   // not one of its job's tasks: dead-lettered copy
)

func ack(name string) Outcome { return Outcome{Name: name} }

var redeliver = Outcome{Name: OutRedeliver, Redeliver: true}
