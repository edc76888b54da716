package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gemq-dev/gemq/infra/stack"
)

// RedisBytesResult is the Redis footprint benchmark (issue 12): Redis
// memory per finished task while the answers are in Redis, and once they
// left it for Cloud Storage, for one job through the whole local stack.
type RedisBytesResult struct {
	Tasks int
	// AnswerBytes is the mean size of a result line (the answer).
	AnswerBytes int
	// Grace is GEMQ_RESULT_BODY_GRACE in this run.
	Grace time.Duration
	// Baseline, WithAnswers and Compact are INFO memory's used_memory with
	// the stack up and nothing submitted, once the job is done (every
	// answer in Redis), and once every answer left Redis.
	Baseline, WithAnswers, Compact int64
	// JobWithAnswers and JobCompact are the MEMORY USAGE sums of the job's
	// own keys at the same two moments.
	JobWithAnswers, JobCompact int64
	// Permits is the MEMORY USAGE sum of the limiter's permit records
	// (gemq:{scope}:p:<id>, kept an hour after their slot) at the end, and
	// ClientsDelta the growth of mem_clients_normal (connection buffers of
	// the functions' Redis pools) from the baseline.
	Permits, ClientsDelta int64
	// Keys is every key at the end, by shape (ids replaced), with its memory.
	Keys map[string]int64
	// ResultsComplete: GET .../results after compaction gave every task
	// once, with the trailer X-Gemq-Results-Complete: true.
	ResultsComplete bool
	ResultsLines    int
	ResultsTime     time.Duration
	Error           string `json:",omitempty"`
}

