package archive_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/google/go-cmp/cmp"

	"github.com/gemq-dev/gemq/infra/storagesub"
	"github.com/gemq-dev/gemq/internal/archive"
	"github.com/gemq-dev/gemq/internal/task"
)

var ctx = context.Background()

var layout = archive.Layout{Prefix: "results/", DatetimeFormat: "YYYY-MM-DD/hh_mm_ssZ", MaxDuration: 5 * time.Minute}

func bucket(t *testing.T) (*storage.BucketHandle, *storage.Client) {
	t.Helper()
	_, c := storagesub.ForTest(t, "b")
	return c.Bucket("b"), c
}

// put writes an object the way the Cloud Storage subscription names it:
// prefix, batch start time, _UUID, suffix.
func put(t *testing.T, b *storage.BucketHandle, at time.Time, n int, lines ...string) string {
	t.Helper()
	name := layout.Prefix + archive.FormatDatetime(layout.DatetimeFormat, at) + fmt.Sprintf("_0000000%d-0000-4000-8000-000000000000.jsonl", n)
	w := b.Object(name).NewWriter(ctx)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return name
}

func ok(job, key string) string {
	return fmt.Sprintf(`{"job_id":%q,"key":%q,"response":{"text":%q}}`, job, key, key)
}

func TestFormatDatetimeAndStartOffset(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("X", 3600))
	for format, want := range map[string]string{
		"YYYY-MM-DD/hh_mm_ssZ": "2026-03-04/04_06_07Z",
		"YYYY-MM-DDThh:mm:ssZ": "2026-03-04T04:06:07Z",
		"YY/MM/DD":             "26/03/04",
	} {
		if got := archive.FormatDatetime(format, at); got != want {
			t.Errorf("FormatDatetime(%q) = %q, want %q", format, got, want)
		}
	}
	// A batch holding a message published at the job's creation started at
	// most max_duration (plus a minute of clock skew) before it.
	if got, want := layout.StartOffset(at), "results/2026-03-04/04_00_07Z"; got != want {
		t.Errorf("StartOffset = %q, want %q", got, want)
	}
	// Names that do not sort by time are all listed.
	if got := (archive.Layout{Prefix: "r/", DatetimeFormat: "DD-MM-YYYY hh:mm:ss"}).StartOffset(at); got != "r/" {
		t.Errorf("StartOffset of an unsortable format = %q, want the prefix", got)
	}
}

// Scan reads the objects that can hold the job's results, keeps the job's
// lines (whatever their shape), and yields each task once, leaving out the
// tasks the caller already has.
func TestScanFiltersAndDedupes(t *testing.T) {
	b, _ := bucket(t)
	created := time.Date(2026, 12, 2, 10, 30, 0, 0, time.UTC)
	// Before the job could have results: never read (its line is a decoy).
	put(t, b, created.Add(-time.Hour), 1, ok("job1", "from-before"))
	early := put(t, b, created.Add(-4*time.Minute), 2,
		ok("job10", "k1"), // another job whose id starts like this one's
		ok("job1", "k1"),
		`{"key":"k3","job_id":"job1","error":{"code":400,"message":"bad"}}`, // another field order: decoded
		`not json`,
		`{"job_id":"job1"}`, // no key
	)
	put(t, b, created.Add(2*time.Minute), 3,
		ok("job1", "k1"), // a duplicate, in another object
		ok("job1", "k2"),
		ok("other", "k9"),
		ok("job1", "k/4 with \u00e9"),
	)
	seen := &archive.TaskSet{}
	seen.Add(task.TaskID("job1", "k2")) // the caller has k2 from Redis

	var got []string
	var read []string
	st, err := archive.New(b, layout).Scan(ctx, "job1", archive.ScanOptions{Since: created, Seen: seen,
		Read: func(o string) { read = append(read, o) }}, func(r archive.Result) error {
		if r.TaskID != task.TaskID("job1", r.Line.Key) || r.Line.JobID != "" {
			t.Errorf("result %+v: task id or job id wrong", r)
		}
		line, _ := json.Marshal(r.Line)
		got = append(got, fmt.Sprintf("%s failed=%v %s", r.Line.Key, r.Failed, line))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	want := []string{
		`k/4 with é failed=false {"key":"k/4 with é","response":{"text":"k/4 with é"}}`,
		`k1 failed=false {"key":"k1","response":{"text":"k1"}}`,
		`k3 failed=true {"key":"k3","error":{"code":400,"message":"bad"}}`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if st.Objects != 2 || st.Matched != 5 || st.Yielded != 3 || seen.Len() != 4 || len(read) != 2 || read[0] != early {
		t.Errorf("stats %+v, seen %d, read %v: want 2 objects read (%s first), 5 lines of the job, 3 yielded, 4 tasks seen",
			st, seen.Len(), read, early)
	}

	// skip leaves objects out (read before); a callback error stops the scan.
	n := 0
	if _, err := archive.New(b, layout).Scan(ctx, "job1", archive.ScanOptions{Since: created,
		Skip: func(o string) bool { return o == early }}, func(archive.Result) error { n++; return nil }); err != nil || n != 3 {
		t.Errorf("Scan skipping %s: %d results, %v; want k1, k2, k/4", early, n, err)
	}
	stop := fmt.Errorf("enough")
	if _, err := archive.New(b, layout).Scan(ctx, "job1", archive.ScanOptions{Since: created},
		func(archive.Result) error { return stop }); err != stop {
		t.Errorf("Scan with a failing callback = %v, want its error", err)
	}
	if _, err := archive.New(b, layout).Scan(ctx, "no/such job", archive.ScanOptions{Since: created},
		func(archive.Result) error { return nil }); err == nil {
		t.Error("Scan of an invalid job id: no error")
	}
}

// A missing bucket is an error, not an empty archive.
func TestScanMissingBucketFails(t *testing.T) {
	_, c := bucket(t)
	_, err := archive.New(c.Bucket("nope"), layout).Scan(ctx, "job1", archive.ScanOptions{Since: time.Now()},
		func(archive.Result) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "list objects") {
		t.Errorf("Scan of a missing bucket = %v, want a list error", err)
	}
}

func TestTaskSet(t *testing.T) {
	var s archive.TaskSet
	if s.Has(task.TaskID("j", "x")) || s.Len() != 0 {
		t.Fatal("zero TaskSet not empty")
	}
	const n = 200_000
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		if !s.Add(task.TaskID("j", fmt.Sprint(i))) {
			t.Fatalf("Add(%d) reported a duplicate", i)
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if per := float64(after.HeapAlloc-before.HeapAlloc) / n; per > 45 {
		t.Errorf("%.1f bytes per id, want at most 45", per)
	}
	for i := range n {
		id := task.TaskID("j", fmt.Sprint(i))
		if s.Add(id) || !s.Has(id) {
			t.Fatalf("id %d: added twice or missing", i)
		}
	}
	if s.Len() != n || s.Has(task.TaskID("j", "absent")) {
		t.Errorf("Len %d, or an absent id found", s.Len())
	}
	if s.Add("not-a-task-id") || s.Has("not-a-task-id") {
		t.Error("an invalid id was added")
	}
}
