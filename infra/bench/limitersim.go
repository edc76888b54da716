package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/redis/go-redis/v9"
)

// SimOptions configures the limiter simulation (benchmark 6).
type SimOptions struct {
	// Addr is the Redis every simulated instance connects to.
	Addr string
	// Instances is the number of simulated function instances: goroutines,
	// each with its own Limiter and its own go-redis client (and so its own
	// connections).
	Instances int
	// PoolSize is each instance's connection pool size.
	PoolSize int
	// RPM is the requests-per-minute limit; TPM the input tokens per minute
	// (set high enough that RPM binds); RPD the requests per Pacific day.
	RPM, TPM, RPD int64
	// Minute is the scaled minute: every period of the quota (and the guard
	// and horizon) is scaled by Minute/1m.
	Minute time.Duration
	// Safety is the quota's safety factor.
	Safety float64
	// Windows is the backlog in per-minute quotas: Tasks = Windows ×
	// floor(Safety × RPM).
	Windows int
	// Seed makes the task costs reproducible.
	Seed uint64
	// Guard is the limiter's guard in real time; 0 scales the default 1s
	// per minute with Minute.
	Guard time.Duration
}

// DefaultSimOptions are the figures `make bench` uses.
func DefaultSimOptions(addr string) SimOptions {
	return SimOptions{Addr: addr, Instances: 1000, PoolSize: 2, RPM: 30000, TPM: 30_000_000, RPD: 100_000_000,
		Minute: 20 * time.Second, Safety: 0.95, Windows: 2, Seed: 1}
}

// SimResult is what the simulation measured.
type SimResult struct {
	Opts     SimOptions
	Quota    limiter.Quota
	Tasks    int
	Capacity int64 // per scaled minute, requests
	// Elapsed is from the start signal to the last grant; Span from the
	// first grant to the last.
	Elapsed, Span time.Duration
	// TMin is TheoreticalMin(Tasks, Capacity, Minute).
	TMin time.Duration
	// AdmissionPeak is the peak over Permit.At values in windows of
	// Minute+guard (what the script itself bounds); CallPeak over the
	// instants the simulated instances "called Gemini" in windows of Minute.
	AdmissionPeak, CallPeak int64
	// AdmissionViolations and CallViolations come from limiter.CheckWindows
	// over the same two logs (WithGuard for admissions).
	AdmissionViolations, CallViolations int
	// Acquire and Claim latencies, as the instances saw them.
	Acquire, Claim []time.Duration
	// Decisions counts script calls by outcome; Reconciles counts Reconcile
	// calls. Calls per task is (Acquire+Claim calls)/Tasks.
	Decisions  map[limiter.Outcome]int
	Reconciles int
	// LateCalls counts grants whose instance resumed later than the guard
	// budget the limiter's guarantee assumes (3g/4 after At).
	LateCalls  int
	Errors     int
	FirstError string
}

// quotaJSON returns the scaled three-dimension quota configuration.
func (o SimOptions) quotaJSON() string {
	scale := float64(o.Minute) / float64(time.Minute)
	ms := func(d time.Duration) string {
		return fmt.Sprintf("%dms", time.Duration(float64(d)*scale).Milliseconds())
	}
	return fmt.Sprintf(`{"safety": %g, "horizon": %q, "guard": %q, "scopes": [
	 {"project": "*", "model": "sim-model", "dimensions": [
	  {"name": "rpm", "unit": "requests", "limit": %d, "period": %q},
	  {"name": "tpm", "unit": "input_tokens", "limit": %d, "period": %q},
	  {"name": "rpd", "unit": "requests", "limit": %d, "per": "pacific_day"}]}]}`,
		o.Safety, ms(15*time.Minute), o.guard(ms), o.RPM, ms(time.Minute), o.TPM, ms(time.Minute), o.RPD)
}

func (o SimOptions) guard(scaled func(time.Duration) string) string {
	if o.Guard > 0 {
		return fmt.Sprintf("%dms", o.Guard.Milliseconds())
	}
	return scaled(time.Second)
}

type simLog struct {
	admissions, calls []limiter.Event
	acquire, claim    []time.Duration
	decisions         map[limiter.Outcome]int
	reconciles        int
	errs              int
	firstErr          error
}

