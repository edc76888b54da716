package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/gemq-dev/gemq/internal/redistest"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

const model = "gemini-2.5-flash"

var ctx = context.Background()

func newStore(t *testing.T, ttl time.Duration) (*store.Store, *redis.Client) {
	t.Helper()
	rdb := redistest.Start(t).Client(t)
	return store.New(rdb, store.Options{TTL: ttl}), rdb
}

func ref(job, key string) store.Ref {
	return store.Ref{JobID: job, TaskID: task.TaskID(job, key), Key: key, Model: model}
}

func keys(n int) []string {
	k := make([]string, n)
	for i := range k {
		k[i] = "k" + strconv.Itoa(i)
	}
	return k
}

func ids(job string, keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = task.TaskID(job, k)
	}
	return out
}

func counts(t *testing.T, s *store.Store, job string) store.Counts {
	t.Helper()
	j, err := s.GetJob(ctx, job)
	if err != nil {
		t.Fatalf("GetJob(%s): %v", job, err)
	}
	return j.Counts
}

func wantCounts(t *testing.T, s *store.Store, job string, want store.Counts) {
	t.Helper()
	if diff := cmp.Diff(want, counts(t, s, job)); diff != "" {
		t.Errorf("counts of %s (-want +got):\n%s", job, diff)
	}
}

func must(t *testing.T, want store.Outcome) func(store.Outcome, error) {
	t.Helper()
	return func(got store.Outcome, err error) {
		t.Helper()
		if err != nil || got != want {
			t.Fatalf("got (%v, %v), want %v", got, err, want)
		}
	}
}

func TestCreateJobIdempotentAndConflict(t *testing.T) {
	s, _ := newStore(t, time.Hour)
	ks := keys(2500) // more than one script chunk
	nj := store.NewJob{ID: "job1", Model: model, ContentHash: "h1", TaskIDs: ids("job1", ks)}
	j, created, err := s.CreateJob(ctx, nj)
	if err != nil || !created {
		t.Fatalf("CreateJob = (%v, %v), want created", created, err)
	}
	if j.ID != "job1" || j.Model != model || j.ContentHash != "h1" || j.Adhoc || j.CreatedAt.IsZero() || j.Done() {
		t.Errorf("job = %+v", j)
	}
	want := store.Counts{Total: 2500, Queued: 2500}
	wantCounts(t, s, "job1", want)

	again, created, err := s.CreateJob(ctx, nj)
	if err != nil || created || !again.CreatedAt.Equal(j.CreatedAt) {
		t.Fatalf("second CreateJob = (%v, %v, %v), want existing", again, created, err)
	}
	wantCounts(t, s, "job1", want)

	nj.ContentHash = "h2"
	if _, _, err := s.CreateJob(ctx, nj); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CreateJob with another hash: %v, want ErrConflict", err)
	}
	wantCounts(t, s, "job1", want)

	if _, err := s.GetJob(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetJob(nope) = %v, want ErrNotFound", err)
	}
	bad := []store.NewJob{
		{ID: "a{b}", Model: model, ContentHash: "h"},
		{ID: "a", Model: "models/x", ContentHash: "h"},
		{ID: "a", Model: model},
		{ID: "a", Model: model, ContentHash: "h", TaskIDs: []string{"not-an-id"}},
	}
	for _, b := range bad {
		if _, _, err := s.CreateJob(ctx, b); err == nil {
			t.Errorf("CreateJob(%+v) succeeded", b)
		}
	}
}

func TestLeaseExclusive(t *testing.T) {
	s, _ := newStore(t, time.Hour)
	r := ref("job1", "k0")
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: "job1", Model: model, ContentHash: "h", TaskIDs: []string{r.TaskID}}); err != nil {
		t.Fatal(err)
	}
	const n = 64
	results := make([]store.Outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			o, err := lease(s, r, "holder"+strconv.Itoa(i), time.Minute)
			if err != nil {
				t.Error(err)
			}
			results[i] = o
		})
	}
	wg.Wait()
	won := 0
	for _, o := range results {
		switch o {
		case store.Applied:
			won++
		case store.HeldElsewhere:
		default:
			t.Errorf("Lease outcome %v", o)
		}
	}
	if won != 1 {
		t.Errorf("%d holders won the lease, want 1", won)
	}
	wantCounts(t, s, "job1", store.Counts{Total: 1, Running: 1})
}

// A lease is the holder's until it expires: a concurrent duplicate of the
// same delivery (same attempt) is held off, a later attempt of it resumes at
// once, and every write of a taken-over holder is refused.
func TestLeaseExpiryResumeAndFencing(t *testing.T) {
	s, _ := newStore(t, time.Hour)
	r := ref("job1", "k0")
	first := leaseTask(t, s, r, store.LeaseRequest{Holder: "a", TTL: 150 * time.Millisecond}, store.Applied)
	leaseTask(t, s, r, store.LeaseRequest{Holder: "a", TTL: time.Minute}, store.HeldElsewhere) // duplicate
	leaseTask(t, s, r, store.LeaseRequest{Holder: "b", TTL: time.Minute}, store.HeldElsewhere)
	res := leaseTask(t, s, r, store.LeaseRequest{Holder: "a", Attempt: 1, TTL: 150 * time.Millisecond}, store.Applied)
	if !res.Resumed || res.Token == first.Token || res.Previous != store.Running {
		t.Fatalf("resume = %+v, want a new token, resumed from running", res)
	}
	must(t, store.Stale)(s.MarkCalling(ctx, r, first.Token, time.Minute))
	must(t, store.Applied)(s.MarkCalling(ctx, r, res.Token, 150*time.Millisecond))
	time.Sleep(250 * time.Millisecond)
	taken := leaseTask(t, s, r, store.LeaseRequest{Holder: "b", TTL: time.Minute}, store.Applied)
	if taken.Resumed || taken.Previous != store.Calling {
		t.Fatalf("takeover = %+v, want previous calling, not resumed", taken)
	}
	for _, old := range []store.Token{first.Token, res.Token} {
		must(t, store.Stale)(s.Complete(ctx, r, old, []byte(`{}`)))
		must(t, store.Stale)(s.Fail(ctx, r, old, []byte(`{}`)))
		must(t, store.Stale)(s.MarkWaitingFor(ctx, r, old, 1, time.Now().Add(time.Minute)))
		must(t, store.Stale)(s.ReleaseLease(ctx, r, old))
	}
	wantCounts(t, s, "job1", store.Counts{Total: 1, Running: 1})
	must(t, store.Applied)(s.Complete(ctx, r, taken.Token, []byte(`{}`)))
	// A retry of the same write (its reply was lost) is told it applied;
	// any other terminal write is not.
	must(t, store.Applied)(s.Complete(ctx, r, taken.Token, []byte(`{}`)))
	must(t, store.AlreadyDone)(s.Fail(ctx, r, taken.Token, []byte(`{}`)))
	wantCounts(t, s, "job1", store.Counts{Total: 1, Succeeded: 1})
}

