package bench

import (
	"fmt"
	"time"

	"github.com/gemq-dev/gemq/infra/geminisim"
)

// Prices are list prices, in US dollars, of what gemq's orchestration uses
// per task (beyond each product's free tier; Tier 1 regions such as
// us-central1). Gemini itself is not orchestration and is not counted.
type Prices struct {
	// Functions (Cloud Run functions are Cloud Run services, request-based
	// billing): per request, per vCPU-second and per GiB-second of instance
	// time while a request is being handled.
	// https://cloud.google.com/run/pricing (read 2026-12-02: $0.40 per million
	// requests, $0.00002400 per vCPU-second, $0.00000250 per GiB-second).
	PerRequest, PerVCPUSecond, PerGiBSecond float64
	// Cloud Tasks: per billable operation (an API call, such as CreateTask,
	// or a push delivery attempt), tasks under 32 KB.
	// https://cloud.google.com/tasks/pricing (read 2026-12-02: $0.40 per
	// million after the first million a month).
	PerTasksOp float64
	// Pub/Sub: per byte of publish and delivery throughput, with a minimum of
	// 1000 bytes per publish, push or pull request; Cloud Storage
	// subscriptions' delivery per byte.
	// https://cloud.google.com/pubsub/pricing (read 2026-12-02: $40 per TiB;
	// Cloud Storage subscriptions $50 per TiB).
	PerPubSubByte, PerStorageSubByte float64
	// MinPubSubBytes is the minimum billed per request.
	MinPubSubBytes float64
}

const tib = 1 << 40

// ListPrices are the prices above, for the worker's default size in
// terraform/variables.tf (1 vCPU, 512 MiB).
var ListPrices = Prices{
	PerRequest: 0.40 / 1e6, PerVCPUSecond: 0.000024, PerGiBSecond: 0.0000025,
	PerTasksOp:    0.40 / 1e6,
	PerPubSubByte: 40.0 / tib, PerStorageSubByte: 50.0 / tib, MinPubSubBytes: 1000,
}

// WorkerVCPU and WorkerGiB are the worker function's default size
// (terraform/variables.tf, var.worker).
const (
	WorkerVCPU = 1.0
	WorkerGiB  = 0.5
)

// Cost is an estimate of the orchestration cost of one run's tasks.
type Cost struct {
	// Per task: worker requests, production function-seconds (see
	// ProductionFunctionSeconds), Cloud Tasks operations, Pub/Sub bytes.
	Requests, FunctionSeconds, TasksOps, PubSubBytes, StorageBytes float64
	// PerMillion is the cost of a million such tasks, in dollars, and its
	// parts.
	PerMillion, Functions, Tasks, PubSub float64
}

// geminiRealTime sums, over the generateContent calls in the stand-in's log,
// how long each took in real time (the log is in stand-in time: factor
// stand-in seconds per real one).
func geminiRealTime(log []geminisim.Entry, factor float64) time.Duration {
	var total time.Duration
	for _, e := range log {
		if e.Method == "generateContent" && e.Finished.After(e.Received) {
			total += time.Duration(float64(e.Finished.Sub(e.Received)) / factor)
		}
	}
	return total
}

// ProductionFunctionSeconds is the worker's billable time per task as it
// would be in production: what the run measured in real time minus the time
// its Gemini calls took (scaled down with the stand-in's clock in these runs),
// plus the stand-in's median latency (production time) for each call. The
// orchestration part (Redis, Pub/Sub, Cloud Tasks round trips, waiting for a
// reserved slot) is real time already and counts as measured.
func ProductionFunctionSeconds(r PipelineResult) float64 {
	n := float64(max(r.Succeeded, 1))
	orchestration := max(r.WorkerTime-r.GeminiTime, 0).Seconds()
	return orchestration/n + perTask(r.GeminiCalls, r.Succeeded)*r.MedianLatency.Seconds()
}

