// Package ingest is gemq's HTTP ingest function, registered with the
// functions framework as "Ingest". It accepts jobs and publishes one task
// message per request, and serves job status and results:
//
//	POST /v1/jobs                          submit a job (JSON, or Batch API JSONL) → 202
//	GET  /v1/jobs/{id}                     state and counts
//	POST /v1/jobs/{id}:cancel              cancel a job: its tasks end without calling Gemini
//	GET  /v1/jobs/{id}/results             finished tasks as JSONL (Batch API output format)
//	GET  /v1/jobs/{id}/requests/{key}      one task
//
// Paths are matched on the part from "/v1/jobs" on, after any prefix (Cloud
// Functions serve the function at "/", the local stack may at "/Ingest").
// Every error is JSON: {"error": {"code", "status", "message", "field", ...}}.
//
// A submission is checked completely (syntax, strict field names, duplicate
// and case-variant keys, UTF-8, model, request values, prompt size against
// the model's input limit, envelope size) before anything is stored or
// published; 202 is answered only after every task is published. See submit
// for the idempotency rules.
//
// init only registers the function: the Redis and Pub/Sub clients are built
// from internal/config on the first request, race-free, and kept only once
// they were built successfully.
package ingest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"cloud.google.com/go/storage"
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	"github.com/redis/go-redis/v9"

	"github.com/gemq-dev/gemq/internal/archive"
	"github.com/gemq-dev/gemq/internal/clients"
	"github.com/gemq-dev/gemq/internal/config"
	"github.com/gemq-dev/gemq/internal/gemini"
	"github.com/gemq-dev/gemq/internal/lazy"
	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
)

func init() {
	functions.HTTP("Ingest", handle)
}

// built holds the server built from the environment by the first request;
// a failed build (bad configuration) is retried by the next request and
// reported each time.
var built lazy.Value[*server]

// handle is the registered function.
func handle(w http.ResponseWriter, r *http.Request) {
	s, err := current()
	if err != nil {
		clients.ReportSetupFailure("ingest", err)
		writeJSON(w, http.StatusInternalServerError, struct {
			Error *apiError `json:"error"`
		}{&apiError{Code: http.StatusInternalServerError, Status: "INTERNAL", Message: "ingest is not configured: " + err.Error()}})
		return
	}
	s.ServeHTTP(w, r)
}

func current() (*server, error) {
	return built.Get(func() (*server, error) { return fromEnv(context.Background(), os.Getenv, os.Stdout) })
}

// fromEnv builds the server with real clients from the configuration,
// logging to logOut (stdout), or to GEMQ_LOG_FILE when it is set (the file
// stays open as long as the server, the process). No client connects here;
// the first use does.
func fromEnv(ctx context.Context, getenv func(string) string, logOut io.Writer) (*server, error) {
	cfg, err := config.LoadFor(config.Ingest, getenv)
	if err != nil {
		return nil, err
	}
	base, err := clients.Open(ctx, cfg, logOut)
	if err != nil {
		return nil, err
	}
	rdb, ps, log := base.Redis, base.PubSub, base.Log
	arch, err := resultsArchiveFrom(ctx, cfg)
	if err != nil {
		base.Close()
		return nil, err
	}
	log.Info("ingest configured", "config", cfg)
	st := store.New(rdb, store.Options{TTL: cfg.ResultTTL, BodyGrace: cfg.BodyGrace()})
	return newServer(deps{
		archive:      arch,
		restore:      st,
		lookback:     cfg.ResultTTL,
		archiveLag:   cfg.ResultsMaxDuration + time.Minute,
		store:        st,
		marks:        redisMarks{rdb: rdb, ttl: cfg.ResultTTL},
		publisher:    queue.NewPublisher(ps, cfg.TasksTopic, queue.ManyDelay),
		limits:       quotaLimits{cfg: cfg.Quotas, project: cfg.Project},
		allowed:      cfg.AllowedModels,
		defaultModel: cfg.DefaultModel,
		maxBodyBytes: cfg.MaxBodyBytes,
		log:          log,
		prices:       cfg.Prices,
		perMinute:    quotaLimits{cfg: cfg.Quotas, project: cfg.Project}.RequestsPerMinute,
	}), nil
}

