package ingest

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
)

// POST /v1/jobs/{id}:cancel: 200 with state "cancelling" and cancelled_at,
// the same again when repeated; the next lease of a task says so; 409 for
// a finished job, 404 unknown, 400 malformed, 405 for GET.
func TestCancelJob(t *testing.T) {
	e := newEnv(t)
	decodeAccepted(t, e.postJSON(jobJSON(`"job_id": "cx-1", `+m, "a", req("1"), "b", req("2"))))
	seed(t, e.st, "cx-1", map[string]string{"a": `{"candidates":[]}`}, nil)

	var first time.Time
	for i := range 2 {
		w := e.do(http.MethodPost, "/v1/jobs/cx-1:cancel", nil)
		if w.Code != http.StatusOK {
			t.Fatalf("cancel #%d = %d %s", i+1, w.Code, w.Body)
		}
		var v jobView
		if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		if v.State != "cancelling" || v.CancelledAt == nil || v.Counts.Succeeded != 1 || v.Counts.Total != 2 {
			t.Fatalf("cancel #%d: state %q, cancelled_at %v, counts %+v; want cancelling with a time and the counts", i+1, v.State, v.CancelledAt, v.Counts)
		}
		if i == 0 {
			first = *v.CancelledAt
		} else if !v.CancelledAt.Equal(first) {
			t.Errorf("a repeated cancel moved cancelled_at from %v to %v", first, *v.CancelledAt)
		}
	}
	ref := store.Ref{JobID: "cx-1", TaskID: task.TaskID("cx-1", "b"), Key: "b", Model: model}
	lr, err := e.st.LeaseTask(t.Context(), ref, store.LeaseRequest{Holder: "w", TTL: time.Minute})
	if err != nil || lr.Outcome != store.Applied || !lr.Cancelled {
		t.Fatalf("lease after cancel = %+v, %v; want applied and cancelled", lr, err)
	}

	decodeAccepted(t, e.postJSON(jobJSON(`"job_id": "cx-done", `+m, "a", req("1"))))
	seed(t, e.st, "cx-done", map[string]string{"a": `{"candidates":[]}`}, nil)
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{http.MethodPost, "/v1/jobs/cx-done:cancel", http.StatusConflict},
		{http.MethodPost, "/v1/jobs/nope:cancel", http.StatusNotFound},
		{http.MethodPost, "/v1/jobs/bad%7Bid%7D:cancel", http.StatusBadRequest},
		{http.MethodGet, "/v1/jobs/cx-1:cancel", http.StatusMethodNotAllowed},
	} {
		w := e.do(tc.method, tc.path, nil)
		if w.Code != tc.code {
			t.Errorf("%s %s = %d %s, want %d", tc.method, tc.path, w.Code, w.Body, tc.code)
			continue
		}
		decodeErr(t, w)
	}
	if j, _ := e.st.GetJob(t.Context(), "cx-done"); !j.CancelledAt.IsZero() {
		t.Errorf("a refused cancel wrote cancelled_at on the finished job")
	}
}
