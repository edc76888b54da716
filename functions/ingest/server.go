package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gemq-dev/gemq/internal/archive"
	"github.com/gemq-dev/gemq/internal/job"
	"github.com/gemq-dev/gemq/internal/logging"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
	"github.com/gemq-dev/gemq/internal/tier"
)

// jobStore is what ingest needs of internal/store.
type jobStore interface {
	CreateJob(ctx context.Context, nj store.NewJob) (store.Job, bool, error)
	GetJob(ctx context.Context, jobID string) (store.Job, error)
	CancelJob(ctx context.Context, jobID string) (store.Job, int, error)
	Result(ctx context.Context, jobID, key string) (store.Record, error)
	ResultsPage(ctx context.Context, jobID string, after int64, limit int) ([]store.Record, int64, error)
}

var _ jobStore = (*store.Store)(nil)

// resultsArchive is what ingest needs of internal/archive: the results the
// Cloud Storage subscription wrote, read back for a job.
type resultsArchive interface {
	Scan(ctx context.Context, jobID string, o archive.ScanOptions, fn func(archive.Result) error) (archive.ScanStats, error)
}

var _ resultsArchive = (*archive.Archive)(nil)

// publisher is what ingest needs of internal/queue: Publish returns only
// once every message is published, or an error.
type publisher interface {
	Publish(ctx context.Context, msgs []queue.Message) error
}

// publishMarks records that every task of a job was published, so that a
// client's retry of a completed submission publishes nothing, while a retry
// after a crash between CreateJob and the end of publishing republishes.
type publishMarks interface {
	Published(ctx context.Context, jobID string) (bool, error)
	MarkPublished(ctx context.Context, jobID string) error
}

// deps are the server's collaborators and settings. The registered function
// builds them from internal/config; tests build them directly.
type deps struct {
	store     jobStore
	marks     publishMarks
	publisher publisher
	// archive reads finished results back from Cloud Storage once their
	// answers left Redis (GEMQ_RESULTS_BUCKET); nil when there is none.
	archive resultsArchive
	// restore records a lost job's archived results back into Redis;
	// lookback is how far before a loss its results are looked for
	// (GEMQ_RESULT_TTL).
	restore  restorer
	lookback time.Duration
	// archiveLag is how long after a loss the archive may still lack
	// results published before it (the subscription's max_duration and a
	// minute of clock skew).
	archiveLag time.Duration
	// limits gives per-model input token limits; nil: not checked.
	limits job.InputLimits
	// allowed is the set of models accepted; empty allows none.
	allowed []string
	// defaultModel is used when a job names none; "" makes model required.
	defaultModel string
	// maxBodyBytes caps the body as sent and after decompression.
	maxBodyBytes int64
	// maxRequests caps the requests of one job; 0 means DefaultMaxRequests.
	maxRequests int
	// log receives structured logs; nil discards them.
	log *slog.Logger
	// newJobID returns a fresh job id for jobs submitted without one.
	newJobID func() string
	// publishTimeout bounds publishing a job's messages; 0 means 5 minutes.
	publishTimeout time.Duration
	// prices are the models' standard prices, for cost estimates; a model
	// without one gets token sums only.
	prices map[string]tier.Price
	// perMinute gives a model's requests per minute, for service_tier
	// auto; nil: unknown.
	perMinute func(model string) int64
}

// DefaultMaxRequests is the most requests one job may hold.
const DefaultMaxRequests = 100_000

// resultsPageSize is how many results GET .../results reads per store call.
const resultsPageSize = 500

// server is the ingest HTTP handler.
type server struct {
	deps
	// rebuilt remembers the archive objects read for lost jobs.
	rebuilt rebuilds
	// rules build jobs from submissions, from deps' settings.
	rules job.Rules
}

// newServer returns the handler for d, filling in defaults.
func newServer(d deps) *server {
	if d.log == nil {
		d.log = logging.Discard()
	}
	if d.maxRequests <= 0 {
		d.maxRequests = DefaultMaxRequests
	}
	if d.maxBodyBytes <= 0 {
		d.maxBodyBytes = 32 << 20
	}
	if d.newJobID == nil {
		d.newJobID = job.RandomID
	}
	if d.publishTimeout <= 0 {
		d.publishTimeout = 5 * time.Minute
	}
	if d.lookback <= 0 {
		d.lookback = store.DefaultTTL
	}
	return &server{deps: d, rules: job.Rules{Allowed: d.allowed, DefaultModel: d.defaultModel,
		MaxRequests: d.maxRequests, Limits: d.limits, NewID: d.newJobID, PerMinute: d.perMinute}}
}

// route is one parsed request path: the part after ".../v1/jobs".
type route struct {
	name  string // "jobs", "job", "results", "request": for logs, never the raw path
	jobID string
	key   string
	allow string // the methods this route accepts
}

