package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/internal/task"
)

// Durations below are real time at DefaultConfig (a 6 s quota minute, so
// 1 s here stands for 10 s in production) unless a comment says a real
// client's timeout sets them.

// after waits d from the start of the injection, then runs f.
func after(ctx context.Context, d time.Duration, f func() error) error {
	if !sleepCtx(ctx, d) {
		return ctx.Err()
	}
	return f()
}

// Catalogue returns every scenario, in the order `make chaos` runs them.
func Catalogue() []Scenario {
	const n = 57 // three quota minutes at 19 calls each
	return []Scenario{
		{Name: "baseline", Fault: "none", Tasks: n},
		{Name: "worker-kill", Fault: "worker SIGKILLed with Gemini calls in flight, in the first and second quota minutes; back after 1 s", Tasks: n, Backoff: 2 * time.Second,
			Inject: func(ctx context.Context, e *Env, _ string) error {
				if err := e.KillWorkerMidCall(ctx, time.Second); err != nil {
					return err
				}
				// The second minute's calls come from Cloud Tasks callbacks.
				return after(ctx, 4*time.Second, func() error { return e.KillWorkerMidCall(ctx, time.Second) })
			}},
		{Name: "redis-restart-empty", Fault: "redis-server SIGKILLed, restarted empty 2 s later (20 s real)", Tasks: n, Backoff: 4 * time.Second,
			Inject: func(ctx context.Context, e *Env, _ string) error {
				// Before the second quota minute's callbacks claim their
				// reservations, within a minute of the first minute's calls.
				return after(ctx, 2*time.Second, func() error { return e.KillRedis(ctx, 2*time.Second) })
			}},
		{Name: "redis-restart-rdb", Fault: "RDB snapshot saved 5 s into the job; redis-server SIGKILLed 5 s later at the first moment no Gemini call is in flight, after the second quota minute's calls, and restarted from the snapshot 1 s after that (those calls' claims, results and task records lost)", Tasks: n, Backoff: 4 * time.Second,
			Inject: func(ctx context.Context, e *Env, _ string) error {
				// The snapshot comes before the second quota minute's calls,
				// the kill after them (none in flight), the restart before
				// the third minute's callbacks claim their reservations.
				return after(ctx, 5*time.Second, func() error { return e.RestartRedisFromSnapshot(ctx, 5*time.Second, time.Second) })
			}},
		{Name: "redis-flushall", Fault: "FLUSHALL mid-job", Tasks: n, Backoff: time.Second,
			Inject: func(ctx context.Context, e *Env, _ string) error {
				return after(ctx, 2*time.Second, func() error { return e.FlushRedis(ctx) })
			}},
		{Name: "redis-pause", Fault: "redis-server SIGSTOPped 10 s (real time: past go-redis' 3 s read timeout and its retries), then SIGCONT", Tasks: n, Backoff: 8 * time.Second,
			Inject: func(ctx context.Context, e *Env, _ string) error {
				return after(ctx, 4*time.Second, func() error { return e.PauseRedis(ctx, 10*time.Second) })
			}},
		{Name: "replica-promoted", Fault: "replication cut for 1.5 s, then primary killed and replica promoted (the writes of those 1.5 s lost)", Tasks: n, Replica: true, Backoff: 2 * time.Second,
			Inject: func(ctx context.Context, e *Env, _ string) error {
				return after(ctx, 500*time.Millisecond, func() error { return e.PromoteReplica(ctx, 1500*time.Millisecond) })
			}},
		{Name: "redis-down-long", Fault: "Redis unreachable 20 s (200 s real: a failover or maintenance) right after submission; push policy as deployed (10 attempts)", Tasks: n, Backoff: 16 * time.Second,
			Inject: func(ctx context.Context, e *Env, _ string) error {
				return e.Outage(ctx, e.redisFront, "redis", 20*time.Second)
			}},
		{Name: "redis-down-past-budget", Fault: "Redis unreachable 20 s with a 5-attempt push budget (15 s): every task dead-lettered, then `gemq dlq replay`", Tasks: n, PushAttempts: 5, Backoff: 8 * time.Second,
			Inject: func(ctx context.Context, e *Env, _ string) error {
				if err := e.Outage(ctx, e.redisFront, "redis", 20*time.Second); err != nil {
					return err
				}
				_, err := e.ReplayDeadLetters(ctx)
				return err
			}},
		{Name: "cloudtasks-outage", Fault: "Cloud Tasks API unreachable 3 s (30 s real)", Tasks: n, Backoff: 4 * time.Second,
			Inject: func(ctx context.Context, e *Env, _ string) error {
				return after(ctx, 3*time.Second, func() error { return e.Outage(ctx, e.tasksFront, "cloud tasks", 3*time.Second) })
			}},
		{Name: "pubsub-outage", Fault: "Pub/Sub unreachable 3 s (30 s real): publishing, pulling and pushing", Tasks: n, Backoff: 4 * time.Second,
			Inject: func(ctx context.Context, e *Env, _ string) error {
				return after(ctx, 4*time.Second, func() error { return e.Outage(ctx, e.psFront, "pubsub", 3*time.Second) })
			}},
		{Name: "gemini-slow", Fault: "Gemini answers after 20 s, past the 12 s call timeout, for 6 s", Tasks: n, GeminiFails: true, Backoff: 4 * time.Second,
			Inject: geminiSpell(3*time.Second, 6*time.Second, "gemini slow", mustLatency("fixed:200s"), geminisim.Faults{}, 0)},
		{Name: "gemini-5xx-storm", Fault: "70% of Gemini calls answered 500/503 for 6 s", Tasks: n, GeminiFails: true, Backoff: 4 * time.Second,
			Inject: geminiSpell(3*time.Second, 6*time.Second, "gemini 5xx storm", baseLatency, geminisim.Faults{Error500: 0.2, Error503: 0.5}, 0)},
		{Name: "gemini-429-storm", Fault: "80% of Gemini calls answered 429 without details for 6 s", Tasks: n, GeminiFails: true, Backoff: 4 * time.Second,
			Inject: geminiSpell(3*time.Second, 6*time.Second, "gemini 429 storm", baseLatency, geminisim.Faults{}, 0.8)},
		{Name: "poison-duplicates", Fault: "every push delivered twice; a malformed and a conflicting copy of waiting tasks, an oversized and a non-JSON message published", Tasks: n, Backoff: time.Second,
			Inject: func(ctx context.Context, e *Env, job string) error {
				e.pusher.SetDuplicateDelivery(true)
				e.mark("duplicate delivery on")
				return after(ctx, 4*time.Second, func() error { return publishPoison(ctx, e, job, n-5) })
			}},
		pacificDay("pacific-midnight", "an ordinary Pacific midnight (2027-06-16)", time.Date(2027, 6, 16, 7, 0, 0, 0, time.UTC)),
		pacificDay("dst-spring", "the end of the 23-hour Pacific day 2027-03-14", time.Date(2027, 3, 15, 7, 0, 0, 0, time.UTC)),
		pacificDay("dst-fall", "the end of the 25-hour Pacific day 2027-11-07", time.Date(2027, 11, 8, 8, 0, 0, 0, time.UTC)),
	}
}