func TestWaitingAndRelease(t *testing.T) {
	s, _ := newStore(t, time.Hour)
	r := ref("job1", "k0")
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: "job1", Model: model, ContentHash: "h", TaskIDs: ids("job1", keys(3))}); err != nil {
		t.Fatal(err)
	}
	a := leaseTask(t, s, r, store.LeaseRequest{Holder: "a"}, store.Applied)
	wantCounts(t, s, "job1", store.Counts{Total: 3, Queued: 2, Running: 1})
	until := time.Now().Add(time.Minute)
	must(t, store.Stale)(s.MarkWaitingFor(ctx, r, store.Token{Holder: "b", Fence: "x"}, 1, until))
	must(t, store.Applied)(s.MarkWaitingFor(ctx, r, a.Token, 1, until))
	wantCounts(t, s, "job1", store.Counts{Total: 3, Queued: 2, Waiting: 1})
	must(t, store.Applied)(s.MarkWaitingFor(ctx, r, a.Token, 1, until)) // repeated: still one waiting
	wantCounts(t, s, "job1", store.Counts{Total: 3, Queued: 2, Waiting: 1})
	// Its Cloud Task could not be created: the mark is taken back.
	must(t, store.Applied)(s.ReleaseLease(ctx, r, a.Token))
	wantCounts(t, s, "job1", store.Counts{Total: 3, Queued: 3})

	// The deferred task comes back through Cloud Tasks to another instance.
	a = leaseTask(t, s, r, store.LeaseRequest{Holder: "a"}, store.Applied)
	must(t, store.Applied)(s.MarkWaitingFor(ctx, r, a.Token, 2, until))
	b := leaseTask(t, s, r, store.LeaseRequest{Holder: "b", Deferral: 2}, store.Applied)
	wantCounts(t, s, "job1", store.Counts{Total: 3, Queued: 2, Running: 1})
	must(t, store.Stale)(s.ReleaseLease(ctx, r, a.Token))
	must(t, store.Applied)(s.ReleaseLease(ctx, r, b.Token))
	wantCounts(t, s, "job1", store.Counts{Total: 3, Queued: 3})

	c := leaseTask(t, s, r, store.LeaseRequest{Holder: "c"}, store.Applied)
	must(t, store.Applied)(s.Complete(ctx, r, c.Token, []byte(`{"candidates":[]}`)))
	must(t, store.AlreadyDone)(s.MarkWaitingFor(ctx, r, c.Token, 3, until))
	must(t, store.AlreadyDone)(s.ReleaseLease(ctx, r, c.Token))
	must(t, store.AlreadyDone)(s.MarkCalling(ctx, r, c.Token, time.Minute))
	leaseTask(t, s, r, store.LeaseRequest{Holder: "d"}, store.AlreadyDone)
	wantCounts(t, s, "job1", store.Counts{Total: 3, Queued: 2, Succeeded: 1})
}

func TestExactlyOnceTerminal(t *testing.T) {
	s, _ := newStore(t, time.Hour)
	const tasks, callers = 20, 8
	ks := keys(tasks)
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: "job1", Model: model, ContentHash: "h", TaskIDs: ids("job1", ks)}); err != nil {
		t.Fatal(err)
	}
	applied := make([]int, tasks)
	succeeded := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, k := range ks {
		r := ref("job1", k)
		for c := range callers {
			wg.Go(func() {
				holder := "h" + strconv.Itoa(c)
				lease(s, r, holder, time.Minute) // some win, some see it held or done
				var o store.Outcome
				var err error
				if c%2 == 0 {
					o, err = s.Complete(ctx, r, tok(s, r, holder), []byte(`{"n":`+strconv.Itoa(c)+`}`))
				} else {
					o, err = s.Fail(ctx, r, tok(s, r, holder), []byte(`{"code":400,"message":"bad"}`))
				}
				if err != nil {
					t.Error(err)
					return
				}
				if o == store.Stale {
					return // another caller holds the lease
				}
				if o == store.Applied {
					mu.Lock()
					applied[i]++
					if c%2 == 0 {
						succeeded++
					}
					mu.Unlock()
				} else if o != store.AlreadyDone {
					t.Errorf("terminal outcome %v", o)
				}
			})
		}
	}
	wg.Wait()
	for i, n := range applied {
		if n != 1 {
			t.Errorf("task %d: %d terminal writes applied, want 1", i, n)
		}
	}
	wantCounts(t, s, "job1", store.Counts{Total: tasks, Succeeded: int64(succeeded), Failed: int64(tasks - succeeded)})
	j, _ := s.GetJob(ctx, "job1")
	if !j.Done() || j.FinishedAt.Before(j.CreatedAt) {
		t.Errorf("job not finished: %+v", j)
	}
}

func TestUserPublishedTasksRegister(t *testing.T) {
	s, _ := newStore(t, time.Hour)
	a, b := ref("adhoc-1", "a"), ref("adhoc-1", "b")
	must(t, store.Applied)(lease(s, a, "w", time.Minute))
	must(t, store.HeldElsewhere)(lease(s, a, "w2", time.Minute)) // a duplicate: not registered twice
	must(t, store.Applied)(s.Fail(ctx, b, tok(s, b, "w"), []byte(`{"code":400}`)))
	j, err := s.GetJob(ctx, "adhoc-1")
	if err != nil {
		t.Fatal(err)
	}
	if !j.Adhoc || j.Model != model || j.ContentHash != "" || !j.LostAt.IsZero() {
		t.Errorf("job = %+v, want adhoc", j)
	}
	wantCounts(t, s, "adhoc-1", store.Counts{Total: 2, Running: 1, Failed: 1})
	if j.Done() {
		t.Error("job done with a task running")
	}
	must(t, store.Applied)(s.Complete(ctx, a, tok(s, a, "w"), []byte(`{}`)))
	if j, _ := s.GetJob(ctx, "adhoc-1"); !j.Done() {
		t.Error("job not done")
	}
	// A new task arriving reopens the job.
	must(t, store.Applied)(lease(s, ref("adhoc-1", "c"), "w", time.Minute))
	wantCounts(t, s, "adhoc-1", store.Counts{Total: 3, Running: 1, Succeeded: 1, Failed: 1})
	if j, _ := s.GetJob(ctx, "adhoc-1"); j.Done() {
		t.Error("job done with a task running")
	}
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: "adhoc-1", Model: model, ContentHash: "h"}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("CreateJob over an adhoc job: %v, want ErrConflict", err)
	}

	// An ingest-created job takes only its own tasks.
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: "job2", Model: model, ContentHash: "h", TaskIDs: ids("job2", keys(2))}); err != nil {
		t.Fatal(err)
	}
	must(t, store.Applied)(lease(s, ref("job2", "k0"), "w", time.Minute))
	must(t, store.Foreign)(lease(s, ref("job2", "extra"), "w", time.Minute))
	withHash := ref("job2", "k1")
	withHash.JobHash, withHash.JobTotal = "other", 2
	must(t, store.Foreign)(lease(s, withHash, "w", time.Minute)) // another run of the job id
	withHash.JobHash = "h"
	must(t, store.Applied)(lease(s, withHash, "w", time.Minute))
	wantCounts(t, s, "job2", store.Counts{Total: 2, Running: 2})
}

