package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

// fp is a request fingerprint of the length task.RequestFingerprint gives.
func fp(s string) string { return task.RequestFingerprint(model, []byte(`{"p":"`+s+`"}`)) }

// fpJob creates job with keys ks, the fingerprint of key k being fp(k), as
// ingest does, and returns a Ref maker carrying the job's hash and total.
func fpJob(t *testing.T, s *store.Store, job string, ks []string) func(key string) store.Ref {
	t.Helper()
	fps := make([]string, len(ks))
	for i, k := range ks {
		fps[i] = fp(k)
	}
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: job, Model: model, ContentHash: "h-" + job, TaskIDs: ids(job, ks), Fingerprints: fps}); err != nil {
		t.Fatal(err)
	}
	return func(key string) store.Ref {
		r := ref(job, key)
		r.JobHash, r.JobTotal = "h-"+job, len(ks)
		return r
	}
}

// The fingerprints ingest records with the job decide from the start: a
// copy with another request that comes before the task's own message is
// refused (Conflict) without creating the task's record or moving a count,
// and the task's own message then leases it. The first lease moves the
// fingerprint into the task's record (the job's copy is dropped), which
// goes on refusing the copy; the job's copy of an unleased task leaves when
// the task settles.
func TestFingerprintsFromCreation(t *testing.T) {
	s, rdb := newStore(t, time.Hour)
	ks := keys(3)
	withJob := fpJob(t, s, "job1", ks)
	fpsKey := "gemq:job:{job1}:fps"
	if n := rdb.HLen(ctx, fpsKey).Val(); n != 3 {
		t.Fatalf("fingerprints recorded at creation = %d, want 3", n)
	}
	if v := rdb.HGet(ctx, fpsKey, task.TaskID("job1", "k0")).Val(); v != fp("k0")[:16] {
		t.Errorf("recorded fingerprint %q, want the first 16 characters of %q", v, fp("k0"))
	}

	copyFirst := store.LeaseRequest{Holder: "copy", Fingerprint: fp("another request")}
	res := leaseTask(t, s, withJob("k0"), copyFirst, store.Conflict)
	if res.Previous != store.Queued {
		t.Errorf("conflict's previous state = %s, want queued", res.Previous)
	}
	if n := rdb.Exists(ctx, "gemq:job:{job1}:task:"+task.TaskID("job1", "k0")).Val(); n != 0 {
		t.Error("the refused copy created the task's record")
	}
	wantCounts(t, s, "job1", store.Counts{Total: 3, Queued: 3})
	// A lease check carrying the copy is refused the same.
	leaseTask(t, s, withJob("k0"), store.LeaseRequest{Holder: "copy-check", Fingerprint: fp("another request"), TakeoverOnly: true}, store.Conflict)

	// The task's own message.
	real := leaseTask(t, s, withJob("k0"), store.LeaseRequest{Holder: "real", Fingerprint: fp("k0")}, store.Applied)
	if rdb.HExists(ctx, fpsKey, task.TaskID("job1", "k0")).Val() {
		t.Error("the job's copy of the fingerprint is still there after the first lease")
	}
	leaseTask(t, s, withJob("k0"), copyFirst, store.Conflict) // running: the record's fingerprint
	must(t, store.Applied)(s.Complete(ctx, withJob("k0"), real.Token, []byte(`{}`)))
	leaseTask(t, s, withJob("k0"), copyFirst, store.Conflict) // terminal
	leaseTask(t, s, withJob("k0"), store.LeaseRequest{Holder: "real-again", Fingerprint: fp("k0")}, store.AlreadyDone)

	// A copy that matches only on a prefix shorter than the recorded one
	// is another request.
	near := fp("k1")[:15] + strings.Repeat("0", 17)
	if near[:16] == fp("k1")[:16] {
		near = fp("k1")[:15] + strings.Repeat("1", 17)
	}
	leaseTask(t, s, withJob("k1"), store.LeaseRequest{Holder: "near", Fingerprint: near}, store.Conflict)

	// A task that settles without a lease of its own message (a holder
	// from before a loss) drops the job's copy too.
	must(t, store.Applied)(s.Fail(ctx, withJob("k2"), tok(s, withJob("k2"), "w"), []byte(`{}`)))
	if rdb.HExists(ctx, fpsKey, task.TaskID("job1", "k2")).Val() {
		t.Error("the job's copy of a settled task's fingerprint is still there")
	}
	res = leaseTask(t, s, withJob("k1"), store.LeaseRequest{Holder: "real", Fingerprint: fp("k1")}, store.Applied)
	must(t, store.Applied)(s.Complete(ctx, withJob("k1"), res.Token, []byte(`{}`)))
	if n := rdb.Exists(ctx, fpsKey).Val(); n != 0 {
		t.Errorf("the job's fingerprints are still in Redis once every task settled")
	}
	wantCounts(t, s, "job1", store.Counts{Total: 3, Succeeded: 2, Failed: 1})
}

