package worker

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gemq-dev/gemq/internal/lifecycle"
)

// A Cloud Task whose body is a batch group's step is routed as one, not
// decoded as a task envelope; a malformed step is invalid (dead-lettered),
// and a push of the same body is not a step.
func TestDecodeBatchStep(t *testing.T) {
	step := lifecycle.BatchStep{Op: lifecycle.StepPoll, Project: "p", Model: "gemini-2.5-flash", Group: "gemq-batch-1"}
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(lifecycle.EncodeBatchStep(step)))
	req.Header.Set(headerTaskName, "poll-1")
	d, err := decode(req)
	if err != nil || d.Invalid != nil || d.Batch == nil || *d.Batch != step || d.Source != lifecycle.CloudTasks || d.ID != "poll-1" {
		t.Fatalf("decode = %+v (batch %+v), %v; want the poll step", d, d.Batch, err)
	}
	req = httptest.NewRequest(http.MethodPost, "/", bytes.NewReader([]byte(`{"gemq_batch":{"op":"seal"}}`)))
	req.Header.Set(headerTaskName, "seal-1")
	if d, err := decode(req); err != nil || d.Invalid == nil || d.Batch != nil {
		t.Errorf("malformed step: %+v, %v; want invalid", d, err)
	}
	req = httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(pushBody(lifecycle.EncodeBatchStep(step), "m1", 1)))
	if d, err := decode(req); err != nil || d.Batch != nil || d.Invalid == nil {
		t.Errorf("pushed step: %+v, %v; want an invalid task message, not a step", d, err)
	}
}