func TestInvalidInput(t *testing.T) {
	s, _ := newStore(t, time.Hour)
	good := ref("job1", "k")
	bad := []store.Ref{
		{JobID: "a}b", TaskID: task.TaskID("a}b", "k"), Key: "k", Model: model},
		{JobID: "job1", TaskID: task.TaskID("job1", "other"), Key: "k", Model: model},
		{JobID: "job1", TaskID: task.TaskID("job1", ""), Key: "", Model: model},
		{JobID: "job1", TaskID: good.TaskID, Key: "k", Model: "bad model"},
	}
	for _, r := range bad {
		if _, err := lease(s, r, "w", time.Minute); err == nil {
			t.Errorf("Lease(%+v) succeeded", r)
		}
	}
	if _, err := lease(s, good, "", time.Minute); err == nil {
		t.Error("Lease with empty holder succeeded")
	}
	if _, err := s.Complete(ctx, good, tok(s, good, "w"), []byte(`{not json`)); err == nil {
		t.Error("Complete with invalid JSON succeeded")
	}
	if _, err := s.GetJob(ctx, "job1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("invalid calls created the job: %v", err)
	}
}

func TestResults(t *testing.T) {
	s, _ := newStore(t, time.Hour)
	ks := keys(250)
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: "job1", Model: model, ContentHash: "h", TaskIDs: ids("job1", ks)}); err != nil {
		t.Fatal(err)
	}
	// Finish in reverse order, every 7th as a failure, leave the last key queued.
	var order []string
	for i := len(ks) - 1; i >= 1; i-- {
		r := ref("job1", ks[i])
		if i%7 == 0 {
			must(t, store.Applied)(s.Fail(ctx, r, tok(s, r, "w"), []byte(`{"code":400,"message":"m`+ks[i]+`"}`)))
		} else {
			must(t, store.Applied)(s.Complete(ctx, r, tok(s, r, "w"), []byte(`{"text":"`+ks[i]+`"}`)))
		}
		order = append(order, ks[i])
	}
	var got []string
	var seq int64
	for rec, err := range s.Results(ctx, "job1", 7) {
		if err != nil {
			t.Fatal(err)
		}
		if rec.Seq <= seq {
			t.Fatalf("seq %d after %d", rec.Seq, seq)
		}
		seq = rec.Seq
		var want json.RawMessage
		payload := rec.Response
		if rec.State == store.Failed {
			want = json.RawMessage(`{"code":400,"message":"m` + rec.Key + `"}`)
			payload = rec.Error
		} else {
			want = json.RawMessage(`{"text":"` + rec.Key + `"}`)
		}
		if string(payload) != string(want) || rec.TaskID != task.TaskID("job1", rec.Key) || rec.FinishedAt.IsZero() {
			t.Errorf("record %+v", rec)
		}
		got = append(got, rec.Key)
	}
	if diff := cmp.Diff(order, got); diff != "" {
		t.Errorf("results order (-want +got):\n%s", diff)
	}

	// Paging by hand, with new results arriving between pages.
	page, next, err := s.ResultsPage(ctx, "job1", 0, 1000)
	if err != nil || len(page) != 249 {
		t.Fatalf("ResultsPage = %d records, %v", len(page), err)
	}
	must(t, store.Applied)(s.Complete(ctx, ref("job1", "k0"), tok(s, ref("job1", "k0"), "w"), []byte(`{}`)))
	page, next2, err := s.ResultsPage(ctx, "job1", next, 1000)
	if err != nil || len(page) != 1 || page[0].Key != "k0" || next2 != next+1 {
		t.Fatalf("ResultsPage after %d = %+v, %d, %v", next, page, next2, err)
	}
	if page, n, err := s.ResultsPage(ctx, "job1", next2, 10); err != nil || len(page) != 0 || n != next2 {
		t.Errorf("empty page = %v, %d, %v", page, n, err)
	}

	rec, err := s.Result(ctx, "job1", "k7")
	if err != nil || rec.State != store.Failed || string(rec.Error) == "" || rec.Response != nil {
		t.Errorf("Result(k7) = %+v, %v", rec, err)
	}
	if _, err := s.Result(ctx, "job1", "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Result(missing) = %v, want ErrNotFound", err)
	}
	if _, err := s.Result(ctx, "nojob", "k1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Result(nojob) = %v, want ErrNotFound", err)
	}
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: "job2", Model: model, ContentHash: "h", TaskIDs: ids("job2", keys(1))}); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.Result(ctx, "job2", "k0"); err != nil || rec.State != store.Queued || rec.Key != "k0" {
		t.Errorf("Result(queued) = %+v, %v", rec, err)
	}
}

func TestTTLOnEveryKey(t *testing.T) {
	const ttl = time.Hour
	s, rdb := newStore(t, ttl)
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: "job1", Model: model, ContentHash: "h", TaskIDs: ids("job1", keys(3))}); err != nil {
		t.Fatal(err)
	}
	must(t, store.Applied)(lease(s, ref("job1", "k0"), "w", time.Minute))
	must(t, store.Applied)(s.Complete(ctx, ref("job1", "k0"), tok(s, ref("job1", "k0"), "w"), []byte(`{}`)))
	must(t, store.Applied)(lease(s, ref("job1", "k1"), "w", time.Minute))
	must(t, store.Applied)(s.MarkWaitingFor(ctx, ref("job1", "k1"), tok(s, ref("job1", "k1"), "w"), 1, time.Now().Add(time.Minute)))
	must(t, store.Applied)(s.Fail(ctx, ref("adhoc-x", "k"), tok(s, ref("adhoc-x", "k"), "w"), []byte(`{}`)))
	must(t, store.Applied)(s.ReleaseLease(ctx, ref("adhoc-y", "k"), tok(s, ref("adhoc-y", "k"), "w")))
	n := 0
	iter := rdb.Scan(ctx, 0, "*", 100).Iterator()
	for iter.Next(ctx) {
		n++
		d, err := rdb.PTTL(ctx, iter.Val()).Result()
		if err != nil || d <= 0 || d > ttl {
			t.Errorf("key %s: PTTL %v, %v; want in (0, %v]", iter.Val(), d, err, ttl)
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Errorf("scanned %d keys, expected at least 10", n)
	}
}

func TestExpiredTaskRecordIsNotRerun(t *testing.T) {
	s, rdb := newStore(t, time.Hour)
	r := ref("job1", "k0")
	must(t, store.Applied)(s.Complete(ctx, r, tok(s, r, "w"), []byte(`{}`)))
	must(t, store.Applied)(lease(s, ref("job1", "k1"), "w", time.Minute))
	// The task's record expires before the job's (it finished earlier).
	if err := rdb.Del(ctx, "gemq:job:{job1}:task:"+r.TaskID).Err(); err != nil {
		t.Fatal(err)
	}
	must(t, store.AlreadyDone)(lease(s, r, "w2", time.Minute))
	must(t, store.AlreadyDone)(s.Complete(ctx, r, tok(s, r, "w2"), []byte(`{}`)))
	wantCounts(t, s, "job1", store.Counts{Total: 2, Running: 1, Succeeded: 1})
	if rec, err := s.Result(ctx, "job1", "k0"); err != nil || rec.State != store.Succeeded || !rec.Archived || rec.Response != nil {
		t.Errorf("Result = %+v, %v; want succeeded, archived, no response", rec, err)
	}
	var got []store.Record
	for rec, err := range s.Results(ctx, "job1", 10) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, rec)
	}
	if len(got) != 1 || got[0].TaskID != r.TaskID || !got[0].Archived || got[0].State != store.Succeeded {
		t.Errorf("Results = %+v, want the one archived record", got)
	}
}