// RunLimiterSim runs Instances simulated function instances against one
// scope until Tasks permits have been granted. Each instance takes the next
// task, Acquires a permit (as the worker does on a Pub/Sub delivery), and
// when Reserved or Denied sleeps until Permit.At (the Cloud Task's
// schedule_time) and Claims it; once Granted it "calls Gemini" at once (the
// instant is recorded) and Reconciles the exact token count.
func RunLimiterSim(ctx context.Context, o SimOptions) (SimResult, error) {
	cfg, err := limiter.ParseConfig([]byte(o.quotaJSON()))
	if err != nil {
		return SimResult{}, fmt.Errorf("sim quota: %w", err)
	}
	scope := limiter.Scope{Project: "sim-project", Model: "sim-model"}
	q, _ := cfg.Quota(scope)
	res := SimResult{Opts: o, Quota: q, Capacity: q.Capacity(q.Dimensions[0])}
	res.Tasks = o.Windows * int(res.Capacity)
	res.TMin = TheoreticalMin(int64(res.Tasks), res.Capacity, q.Dimensions[0].Period)

	clients := make([]*redis.Client, o.Instances)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range clients {
		clients[i] = redis.NewClient(&redis.Options{Addr: o.Addr, PoolSize: o.PoolSize, MaxRetries: -1,
			ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second})
		if err := clients[i].Ping(ctx).Err(); err != nil {
			return res, fmt.Errorf("sim: instance %d: redis ping: %w", i, err)
		}
	}
	// Load the script once so the measured run is all EVALSHA.
	warm := limiter.New(clients[0], cfg)
	if p, err := warm.Acquire(ctx, limiter.Scope{Project: "warmup", Model: "sim-model"}, limiter.Cost{Requests: 1}); err != nil {
		return res, fmt.Errorf("sim warm-up: %w", err)
	} else if err := warm.Release(ctx, p); err != nil {
		return res, fmt.Errorf("sim warm-up: %w", err)
	}

	var next atomic.Int64
	logs := make([]simLog, o.Instances)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range o.Instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lg := &logs[i]
			lg.decisions = map[limiter.Outcome]int{}
			lim := limiter.New(clients[i], cfg)
			rng := rand.New(rand.NewPCG(o.Seed, uint64(i)))
			<-start
			for ctx.Err() == nil && next.Add(1) <= int64(res.Tasks) {
				cost := limiter.Cost{Requests: 1, InputTokens: 50 + rng.Int64N(450)}
				if err := simTask(ctx, lim, scope, cost, lg); err != nil {
					lg.errs++
					if lg.firstErr == nil {
						lg.firstErr = err
					}
				}
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	res.Elapsed = time.Since(t0)

	res.Decisions = map[limiter.Outcome]int{}
	var adm, calls []limiter.Event
	for _, lg := range logs {
		adm = append(adm, lg.admissions...)
		calls = append(calls, lg.calls...)
		res.Acquire = append(res.Acquire, lg.acquire...)
		res.Claim = append(res.Claim, lg.claim...)
		for k, v := range lg.decisions {
			res.Decisions[k] += v
		}
		res.Reconciles += lg.reconciles
		res.Errors += lg.errs
		if lg.firstErr != nil && res.FirstError == "" {
			res.FirstError = lg.firstErr.Error()
		}
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("sim: %w", err)
	}
	res.AdmissionViolations = len(limiter.CheckWindows(adm, limiter.WithGuard(q)))
	res.CallViolations = len(limiter.CheckWindows(calls, q))
	for i := range adm {
		if calls[i].At.Sub(adm[i].At) > 3*q.Guard/4 {
			res.LateCalls++
		}
	}
	admS, callS := eventSamples(adm), eventSamples(calls)
	res.AdmissionPeak, _ = PeakWindow(admS, q.Dimensions[0].Period+q.Guard)
	res.CallPeak, _ = PeakWindow(callS, q.Dimensions[0].Period)
	if len(callS) > 0 {
		s := sortedSamples(callS)
		res.Span = s[len(s)-1].At.Sub(s[0].At)
		res.Elapsed = s[len(s)-1].At.Sub(t0)
	}
	return res, nil
}

// Err is a non-nil error when the simulation broke the invariant, judged at
// the instants the instances called Gemini or over the script's admissions,
// or an instance failed.
func (r SimResult) Err() error {
	if r.CallViolations > 0 || r.AdmissionViolations > 0 || r.Errors > 0 {
		return fmt.Errorf("limiter sim: %d windows over the limit at the calls, %d over the admissions, %d errors (first: %s)",
			r.CallViolations, r.AdmissionViolations, r.Errors, r.FirstError)
	}
	return nil
}

func eventSamples(evs []limiter.Event) []Sample {
	out := make([]Sample, len(evs))
	for i, e := range evs {
		out[i] = Sample{At: e.At, Units: e.Cost.Requests}
	}
	return out
}

func simTask(ctx context.Context, lim *limiter.Limiter, scope limiter.Scope, cost limiter.Cost, lg *simLog) error {
	t := time.Now()
	p, err := lim.Acquire(ctx, scope, cost)
	lg.acquire = append(lg.acquire, time.Since(t))
	if err != nil {
		return err
	}
	lg.decisions[p.Outcome]++
	for p.Outcome != limiter.Granted {
		if p.Outcome == limiter.Rejected {
			return fmt.Errorf("sim: rejected: %s", p.Reason)
		}
		if d := time.Until(p.At); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		t = time.Now()
		p, err = lim.Claim(ctx, p)
		lg.claim = append(lg.claim, time.Since(t))
		if err != nil {
			return err
		}
		lg.decisions[p.Outcome]++
	}
	now := time.Now()
	lg.admissions = append(lg.admissions, limiter.Event{At: p.At, Cost: cost})
	lg.calls = append(lg.calls, limiter.Event{At: now, Cost: cost})
	lg.reconciles++
	return lim.Reconcile(ctx, p, cost.InputTokens)
}

// Section renders the simulation's figures.
func (r SimResult) Section(command string) Section {
	o := r.Opts
	period := r.Quota.Dimensions[0].Period
	calls := len(r.Acquire) + len(r.Claim)
	ratio := float64(r.Span) / float64(r.TMin)
	rows := []Row{
		Info("simulated instances × pool", fmt.Sprintf("%d × %d connections", o.Instances, o.PoolSize)),
		Info("quota (scaled)", fmt.Sprintf("%d RPM, minute = %v (×%.0f), safety %.2f → %d per window; guard %v",
			o.RPM, o.Minute, float64(time.Minute)/float64(o.Minute), o.Safety, r.Capacity, r.Quota.Guard)),
		Info("permits granted", fmt.Sprintf("%d (backlog %d× the per-minute quota)", r.Tasks, o.Windows)),
		Check("invariant at the instants the instances call Gemini (window P)", fmt.Sprintf("%d violations, peak %d / %d; %d grants resumed later than the guard budget",
			r.CallViolations, r.CallPeak, r.Capacity, r.LateCalls), "0 violations", r.CallViolations == 0),
		Check("invariant over admissions (Permit.At, window P+guard)", fmt.Sprintf("%d violations, peak %d / %d", r.AdmissionViolations, r.AdmissionPeak, r.Capacity),
			"0 violations", r.AdmissionViolations == 0),
		Check("p99 Acquire latency", fmt.Sprintf("%v (p50 %v, max %v, n=%d)", Quantile(r.Acquire, 0.99).Round(10*time.Microsecond),
			Quantile(r.Acquire, 0.5).Round(10*time.Microsecond), Quantile(r.Acquire, 1).Round(10*time.Microsecond), len(r.Acquire)),
			"reported (no target)", true),
		Info("p99 Claim latency", fmt.Sprintf("%v (p50 %v, n=%d)", Quantile(r.Claim, 0.99).Round(10*time.Microsecond),
			Quantile(r.Claim, 0.5).Round(10*time.Microsecond), len(r.Claim))),
		Info("grant span vs theoretical minimum", fmt.Sprintf("%v vs %v = %.3f", r.Span.Round(time.Millisecond), r.TMin, ratio)),
		Info("achieved decisions/s (Acquire+Claim+Reconcile)", fmt.Sprintf("%.0f", float64(calls+r.Reconciles)/r.Elapsed.Seconds())),
		Info("limiter calls per task (Acquire+Claim)", fmt.Sprintf("%.3f (granted %d, reserved %d, denied %d)", float64(calls)/float64(max(r.Tasks, 1)),
			r.Decisions[limiter.Granted], r.Decisions[limiter.Reserved], r.Decisions[limiter.Denied])),
	}
	if r.Errors > 0 {
		rows = append(rows, Check("errors", fmt.Sprintf("%d (first: %s)", r.Errors, r.FirstError), "0", false))
	}
	return Section{
		ID:      "scale-sim",
		Title:   "Scale by simulation: the limiter under 1,000 instances",
		Command: command,
		Rows:    rows,
		Notes: []string{
			fmt.Sprintf("Each simulated instance is a goroutine with its own `limiter.Limiter` and its own go-redis client (pool %d) against one real redis-server started by the harness. It takes the next task, `Acquire`s (3 dimensions: rpm, tpm, rpd), and when Reserved/Denied sleeps until `Permit.At` (as the Cloud Task would) and `Claim`s; once Granted it records the instant it resumed (where it would call Gemini) and `Reconcile`s. Task input tokens are uniform in [50, 500). The scale (minute = %v) is chosen so that this 2-core machine, which runs the 1,000 instances and Redis together, keeps up with most of the quota's rate.", o.PoolSize, o.Minute),
			fmt.Sprintf("The invariant is checked with `limiter.CheckWindows` twice: over the admission times the script returned (`Permit.At`, windows of P+guard, what the script itself bounds) and over the instants the instances would call Gemini (windows of P = %v). Both are targets, and `make bench` fails when either is missed: the calls' instants are what Gemini would judge (the guarantee there assumes each call leaves within the guard budget, 3g/4 after `Permit.At`; the late grants are counted), the admissions are what the script itself bounds. `go test ./infra/bench` runs a small version of the same simulation (`TestLimiterSimHoldsAtTheCalls`). The theoretical minimum is (⌈tasks / ⌊safety × limit⌋⌉ − 1) × P with the first window's burst counted; the span is from the first to the last grant.", period),
		},
	}
}
