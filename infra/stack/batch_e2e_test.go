package stack_test

import (
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/infra/stack"
	"github.com/gemq-dev/gemq/internal/task"
)

// testBatch runs batch-tier jobs through the stack and the stand-in's Batch
// API (driven by the genai client): one that succeeds, one that partly
// fails (the failed entries fall back to the interactive path), one whose
// batch expires (back to the interactive path while the deadline allows,
// failed with the batch's reason once it does not). Each ends with exactly
// one terminal state and one result per task. Stand-in durations are in
// stand-in time (a minute lasts the stack's 2 s); the stack's collect
// window is 60 s of it.
func testBatch(t *testing.T, s *stack.Stack) {
	t.Run("cancelled mid-batch", func(t *testing.T) { testBatchCancel(t, s) })
	t.Run("succeeds", func(t *testing.T) {
		resetBatch(t, s, stack.GeminiOptions{}, geminisim.Batch{PendingFor: 10 * time.Second, RunFor: 30 * time.Second})
		keys, st := runBatchJob(t, s, "batchok", 21)
		if st.Batch == nil || st.Batch.Created != 1 || st.Batch.Entries["ok"] != len(keys) || st.AnsweredTasks != len(keys) || len(st.AnsweredTwice) != 0 {
			t.Errorf("stand-in batch stats %+v, answered %d (twice %v); want one batch answering every task once", st.Batch, st.AnsweredTasks, st.AnsweredTwice)
		}
		if n := interactiveCalls(s); n != 0 {
			t.Errorf("%d interactive generateContent calls, want none", n)
		}
		ts := getTierStatus(t, s, "batchok")
		if ts.ServiceTier.Tier != "batch" || ts.Cost.Tiers["batch"].Tasks != int64(len(keys)) || ts.Cost.EstimatedUSD <= 0 ||
			!near(ts.Cost.AtTier["batch"], ts.Cost.EstimatedUSD) || !near(ts.Cost.AtTier["standard"], 2*ts.Cost.EstimatedUSD) {
			t.Errorf("status = %+v, want batch with every task's tokens at half the standard price", ts)
		}
		if ts.Cost.Tiers["batch"].InputTokens != st.Batch.InputTokens {
			t.Errorf("job's batch input tokens %d, stand-in's %d", ts.Cost.Tiers["batch"].InputTokens, st.Batch.InputTokens)
		}
	})

	t.Run("partly fails", func(t *testing.T) {
		resetBatch(t, s, stack.GeminiOptions{Seed: 5}, geminisim.Batch{PendingFor: 10 * time.Second, RunFor: 30 * time.Second, FailureRate: 0.3})
		keys, st := runBatchJob(t, s, "batchpart", 22)
		failed := st.Batch.Entries["error"]
		if failed == 0 || st.Batch.Entries["ok"]+failed != len(keys) {
			t.Fatalf("stand-in entries %v, want some of %d failed", st.Batch.Entries, len(keys))
		}
		ts := getTierStatus(t, s, "batchpart")
		if ts.Cost.Tiers["batch"].Tasks != int64(len(keys)-failed) || ts.Cost.Tiers["standard"].Tasks != int64(failed) {
			t.Errorf("cost tiers %+v, want %d at batch and the %d failed entries at standard", ts.Cost.Tiers, len(keys)-failed, failed)
		}
		if n := interactiveCalls(s); n != failed || st.AnsweredTasks != len(keys) || len(st.AnsweredTwice) != 0 {
			t.Errorf("%d interactive calls for %d failed entries; %d tasks answered (twice: %v)", n, failed, st.AnsweredTasks, st.AnsweredTwice)
		}
		t.Logf("partly fails: %d of %d entries failed in the batch and succeeded interactively", failed, len(keys))
	})

	t.Run("expires", func(t *testing.T) {
		// The batch expires before it runs: no results at all.
		resetBatch(t, s, stack.GeminiOptions{}, geminisim.Batch{PendingFor: 30 * time.Second, RunFor: time.Minute, ExpireAfter: 20 * time.Second})
		// One job's deadline leaves time for the interactive path (an
		// hour: flex), the other's does not (under the worker's lease):
		// its tasks fail with the batch's reason.
		far := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		near := time.Now().Add(40 * time.Second).UTC().Format(time.RFC3339)
		keys := submitWith(t, s, "batchexp", 20, 23, "&service_tier=batch&deadline="+far)
		late := submitWith(t, s, "batchlate", 10, 24, "&service_tier=batch&deadline="+near)
		r := waitDone(t, s, "batchexp", len(keys), 60*time.Second)
		if r.Counts.Succeeded != len(keys) {
			t.Errorf("counts = %+v, want all %d succeeded at flex after the expiry", r.Counts, len(keys))
		}
		rl := waitDone(t, s, "batchlate", len(late), 60*time.Second)
		if rl.Counts.Failed != len(late) {
			t.Errorf("late job counts = %+v, want all %d failed", rl.Counts, len(late))
		}
		checkOneResultPerKey(t, keys, results(t, s, "batchexp"))
		lines := results(t, s, "batchlate")
		checkOneResultPerKey(t, late, lines)
		for _, l := range lines {
			if !strings.Contains(string(l.Error), "EXPIRED") {
				t.Errorf("late result %s: error %s, want the batch's expiry", l.Key, l.Error)
			}
		}
		// One pull for both jobs: a pull acknowledges every job's messages.
		both := pullResults(t, s, "")
		checkPublishedOnce(t, both, "batchexp", keys, "succeeded")
		checkPublishedOnce(t, both, "batchlate", late, "failed")
		st := s.GeminiStandIn().Stats(1)
		if st.Batch == nil || st.Batch.Entries["expired"] != len(keys)+len(late) || st.Served["flex"] != len(keys) {
			t.Errorf("stand-in batch %+v, served %v; want every entry expired and the far job's served at flex", st.Batch, st.Served)
		}
	})
}

