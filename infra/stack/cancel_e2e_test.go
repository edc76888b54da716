package stack_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/infra/stack"
	"github.com/gemq-dev/gemq/internal/task"
)

// testCancel cancels a job of four quota minutes a little after it started:
// the tasks that called Gemini before keep their answers, every other task
// ends failed CANCELLED without calling Gemini — each with exactly one
// terminal state, one result and one results-topic message — and the job
// ends done well before its quota would have let it finish.
func testCancel(t *testing.T, s *stack.Stack) {
	if err := s.ResetGemini(stack.GeminiOptions{}); err != nil {
		t.Fatal(err)
	}
	const n = 4 * rpm
	keys := submit(t, s, "cancelme", n, 5)
	time.Sleep(minute)
	resp, err := http.Post(s.IngestURL+"/v1/jobs/cancelme:cancel", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var v struct {
		State       string     `json:"state"`
		CancelledAt *time.Time `json:"cancelled_at"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &v) != nil || v.CancelledAt == nil ||
		(v.State != "cancelling" && v.State != "done") {
		t.Fatalf("POST :cancel = %d %s; want 200, cancelling, cancelled_at", resp.StatusCode, b)
	}
	cancelled := time.Now()
	r := waitDone(t, s, "cancelme", n, 60*time.Second)
	// The waiting tasks end when their Cloud Tasks come: at their reserved
	// slots, all within the job's four quota minutes, none called.
	if took := time.Since(cancelled); took > 4*minute+10*time.Second {
		t.Errorf("the cancelled job took %v to end", took)
	}
	lines := results(t, s, "cancelme")
	checkOneResultPerKey(t, keys, lines)
	ok, cancelledN := 0, 0
	for _, l := range lines {
		if l.Response != nil {
			ok++
			continue
		}
		var e struct {
			Code   int    `json:"code"`
			Status string `json:"status"`
		}
		if json.Unmarshal(l.Error, &e) != nil || e.Status != "CANCELLED" || e.Code != 499 {
			t.Errorf("key %s failed with %s, want CANCELLED 499", l.Key, l.Error)
			continue
		}
		cancelledN++
	}
	if ok != r.Counts.Succeeded || cancelledN != r.Counts.Failed || cancelledN == 0 || ok == 0 {
		t.Errorf("%d answered and %d cancelled results, counts %+v: want both non-zero and equal to the counts", ok, cancelledN, r.Counts)
	}
	st := s.GeminiStandIn().Stats(safety)
	if st.Tasks != ok || st.DuplicateCalls != 0 {
		t.Errorf("the stand-in was called for %d tasks (%d duplicate calls), want the %d answered ones only", st.Tasks, st.DuplicateCalls, ok)
	}
	topic := pullResults(t, s, "cancelme")
	for _, k := range keys {
		if _, found := topic[task.TaskID("cancelme", k)]; !found {
			t.Errorf("key %s: no message on the results topic", k)
		}
	}
	if len(topic) != n {
		t.Errorf("%d results-topic messages for %d tasks", len(topic), n)
	}
	t.Logf("cancelled after %v: %d answered, %d cancelled", minute, ok, cancelledN)
}
