// Package archive reads a job's results back from Cloud Storage, where the
// results topic's Cloud Storage subscription writes every published result
// (terraform/pubsub.tf, results_to_storage): one message's data a line, in
// objects named after the time their batch started (Layout).
//
// Redis keeps a finished task's answer only for a grace after its result
// was published (internal/store, Options.BodyGrace); from then on the
// answer is here. Scan lists the objects that can hold a job's results
// (those whose batch started after the job was created, less the longest
// batch), reads them line by line, keeps the lines of the job, and yields
// each task's result once, deduplicated by task id in a TaskSet (delivery
// to the subscription is at least once, and a result may be published
// twice): memory is bounded by the job's number of tasks (under 45 bytes
// each) plus one line, whatever the size of the bucket.
//
// An Archive is safe for concurrent use.
package archive

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/iterator"

	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

// MaxLineBytes bounds one line: a Pub/Sub message's data is at most 10 MB.
const MaxLineBytes = 10<<20 + 1024

// Archive reads results from one bucket laid out as Layout says.
type Archive struct {
	bucket *storage.BucketHandle
	layout Layout
}

// New returns an Archive over bucket (from a storage.Client, real or
// pointed at an emulator through STORAGE_EMULATOR_HOST).
func New(bucket *storage.BucketHandle, layout Layout) *Archive {
	return &Archive{bucket: bucket, layout: layout}
}

// Result is one archived result of a job.
type Result struct {
	// TaskID is task.TaskID(job, Line.Key).
	TaskID string
	// Line is the result in the Batch API output format (JobID cleared).
	Line store.ResultLine
	// Failed is true for an error line (a failed or dead-lettered task).
	Failed bool
	// Object is the name of the object the line was read from.
	Object string
}

// ScanStats says what a Scan read.
type ScanStats struct {
	Objects int   // objects read
	Lines   int64 // lines read, of every job
	Matched int64 // lines of the job (duplicates included)
	Yielded int64 // results passed to the callback
}

// ScanOptions say what Scan reads.
type ScanOptions struct {
	// Since is the job's creation (or the start of the window to read):
	// only objects that can hold results published since are read; zero
	// reads every object under the prefix.
	Since time.Time
	// Seen holds the tasks not to yield (the caller has them from
	// elsewhere); each yielded task is added. Nil: a new set.
	Seen *TaskSet
	// Skip, when set, leaves objects out (read before).
	Skip func(object string) bool
	// Read, when set, is called after each object was read whole.
	Read func(object string)
}

// Scan calls fn, in object-name order, with every result of jobID found in
// the objects o selects, once per task. A line that is not JSON, or has no
// key, is skipped; fn's error stops the scan and is returned as is.
func (a *Archive) Scan(ctx context.Context, jobID string, o ScanOptions, fn func(Result) error) (ScanStats, error) {
	var st ScanStats
	if !task.ValidJobID(jobID) {
		return st, fmt.Errorf("archive: invalid job id %q", jobID)
	}
	if o.Seen == nil {
		o.Seen = &TaskSet{}
	}
	it := a.bucket.Objects(ctx, &storage.Query{Prefix: a.layout.Prefix, StartOffset: a.layout.StartOffset(o.Since)})
	for {
		attrs, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return st, nil
		}
		if err != nil {
			return st, fmt.Errorf("archive: list objects: %w", err)
		}
		if o.Skip != nil && o.Skip(attrs.Name) {
			continue
		}
		if err := a.scanObject(ctx, attrs, jobID, o.Seen, &st, fn); err != nil {
			return st, err
		}
		st.Objects++
		if o.Read != nil {
			o.Read(attrs.Name)
		}
	}
}

func (a *Archive) scanObject(ctx context.Context, attrs *storage.ObjectAttrs, jobID string, seen *TaskSet,
	st *ScanStats, fn func(Result) error) error {
	// Pin the generation listed: an object is written once, so this only
	// matters if someone replaced it meanwhile.
	r, err := a.bucket.Object(attrs.Name).Generation(attrs.Generation).NewReader(ctx)
	if err != nil {
		return fmt.Errorf("archive: read %s: %w", attrs.Name, err)
	}
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLineBytes)
	sameJob := []byte(`{"job_id":"` + jobID + `"`)
	for sc.Scan() {
		st.Lines++
		line := sc.Bytes()
		if !mayBeJob(line, sameJob) {
			continue
		}
		var l store.ResultLine
		if err := json.Unmarshal(line, &l); err != nil || l.JobID != jobID || task.ValidateKey(l.Key) != nil {
			continue
		}
		st.Matched++
		id := task.TaskID(jobID, l.Key)
		if !seen.Add(id) {
			continue
		}
		l.JobID = ""
		st.Yielded++
		if err := fn(Result{TaskID: id, Line: l, Failed: l.Response == nil, Object: attrs.Name}); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("archive: read %s: %w", attrs.Name, err)
	}
	return nil
}

// mayBeJob is a fast filter: a line written by gemq starts with the job id
// (store.ResultLine's first field), so another job's line is known from its
// first bytes; a line in any other shape is decoded to be sure.
func mayBeJob(line, sameJob []byte) bool {
	const head = `{"job_id":"`
	if !bytes.HasPrefix(line, []byte(head)) {
		return true
	}
	if !bytes.HasPrefix(line, sameJob) || len(line) == len(sameJob) {
		return false
	}
	next := line[len(sameJob)]
	return next == ',' || next == '}'
}
