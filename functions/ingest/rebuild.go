package ingest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gemq-dev/gemq/internal/archive"
	"github.com/gemq-dev/gemq/internal/logging"
	"github.com/gemq-dev/gemq/internal/store"
)

// restorer is what rebuilding a lost job needs of internal/store.
type restorer interface {
	RestoreArchived(ctx context.Context, jobID string, rs []store.Restored) (int, error)
}

var _ restorer = (*store.Store)(nil)

// archiveSince is where a job's results can start in the archive: its
// creation; for a job whose record Redis lost (re-created at the loss,
// its creation unknown), the loss less the lookback (GEMQ_RESULT_TTL: a
// job older than that had its state expire anyway).
func (s *server) archiveSince(j store.Job) time.Time {
	if j.LostAt.IsZero() {
		return j.CreatedAt
	}
	return j.LostAt.Add(-s.lookback)
}

// rebuildBudget bounds the archive reading one status request does; what
// is left is read by the next one (objects read are remembered).
const rebuildBudget = 20 * time.Second

// maxRebuilding bounds the lost jobs whose read objects an instance
// remembers.
const maxRebuilding = 64

// rebuilds remembers, per lost job, the archive objects already read and
// recorded into Redis, so that each status request reads only new ones.
type rebuilds struct {
	mu   sync.Mutex
	jobs map[string]map[string]bool
	ord  []string
}

func (r *rebuilds) objects(jobID string) map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.jobs == nil {
		r.jobs = map[string]map[string]bool{}
	}
	if m, ok := r.jobs[jobID]; ok {
		return m
	}
	if len(r.ord) >= maxRebuilding {
		delete(r.jobs, r.ord[0])
		r.ord = r.ord[1:]
	}
	m := map[string]bool{}
	r.jobs[jobID], r.ord = m, append(r.ord, jobID)
	return m
}

// rebuild records into Redis, as finished, the results of a lost job that
// the archive holds (store.RestoreArchived), reading the objects not read
// before, for at most budget. It reports whether every object was read.
func (s *server) rebuild(ctx context.Context, j store.Job, budget time.Duration) (bool, error) {
	if s.archive == nil || s.restore == nil {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	read := s.rebuilt.objects(j.ID)
	var mu sync.Mutex // read is shared by concurrent requests for the job
	skip := func(o string) bool { mu.Lock(); defer mu.Unlock(); return read[o] }
	var batch []store.Restored
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := s.restore.RestoreArchived(ctx, j.ID, batch)
		batch = batch[:0]
		return err
	}
	st, err := s.archive.Scan(ctx, j.ID, archive.ScanOptions{Since: s.archiveSince(j), Skip: skip,
		Read: func(o string) {
			// An object counts as read once its results are in Redis.
			if flush() == nil {
				mu.Lock()
				read[o] = true
				mu.Unlock()
			}
		}},
		func(res archive.Result) error {
			batch = append(batch, store.Restored{TaskID: res.TaskID, Failed: res.Failed})
			if len(batch) >= 500 {
				return flush()
			}
			return nil
		})
	if err == nil {
		err = flush()
	}
	logging.From(ctx, s.log).Info("lost job: results read back from the archive", "objects", st.Objects, "results", st.Yielded,
		"complete", err == nil)
	if err != nil {
		if ctx.Err() != nil && budget > 0 {
			return false, nil // the next request goes on
		}
		return false, fmt.Errorf("rebuild from the archive: %w", err)
	}
	return true, nil
}