// EstimateCost prices one run's per-task usage at p. It is an upper bound on
// function time: each request is billed as if it had its instance alone
// (the worker's instances take up to 40 requests at once, and Cloud Run bills
// an instance's time once however many requests share it).
func EstimateCost(r PipelineResult, p Prices) Cost {
	n := r.Succeeded
	pushes := r.WorkerCalls - r.WorkerTaskCalls
	c := Cost{
		Requests:        perTask(r.WorkerCalls, n),
		FunctionSeconds: ProductionFunctionSeconds(r),
		// Each Cloud Task is one CreateTask call and at least one dispatch.
		TasksOps: perTask(r.TasksCreated+r.WorkerTaskCalls, n),
		// Ingest publishes the task envelopes in batches (billed by size,
		// under 1000 bytes each: counted as 1000); each push delivery and
		// each result publish is a request of one message (the minimum).
		PubSubBytes:  p.MinPubSubBytes * (1 + perTask(pushes, n) + 1),
		StorageBytes: p.MinPubSubBytes, // the result, delivered to Cloud Storage
	}
	c.Functions = 1e6 * (c.Requests*p.PerRequest + c.FunctionSeconds*(WorkerVCPU*p.PerVCPUSecond+WorkerGiB*p.PerGiBSecond))
	c.Tasks = 1e6 * c.TasksOps * p.PerTasksOp
	c.PubSub = 1e6 * (c.PubSubBytes*p.PerPubSubByte + c.StorageBytes*p.PerStorageSubByte)
	c.PerMillion = c.Functions + c.Tasks + c.PubSub
	return c
}

// CostSection renders the orchestration cost per million tasks of gemq and
// of the seed's policy on the same jobs in the same run.
func CostSection(pairs []SeedPair, command string) Section {
	var rows []Row
	for _, pr := range pairs {
		g, s := EstimateCost(pr.Gemq, ListPrices), EstimateCost(pr.Seed, ListPrices)
		line := func(c Cost) string {
			return fmt.Sprintf("$%.2f = functions $%.2f (%.3f requests, %.3f s) + Cloud Tasks $%.2f (%.3f operations) + Pub/Sub $%.3f",
				c.PerMillion, c.Functions, c.Requests, c.FunctionSeconds, c.Tasks, c.TasksOps, c.PubSub)
		}
		j := pr.Job + ": "
		rows = append(rows,
			Info(j+"gemq, per million tasks", line(g)),
			Info(j+"seed policy, per million tasks", line(s)),
			Check(j+"gemq/seed orchestration cost", fmt.Sprintf("%.3f", g.PerMillion/max(s.PerMillion, 1e-12)), "≤ 1.5", g.PerMillion <= 1.5*s.PerMillion),
		)
	}
	return Section{ID: "cost", Title: "Orchestration cost per million tasks (list prices)", Command: command, Rows: rows, Notes: []string{
		"What running the tasks through gemq costs on Google Cloud besides Gemini itself, at the list prices cited in infra/bench/cost.go " +
			"(Cloud Run functions: $0.40 per million requests, $0.000024 per vCPU-second, $0.0000025 per GiB-second, the worker's default 1 vCPU and 512 MiB; " +
			"Cloud Tasks: $0.40 per million operations, a CreateTask and each dispatch; Pub/Sub: $40 per TiB with 1000 bytes billed per request at least, " +
			"$50 per TiB for the Cloud Storage subscription), beyond the free tiers. Memorystore and the VPC connector bill by the hour whatever the load (README, \"What it costs while idle\"). " +
			"Function time per task is the run's measured worker time with the Gemini calls' time (scaled ×1/10 in these runs) replaced by the stand-in's median latency in production time for each call made, " +
			"and billed as if every request had its instance alone: an upper bound, since an instance takes up to 40 requests at once and is billed once for their overlap. " +
			"Most of it is waiting for Gemini, which any policy pays once per call; what differs between the policies is the invocations, the Cloud Tasks and the waits for reserved slots.",
	}}
}