// With a BodyGrace, a published result leaves Redis after the grace and only
// the compact terminal record stays: the lifecycle still knows the task is
// finished and published, its job still lists it, and Result and Results say
// where the answer went.
func TestCompactionAfterPublish(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	s := store.New(rdb, store.Options{TTL: time.Hour, BodyGrace: 300 * time.Millisecond})
	ks := keys(3)
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: "job1", Model: model, ContentHash: "h", TaskIDs: ids("job1", ks)}); err != nil {
		t.Fatal(err)
	}
	ok, bad, unpub := ref("job1", "k0"), ref("job1", "k1"), ref("job1", "k2")
	must(t, store.Applied)(s.Complete(ctx, ok, tok(s, ok, "w"), []byte(`{"text":"hi"}`)))
	must(t, store.Applied)(s.Fail(ctx, bad, tok(s, bad, "w"), []byte(`{"code":400}`)))
	must(t, store.Applied)(s.Complete(ctx, unpub, tok(s, unpub, "w"), []byte(`{"text":"kept"}`)))
	for _, r := range []store.Ref{ok, bad} {
		if err := s.MarkPublished(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// Within the grace the answer is still there.
	if rec, err := s.Result(ctx, "job1", "k0"); err != nil || rec.Archived || string(rec.Response) != `{"text":"hi"}` {
		t.Fatalf("Result within the grace = %+v, %v", rec, err)
	}
	time.Sleep(500 * time.Millisecond)
	for _, id := range []string{ok.TaskID, bad.TaskID} {
		if n, err := rdb.Exists(ctx, "gemq:job:{job1}:task:"+id).Result(); err != nil || n != 0 {
			t.Errorf("task record %s after the grace: exists %d, %v; want gone", id, n, err)
		}
		if n, err := rdb.SIsMember(ctx, "gemq:job:{job1}:tasks", id).Result(); err != nil || n {
			t.Errorf("task %s still in the tasks set (%v, %v)", id, n, err)
		}
	}
	// The unpublished result keeps its record: it must survive until published.
	if rec, err := s.Result(ctx, "job1", "k2"); err != nil || rec.Archived || string(rec.Response) != `{"text":"kept"}` {
		t.Errorf("unpublished Result = %+v, %v", rec, err)
	}
	wantCounts(t, s, "job1", store.Counts{Total: 3, Succeeded: 2, Failed: 1})
	for r, want := range map[store.Ref]store.State{ok: store.Succeeded, bad: store.Failed} {
		lr := leaseTask(t, s, r, store.LeaseRequest{Holder: "late", TTL: time.Minute}, store.AlreadyDone)
		if !lr.Published {
			t.Errorf("lease of compacted %s: %+v, want published", r.Key, lr)
		}
		rec, err := s.Result(ctx, "job1", r.Key)
		if err != nil || rec.State != want || !rec.Archived || !rec.Published || rec.Response != nil || rec.Error != nil || rec.Seq == 0 {
			t.Errorf("Result(%s) = %+v, %v; want %s, archived", r.Key, rec, err, want)
		}
		if err := s.MarkPublished(ctx, r); err != nil {
			t.Errorf("MarkPublished again on compacted %s: %v", r.Key, err)
		}
		must(t, store.AlreadyDone)(s.Fail(ctx, r, store.Token{Holder: "late", Fence: "x"}, []byte(`{}`)))
	}
	// A retried submission neither counts the compacted tasks again nor
	// calls the job another's.
	if j, created, err := s.CreateJob(ctx, store.NewJob{ID: "job1", Model: model, ContentHash: "h", TaskIDs: ids("job1", ks)}); err != nil || created || j.Counts.Total != 3 || !j.Done() {
		t.Errorf("CreateJob again = %+v, %v, %v", j, created, err)
	}
	var states []store.State
	for rec, err := range s.Results(ctx, "job1", 2) {
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, rec.State)
		if rec.Archived != (rec.TaskID != unpub.TaskID) {
			t.Errorf("record %+v: archived %v", rec, rec.Archived)
		}
	}
	if diff := cmp.Diff([]store.State{store.Succeeded, store.Failed, store.Succeeded}, states); diff != "" {
		t.Errorf("Results states (-want +got):\n%s", diff)
	}
}

// Without a BodyGrace (no archive to read results back from), a published
// result keeps its record for the TTL, as before.
func TestNoCompactionWithoutGrace(t *testing.T) {
	s, rdb := newStore(t, time.Hour)
	r := ref("job1", "k0")
	must(t, store.Applied)(s.Complete(ctx, r, tok(s, r, "w"), []byte(`{"text":"hi"}`)))
	if err := s.MarkPublished(ctx, r); err != nil {
		t.Fatal(err)
	}
	if d, err := rdb.PTTL(ctx, "gemq:job:{job1}:task:"+r.TaskID).Result(); err != nil || d < 59*time.Minute {
		t.Errorf("PTTL of a published record without grace = %v, %v; want the TTL", d, err)
	}
	if ok, err := rdb.SIsMember(ctx, "gemq:job:{job1}:tasks", r.TaskID).Result(); err != nil || !ok {
		t.Errorf("task left the tasks set without grace (%v, %v)", ok, err)
	}
}

func TestCluster(t *testing.T) {
	addrs := redistest.StartCluster(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { rdb.Close() })
	s := store.New(rdb, store.Options{TTL: time.Hour})
	for j := range 6 { // spread over the masters
		job := fmt.Sprintf("job%d", j)
		ks := keys(5)
		if _, created, err := s.CreateJob(ctx, store.NewJob{ID: job, Model: model, ContentHash: "h", TaskIDs: ids(job, ks)}); err != nil || !created {
			t.Fatalf("CreateJob(%s) = %v, %v", job, created, err)
		}
		must(t, store.Applied)(lease(s, ref(job, "k0"), "w", time.Minute))
		must(t, store.Applied)(s.Complete(ctx, ref(job, "k0"), tok(s, ref(job, "k0"), "w"), []byte(`{}`)))
		must(t, store.AlreadyDone)(s.Fail(ctx, ref(job, "k0"), tok(s, ref(job, "k0"), "w"), []byte(`{}`)))
		must(t, store.Applied)(lease(s, ref(job, "k1"), "w", time.Minute))
		must(t, store.Applied)(s.MarkWaitingFor(ctx, ref(job, "k1"), tok(s, ref(job, "k1"), "w"), 1, time.Now().Add(time.Minute)))
		must(t, store.Applied)(lease(s, ref(job, "k2"), "w", time.Minute))
		must(t, store.Applied)(s.Fail(ctx, ref(job, "k2"), tok(s, ref(job, "k2"), "w"), []byte(`{}`)))
		must(t, store.Applied)(lease(s, ref(job, "k3"), "w", time.Minute))
		must(t, store.Foreign)(lease(s, ref(job, "new"), "w", time.Minute))
		wantCounts(t, s, job, store.Counts{Total: 5, Queued: 1, Waiting: 1, Running: 1, Succeeded: 1, Failed: 1})
		page, _, err := s.ResultsPage(ctx, job, 0, 10)
		if err != nil || len(page) != 2 || page[0].Key != "k0" || page[1].Key != "k2" {
			t.Errorf("ResultsPage(%s) = %+v, %v", job, page, err)
		}
		if rec, err := s.Result(ctx, job, "k1"); err != nil || rec.State != store.Waiting {
			t.Errorf("Result(%s, k1) = %+v, %v", job, rec, err)
		}
	}
}