// pacificDay is a job during which a Pacific day ends, under a daily limit
// of 40 requests (38 with the safety factor): the job's first two quota
// minutes spend the day's share, the third waits for midnight. A limiter
// that put midnight an hour late (a 24-hour day for 2027-03-14) would stall
// the job past its allowance; one that put it an hour early (2027-11-07)
// would send the third minute's calls in the old day, over RPD at the
// stand-in. Midnight comes about 14 s into the job.
func pacificDay(name, what string, midnight time.Time) Scenario {
	const n = 57
	return Scenario{Name: name, Fault: what + " during the job; 40 requests per Pacific day (38 by the safety factor)", Tasks: n,
		Midnight: midnight, RPD: 40, Backoff: time.Second,
		Inject: func(ctx context.Context, e *Env, _ string) error {
			// Not a fault: the ideal run already waits for midnight. The
			// scenario is void if midnight did not fall inside the job.
			if until := time.Until(e.midnight); until < 7*time.Second {
				return fmt.Errorf("chaos: Pacific midnight %s after submission, before the day's share was spent (start-up too slow): not the scenario designed", until.Round(time.Millisecond))
			}
			return nil
		}}
}

// geminiSpell changes the stand-in's behaviour from `from` for `lasting`,
// then restores the base behaviour.
func geminiSpell(from, lasting time.Duration, what string, l geminisim.Latency, f geminisim.Faults, capacity float64) func(context.Context, *Env, string) error {
	return func(ctx context.Context, e *Env, _ string) error {
		return after(ctx, from, func() error {
			e.GeminiBehaviour(what+" begins", l, f, capacity)
			sleepCtx(ctx, lasting)
			e.GeminiBehaviour(what+" ends", baseLatency, geminisim.Faults{}, 0)
			return nil
		})
	}
}

// publishPoison publishes a malformed copy of task i (same job and key, a
// request Gemini would refuse), a conflicting copy of task i-1 (same job and
// key, another valid request, no job hash: not what ingest published), a
// message over the envelope limit and one that is not JSON.
func publishPoison(ctx context.Context, e *Env, job string, i int) error {
	malformed, err := json.Marshal(map[string]any{
		"v": task.Version, "job_id": job, "key": Key(i), "model": model,
		"request": map[string]any{"contents": 42},
	})
	if err != nil {
		return fmt.Errorf("json.Marshal: %w", err)
	}
	conflicting, err := task.Encode(task.Envelope{V: task.Version, JobID: job, Key: Key(i - 1), Model: model,
		Request: json.RawMessage(`{"contents":[{"role":"user","parts":[{"text":"Another request under the same key."}]}]}`)})
	if err != nil {
		return fmt.Errorf("task.Encode: %w", err)
	}
	oversized := fmt.Appendf(nil, `{"v":%d,"job_id":%q,"key":"huge","model":%q,"request":{"contents":[{"parts":[{"text":%q}]}]}}`,
		task.Version, job, model, strings.Repeat("x", task.MaxEnvelopeBytes))
	for _, m := range []poison{{"malformed copy of " + Key(i), malformed}, {"conflicting copy of " + Key(i-1), conflicting},
		{"oversized", oversized}, {"non-JSON", []byte("this is not a task")}} {
		if err := e.PublishPoison(ctx, m.name, m.data); err != nil {
			return err
		}
	}
	e.mark("poison published")
	return nil
}
