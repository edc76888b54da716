package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/http"

	"github.com/gemq-dev/gemq/internal/archive"
	"github.com/gemq-dev/gemq/internal/logging"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

// resultsStream writes result lines as JSONL, flushing after each page.
type resultsStream struct {
	enc  *json.Encoder
	rc   *http.ResponseController
	sent int
}

func (rs *resultsStream) write(l store.ResultLine) error {
	l.JobID = ""
	if err := rs.enc.Encode(l); err != nil {
		return err
	}
	rs.sent++
	return nil
}

// getResults streams the finished tasks as JSONL: first those whose answer
// is still in Redis, in finish order; then, when some answers left Redis
// (compacted after publishing, internal/store) or the job's record was lost,
// the results the Cloud Storage subscription archived, in the order they
// were written there, each task once. The first page is read before the
// status is written, so a store failure up front is a 503; the trailer
// X-Gemq-Results-Complete says true only when every finished task was sent
// (false after a failure, or when an answer is in neither Redis nor the
// archive yet). X-Gemq-Job-State tells whether more results may come.
//
// Memory: the ids of the tasks sent and of those owed by the archive, under
// 100 bytes a task (archive.TaskSet), whatever the size of the answers.
func (s *server) getResults(w http.ResponseWriter, r *http.Request, id string) {
	j, ok := s.lookupJob(w, r, id)
	if !ok {
		return
	}
	next, stop := iter.Pull2(s.pages(r.Context(), id))
	defer stop()
	first, err, _ := next()
	if err != nil {
		s.internal(w, r, "read results", err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/jsonl; charset=utf-8")
	h.Set("X-Gemq-Job-State", j.State())
	h.Set("Trailer", "X-Gemq-Results-Complete")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	rs := &resultsStream{enc: enc, rc: http.NewResponseController(w)}
	log := logging.From(r.Context(), s.log)
	var sent, owed archive.TaskSet
	complete := true
	for recs := first; recs != nil && complete; {
		for _, rec := range recs {
			if rec.Archived {
				owed.Add(rec.TaskID)
				continue
			}
			if err := rs.write(rec.Line()); err != nil {
				log.Warn("results stream: write", "error", err.Error(), "sent", rs.sent)
				h.Set("X-Gemq-Results-Complete", "false")
				return
			}
			sent.Add(rec.TaskID)
		}
		rs.rc.Flush()
		if recs, err, _ = next(); err != nil {
			log.Error("results stream: read", "error", err.Error(), "sent", rs.sent)
			complete = false
		}
	}
	if complete && (owed.Len() > 0 || !j.LostAt.IsZero()) {
		complete = s.streamArchived(r.Context(), j, rs, &sent, &owed)
	}
	h.Set("X-Gemq-Results-Complete", fmt.Sprint(complete))
}

// streamArchived writes the job's archived results not sent yet and reports
// whether every owed one (a finished task whose answer left Redis) was found.
func (s *server) streamArchived(ctx context.Context, j store.Job, rs *resultsStream, sent, owed *archive.TaskSet) bool {
	log := logging.From(ctx, s.log)
	if s.archive == nil {
		log.Warn("results stream: answers left Redis and no results archive is configured", "owed", owed.Len())
		return owed.Len() == 0
	}
	found := 0
	st, err := s.archive.Scan(ctx, j.ID, archive.ScanOptions{Since: s.archiveSince(j), Seen: sent}, func(res archive.Result) error {
		if owed.Has(res.TaskID) {
			found++
		}
		if err := rs.write(res.Line); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if rs.sent%resultsPageSize == 0 {
			rs.rc.Flush()
		}
		return nil
	})
	rs.rc.Flush()
	if err != nil {
		log.Error("results stream: archive", "error", err.Error(), "sent", rs.sent)
		return false
	}
	if found < owed.Len() {
		log.Warn("results stream: finished tasks not in the archive yet", "missing", owed.Len()-found,
			"objects_read", st.Objects)
		return false
	}
	return true
}

// pages yields the job's finished records page by page; the sequence ends
// (with a nil page) when there are no more.
func (s *server) pages(ctx context.Context, id string) iter.Seq2[[]store.Record, error] {
	return func(yield func([]store.Record, error) bool) {
		var after int64
		for {
			recs, next, err := s.store.ResultsPage(ctx, id, after, resultsPageSize)
			if err != nil {
				yield(nil, err)
				return
			}
			if next == after {
				yield(nil, nil)
				return
			}
			after = next
			if recs == nil {
				recs = []store.Record{}
			}
			if !yield(recs, nil) {
				return
			}
		}
	}
}

// requestView is the JSON of GET /v1/jobs/{id}/requests/{key}.
type requestView struct {
	Key      string          `json:"key"`
	State    store.State     `json:"state"`
	Response json.RawMessage `json:"response,omitempty"`
	Error    json.RawMessage `json:"error,omitempty"`
}

// errFound stops an archive scan at the result looked for.
var errFound = errors.New("found")

func (s *server) getRequest(w http.ResponseWriter, r *http.Request, id, key string) {
	j, ok := s.lookupJob(w, r, id)
	if !ok {
		return
	}
	rec, err := s.store.Result(r.Context(), id, key)
	switch {
	case errors.Is(err, store.ErrNotFound) && !j.LostAt.IsZero() && s.archive != nil && task.ValidateKey(key) == nil:
		// Redis lost the job: the task may have finished before.
		rec = store.Record{Key: key, TaskID: task.TaskID(id, key), State: store.Queued, Archived: true}
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, &apiError{Code: http.StatusNotFound, Field: "key", Message: "the job has no request with this key"})
		return
	case err != nil:
		s.internal(w, r, "get result", err)
		return
	}
	if rec.Archived {
		found, err := s.archivedResult(r.Context(), j, rec.TaskID)
		switch {
		case err != nil:
			s.internal(w, r, "read the results archive", err)
			return
		case found != nil:
			rec.Response, rec.Error = found.Line.Response, found.Line.Error
			rec.State = store.Succeeded
			if found.Failed {
				rec.State = store.Failed
			}
		case rec.State.Terminal():
			s.fail(w, r, &apiError{Code: http.StatusServiceUnavailable, Field: "key",
				Message: "the task finished and its answer left Redis, but the results archive does not hold it yet; retry in a few minutes"})
			return
		}
	}
	v := requestView{Key: key, State: rec.State}
	switch rec.State {
	case store.Succeeded:
		v.Response = rec.Response
	case store.Failed:
		v.Error = rec.Error
	}
	writeJSON(w, http.StatusOK, v)
}

// archivedResult finds one task's result in the archive; nil when it is not
// there (or there is no archive).
func (s *server) archivedResult(ctx context.Context, j store.Job, taskID string) (*archive.Result, error) {
	if s.archive == nil {
		return nil, nil
	}
	var found *archive.Result
	_, err := s.archive.Scan(ctx, j.ID, archive.ScanOptions{Since: s.archiveSince(j)}, func(res archive.Result) error {
		if res.TaskID != taskID {
			return nil
		}
		found = &res
		return errFound
	})
	if err != nil && !errors.Is(err, errFound) {
		return nil, err
	}
	return found, nil
}