// Resubmitting the same job (idempotent CreateJob) records no fingerprint
// twice and none again for a task leased or finished since: the job's
// fingerprints are those of the tasks not leased yet, unchanged.
func TestFingerprintsOnResubmit(t *testing.T) {
	s, rdb := newStore(t, time.Hour)
	ks := keys(4)
	withJob := fpJob(t, s, "job1", ks)
	res := leaseTask(t, s, withJob("k0"), store.LeaseRequest{Holder: "w", Fingerprint: fp("k0")}, store.Applied)
	must(t, store.Applied)(s.Complete(ctx, withJob("k0"), res.Token, []byte(`{}`)))
	if err := s.MarkPublished(ctx, withJob("k0")); err != nil {
		t.Fatal(err)
	}
	leaseTask(t, s, withJob("k1"), store.LeaseRequest{Holder: "w", Fingerprint: fp("k1")}, store.Applied)
	before := rdb.HGetAll(ctx, "gemq:job:{job1}:fps").Val()
	if len(before) != 2 {
		t.Fatalf("fingerprints before the resubmission = %v, want k2's and k3's", before)
	}

	fpJob(t, s, "job1", ks) // the same job again
	after := rdb.HGetAll(ctx, "gemq:job:{job1}:fps").Val()
	if len(after) != len(before) {
		t.Errorf("fingerprints after the resubmission = %v, want %v", after, before)
	}
	for f, v := range before {
		if after[f] != v {
			t.Errorf("fingerprint of %s = %q after the resubmission, want %q", f, after[f], v)
		}
	}
	wantCounts(t, s, "job1", store.Counts{Total: 4, Queued: 2, Running: 1, Succeeded: 1})
	leaseTask(t, s, withJob("k2"), store.LeaseRequest{Holder: "copy", Fingerprint: fp("x")}, store.Conflict)
	leaseTask(t, s, withJob("k2"), store.LeaseRequest{Holder: "w", Fingerprint: fp("k2")}, store.Applied)
	// Fewer fingerprints than ids is a caller's mistake, refused.
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: "job2", Model: model, ContentHash: "h", TaskIDs: ids("job2", ks), Fingerprints: []string{fp("k0")}}); err == nil {
		t.Error("CreateJob with 1 fingerprint for 4 task ids succeeded")
	}
}