// parseRoute finds "/v1/jobs" in the escaped path (after any prefix such as
// "/Ingest") and splits what follows. Segments are unescaped one by one, so
// a key may contain "/" as %2F.
func parseRoute(escapedPath string) (route, bool) {
	const base = "/v1/jobs"
	i := strings.Index(escapedPath, base)
	for i >= 0 {
		rest := escapedPath[i+len(base):]
		if rest == "" || rest[0] == '/' {
			break
		}
		j := strings.Index(escapedPath[i+1:], base)
		if j < 0 {
			i = -1
			break
		}
		i += 1 + j
	}
	if i < 0 {
		return route{}, false
	}
	rest := strings.TrimPrefix(escapedPath[i+len(base):], "/")
	if rest == "" {
		return route{name: "jobs", allow: http.MethodPost}, true
	}
	segs := strings.Split(rest, "/")
	un := make([]string, len(segs))
	for k, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil || u == "" {
			return route{}, false
		}
		un[k] = u
	}
	switch {
	case len(un) == 1 && strings.HasSuffix(un[0], ":cancel"):
		return route{name: "cancel", jobID: strings.TrimSuffix(un[0], ":cancel"), allow: http.MethodPost}, true
	case len(un) == 1:
		return route{name: "job", jobID: un[0], allow: http.MethodGet}, true
	case len(un) == 2 && un[1] == "results":
		return route{name: "results", jobID: un[0], allow: http.MethodGet}, true
	case len(un) == 3 && un[1] == "requests":
		return route{name: "request", jobID: un[0], key: un[2], allow: http.MethodGet}, true
	}
	return route{}, false
}

// ServeHTTP routes a request. Every answer other than a results stream is
// JSON; every error is an apiError.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &statusWriter{ResponseWriter: w}
	rt, ok := parseRoute(r.URL.EscapedPath())
	log := s.log.With("route", rt.name)
	if rt.jobID != "" {
		log = log.With(logging.JobID, safeID(rt.jobID))
	}
	ctx := logging.With(r.Context(), log)
	r = r.WithContext(ctx)
	switch {
	case !ok:
		s.fail(rw, r, &apiError{Code: http.StatusNotFound, Message: "no such resource: use POST /v1/jobs, GET /v1/jobs/{id}, POST /v1/jobs/{id}:cancel, GET /v1/jobs/{id}/results or GET /v1/jobs/{id}/requests/{key}"})
	case r.Method != rt.allow && !(rt.allow == http.MethodGet && r.Method == http.MethodHead):
		allow := rt.allow
		if allow == http.MethodGet {
			allow = "GET, HEAD"
		}
		rw.Header().Set("Allow", allow)
		s.fail(rw, r, &apiError{Code: http.StatusMethodNotAllowed, Message: fmt.Sprintf("method %s not allowed here; allowed: %s", r.Method, allow)})
	case rt.name == "jobs":
		s.submit(rw, r)
	case rt.name == "job":
		s.getJob(rw, r, rt.jobID)
	case rt.name == "cancel":
		s.cancelJob(rw, r, rt.jobID)
	case rt.name == "results":
		s.getResults(rw, r, rt.jobID)
	case rt.name == "request":
		s.getRequest(rw, r, rt.jobID, rt.key)
	}
	if rw.logger != nil {
		log = rw.logger
	}
	log.Info("request", "method", r.Method, "status", rw.status, "duration_ms", time.Since(start).Milliseconds())
}

// safeID returns id when it is a valid job id, else a placeholder, so that
// arbitrary client input never reaches the logs.
func safeID(id string) string {
	if task.ValidJobID(id) {
		return id
	}
	return "(invalid)"
}