// leaseTask calls LeaseTask and fails the test on an error or another outcome.
func leaseTask(t *testing.T, s *store.Store, r store.Ref, req store.LeaseRequest, want store.Outcome) store.LeaseResult {
	t.Helper()
	if req.TTL == 0 {
		req.TTL = time.Minute
	}
	res, err := s.LeaseTask(ctx, r, req)
	if err != nil || res.Outcome != want {
		t.Fatalf("LeaseTask(%+v) = %+v, %v; want %v", req, res, err, want)
	}
	if res.Outcome == store.Applied {
		tokens.Store(tokenKey{s, r.TaskID, req.Holder}, res.Token)
	}
	return res
}

// tokens remembers the last lease token of each (store, task, holder), for
// tok.
var tokens sync.Map

type tokenKey struct {
	s            *store.Store
	task, holder string
}

// lease leases r for holder (attempt 0) and remembers its token.
func lease(s *store.Store, r store.Ref, holder string, ttl time.Duration) (store.Outcome, error) {
	res, err := s.LeaseTask(ctx, r, store.LeaseRequest{Holder: holder, TTL: ttl})
	if res.Outcome == store.Applied {
		tokens.Store(tokenKey{s, r.TaskID, holder}, res.Token)
	}
	return res.Outcome, err
}

// tok is holder's last lease token on r, or a token that never leased.
func tok(s *store.Store, r store.Ref, holder string) store.Token {
	if v, ok := tokens.Load(tokenKey{s, r.TaskID, holder}); ok {
		return v.(store.Token)
	}
	return store.Token{Holder: holder, Fence: "never-leased"}
}

// A task waiting for deferral n answers Awaiting to every other delivery
// until its deadline, and is leased by the delivery carrying n.
func TestLeaseTaskWaitingForADeferral(t *testing.T) {
	s, _ := newStore(t, time.Hour)
	r := ref("job1", "k0")
	res := leaseTask(t, s, r, store.LeaseRequest{Holder: "a"}, store.Applied)
	if res.Previous != store.Queued || res.Deferral != 0 || time.Until(res.LeaseUntil) < 50*time.Second {
		t.Fatalf("first lease = %+v", res)
	}
	must(t, store.Applied)(s.MarkWaitingFor(ctx, r, tok(s, r, "a"), 1, time.Now().Add(time.Minute)))
	wantCounts(t, s, "job1", store.Counts{Total: 1, Waiting: 1})

	// A duplicate push (deferral 0) and an unknown deferral: acknowledged.
	for _, d := range []int{0, 2} {
		res = leaseTask(t, s, r, store.LeaseRequest{Holder: "dup", Deferral: d}, store.Awaiting)
		if res.Previous != store.Waiting || res.Deferral != 1 || time.Until(res.WaitUntil) < 50*time.Second {
			t.Fatalf("awaiting = %+v", res)
		}
	}
	// A lease check finds nothing stale.
	leaseTask(t, s, r, store.LeaseRequest{Holder: "check", Deferral: 1, TakeoverOnly: true}, store.NotStale)
	wantCounts(t, s, "job1", store.Counts{Total: 1, Waiting: 1})

	// The Cloud Task of deferral 1.
	res = leaseTask(t, s, r, store.LeaseRequest{Holder: "b", Deferral: 1}, store.Applied)
	if res.Previous != store.Waiting || res.Deferral != 1 {
		t.Fatalf("lease of the expected deferral = %+v", res)
	}
	wantCounts(t, s, "job1", store.Counts{Total: 1, Running: 1})
	// Its duplicate: held.
	res = leaseTask(t, s, r, store.LeaseRequest{Holder: "b2", Deferral: 1}, store.HeldElsewhere)
	if time.Until(res.LeaseUntil) < 50*time.Second {
		t.Fatalf("held elsewhere reports lease until %v", res.LeaseUntil)
	}

	// Deferred again (early arrival): the old Cloud Task is now a duplicate.
	must(t, store.Applied)(s.MarkWaitingFor(ctx, r, tok(s, r, "b"), 2, time.Now().Add(time.Minute)))
	leaseTask(t, s, r, store.LeaseRequest{Holder: "old", Deferral: 1}, store.Awaiting)
	leaseTask(t, s, r, store.LeaseRequest{Holder: "c", Deferral: 2}, store.Applied)
	must(t, store.Applied)(s.Complete(ctx, r, tok(s, r, "c"), []byte(`{}`)))

	res = leaseTask(t, s, r, store.LeaseRequest{Holder: "late", Deferral: 2}, store.AlreadyDone)
	if res.Published || res.Previous != store.Succeeded {
		t.Fatalf("after complete = %+v, want not yet published", res)
	}
	if err := s.MarkPublished(ctx, r); err != nil {
		t.Fatal(err)
	}
	res = leaseTask(t, s, r, store.LeaseRequest{Holder: "late", TakeoverOnly: true}, store.AlreadyDone)
	if !res.Published {
		t.Fatalf("after MarkPublished = %+v, want published", res)
	}
	if rec, err := s.Result(ctx, "job1", "k0"); err != nil || !rec.Published {
		t.Fatalf("Result = %+v, %v; want Published", rec, err)
	}
	recs, _, err := s.ResultsPage(ctx, "job1", 0, 10)
	if err != nil || len(recs) != 1 || !recs[0].Published || recs[0].Seq != 1 {
		t.Fatalf("ResultsPage = %+v, %v; want one published record with seq 1", recs, err)
	}
	wantCounts(t, s, "job1", store.Counts{Total: 1, Succeeded: 1})
}