// When Redis lost the job's fingerprints (its data flushed, or the key
// alone), a task falls back to what it did before: its first lease defines
// it, the real task is never refused; and a resubmission after the loss
// records the fingerprints of the tasks not seen since.
func TestFingerprintsLost(t *testing.T) {
	s, rdb := newStore(t, time.Hour)
	ks := keys(3)
	withJob := fpJob(t, s, "job1", ks)
	if err := rdb.Del(ctx, "gemq:job:{job1}:fps").Err(); err != nil {
		t.Fatal(err)
	}
	leaseTask(t, s, withJob("k0"), store.LeaseRequest{Holder: "real", Fingerprint: fp("k0")}, store.Applied)
	leaseTask(t, s, withJob("k0"), store.LeaseRequest{Holder: "copy", Fingerprint: fp("x")}, store.Conflict)

	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	leaseTask(t, s, withJob("k1"), store.LeaseRequest{Holder: "real", Fingerprint: fp("k1")}, store.Applied)
	if j, err := s.GetJob(ctx, "job1"); err != nil || j.State() != "state_lost" {
		t.Fatalf("job after the flush = %+v, %v; want state_lost", j, err)
	}
	// The resubmission after the loss: k2 was not seen since, its
	// fingerprint is recorded again; k1's lease recorded its own.
	fpJob(t, s, "job1", ks)
	if got := rdb.HKeys(ctx, "gemq:job:{job1}:fps").Val(); len(got) != 2 || strings.Contains(strings.Join(got, ","), task.TaskID("job1", "k1")) {
		t.Errorf("fingerprints after resubmitting the lost job = %v, want k0's and k2's", got)
	}
	leaseTask(t, s, withJob("k2"), store.LeaseRequest{Holder: "copy", Fingerprint: fp("x")}, store.Conflict)
	leaseTask(t, s, withJob("k2"), store.LeaseRequest{Holder: "real", Fingerprint: fp("k2")}, store.Applied)
	// Results read back from the archive drop what they settle.
	if n, err := s.RestoreArchived(ctx, "job1", []store.Restored{{TaskID: task.TaskID("job1", "k0")}}); err != nil || n != 1 {
		t.Fatalf("RestoreArchived = %d, %v", n, err)
	}
	if n := rdb.Exists(ctx, "gemq:job:{job1}:fps").Val(); n != 0 {
		t.Errorf("fingerprints left after every task was leased or restored: %v", rdb.HGetAll(ctx, "gemq:job:{job1}:fps").Val())
	}
}

// A job record re-created after Redis lost it carries the job's creation
// time from the envelope (Ref.JobCreated), not the time of the loss; an
// envelope without it, or with a time after the loss, gives the loss's.
func TestLostJobKeepsItsCreationTime(t *testing.T) {
	s, rdb := newStore(t, time.Hour)
	for _, tc := range []struct {
		name    string
		created func(time.Time) time.Time
		real    bool
	}{
		{"from the envelope", func(c time.Time) time.Time { return c }, true},
		{"none", func(time.Time) time.Time { return time.Time{} }, false},
		{"in the future", func(time.Time) time.Time { return time.Now().Add(time.Hour) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := "job-" + strings.ReplaceAll(tc.name, " ", "-")
			j, _, err := s.CreateJob(ctx, store.NewJob{ID: job, Model: model, ContentHash: "h", TaskIDs: ids(job, keys(2))})
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // the loss comes visibly later
			if err := rdb.FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			r := ref(job, "k0")
			r.JobHash, r.JobTotal, r.JobCreated = "h", 2, tc.created(j.CreatedAt)
			leaseTask(t, s, r, store.LeaseRequest{Holder: "w"}, store.Applied)
			got, err := s.GetJob(ctx, job)
			if err != nil {
				t.Fatal(err)
			}
			if got.LostAt.IsZero() || !got.LostAt.After(j.CreatedAt) {
				t.Fatalf("lost at %v, want after the creation %v", got.LostAt, j.CreatedAt)
			}
			want := got.LostAt
			if tc.real {
				want = j.CreatedAt
			}
			if !got.CreatedAt.Equal(want) {
				t.Errorf("re-created job's CreatedAt = %v, want %v (created %v, lost %v)", got.CreatedAt, want, j.CreatedAt, got.LostAt)
			}
		})
	}
}

// The job's fingerprints live as long as its other keys: every transition
// of one of its tasks renews their TTL, so a task that waits longer than
// the TTL from the job's creation for its first lease keeps its own.
func TestFingerprintsTTLFollowsTheJob(t *testing.T) {
	s, rdb := newStore(t, 3*time.Second)
	withJob := fpJob(t, s, "job1", keys(2))
	time.Sleep(1500 * time.Millisecond)
	res := leaseTask(t, s, withJob("k0"), store.LeaseRequest{Holder: "w", Fingerprint: fp("k0")}, store.Applied)
	time.Sleep(2 * time.Second) // past the TTL from the creation
	must(t, store.Applied)(s.Complete(ctx, withJob("k0"), res.Token, []byte(`{}`)))
	if !rdb.HExists(ctx, "gemq:job:{job1}:fps", task.TaskID("job1", "k1")).Val() {
		t.Fatal("k1's fingerprint expired while its job is active")
	}
	leaseTask(t, s, withJob("k1"), store.LeaseRequest{Holder: "copy", Fingerprint: fp("x")}, store.Conflict)
}