// statusWriter remembers the status written, and a logger with the job id
// once a handler knows it.
type statusWriter struct {
	http.ResponseWriter
	status int
	logger *slog.Logger
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (Flush).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// setLogger makes the final request log line carry l's attributes.
func setLogger(w http.ResponseWriter, l *slog.Logger) {
	if sw, ok := w.(*statusWriter); ok {
		sw.logger = l
	}
}

// jobView is the JSON of GET /v1/jobs/{id}.
type jobView struct {
	JobID      string       `json:"job_id"`
	Model      string       `json:"model"`
	State      string       `json:"state"`
	Counts     store.Counts `json:"counts"`
	CreatedAt  time.Time    `json:"created_at"`
	UpdatedAt  time.Time    `json:"updated_at"`
	FinishedAt *time.Time   `json:"finished_at,omitempty"`
	// StateLostAt is when Redis was found to have lost the job's record
	// (state "state_lost"): counts then cover only what happened since;
	// resubmitting the same job re-runs the tasks without a result.
	StateLostAt *time.Time `json:"state_lost_at,omitempty"`
	// StateLost explains state_lost to the user.
	StateLost string `json:"state_lost,omitempty"`
	// CancelledAt is when the job was cancelled (POST /v1/jobs/{id}:cancel):
	// state "cancelling" until every task has ended, then "done".
	CancelledAt *time.Time `json:"cancelled_at,omitempty"`
	// ServiceTier is the job's tier (what auto chose and why).
	ServiceTier *tierView `json:"service_tier,omitempty"`
	// Cost sums the succeeded tasks' tokens per serving tier and estimates
	// what they cost.
	Cost *tier.Report `json:"cost,omitempty"`
}

func (s *server) viewOf(j store.Job) jobView {
	v := jobView{JobID: j.ID, Model: j.Model, State: j.State(), Counts: j.Counts, CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt,
		ServiceTier: tierViewOf(j), Cost: costOf(j, s.prices)}
	if j.Done() {
		f := j.FinishedAt
		v.FinishedAt = &f
	}
	if !j.CancelledAt.IsZero() {
		c := j.CancelledAt
		v.CancelledAt = &c
	}
	if !j.LostAt.IsZero() {
		l := j.LostAt
		v.StateLostAt = &l
		if !j.Done() {
			v.StateLost = "Redis lost this job's state; the counts cover only what happened since. Results published before the loss are on the results topic (and in Cloud Storage when it is configured); resubmit the same job to re-run the tasks that have no result here."
		}
	}
	return v
}

// lookupJob answers 400 for a malformed id and 404 for an unknown job; ok
// is false when it has answered.
func (s *server) lookupJob(w http.ResponseWriter, r *http.Request, id string) (store.Job, bool) {
	if !task.ValidJobID(id) {
		s.fail(w, r, &apiError{Code: http.StatusBadRequest, Field: "job_id", Message: job.IDRule})
		return store.Job{}, false
	}
	j, err := s.store.GetJob(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, &apiError{Code: http.StatusNotFound, Field: "job_id", Message: fmt.Sprintf("job %s not found", id)})
		return store.Job{}, false
	case err != nil:
		s.internal(w, r, "get job", err)
		return store.Job{}, false
	}
	return j, true
}

// getJob answers a job's state and counts. For a job whose record Redis
// lost, it first records the results the archive holds (rebuild), so the
// counts include what finished before the loss.
func (s *server) getJob(w http.ResponseWriter, r *http.Request, id string) {
	j, ok := s.lookupJob(w, r, id)
	if !ok {
		return
	}
	v := s.viewOf(j)
	if !j.LostAt.IsZero() && !j.Done() && s.archive != nil {
		complete, err := s.rebuild(r.Context(), j, rebuildBudget)
		if err != nil {
			s.internal(w, r, "read the results archive", err)
			return
		}
		if j, ok = s.lookupJob(w, r, id); !ok {
			return
		}
		v = s.viewOf(j)
		v.StateLost = lostExplanation(j, complete, s.archiveSince(j))
	}
	writeJSON(w, http.StatusOK, v)
}

// cancelJob cancels a job (POST /v1/jobs/{id}:cancel): 200 with the job's
// view (state "cancelling", or "done" once every task has ended), also when
// it was cancelled before; 409 for a job that finished before; 404 unknown.
// Tasks end at their next delivery, failed CANCELLED, without calling
// Gemini (internal/lifecycle); tasks calling Gemini already finish as they
// are.
func (s *server) cancelJob(w http.ResponseWriter, r *http.Request, id string) {
	if !task.ValidJobID(id) {
		s.fail(w, r, &apiError{Code: http.StatusBadRequest, Field: "job_id", Message: job.IDRule})
		return
	}
	j, code, err := s.store.CancelJob(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, &apiError{Code: http.StatusNotFound, Field: "job_id", Message: fmt.Sprintf("job %s not found", id)})
		return
	case err != nil:
		s.internal(w, r, "cancel job", err)
		return
	case code == store.FinishedBefore:
		s.fail(w, r, &apiError{Code: http.StatusConflict, Field: "job_id", Message: fmt.Sprintf("job %s has finished (every task ended at %s): nothing to cancel", id, j.FinishedAt.Format(time.RFC3339))})
		return
	}
	writeJSON(w, http.StatusOK, s.viewOf(j))
}

// lostExplanation says what the counts of a lost job cover.
func lostExplanation(j store.Job, complete bool, since time.Time) string {
	if j.Done() {
		return ""
	}
	read := "all"
	if !complete {
		read = "part (the rest on the next request)"
	}
	return fmt.Sprintf("Redis lost this job's state at %s. The counts include what finished since, and %d task(s) whose results "+
		"were published before the loss, read back from the Cloud Storage results files written since %s (%s of them read so far), "+
		"each task once. Not counted yet: results published in the last minutes before the loss that the subscription has not "+
		"written to a file yet, and tasks that were running or waiting at the loss (queued until they run again). Resubmit the "+
		"same job to run the tasks that have no result anywhere.", j.LostAt.Format(time.RFC3339), j.Restored, since.Format(time.RFC3339), read)
}
