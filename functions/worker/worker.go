// Package worker is gemq's Worker function: one HTTP call per task message,
// either a Pub/Sub push delivery or a Cloud Tasks callback (header
// X-CloudTasks-TaskName, body the task envelope). It registers the entry
// point "Worker" with the functions framework; init does nothing else.
//
// Per message, in order:
//
//  1. decode the envelope (internal/task); poison → a recorded failure and 2xx;
//  2. lease the task (internal/store); finished, running elsewhere, or waiting
//     for the Cloud Task of its deferral (a duplicate push or an older Cloud
//     Task) → 2xx, no Gemini call and no limiter call;
//  3. estimate input tokens and take a permit (internal/limiter): Acquire, or
//     Claim for a reservation the envelope carries; reserved or denied → a
//     named Cloud Task at the permit's time (internal/queue), the task marked
//     waiting, 2xx; rejected → permanent failure. A reservation's Cloud Task
//     is due a claim lead (GEMQ_CLAIM_LEAD) before its slot, and a delivery
//     whose reservation is at most the lead away (a callback come early, or a
//     fresh reservation) waits for the slot in the handler and claims it in
//     the same invocation, so that Cloud Tasks' burst dispatch at a window
//     boundary does not make callbacks late (a late one is queued again:
//     another invocation);
//  4. granted → Gemini (internal/gemini), then reconcile the token charge;
//  5. success → the response written once, then published to the results
//     topic; failures as classified (429 per minute/day → shared cool-down
//     and a Cloud Task after it; 5xx/timeouts → bounded retries through
//     Cloud Tasks, then dead-letter; 400/403/404 → permanent failure);
//  6. infrastructure down (Redis, Cloud Tasks, Pub/Sub) → non-2xx, so the
//     message is delivered again; never a Gemini call without a permit, never
//     a Cloud Task created together with a non-2xx answer.
//
// The answer's body is {"outcome": "..."}; see README.md, "Worker", for the
// outcomes and the delivery guarantees.
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/gemq-dev/gemq/internal/config"
	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/lazy"
	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/logging"
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
		lw := config.SetupLog(os.Getenv, os.Stdout)
		logging.New(lw, slog.LevelInfo).Error("worker setup failed", "error", err.Error())
		lw.Close()
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
	// Stdout, as Cloud Functions require; GEMQ_LOG_FILE locally. The file
	// stays open as long as the handler (the process).
	logw, err := config.OpenLog(cfg.LogFile, os.Stdout)
	if err != nil {
		return nil, err
	}
	log := logging.New(logw, cfg.LogLevel)

	rdb, err := config.NewRedis(cfg)
	if err != nil {
		logw.Close()
		return nil, err
	}
	gem, err := gemini.NewClient(ctx, gemini.Config{
		APIKey: cfg.GeminiAPIKey, BaseURL: cfg.GeminiBaseURL, Vertex: cfg.Vertex,
		Project: cfg.Project, Location: cfg.Location, Timeout: cfg.GeminiTimeout,
	})
	if err != nil {
		rdb.Close()
		logw.Close()
		return nil, fmt.Errorf("gemini new client: %w", err)
	}
	ps, err := queue.NewPubSubClient(ctx, cfg.Project)
	if err != nil {
		rdb.Close()
		logw.Close()
		return nil, err
	}
	ct, err := queue.NewCloudTasksClient(ctx, cfg.CloudTasksEndpoint)
	if err != nil {
		rdb.Close()
		ps.Close()
		logw.Close()
		return nil, err
	}

	h := newHandler(
		store.New(rdb, store.Options{TTL: cfg.ResultTTL}),
		limiter.New(rdb, cfg.Quotas),
		gem,
		queue.NewScheduler(ct, cfg.TasksQueue, cfg.WorkerURL, cfg.TasksServiceAccount),
		queue.NewPublisher(ps, cfg.ResultsTopic),
		optionsFrom(cfg), log)
	log.Info("worker ready", "config", cfg)
	return h, nil
}

// optionsFrom maps the configuration onto the handler's options.
func optionsFrom(cfg config.Config) options {
	return options{
		project:       cfg.Project,
		policy:        string(cfg.LimitPolicy),
		countTokens:   cfg.TokenEstimator == config.EstimateCountTokens,
		geminiTimeout: cfg.GeminiTimeout,
		lease:         cfg.Lease,
		maxAttempts:   cfg.MaxAttempts,
		retryBase:     cfg.RetryBase,
		retryMax:      cfg.RetryMax,
		capacityBase:  cfg.CapacityBackoffBase,
		capacityMax:   cfg.CapacityBackoffMax,
		seedBase:      cfg.SeedBackoffBase,
		seedMax:       cfg.SeedBackoffMax,
		claimLead:     cfg.ClaimLead,
	}
}
