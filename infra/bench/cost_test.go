package bench

import (
	"math"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/infra/geminisim"
)

func TestEstimateCost(t *testing.T) {
	// 1,000 tasks: 1,000 pushes and 600 Cloud Task callbacks (600 created),
	// 1,000 Gemini calls of 0.2 s real each (2 s in production), 400 s of
	// worker time in all.
	r := PipelineResult{
		Succeeded: 1000, WorkerCalls: 1600, WorkerTaskCalls: 600, TasksCreated: 600, GeminiCalls: 1000,
		WorkerTime: 400 * time.Second, GeminiTime: 200 * time.Second, MedianLatency: 2 * time.Second,
	}
	c := EstimateCost(r, ListPrices)
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	near("requests per task", c.Requests, 1.6)
	near("function-seconds per task", c.FunctionSeconds, 0.2+2) // (400-200)/1000 orchestration + one 2 s call
	near("Cloud Tasks operations per task", c.TasksOps, 1.2)
	near("Pub/Sub bytes per task", c.PubSubBytes, 3000) // envelope + push + result, 1000 B each
	near("functions $/million", c.Functions, 1e6*(1.6*0.40/1e6+2.2*(0.000024+0.5*0.0000025)))
	near("Cloud Tasks $/million", c.Tasks, 1.2*0.40)
	near("total", c.PerMillion, c.Functions+c.Tasks+c.PubSub)
	if c.PubSub <= 0 || c.PubSub > 1 {
		t.Errorf("Pub/Sub $/million = %v, want a few cents (3 kB per task at $40/TiB)", c.PubSub)
	}
}

func TestGeminiRealTime(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	log := []geminisim.Entry{
		{Method: "generateContent", Received: t0, Finished: t0.Add(2 * time.Second)},
		{Method: "countTokens", Received: t0, Finished: t0.Add(time.Second)},
		{Method: "generateContent", Received: t0, Finished: t0.Add(4 * time.Second)},
	}
	if got := geminiRealTime(log, 10); got != 600*time.Millisecond {
		t.Errorf("geminiRealTime = %v, want 600ms (6 s of stand-in time at ×10, countTokens left out)", got)
	}
}

func TestCostSectionChecksTheRatio(t *testing.T) {
	base := PipelineResult{Succeeded: 100, WorkerCalls: 100, GeminiCalls: 100, MedianLatency: time.Second}
	dear := base
	dear.WorkerCalls, dear.WorkerTaskCalls, dear.TasksCreated, dear.WorkerTime = 300, 200, 200, 200*time.Second
	for _, tc := range []struct {
		name       string
		gemq, seed PipelineResult
		met        string
	}{{"gemq as cheap", base, dear, "yes"}, {"gemq dearer", dear, base, "NO"}} {
		s := CostSection([]SeedPair{{Job: "j", Gemq: tc.gemq, Seed: tc.seed}}, "make bench")
		if got := s.Rows[2].Met; got != tc.met {
			t.Errorf("%s: ratio row met = %q, want %q (%+v)", tc.name, got, tc.met, s.Rows[2])
		}
	}
}
