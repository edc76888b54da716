package ingest

import (
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/store"
	"github.com/gemq-dev/gemq/internal/task"
	"github.com/gemq-dev/gemq/internal/tier"
)

func TestJobStatusShowsTierAndCost(t *testing.T) {
	price := tier.Price{Input: 0.30, Cached: 0.03, Output: 2.50}
	e := newEnv(t, func(d *deps) {
		d.prices = map[string]tier.Price{model: price}
		d.perMinute = func(string) int64 { return 950 }
	})
	deadline := time.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339)
	w := e.postJSON(`{"job_id":"ti-1","model":"` + model + `","service_tier":"auto","deadline":"` + deadline + `","requests":[` +
		`{"key":"a","request":{"contents":[{"parts":[{"text":"x"}]}]}},{"key":"b","request":{"contents":[{"parts":[{"text":"y"}]}]}}]}`)
	if w.Code != http.StatusAccepted {
		t.Fatalf("POST = %d %s", w.Code, w.Body)
	}
	for _, env := range e.published() {
		if env.ServiceTier != "flex" || env.Deadline == "" {
			t.Errorf("published task tier %q deadline %q, want flex with the deadline", env.ServiceTier, env.Deadline)
		}
	}
	// The worker's terminal writes: a at flex (1M input of which 200k
	// cached, 100k output, 100k thinking), b asked flex, served standard.
	finish := func(key string, u store.Usage) {
		ref := store.Ref{JobID: "ti-1", TaskID: task.TaskID("ti-1", key), Key: key, Model: model}
		lr, err := e.st.LeaseTask(t.Context(), ref, store.LeaseRequest{Holder: "h-" + key, TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.CompleteWithUsage(t.Context(), ref, lr.Token, []byte(`{}`), u); err != nil {
			t.Fatal(err)
		}
	}
	finish("a", store.Usage{Tier: "flex", Asked: "flex", Input: 1_000_000, Cached: 200_000, Output: 100_000, Thinking: 100_000})
	finish("b", store.Usage{Tier: "standard", Asked: "flex", Input: 1_000_000})

	w = e.do(http.MethodGet, "/v1/jobs/ti-1", nil)
	var v struct {
		ServiceTier tierView    `json:"service_tier"`
		Cost        tier.Report `json:"cost"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("GET = %d %s: %v", w.Code, w.Body, err)
	}
	st := v.ServiceTier
	if st.Tier != "flex" || st.Asked != "auto" || !strings.HasPrefix(st.Reason, "flex") || st.Deadline == nil || st.Downgraded != 1 {
		t.Errorf("service_tier = %+v", st)
	}
	// a: (800k·0.30 + 200k·0.03 + 200k·2.50)/1M = 0.746, at flex 0.373;
	// b: 1M·0.30 = 0.30 at standard.
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	c := v.Cost
	if !near(c.Tiers["flex"].EstimatedUSD, 0.373) || !near(c.Tiers["standard"].EstimatedUSD, 0.30) || !near(c.EstimatedUSD, 0.673) {
		t.Errorf("cost = %+v", c)
	}
	if !near(c.AtTier["standard"], 1.046) || !near(c.AtTier["flex"], 0.523) || !near(c.AtTier["batch"], 0.523) || !near(c.AtTier["priority"], 2.092) {
		t.Errorf("at_tier = %v", c.AtTier)
	}
}

func TestSubmitTierErrorsAndJSONLParams(t *testing.T) {
	e := newEnv(t)
	w := e.postJSON(`{"model":"` + model + `","service_tier":"cheap","requests":[{"key":"a","request":{"contents":[{"parts":[{"text":"x"}]}]}}]}`)
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "must be standard, flex, priority, batch or auto") {
		t.Errorf("unknown tier: %d %s, want 400 naming the tiers", w.Code, w.Body)
	}
	w = e.do(http.MethodPost, "/v1/jobs?model="+model+"&service_tier=priority", []byte(`{"key":"a","request":{"contents":[{"parts":[{"text":"x"}]}]}}`+"\n"),
		"Content-Type", "application/jsonl")
	if w.Code != http.StatusAccepted {
		t.Fatalf("JSONL with service_tier = %d %s", w.Code, w.Body)
	}
	if p := e.published(); len(p) != 1 || p[0].ServiceTier != "priority" {
		t.Errorf("published = %+v, want one priority task", p)
	}
}

func TestRequestsPerMinute(t *testing.T) {
	qc, err := limiter.ParseConfig([]byte(quotas))
	if err != nil {
		t.Fatal(err)
	}
	q := quotaLimits{cfg: qc, project: "p"}
	// 1000 rpm at safety 0.95; none for a tokens-only model.
	if got := q.RequestsPerMinute(model); got != 950 {
		t.Errorf("RequestsPerMinute(%s) = %d, want 950", model, got)
	}
	if got := q.RequestsPerMinute(tinyModel); got != 0 {
		t.Errorf("RequestsPerMinute(%s) = %d, want 0", tinyModel, got)
	}
}