// runBatchJob submits a batch job of 40 tasks and waits until every task
// succeeded (failed entries going back to the interactive path), each with
// one result line and one results-topic message; it returns the keys and
// the stand-in's statistics.
func runBatchJob(t *testing.T, s *stack.Stack, jobID string, seed uint64) ([]string, stack.GeminiStats) {
	t.Helper()
	keys := submitWith(t, s, jobID, 40, seed, "&service_tier=batch")
	r := waitDone(t, s, jobID, len(keys), 60*time.Second)
	if r.Counts.Succeeded != len(keys) {
		t.Errorf("counts = %+v, want all %d succeeded", r.Counts, len(keys))
	}
	checkOneResultPerKey(t, keys, results(t, s, jobID))
	checkPublishedOnce(t, pullResults(t, s, ""), jobID, keys, "succeeded")
	return keys, s.GeminiStandIn().Stats(safety)
}

// resetBatch gives the stack a fresh stand-in with Batch API behaviour b.
func resetBatch(t *testing.T, s *stack.Stack, o stack.GeminiOptions, b geminisim.Batch) {
	t.Helper()
	if err := s.ResetGemini(o); err != nil {
		t.Fatal(err)
	}
	s.GeminiStandIn().SetBatch(b)
}

// testBatchCancel cancels a batch job while its batch runs: the poller
// ends its tasks CANCELLED and cancels the batch (Batches.Cancel).
func testBatchCancel(t *testing.T, s *stack.Stack) {
	// Pending for 10 stand-in minutes (20 s here): the cancellation comes
	// first.
	resetBatch(t, s, stack.GeminiOptions{}, geminisim.Batch{PendingFor: 10 * time.Minute, RunFor: time.Minute})
	keys := submitWith(t, s, "batchcancel", 30, 25, "&service_tier=batch")
	start := time.Now()
	for {
		if st := s.GeminiStandIn().Stats(1); st.Batch != nil && st.Batch.Created == 1 {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatal("no batch created after 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, err := http.Post(s.IngestURL+"/v1/jobs/batchcancel:cancel", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST :cancel = %d", resp.StatusCode)
	}
	r := waitDone(t, s, "batchcancel", len(keys), 30*time.Second)
	if r.Counts.Failed != len(keys) {
		t.Errorf("counts = %+v, want all %d failed CANCELLED", r.Counts, len(keys))
	}
	lines := results(t, s, "batchcancel")
	checkOneResultPerKey(t, keys, lines)
	for _, l := range lines {
		if !strings.Contains(string(l.Error), "CANCELLED") {
			t.Errorf("result %s: %s, want CANCELLED", l.Key, l.Error)
		}
	}
	checkPublishedOnce(t, pullResults(t, s, ""), "batchcancel", keys, "failed")
	// The poll after the cancellation cancels the batch.
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := s.GeminiStandIn().Stats(1)
		if st.Batch.States[geminisim.BatchCancelled] == 1 {
			if st.AnsweredTasks != 0 || interactiveCalls(s) != 0 {
				t.Errorf("answered %d tasks (%d interactively), want none", st.AnsweredTasks, interactiveCalls(s))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch states %v, want it cancelled", st.Batch.States)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// checkPublishedOnce checks the job's results-topic messages (pulled, of
// every job: pullResults(t, s, "")): one per task, with the outcome want.
func checkPublishedOnce(t *testing.T, pulled map[string]map[string]string, jobID string, keys []string, want string) {
	t.Helper()
	got := map[string]map[string]string{}
	for id, m := range pulled {
		if m["job_id"] == jobID {
			got[id] = m
		}
	}
	for _, k := range keys {
		if m := got[task.TaskID(jobID, k)]; m["outcome"] != want {
			t.Errorf("key %s: results topic says %v, want %s", k, m, want)
		}
	}
	if len(got) != len(keys) {
		t.Errorf("results topic has %d tasks of %s, want %d", len(got), jobID, len(keys))
	}
}

// interactiveCalls counts the stand-in's answered generateContent calls.
func interactiveCalls(s *stack.Stack) int {
	n := 0
	for _, e := range s.GeminiStandIn().Log() {
		if e.Method == "generateContent" && e.Status == 200 {
			n++
		}
	}
	return n
}
