// Package worker is gemq's Worker function: one HTTP call per task message,
// either a Pub/Sub push delivery or a Cloud Tasks callback (header
// X-CloudTasks-TaskName, body the task envelope, or {"gemq_batch": ...}: a
// batch group's seal or poll, see lifecycle.BatchStep). It registers the entry
// point "Worker" with the functions framework; init does nothing else.
//
// The function only adapts HTTP: it decodes the request into a
// lifecycle.Delivery (source, identity, attempt, the task envelope or why it
// is invalid), hands it to the task lifecycle (internal/lifecycle, which
// leases, admits, calls Gemini, defers and settles the task), and answers
// 2xx to acknowledge or 503 to have the message delivered again. The body
// is {"outcome": "..."}; see README.md, "Worker", for the outcomes and the
// delivery guarantees.
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	"github.com/redis/go-redis/v9"

	"github.com/gemq-dev/gemq/internal/batches"
	"github.com/gemq-dev/gemq/internal/clients"
	"github.com/gemq-dev/gemq/internal/config"
	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/lazy"
	"github.com/gemq-dev/gemq/internal/lifecycle"
	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/metrics"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
)

func init() {
	functions.HTTP("Worker", handle)
}

// built holds the handler built by the first request; a failed build (say a
// misconfiguration fixed by a redeploy, or a transient dial error) is retried
// by the next request instead of being remembered for ever.
var built lazy.Value[http.Handler]

// handle is the registered entry point: it builds the handler on first use
// from the environment, then serves with it.
func handle(w http.ResponseWriter, r *http.Request) {
	h, err := lazyHandler()
	if err != nil {
		// Configuration or client setup failed: answer non-2xx so nothing
		// is lost; the message is delivered again.
		clients.ReportSetupFailure("worker", err)
		http.Error(w, `{"outcome":"setup_error"}`, http.StatusInternalServerError)
		return
	}
	h.ServeHTTP(w, r)
}

func lazyHandler() (http.Handler, error) {
	return built.Get(func() (http.Handler, error) { return build(context.Background(), os.Getenv) })
}

// build makes the handler and its clients from the configuration. ctx
// bounds dialing only; the clients live as long as the process.
func build(ctx context.Context, getenv func(string) string) (*handler, error) {
	cfg, err := config.LoadFor(config.Worker, getenv)
	if err != nil {
		return nil, err
	}
	// Always 0 but in test binaries built with the tag gemqtestclock.
	shift, err := config.TestCalendarOffset(getenv)
	if err != nil {
		return nil, err
	}
	opts := lifecycle.OptionsFrom(cfg)
	if cfg.TokenEstimator == config.EstimateTokenizer {
		tok, err := gemini.NewLocalTokenizer(cfg.TokenizerModel)
		if err != nil {
			return nil, fmt.Errorf("GEMQ_TOKENIZER_MODEL: %w", err)
		}
		opts.Tokenizer = tok
	}
	// Stdout, as Cloud Functions require; GEMQ_LOG_FILE locally. The file
	// stays open as long as the handler (the process).
	base, err := clients.Open(ctx, cfg, os.Stdout)
	if err != nil {
		return nil, err
	}
	gem, err := gemini.NewClient(ctx, gemini.Config{
		APIKey: cfg.GeminiAPIKey, BaseURL: cfg.GeminiBaseURL, Vertex: cfg.Vertex,
		Project: cfg.Project, Location: cfg.Location, Timeout: cfg.GeminiTimeout, FlexTimeout: cfg.FlexTimeout,
	})
	if err != nil {
		base.Close()
		return nil, fmt.Errorf("gemini new client: %w", err)
	}
	ct, err := queue.NewCloudTasksClient(ctx, cfg.CloudTasksEndpoint)
	if err != nil {
		base.Close()
		return nil, err
	}
	rdb, ps, log := base.Redis, base.PubSub, base.Log
	lim := newLimiter(rdb, cfg, log, shift)
	rec, err := metrics.Start(ctx, cfg, "worker", lim, log)
	if err != nil {
		base.Close()
		return nil, err
	}
	st := store.New(rdb, store.Options{TTL: cfg.ResultTTL, BodyGrace: cfg.BodyGrace()})
	deps := lifecycle.Deps{
		Store:       st,
		Batch:       batchDeps(rdb, cfg, gem, st, opts),
		Permits:     metrics.WrapLimiter(lim, rec),
		Gemini:      metrics.WrapGemini(gem, cfg.Project, rec),
		Scheduler:   queue.NewScheduler(ct, cfg.TasksQueue, cfg.WorkerURL, cfg.TasksServiceAccount),
		Results:     queue.NewPublisher(ps, cfg.ResultsTopic, queue.OneDelay),
		DeadLetters: queue.NewPublisher(ps, cfg.DeadLetterTopic, queue.OneDelay),
	}
	h := &handler{m: lifecycle.New(deps, opts, log), log: log, rec: rec}
	log.Info("worker ready", "config", cfg)
	return h, nil
}

// batchDeps are the Batch tier's: none on Vertex AI, whose Batch API reads
// its input from Cloud Storage or BigQuery only (batch-tier tasks then run
// at standard).
func batchDeps(rdb redis.Scripter, cfg config.Config, gem *gemini.Client, jobs *store.Store, opts lifecycle.Options) lifecycle.BatchDeps {
	if cfg.Vertex {
		return lifecycle.BatchDeps{}
	}
	// Groups outlive the longest wait of their members by a day.
	return lifecycle.BatchDeps{API: gem, Groups: batches.New(rdb, lifecycle.BatchHold(opts)+24*time.Hour),
		Enqueued: limiter.NewEnqueued(rdb), Jobs: jobs}
}

// newLimiter is the worker's limiter: warnings to its log, adaptation off
// for the benchmarks' baseline (GEMQ_LIMITER_BASELINE), and the test clock
// hook's calendar shift, always 0 but in test binaries (config.TestCalendarOffset).
func newLimiter(rdb redis.Scripter, cfg config.Config, log *slog.Logger, shift time.Duration) *limiter.Limiter {
	opts := []limiter.Option{limiter.WithLogger(log)}
	if cfg.LimiterBaseline {
		opts = append(opts, limiter.WithoutAdaptation(), limiter.WithoutSpacing())
	}
	if cfg.LimitPolicy == config.PolicySeed {
		opts = append(opts, limiter.WithoutSpacing())
	}
	if shift != 0 {
		log.Warn("test clock hook: the limiter reads the Pacific calendar shifted", "shift", shift.String())
	}
	return limiter.New(rdb, cfg.Quotas, opts...).ShiftCalendar(shift)
}