// A waiting task whose deadline passed (its Cloud Task was lost) is taken
// over by any delivery, a lease check included; a running task is taken over
// by a lease check only once its lease expired.
func TestLeaseTaskTakesOverStaleTasks(t *testing.T) {
	s, _ := newStore(t, time.Hour)
	r := ref("job1", "k0")
	leaseTask(t, s, r, store.LeaseRequest{Holder: "a"}, store.Applied)
	must(t, store.Applied)(s.MarkWaitingFor(ctx, r, tok(s, r, "a"), 3, time.Now().Add(150*time.Millisecond)))
	leaseTask(t, s, r, store.LeaseRequest{Holder: "dup"}, store.Awaiting)
	time.Sleep(200 * time.Millisecond)
	res := leaseTask(t, s, r, store.LeaseRequest{Holder: "dup"}, store.Applied)
	if res.Previous != store.Waiting || res.Deferral != 3 || res.WaitUntil.IsZero() {
		t.Fatalf("takeover = %+v, want previous waiting for deferral 3", res)
	}
	wantCounts(t, s, "job1", store.Counts{Total: 1, Running: 1})

	// Lease checks: a live lease is held elsewhere; an expired one is taken over.
	r2 := ref("job1", "k1")
	leaseTask(t, s, r2, store.LeaseRequest{Holder: "dead", TTL: 150 * time.Millisecond}, store.Applied)
	leaseTask(t, s, r2, store.LeaseRequest{Holder: "check", TakeoverOnly: true}, store.HeldElsewhere)
	time.Sleep(200 * time.Millisecond)
	res = leaseTask(t, s, r2, store.LeaseRequest{Holder: "check", TakeoverOnly: true}, store.Applied)
	if res.Previous != store.Running {
		t.Fatalf("lease check takeover = %+v", res)
	}
	// A queued task (released for its redelivery) is not the check's.
	must(t, store.Applied)(s.ReleaseLease(ctx, r2, tok(s, r2, "check")))
	leaseTask(t, s, r2, store.LeaseRequest{Holder: "check2", TakeoverOnly: true}, store.NotStale)
	// The Cloud Task a waiting task waits for leases it at once.
	leaseTask(t, s, r2, store.LeaseRequest{Holder: "x"}, store.Applied)
	must(t, store.Applied)(s.MarkWaitingFor(ctx, r2, tok(s, r2, "x"), 7, time.Now().Add(time.Minute)))
	leaseTask(t, s, r2, store.LeaseRequest{Holder: "y", Deferral: 7}, store.Applied)
	wantCounts(t, s, "job1", store.Counts{Total: 2, Running: 2})

	if _, err := s.LeaseTask(ctx, r, store.LeaseRequest{Holder: "", TTL: time.Minute}); err == nil {
		t.Error("LeaseTask with no holder succeeded")
	}
	if _, err := s.MarkWaitingFor(ctx, r, tok(s, r, "dup"), 0, time.Now()); err == nil {
		t.Error("MarkWaitingFor deferral 0 succeeded")
	}
	if err := s.MarkPublished(ctx, r); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("MarkPublished on a running task = %v, want a not-terminal error", err)
	}
	if err := s.MarkPublished(ctx, ref("job1", "never")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("MarkPublished on an unknown task = %v, want ErrNotFound", err)
	}
}

// Concurrent duplicates of one waiting task's expected delivery: exactly one
// leases it.
func TestLeaseTaskExpectedDeliveryConcurrent(t *testing.T) {
	s, _ := newStore(t, time.Hour)
	r := ref("job1", "k0")
	leaseTask(t, s, r, store.LeaseRequest{Holder: "a"}, store.Applied)
	must(t, store.Applied)(s.MarkWaitingFor(ctx, r, tok(s, r, "a"), 1, time.Now().Add(time.Minute)))
	const n = 32
	got := make([]store.Outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := s.LeaseTask(ctx, r, store.LeaseRequest{Holder: "h" + strconv.Itoa(i), TTL: time.Minute, Deferral: i % 2})
			if err != nil {
				t.Error(err)
			}
			got[i] = res.Outcome
		})
	}
	wg.Wait()
	by := map[store.Outcome]int{}
	for _, o := range got {
		by[o]++
	}
	if by[store.Applied] != 1 || by[store.Awaiting]+by[store.HeldElsewhere] != n-1 {
		t.Fatalf("outcomes %v, want one applied, the rest awaiting or held", by)
	}
	wantCounts(t, s, "job1", store.Counts{Total: 1, Running: 1})
}

// Redis losing its data (FLUSHALL, an empty restart) is detected: a task
// carrying its job's hash re-creates the job as lost with the right total,
// the job is never reported done with a wrong total, and a resubmission of
// the same job is accepted without counting its tasks twice.
func TestLostJobIsRecognised(t *testing.T) {
	s, rdb := newStore(t, time.Hour)
	ks := keys(4)
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: "job1", Model: model, ContentHash: "h1", TaskIDs: ids("job1", ks)}); err != nil {
		t.Fatal(err)
	}
	withJob := func(key string) store.Ref {
		r := ref("job1", key)
		r.JobHash, r.JobTotal = "h1", len(ks)
		return r
	}
	for _, k := range ks[:2] {
		res := leaseTask(t, s, withJob(k), store.LeaseRequest{Holder: "w"}, store.Applied)
		must(t, store.Applied)(s.Complete(ctx, withJob(k), res.Token, []byte(`{}`)))
	}
	held := leaseTask(t, s, withJob("k2"), store.LeaseRequest{Holder: "w"}, store.Applied)
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	// A lease check after the loss changes nothing.
	leaseTask(t, s, withJob("k3"), store.LeaseRequest{Holder: "check", TakeoverOnly: true}, store.NotStale)
	if _, err := s.GetJob(ctx, "job1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetJob after a lease check = %v, want ErrNotFound (nothing re-created)", err)
	}
	// The holder from before the loss settles its task: nobody else holds it.
	must(t, store.Applied)(s.Complete(ctx, withJob("k2"), held.Token, []byte(`{}`)))
	j, err := s.GetJob(ctx, "job1")
	if err != nil {
		t.Fatal(err)
	}
	if j.LostAt.IsZero() || j.State() != "state_lost" || j.ContentHash != "h1" || j.Adhoc {
		t.Fatalf("job after loss = %+v (state %s), want lost with hash h1", j, j.State())
	}
	wantCounts(t, s, "job1", store.Counts{Total: 4, Queued: 3, Succeeded: 1})
	// Another task arrives; an envelope of another run of the job id does not join.
	leaseTask(t, s, withJob("k3"), store.LeaseRequest{Holder: "w"}, store.Applied)
	other := withJob("k3")
	other.JobHash = "h-other"
	leaseTask(t, s, other, store.LeaseRequest{Holder: "w2"}, store.Foreign)

	// The user resubmits the same job: accepted, total unchanged.
	if _, created, err := s.CreateJob(ctx, store.NewJob{ID: "job1", Model: model, ContentHash: "h1", TaskIDs: ids("job1", ks)}); err != nil || created {
		t.Fatalf("CreateJob after loss = %v, %v; want accepted, not created", created, err)
	}
	wantCounts(t, s, "job1", store.Counts{Total: 4, Queued: 2, Running: 1, Succeeded: 1})
	// The re-run tasks finish: the job is done, every count true.
	for _, k := range []string{"k0", "k1"} {
		res := leaseTask(t, s, withJob(k), store.LeaseRequest{Holder: "w"}, store.Applied)
		must(t, store.Applied)(s.Complete(ctx, withJob(k), res.Token, []byte(`{}`)))
	}
	must(t, store.Applied)(s.Complete(ctx, withJob("k3"), tok(s, withJob("k3"), "w"), []byte(`{}`)))
	if j, _ := s.GetJob(ctx, "job1"); j.State() != "done" {
		t.Fatalf("job after re-run = %+v, want done", j)
	}
	wantCounts(t, s, "job1", store.Counts{Total: 4, Succeeded: 4})
}

