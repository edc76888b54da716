package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/redis/go-redis/v9"

	"github.com/gemq-dev/gemq/infra/stack"
	"github.com/gemq-dev/gemq/internal/queue"
)

// OverheadResult is benchmark 5: gemq's own costs with a Gemini stand-in
// that has no limits and answers at once, beside this machine's floor.
type OverheadResult struct {
	Tasks int
	// IngestAccept is the POST of the whole JSONL job until its 202.
	IngestAccept time.Duration
	// PipelineCPU is the process's (and redis-server's) CPU from the POST
	// until every task finished; PipelineWall the real time.
	PipelineCPU, PipelineWall time.Duration
	Succeeded, GeminiCalls    int
	// FloorPublish is publishing Tasks messages of the same size in one
	// Publish call to pstest: the floor of ingest. FloorPublishCPU its CPU.
	FloorPublish, FloorPublishCPU time.Duration
	// FloorTaskCPU is the CPU of Tasks × (one EVALSHA round trip + one
	// publish), 64 at a time: the floor of the worker.
	FloorTaskCPU time.Duration
	Error        string `json:",omitempty"`
}

// RunOverhead submits a JSONL job of n requests to a local stack whose
// stand-in is unlimited and instant, then measures the floors on fresh
// pstest and redis-server instances. It starts a Stack (once per process).
func RunOverhead(ctx context.Context, n int, logw io.Writer) (OverheadResult, error) {
	res := OverheadResult{Tasks: n}
	body, _, err := JobJSONL(n, 50, 150, 3)
	if err != nil {
		return res, err
	}
	const huge = int64(1) << 40
	o := PipelineOptions{Name: "overhead", Policy: "reserve", Minute: time.Minute, RPM: huge, TPM: huge, RPD: huge, Safety: 0.95, Guard: time.Second}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	st, err := stack.Start(ctx, stack.Options{
		Getenv: func(string) string { return "" },
		Log:    logw, Model: Model, Minute: time.Minute, RPM: huge, TPM: huge, RPD: huge, Safety: 0.95,
		Env:  map[string]string{"GEMQ_QUOTAS": o.quotasJSON()},
		Push: stack.PushOptions{Concurrency: 64},
	})
	if err != nil {
		return res, fmt.Errorf("stack start: %w", err)
	}
	defer st.Close()
	cpu0, t0 := cpuTime(), time.Now()
	acc, err := submitJob(ctx, st.IngestURL, "bench-overhead", "", body)
	res.IngestAccept = time.Since(t0)
	if err != nil {
		return res, err
	}
	if acc != n {
		return res, fmt.Errorf("submit: ingest accepted %d of %d requests", acc, n)
	}
	for {
		done, s, _, err := jobStatus(ctx, st.IngestURL, "bench-overhead")
		if err != nil {
			return res, err
		}
		res.Succeeded = s
		if done {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.PipelineWall = time.Since(t0)
	for _, e := range st.GeminiStandIn().Log() {
		if e.Method == "generateContent" {
			res.GeminiCalls++
		}
	}
	st.Close()
	res.PipelineCPU = cpuTime() - cpu0

	// The floors, on fresh servers of the same kinds.
	msgSize := len(body) / n
	if err := res.floors(ctx, n, msgSize); err != nil {
		return res, err
	}
	return res, nil
}

func (res *OverheadResult) floors(ctx context.Context, n, size int) error {
	srv := pstest.NewServer()
	defer srv.Close()
	os.Setenv("PUBSUB_EMULATOR_HOST", srv.Addr)
	ps, err := queue.NewPubSubClient(ctx, "gemq-bench")
	if err != nil {
		return err
	}
	defer ps.Close()
	for _, t := range []string{"floor-tasks", "floor-results"} {
		if err := queue.EnsureTopic(ctx, ps, t); err != nil {
			return err
		}
	}
	data := bytes.Repeat([]byte("x"), size)
	msgs := make([]queue.Message, n)
	for i := range msgs {
		msgs[i] = queue.Message{Data: data}
	}
	pub := queue.NewPublisher(ps, "floor-tasks", queue.ManyDelay)
	cpu0, t0 := cpuTime(), time.Now()
	if err := pub.Publish(ctx, msgs); err != nil {
		return fmt.Errorf("floor publish: %w", err)
	}
	res.FloorPublish, res.FloorPublishCPU = time.Since(t0), cpuTime()-cpu0
	pub.Stop()

	dir, err := os.MkdirTemp("", "gemqbench-floor")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cpu0 = cpuTime()
	rds, err := stack.StartRedis(ctx, dir, nil)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: rds.Addr, PoolSize: 64})
	noop := redis.NewScript("return 1")
	if err := noop.Load(ctx, rdb).Err(); err != nil {
		rds.Stop()
		return fmt.Errorf("floor script load: %w", err)
	}
	rpub := queue.NewPublisher(ps, "floor-results", queue.OneDelay)
	cpu0 = cpuTime() // after the server started
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := noop.Run(ctx, rdb, nil).Err(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if err := rpub.Publish(ctx, []queue.Message{{Data: data}}); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rpub.Stop()
	rdb.Close()
	rds.Stop()
	res.FloorTaskCPU = cpuTime() - cpu0
	if err, _ := firstErr.Load().(error); err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	return nil
}

// Section renders benchmark 5.
func (r OverheadResult) Section(command string) Section {
	ingest := float64(r.Tasks) / r.IngestAccept.Seconds()
	floorIngest := float64(r.Tasks) / r.FloorPublish.Seconds()
	cpuTask := r.PipelineCPU / time.Duration(max(r.Tasks, 1))
	floorTask := (r.FloorPublishCPU + r.FloorTaskCPU) / time.Duration(max(r.Tasks, 1))
	return Section{ID: "overheads", Title: "Overheads (unlimited, zero-latency stand-in)", Command: command, Rows: []Row{
		Info("ingest: tasks accepted per second (10,000-request JSONL job)", fmt.Sprintf("%.0f/s (POST → 202 in %v)", ingest, r.IngestAccept.Round(time.Millisecond))),
		Info("floor: one publish per task (same-size messages, one Publish call)", fmt.Sprintf("%.0f/s (%v)", floorIngest, r.FloorPublish.Round(time.Millisecond))),
		Info("ingest / floor", fmt.Sprintf("%.2f", ingest/floorIngest)),
		Info("CPU per task, whole pipeline (ingest + push + worker + Cloud Tasks + stand-in + Redis)", fmt.Sprintf("%v (%d tasks in %v wall, %d Gemini calls)",
			cpuTask.Round(time.Microsecond), r.Succeeded, r.PipelineWall.Round(time.Millisecond), r.GeminiCalls)),
		Info("floor CPU per task (one task publish + one EVALSHA round trip + one result publish, with servers)", fmt.Sprintf("%v", floorTask.Round(time.Microsecond))),
		Info("pipeline / floor CPU per task", fmt.Sprintf("%.2f", float64(cpuTask)/float64(floorTask))),
	}, Notes: []string{
		"CPU is user+system time of the benchmark process (which hosts every part of the local stack and the floor's clients and pstest) plus its redis-server children, so both sides include the servers' work. " +
			"The pipeline's figure is an upper bound of the worker's own CPU: it also holds ingest, the push loop, the Cloud Tasks emulator and the stand-in. Ingest runs while the push loop already delivers the first tasks, on the same 2 cores.",
	}}
}

// WriteJSON writes r to path.
func (r OverheadResult) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