// RunRedisBytes runs a job of n tasks through a local stack (unlimited,
// instant stand-in) whose answers stay in Redis for grace after their
// result is published, and measures Redis before, once the job is done, and
// once every answer left. It starts a Stack (once per process).
func RunRedisBytes(ctx context.Context, n int, grace time.Duration, logw io.Writer) (RedisBytesResult, error) {
	res := RedisBytesResult{Tasks: n, Grace: grace}
	body, _, err := JobJSONL(n, 20, 60, 5)
	if err != nil {
		return res, err
	}
	const huge = int64(1) << 40
	const minute = 2 * time.Second // results files close after 2 s
	o := PipelineOptions{Name: "redis-bytes", Policy: "reserve", Minute: minute, RPM: huge, TPM: huge, RPD: huge, Safety: 0.95, Guard: time.Second}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	st, err := stack.Start(ctx, stack.Options{
		Getenv: func(string) string { return "" },
		Log:    logw, Model: Model, Minute: minute, RPM: huge, TPM: huge, RPD: huge, Safety: 0.95,
		Env:                map[string]string{"GEMQ_QUOTAS": o.quotasJSON(), "GEMQ_RESULT_BODY_GRACE": grace.String()},
		Push:               stack.PushOptions{Concurrency: 64},
		ResultsMaxDuration: minute,
	})
	if err != nil {
		return res, fmt.Errorf("stack start: %w", err)
	}
	defer st.Close()
	rdb := redis.NewClient(&redis.Options{Addr: st.RedisAddr})
	defer rdb.Close()
	clients0, err := infoField(ctx, rdb, "mem_clients_normal")
	if err != nil {
		return res, err
	}
	if res.Baseline, err = infoField(ctx, rdb, "used_memory"); err != nil {
		return res, err
	}
	const job = "bench-redis-bytes"
	start := time.Now()
	if acc, err := submitJob(ctx, st.IngestURL, job, "", body); err != nil || acc != n {
		return res, fmt.Errorf("submit: accepted %d of %d: %v", acc, n, err)
	}
	for {
		done, _, _, err := jobStatus(ctx, st.IngestURL, job)
		if err != nil {
			return res, err
		}
		if done {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if took := time.Since(start); took > grace {
		return res, fmt.Errorf("the job took %v, longer than the grace %v: answers left Redis before it was done", took, grace)
	}
	if res.WithAnswers, err = infoField(ctx, rdb, "used_memory"); err != nil {
		return res, err
	}
	if res.JobWithAnswers, err = keysMemory(ctx, rdb, "gemq:*{"+job+"}*", nil); err != nil {
		return res, err
	}
	// Every task record expires grace after its publish.
	for {
		keys, err := rdb.Keys(ctx, "gemq:job:{"+job+"}:task:*").Result()
		if err != nil {
			return res, err
		}
		if len(keys) == 0 {
			break
		}
		if ctx.Err() != nil {
			return res, fmt.Errorf("%d task records still in Redis: %w", len(keys), ctx.Err())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if res.Compact, err = infoField(ctx, rdb, "used_memory"); err != nil {
		return res, err
	}
	clients1, err := infoField(ctx, rdb, "mem_clients_normal")
	if err != nil {
		return res, err
	}
	res.ClientsDelta = clients1 - clients0
	if res.JobCompact, err = keysMemory(ctx, rdb, "gemq:*{"+job+"}*", nil); err != nil {
		return res, err
	}
	res.Keys = map[string]int64{}
	if _, err := keysMemory(ctx, rdb, "*", res.Keys); err != nil {
		return res, err
	}
	for k, v := range res.Keys {
		if strings.Contains(k, ":p:") {
			res.Permits += v
		}
	}
	t0 := time.Now()
	lines, size, complete, err := readResults(ctx, st.IngestURL, job)
	res.ResultsTime = time.Since(t0)
	if err != nil {
		return res, err
	}
	res.ResultsLines, res.ResultsComplete = lines, complete && lines == n
	res.AnswerBytes = size / max(lines, 1)
	return res, nil
}

var hexRun = regexp.MustCompile(`[0-9a-f]{16,}`)

// keysMemory sums MEMORY USAGE over the keys matching pattern; with
// byShape it also adds each key's memory under its shape (ids replaced).
func keysMemory(ctx context.Context, rdb *redis.Client, pattern string, byShape map[string]int64) (int64, error) {
	keys, err := rdb.Keys(ctx, pattern).Result()
	if err != nil {
		return 0, fmt.Errorf("redis keys: %w", err)
	}
	var sum int64
	for _, k := range keys {
		m, err := rdb.MemoryUsage(ctx, k, 0).Result()
		if err != nil && err != redis.Nil {
			return 0, fmt.Errorf("redis memory usage: %w", err)
		}
		sum += m
		if byShape != nil {
			byShape[hexRun.ReplaceAllString(k, "<id>")] += m
		}
	}
	return sum, nil
}

// infoField is one numeric field of INFO memory.
func infoField(ctx context.Context, rdb *redis.Client, field string) (int64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("redis info: %w", err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), field+":"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("redis info: no %s", field)
}

// readResults reads a job's results: lines, bytes and the trailer.
func readResults(ctx context.Context, url, job string) (int, int, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/jobs/"+job+"/results", nil)
	if err != nil {
		return 0, 0, false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, false, fmt.Errorf("GET results: %w", err)
	}
	defer resp.Body.Close()
	keys := map[string]bool{}
	n, size := 0, 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var l struct {
			Key string `json:"key"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && !keys[l.Key] {
			keys[l.Key] = true
			n++
		}
		size += len(sc.Bytes())
	}
	if err := sc.Err(); err != nil {
		return 0, 0, false, fmt.Errorf("GET results: %w", err)
	}
	return n, size, resp.Trailer.Get("X-Gemq-Results-Complete") == "true", nil
}

// RedisBytesTarget is issue 12's target: Redis bytes per finished task once
// its result is durable.
const RedisBytesTarget = 300

// Section renders the Redis footprint benchmark.
func (r RedisBytesResult) Section(command string) Section {
	n := float64(max(r.Tasks, 1))
	per := func(b int64) string { return fmt.Sprintf("%.0f B", float64(b)/n) }
	compact := float64(r.JobCompact) / n
	var keys []string
	for k, v := range r.Keys {
		keys = append(keys, fmt.Sprintf("%s %d B", k, v))
	}
	sort.Strings(keys)
	return Section{ID: "redis-bytes", Title: "Redis bytes per finished task (issue 12)", Command: command, Rows: []Row{
		Info("job", fmt.Sprintf("%d tasks, result lines of %d B on average", r.Tasks, r.AnswerBytes)),
		Info("the job's keys per task, answers in Redis (without a results bucket, kept for GEMQ_RESULT_TTL)", per(r.JobWithAnswers)),
		Check("the job's keys per task once the answers are in Cloud Storage (kept for GEMQ_RESULT_TTL)", fmt.Sprintf("%.0f B", compact),
			fmt.Sprintf("≤ %d B", RedisBytesTarget), compact <= RedisBytesTarget),
		Info("answers in Redis / compact", fmt.Sprintf("%.1f×", float64(r.JobWithAnswers)/max(float64(r.JobCompact), 1))),
		Info("used_memory growth per task: job done / answers left", per(r.WithAnswers-r.Baseline)+" / "+per(r.Compact-r.Baseline)),
		Info("of which, at the end: the limiter's permit records (an hour each) / the functions' connection buffers", per(r.Permits)+" / "+per(r.ClientsDelta)),
		Check("results API after compaction", fmt.Sprintf("%d of %d tasks, complete %t, in %v", r.ResultsLines, r.Tasks, r.ResultsComplete,
			r.ResultsTime.Round(time.Millisecond)), "every task once, complete", r.ResultsComplete),
	}, Notes: []string{
		"One job through the whole local stack (unlimited, instant Gemini stand-in; results files closing after 2 s; GEMQ_RESULT_BODY_GRACE " +
			r.Grace.String() + " so that every answer is still in Redis when the job is done). The job's keys: MEMORY USAGE summed over " +
			"gemq:*{job}* when the job is done, and again once every task record expired. The compact record is the task's member in the job's " +
			"done sorted set (finish order, and \"finished and published\"), plus a member of the failed set for a failed task.",
		"used_memory (INFO memory, the stack's redis-server) also grows with what is not the job's: the limiter's permit records, which " +
			"live an hour past their slot whatever the job (so they scale with the call rate, not the job size), the connection buffers of the " +
			"functions' Redis pools, the keyspace's hash tables, and server buffers that grow to a high-water mark once (used_memory minus " +
			"the keys, per task, falls as successive jobs run). Keys at the end: " + strings.Join(keys, ", ") + ".",
	}}
}

// WriteJSON writes r to path.
func (r RedisBytesResult) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