// A later attempt of the delivery that marked a task waiting resumes it at
// once (its Cloud Task may never have been created); other deliveries wait.
func TestOwnWaitingMarkIsResumed(t *testing.T) {
	s, _ := newStore(t, time.Hour)
	r := ref("job1", "k0")
	a := leaseTask(t, s, r, store.LeaseRequest{Holder: "pubsub/m1", Attempt: 1}, store.Applied)
	must(t, store.Applied)(s.MarkWaitingFor(ctx, r, a.Token, 1, time.Now().Add(time.Minute)))
	leaseTask(t, s, r, store.LeaseRequest{Holder: "pubsub/m1", Attempt: 1}, store.Awaiting) // a duplicate
	leaseTask(t, s, r, store.LeaseRequest{Holder: "pubsub/other", Attempt: 5}, store.Awaiting)
	res := leaseTask(t, s, r, store.LeaseRequest{Holder: "pubsub/m1", Attempt: 2}, store.Applied)
	if !res.Resumed || res.Previous != store.Waiting || res.Deferral != 1 {
		t.Fatalf("resume = %+v, want resumed from waiting for deferral 1", res)
	}
}

// A poison copy may settle only a task of a user-published (ad-hoc) job.
func TestAdhocOnly(t *testing.T) {
	s, _ := newStore(t, time.Hour)
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: "job1", Model: model, ContentHash: "h", TaskIDs: ids("job1", keys(1))}); err != nil {
		t.Fatal(err)
	}
	leaseTask(t, s, ref("job1", "k0"), store.LeaseRequest{Holder: "p", AdhocOnly: true}, store.Foreign)
	wantCounts(t, s, "job1", store.Counts{Total: 1, Queued: 1})
	leaseTask(t, s, ref("adhoc-1", "k0"), store.LeaseRequest{Holder: "p", AdhocOnly: true}, store.Applied)
}

// Issue 12's budget: once its result is durable, a finished task costs at
// most 300 bytes of Redis (MEMORY USAGE of what its job keeps), failures
// included.
func TestCompactFootprint(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	s := store.New(rdb, store.Options{TTL: time.Hour, BodyGrace: 300 * time.Millisecond})
	const n = 2000
	ks := keys(n)
	fps := make([]string, n)
	for i, k := range ks {
		fps[i] = fp(k)
	}
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: "big", Model: model, ContentHash: "h", TaskIDs: ids("big", ks), Fingerprints: fps}); err != nil {
		t.Fatal(err)
	}
	// What the fingerprints recorded at creation cost while a task waits
	// for its first lease (they leave then, or when it settles).
	fpBytes, err := rdb.MemoryUsage(ctx, "gemq:job:{big}:fps", 0).Result()
	if err != nil {
		t.Fatal(err)
	}
	setBytes, _ := rdb.MemoryUsage(ctx, "gemq:job:{big}:tasks", 0).Result()
	t.Logf("Redis bytes per task until its first lease: %d for its fingerprint (beside %d for its id in the tasks set)", fpBytes/n, setBytes/n)
	if fpBytes/n > 128 {
		t.Errorf("%d B per task for its fingerprint, want at most 128", fpBytes/n)
	}
	answer := []byte(`{"candidates":[{"content":{"role":"model","parts":[{"text":"` + strings.Repeat("an answer ", 30) + `"}]}}]}`)
	for i, k := range ks {
		r := ref("big", k)
		if i%10 == 0 {
			must(t, store.Applied)(s.Fail(ctx, r, tok(s, r, "w"), []byte(`{"code":400,"message":"bad request"}`)))
		} else {
			must(t, store.Applied)(s.Complete(ctx, r, tok(s, r, "w"), answer))
		}
		if err := s.MarkPublished(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	jobBytes := func() int64 {
		t.Helper()
		var sum int64
		for _, k := range rdb.Keys(ctx, "gemq:job:{big}:*").Val() {
			m, err := rdb.MemoryUsage(ctx, k, 0).Result()
			if err != nil && !errors.Is(err, redis.Nil) { // nil: expired since KEYS
				t.Fatal(err)
			}
			sum += m
		}
		return sum
	}
	with := jobBytes() / n // some may have left already: for the log only
	deadline := time.Now().Add(10 * time.Second)
	for len(rdb.Keys(ctx, "gemq:job:{big}:task:*").Val()) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("task records still in Redis 10 s after a 300 ms grace")
		}
		time.Sleep(50 * time.Millisecond)
	}
	compact := jobBytes() / n
	if rdb.Exists(ctx, "gemq:job:{big}:fps").Val() != 0 {
		t.Error("the job's fingerprints outlived its tasks")
	}
	t.Logf("Redis bytes per finished task: %d with (most of) the answers, %d once they left", with, compact)
	if compact > 300 {
		t.Errorf("%d B per finished task once its answer left Redis, want at most 300", compact)
	}
	wantCounts(t, s, "big", store.Counts{Total: n, Succeeded: n - n/10, Failed: n / 10})
}

// After Redis lost a job, its results from the archive are recorded back:
// the counts include them, a task finished there is never run again, a
// holder that took it since the loss is fenced out, and doing it twice
// changes nothing.
func TestRestoreArchivedAfterLoss(t *testing.T) {
	s, rdb := newStore(t, time.Hour)
	ks := keys(4)
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: "lost", Model: model, ContentHash: "h", TaskIDs: ids("lost", ks)}); err != nil {
		t.Fatal(err)
	}
	lref := func(k string) store.Ref {
		r := ref("lost", k)
		r.JobHash, r.JobTotal = "h", 4
		return r
	}
	must(t, store.Applied)(s.Complete(ctx, lref("k0"), tok(s, lref("k0"), "w"), []byte(`{}`)))
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// Since the loss: k1 was taken again (running), k3 finished again.
	leaseTask(t, s, lref("k1"), store.LeaseRequest{Holder: "again"}, store.Applied)
	must(t, store.Applied)(s.Complete(ctx, lref("k3"), tok(s, lref("k3"), "w"), []byte(`{}`)))
	wantCounts(t, s, "lost", store.Counts{Total: 4, Queued: 2, Running: 1, Succeeded: 1})

	// The archive holds k0, k1 (failed) and k3.
	archived := []store.Restored{{TaskID: task.TaskID("lost", "k0")}, {TaskID: task.TaskID("lost", "k1"), Failed: true},
		{TaskID: task.TaskID("lost", "k3")}}
	if n, err := s.RestoreArchived(ctx, "lost", archived); err != nil || n != 2 {
		t.Fatalf("RestoreArchived = %d, %v; want 2 (k3 finished here already)", n, err)
	}
	wantCounts(t, s, "lost", store.Counts{Total: 4, Queued: 1, Succeeded: 2, Failed: 1})
	j, err := s.GetJob(ctx, "lost")
	if err != nil || j.Restored != 2 || j.LostAt.IsZero() || j.Done() {
		t.Errorf("job = %+v, %v; want lost, 2 restored, not done", j, err)
	}
	lr := leaseTask(t, s, lref("k0"), store.LeaseRequest{Holder: "late"}, store.AlreadyDone)
	if !lr.Published {
		t.Errorf("restored task leased: %+v, want already done and published", lr)
	}
	must(t, store.AlreadyDone)(s.Complete(ctx, lref("k1"), tok(s, lref("k1"), "again"), []byte(`{}`)))
	if rec, err := s.Result(ctx, "lost", "k1"); err != nil || rec.State != store.Failed || !rec.Archived {
		t.Errorf("Result(k1) = %+v, %v; want failed, archived", rec, err)
	}
	if n, err := s.RestoreArchived(ctx, "lost", archived); err != nil || n != 0 {
		t.Errorf("RestoreArchived again = %d, %v; want 0", n, err)
	}
	// The last task finishes: the job is done, with the true counts.
	must(t, store.Applied)(s.Complete(ctx, lref("k2"), tok(s, lref("k2"), "w"), []byte(`{}`)))
	if j, _ := s.GetJob(ctx, "lost"); !j.Done() || j.State() != "done" || j.Counts != (store.Counts{Total: 4, Succeeded: 3, Failed: 1}) {
		t.Errorf("job = %+v (%s), want done with 3 succeeded, 1 failed", j, j.State())
	}
	if n, err := s.RestoreArchived(ctx, "nojob", archived[:1]); err != nil || n != 0 {
		t.Errorf("RestoreArchived of a job without a record = %d, %v; want 0", n, err)
	}
}