// resultsArchiveFrom returns the archive of GEMQ_RESULTS_BUCKET, read with
// the environment's credentials (STORAGE_EMULATOR_HOST: an emulator's, no
// credentials), or nil when no bucket is configured.
func resultsArchiveFrom(ctx context.Context, cfg config.Config) (resultsArchive, error) {
	if cfg.ResultsBucket == "" {
		return nil, nil
	}
	c, err := storage.NewClient(ctx)
	if err != nil {
		return nil, fmt.Errorf("storage new client: %w", err)
	}
	return archive.New(c.Bucket(cfg.ResultsBucket), archive.Layout{Prefix: cfg.ResultsPrefix,
		DatetimeFormat: cfg.ResultsDatetimeFormat, MaxDuration: cfg.ResultsMaxDuration}), nil
}

// redisMarks keeps the "published" mark of a job in Redis, under the job's
// hash tag, with the results' TTL:
//
//	gemq:ingest:{<job>}:published   string "1"
type redisMarks struct {
	rdb redis.Cmdable
	ttl time.Duration
}

func publishedKey(jobID string) string { return "gemq:ingest:{" + jobID + "}:published" }

// Published reports whether MarkPublished was called for jobID.
func (m redisMarks) Published(ctx context.Context, jobID string) (bool, error) {
	n, err := m.rdb.Exists(ctx, publishedKey(jobID)).Result()
	if err != nil {
		return false, fmt.Errorf("redis exists: %w", err)
	}
	return n == 1, nil
}

// MarkPublished records that every task of jobID was published.
func (m redisMarks) MarkPublished(ctx context.Context, jobID string) error {
	ttl := m.ttl
	if ttl <= 0 {
		ttl = store.DefaultTTL
	}
	if err := m.rdb.Set(ctx, publishedKey(jobID), "1", ttl).Err(); err != nil {
		return fmt.Errorf("redis set: %w", err)
	}
	return nil
}

// quotaLimits derives a model's input limit from the quota configuration:
// a prompt larger than the capacity of an input-token dimension (e.g. the
// tokens-per-minute bucket) can never be admitted by the limiter, so it is
// refused at ingest instead of failing later.
type quotaLimits struct {
	cfg     limiter.Config
	project string
}

// InputTokenLimit returns the smaller of the model's published input token
// limit (gemini.KnownModelLimits) and the smallest capacity of its quota's
// input-token dimensions, or 0 when neither is known.
func (q quotaLimits) InputTokenLimit(_ context.Context, model string) (int64, string, error) {
	var limit int64
	what := ""
	if ml, ok := gemini.KnownModelLimits(model); ok {
		limit, what = ml.InputTokens, "the model's input token limit"
	}
	quota, ok := q.cfg.Quota(limiter.Scope{Project: q.project, Model: model})
	if !ok {
		return limit, what, nil
	}
	for _, d := range quota.Dimensions {
		if d.Unit != limiter.InputTokens {
			continue
		}
		if c := quota.Capacity(d); limit == 0 || c < limit {
			limit, what = c, fmt.Sprintf("the %s quota's capacity", d.Name)
		}
	}
	return limit, what, nil
}

// RequestsPerMinute is the smallest pace the model's request dimensions
// allow, in requests per minute (Capacity over the period), or 0 when none
// is configured; service_tier auto estimates a job's quota time from it.
func (q quotaLimits) RequestsPerMinute(model string) int64 {
	quota, ok := q.cfg.Quota(limiter.Scope{Project: q.project, Model: model})
	if !ok {
		return 0
	}
	var best float64
	for _, d := range quota.Dimensions {
		if d.Unit != limiter.Requests || d.Period <= 0 {
			continue
		}
		if pm := float64(quota.Capacity(d)) / d.Period.Minutes(); best == 0 || pm < best {
			best = pm
		}
	}
	if best > 0 && best < 1 {
		return 1
	}
	return int64(best)
}