// The first lease carrying a request fingerprint records it; a delivery
// with another one is refused (Conflict) in every state, nothing changed;
// one with the same fingerprint, or none, is unaffected.
func TestLeaseTaskRefusesAnotherRequest(t *testing.T) {
	s, _ := newStore(t, time.Hour)
	r := ref("job1", "k0")
	r.JobHash, r.JobTotal = "h", 1
	if _, _, err := s.CreateJob(ctx, store.NewJob{ID: "job1", Model: model, ContentHash: "h", TaskIDs: ids("job1", keys(1))}); err != nil {
		t.Fatal(err)
	}
	other := store.LeaseRequest{Holder: "copy", Fingerprint: "fp-other"}
	leaseTask(t, s, r, store.LeaseRequest{Holder: "a", Fingerprint: "fp-real", TTL: 50 * time.Millisecond}, store.Applied)
	leaseTask(t, s, r, other, store.Conflict) // running
	time.Sleep(100 * time.Millisecond)
	leaseTask(t, s, r, other, store.Conflict) // running under an expired lease
	leaseTask(t, s, r, store.LeaseRequest{Holder: "b"}, store.Applied)
	leaseTask(t, s, r, store.LeaseRequest{Holder: "c", Fingerprint: "fp-real", Attempt: 1}, store.HeldElsewhere)
	must(t, store.Applied)(s.MarkWaitingFor(ctx, r, tok(s, r, "b"), 1, time.Now().Add(time.Minute)))
	leaseTask(t, s, r, store.LeaseRequest{Holder: "copy", Fingerprint: "fp-other", Deferral: 1}, store.Conflict) // waiting
	leaseTask(t, s, r, store.LeaseRequest{Holder: "d", Fingerprint: "fp-real", Deferral: 1}, store.Applied)
	must(t, store.Applied)(s.Complete(ctx, r, tok(s, r, "d"), []byte(`{}`)))
	leaseTask(t, s, r, other, store.Conflict) // terminal
	leaseTask(t, s, r, store.LeaseRequest{Holder: "e", Fingerprint: "fp-real"}, store.AlreadyDone)
	wantCounts(t, s, "job1", store.Counts{Total: 1, Succeeded: 1})
}

// Redis restarts from an RDB snapshot: the job records are back, but as of
// the last save (a task finished since is running again, with nobody to
// finish it), under a new replication id (Redis 7 loads the file's id as
// the secondary one only). A job stamped with the previous id is marked
// lost, by its next delivery or its next status read, so its status counts
// the archived results back (RestoreArchived) instead of staying running
// with a stale count; a job that had finished is left done; the restart is
// noticed once.
func TestRestartFromSnapshotMarksJobsLost(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	s := store.New(rdb, store.Options{TTL: time.Hour})
	ks := keys(2)
	withJob := func(job, key string) store.Ref {
		r := ref(job, key)
		r.JobHash, r.JobTotal = "h-"+job, len(ks)
		return r
	}
	finish := func(job, key string) {
		t.Helper()
		res := leaseTask(t, s, withJob(job, key), store.LeaseRequest{Holder: "w"}, store.Applied)
		must(t, store.Applied)(s.Complete(ctx, withJob(job, key), res.Token, []byte(`{}`)))
	}
	for _, job := range []string{"job-status", "job-lease", "job-done"} {
		if _, _, err := s.CreateJob(ctx, store.NewJob{ID: job, Model: model, ContentHash: "h-" + job, TaskIDs: ids(job, ks)}); err != nil {
			t.Fatal(err)
		}
	}
	finish("job-done", "k0")
	finish("job-done", "k1")
	finish("job-status", "k0")
	leaseTask(t, s, withJob("job-status", "k1"), store.LeaseRequest{Holder: "w"}, store.Applied)
	leaseTask(t, s, withJob("job-lease", "k0"), store.LeaseRequest{Holder: "w"}, store.Applied)
	if err := rdb.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	must(t, store.Applied)(s.Complete(ctx, withJob("job-status", "k1"), tok(s, withJob("job-status", "k1"), "w"), []byte(`{}`)))
	if j, _ := s.GetJob(ctx, "job-status"); j.State() != "done" || !j.LostAt.IsZero() {
		t.Fatalf("before the restart: %+v (%s), want done", j, j.State())
	}
	srv.Restart(t)

	// The status read notices: the snapshot's job is running, its k1 has
	// no one to finish it.
	j, err := s.GetJob(ctx, "job-status")
	if err != nil {
		t.Fatal(err)
	}
	if j.LostAt.IsZero() || j.State() != "state_lost" {
		t.Fatalf("job after the restart = %+v (%s), want state_lost", j, j.State())
	}
	wantCounts(t, s, "job-status", store.Counts{Total: 2, Running: 1, Succeeded: 1})
	again, _ := s.GetJob(ctx, "job-status")
	if !again.LostAt.Equal(j.LostAt) {
		t.Errorf("lost at %v, then %v: the restart was noticed twice", j.LostAt, again.LostAt)
	}
	// The archive holds k1's result: recorded back, the job is done.
	if n, err := s.RestoreArchived(ctx, "job-status", []store.Restored{{TaskID: task.TaskID("job-status", "k1")}}); err != nil || n != 1 {
		t.Fatalf("RestoreArchived = %d, %v; want 1", n, err)
	}
	if j, _ := s.GetJob(ctx, "job-status"); j.State() != "done" {
		t.Fatalf("after restoring: %+v (%s), want done", j, j.State())
	}

	// A delivery notices too (before any status read).
	leaseTask(t, s, withJob("job-lease", "k1"), store.LeaseRequest{Holder: "w"}, store.Applied)
	if lost, _ := rdb.HGet(ctx, "gemq:job:{job-lease}:meta", "lost").Result(); lost != "1" {
		t.Errorf("job-lease after a lease since the restart: lost = %q, want 1", lost)
	}
	// A finished job stays done.
	if j, _ := s.GetJob(ctx, "job-done"); j.State() != "done" || !j.LostAt.IsZero() {
		t.Errorf("finished job after the restart = %+v (%s), want done, not lost", j, j.State())
	}
}
