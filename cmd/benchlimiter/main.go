// Command benchlimiter measures the throughput and latency of gemq's
// 3-dimension Acquire against github.com/go-redis/redis_rate/v10 AllowN (one
// dimension) and EVALSHA of a no-op script (the ceiling of this machine), for
// 1, 16, 64 and 256 concurrent callers, against a real redis-server; and the
// same Acquire with the worker's metrics recorded (internal/metrics), so the
// metrics' hot-path overhead is measured in the same run.
//
//	go run ./cmd/benchlimiter [-addr host:port] [-duration 2s] [-rounds 5] [-callers 1,16,64,256]
//
// Without -addr it starts redis-server from PATH on a free port and stops it
// at the end. Each cell is the median of the rounds. Within each round, for
// each caller count, the three contenders run back to back in an order that
// rotates from round to round, so load changes on the (shared) machine hit
// them alike; the ratios are also reported per round (gemq and redis_rate of
// the same round) with their median. The load average is printed at the start
// and at the end.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gemq-dev/gemq/internal/limiter"
	"github.com/gemq-dev/gemq/internal/metrics"
	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

const quota = `{"safety": 0.95, "horizon": "15m", "guard": "1s", "scopes": [
  {"project": "*", "model": "bench", "dimensions": [
    {"name": "rpm", "unit": "requests", "limit": 1000000000, "period": "1m"},
    {"name": "tpm", "unit": "input_tokens", "limit": 1000000000000, "period": "1m"},
    {"name": "rpd", "unit": "requests", "limit": 1000000000000, "per": "pacific_day"}]}]}`

var noop = redis.NewScript(`return 1`)

type result struct {
	rate     float64 // decisions per second
	p50, p99 time.Duration
	redisUS  float64 // Redis CPU per decision: EVALSHA usec_per_call from INFO commandstats
}

func main() {
	addr := flag.String("addr", "", "Redis address (default: start a redis-server)")
	duration := flag.Duration("duration", 2*time.Second, "measuring time per cell and round")
	rounds := flag.Int("rounds", 5, "rounds; each cell reports the median")
	callers := flag.String("callers", "1,16,64,256", "comma-separated numbers of concurrent callers")
	flag.Parse()
	var levels []int
	for _, f := range strings.Split(*callers, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 {
			fmt.Fprintf(os.Stderr, "benchlimiter: bad -callers %q\n", *callers)
			os.Exit(2)
		}
		levels = append(levels, c)
	}
	if err := run(*addr, *duration, *rounds, levels); err != nil {
		fmt.Fprintln(os.Stderr, "benchlimiter:", err)
		os.Exit(1)
	}
}

func run(addr string, duration time.Duration, rounds int, levels []int) error {
	if addr == "" {
		a, stop, err := startRedis()
		if err != nil {
			return err
		}
		defer stop()
		addr = a
	}
	cfg, err := limiter.ParseConfig([]byte(quota))
	if err != nil {
		return err
	}
	ctx := context.Background()
	loadStart := loadAvg()
	names := []string{"gemq Acquire (3 dims)", "redis_rate AllowN (1 dim)", "EVALSHA no-op"}
	cells := map[string][]result{}
	var collect []time.Duration // one metrics collection per cell
	pairs := map[int][]pairedResult{}
	for round := range rounds {
		for _, c := range levels {
			rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: c, MinIdleConns: c})
			lim := limiter.New(rdb, cfg)
			rr := redis_rate.NewLimiter(rdb)
			// The worker's wrapping: counters recorded per decision on a
			// real SDK provider (collected at the end of the cell).
			loc := metrics.NewLocal()
			rec, err := metrics.New(loc.Provider, lim, cfg)
			if err != nil {
				return err
			}
			mlim := metrics.WrapLimiter(lim, rec)
			ops := []func(context.Context) error{
				func(ctx context.Context) error {
					// A scope per run keeps the lists short, as in production.
					s := limiter.Scope{Project: "p" + strconv.Itoa(round) + "-" + strconv.Itoa(c), Model: "bench"}
					p, err := lim.Acquire(ctx, s, limiter.Cost{Requests: 1, InputTokens: 500})
					if err == nil && p.Outcome != limiter.Granted {
						err = fmt.Errorf("unexpected %s", p.Outcome)
					}
					return err
				},
				func(ctx context.Context) error {
					_, err := rr.AllowN(ctx, "rr:"+strconv.Itoa(round)+"-"+strconv.Itoa(c), redis_rate.PerSecond(1_000_000_000), 1)
					return err
				},
				func(ctx context.Context) error {
					return noop.Run(ctx, rdb, []string{"noop"}).Err()
				},
			}
			for j := range ops {
				i := (j + round) % len(ops) // rotate the order from round to round
				op := ops[i]
				if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
					rdb.Close()
					return fmt.Errorf("config resetstat: %w", err)
				}
				res, err := measure(ctx, c, duration, op)
				if err != nil {
					rdb.Close()
					return fmt.Errorf("%s, %d callers: %w", names[i], c, err)
				}
				res.redisUS = evalshaUS(ctx, rdb)
				key := names[i] + "/" + strconv.Itoa(c)
				cells[key] = append(cells[key], res)
			}
			// Metrics on and off, paired: each caller alternates a plain
			// Acquire and one through the worker's wrapper (which goes
			// first alternates too), so both see the same moment's load.
			plain := limiter.Scope{Project: "q" + strconv.Itoa(round) + "-" + strconv.Itoa(c), Model: "bench"}
			wrapped := limiter.Scope{Project: "m" + strconv.Itoa(round) + "-" + strconv.Itoa(c), Model: "bench"}
			po, err := paired(ctx, c, duration,
				func(ctx context.Context) error {
					return grant(lim.Acquire(ctx, plain, limiter.Cost{Requests: 1, InputTokens: 500}))
				},
				func(ctx context.Context) error {
					return grant(mlim.Acquire(ctx, wrapped, limiter.Cost{Requests: 1, InputTokens: 500}))
				})
			if err != nil {
				rdb.Close()
				return fmt.Errorf("metrics on/off, %d callers: %w", c, err)
			}
			pairs[c] = append(pairs[c], po)
			// One collection, as an export does every interval: the
			// occupancy read (limiter.Usage) of the wrapped scope, whose
			// window holds every decision of the cell.
			t0 := time.Now()
			if _, err := loc.Snapshot(ctx); err != nil {
				rdb.Close()
				return fmt.Errorf("metrics snapshot: %w", err)
			}
			collect = append(collect, time.Since(t0))
			rdb.Close()
		}
	}
	fmt.Printf("redis %s, GOMAXPROCS=%d, %d rounds × %v per cell (median), Go %s\n", redisVersion(ctx, addr), runtimeProcs(), rounds, duration, goVersion())
	fmt.Printf("load average (1/5/15 min): %s at start, %s at end\n\n", loadStart, loadAvg())
	fmt.Println("| callers | contender | decisions/s | p50 | p99 | Redis µs/decision |")
	fmt.Println("| ---: | --- | ---: | ---: | ---: | ---: |")
	med := func(key string) result {
		rs := slices.Clone(cells[key])
		slices.SortFunc(rs, func(a, b result) int { return cmp.Compare(a.rate, b.rate) })
		return rs[len(rs)/2]
	}
	for _, c := range levels {
		for _, name := range names {
			r := med(name + "/" + strconv.Itoa(c))
			fmt.Printf("| %d | %s | %.0f | %v | %v | %.1f |\n", c, name, r.rate, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.redisUS)
		}
	}
	fmt.Println()
	fmt.Println("| callers | gemq / redis_rate (of medians) | gemq / ceiling | gemq / redis_rate per round | median of rounds |")
	fmt.Println("| ---: | ---: | ---: | --- | ---: |")
	for _, c := range levels {
		k := strconv.Itoa(c)
		g, r, e := med(names[0]+"/"+k), med(names[1]+"/"+k), med(names[2]+"/"+k)
		var per []float64
		var strs []string
		for i := range cells[names[0]+"/"+k] {
			x := cells[names[0]+"/"+k][i].rate / cells[names[1]+"/"+k][i].rate
			per = append(per, x)
			strs = append(strs, fmt.Sprintf("%.2f", x))
		}
		slices.Sort(per)
		fmt.Printf("| %d | %.2f | %.2f | %s | %.2f |\n", c, g.rate/r.rate, g.rate/e.rate, strings.Join(strs, ", "), per[len(per)/2])
	}
	fmt.Println()
	fmt.Println("Metrics on the hot path: gemq Acquire with the worker's metrics (internal/metrics) vs without, paired")
	fmt.Println("(each caller alternates the two; overhead = median of the paired differences / median latency off):")
	fmt.Println()
	fmt.Println("| callers | p50 off | p50 on | overhead per round | median of rounds |")
	fmt.Println("| ---: | ---: | ---: | --- | ---: |")
	for _, c := range levels {
		var per []float64
		var strs []string
		var offs, ons []time.Duration
		for _, p := range pairs[c] {
			per = append(per, p.overhead)
			strs = append(strs, fmt.Sprintf("%+.2f%%", 100*p.overhead))
			offs, ons = append(offs, p.off), append(ons, p.on)
		}
		slices.Sort(per)
		slices.Sort(offs)
		slices.Sort(ons)
		fmt.Printf("| %d | %v | %v | %s | **%+.2f%%** |\n", c, offs[len(offs)/2].Round(time.Microsecond), ons[len(ons)/2].Round(time.Microsecond),
			strings.Join(strs, ", "), 100*per[len(per)/2])
	}
	slices.Sort(collect)
	fmt.Printf("\none collection of every gemq metric (what an export or the live view's poll does; the gauges'\n"+
		"limiter.Usage of the cell's scope included): median %v, max %v.\n",
		collect[len(collect)/2].Round(time.Microsecond), collect[len(collect)-1].Round(time.Microsecond))
	return nil
}

// measure runs op from c goroutines for d (after a short warm-up) and returns
// the completed operations per second and the latency percentiles.
func measure(ctx context.Context, c int, d time.Duration, op func(context.Context) error) (result, error) {
	warm := time.Now().Add(d / 5)
	end := warm.Add(d)
	lat := make([][]time.Duration, c)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for g := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]time.Duration, 0, 4096)
			for {
				start := time.Now()
				if start.After(end) {
					break
				}
				if err := op(ctx); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if start.After(warm) {
					buf = append(buf, time.Since(start))
				}
			}
			lat[g] = buf
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return result{}, err
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return result{}, fmt.Errorf("no operation completed")
	}
	slices.Sort(all)
	return result{
		rate: float64(len(all)) / d.Seconds(),
		p50:  all[len(all)/2],
		p99:  all[len(all)*99/100],
	}, nil
}

// evalshaUS returns the mean Redis CPU time of an EVALSHA (the whole script,
// commands included) since the last CONFIG RESETSTAT, or 0 when unknown.
func evalshaUS(ctx context.Context, rdb *redis.Client) float64 {
	info, err := rdb.InfoMap(ctx, "commandstats").Result()
	if err != nil {
		return 0
	}
	for _, kv := range strings.Split(info["Commandstats"]["cmdstat_evalsha"], ",") {
		if v, ok := strings.CutPrefix(kv, "usec_per_call="); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

func startRedis() (string, func(), error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", nil, fmt.Errorf("redis-server not on PATH (apt-get install -y redis-server): %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp("", "benchlimiter")
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--maxmemory-policy", "noeviction", "--protected-mode", "no")
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start redis-server: %w", err)
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait(); os.RemoveAll(dir) }
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c.Ping(context.Background()).Err() == nil {
			return addr, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("redis-server on %s did not answer PING", addr)
		}
	}
}

func redisVersion(ctx context.Context, addr string) string {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	info, err := c.InfoMap(ctx, "server").Result()
	if err != nil {
		return "?"
	}
	return info["Server"]["redis_version"]
}

// loadAvg returns the 1, 5 and 15 minute load averages from /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// grant turns an Acquire's answer into an error unless it granted.
func grant(p limiter.Permit, err error) error {
	if err == nil && p.Outcome != limiter.Granted {
		err = fmt.Errorf("unexpected %s", p.Outcome)
	}
	return err
}

// pairedResult is one round of metrics on/off at one caller count.
type pairedResult struct {
	off, on  time.Duration // median latencies
	overhead float64       // median of (on - off) per pair / off
}

// paired runs c callers for d (after a warm-up), each alternating off and
// on (and which of the two goes first), and compares their latencies pair
// by pair.
func paired(ctx context.Context, c int, d time.Duration, off, on func(context.Context) error) (pairedResult, error) {
	warm := time.Now().Add(d / 5)
	end := warm.Add(d)
	type pair struct{ off, on time.Duration }
	got := make([][]pair, c)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	timed := func(op func(context.Context) error) (time.Duration, error) {
		t := time.Now()
		err := op(ctx)
		return time.Since(t), err
	}
	for g := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				start := time.Now()
				if start.After(end) {
					return
				}
				var p pair
				var e1, e2 error
				if i%2 == 0 {
					p.off, e1 = timed(off)
					p.on, e2 = timed(on)
				} else {
					p.on, e1 = timed(on)
					p.off, e2 = timed(off)
				}
				if err := cmp.Or(e1, e2); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if start.After(warm) {
					got[g] = append(got[g], p)
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return pairedResult{}, err
	}
	var offs, ons, diffs []time.Duration
	for _, ps := range got {
		for _, p := range ps {
			offs, ons, diffs = append(offs, p.off), append(ons, p.on), append(diffs, p.on-p.off)
		}
	}
	if len(diffs) == 0 {
		return pairedResult{}, fmt.Errorf("no pair completed")
	}
	for _, xs := range [][]time.Duration{offs, ons, diffs} {
		slices.Sort(xs)
	}
	mid := len(diffs) / 2
	return pairedResult{off: offs[mid], on: ons[mid], overhead: float64(diffs[mid]) / float64(offs[mid])}, nil
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

func goVersion() string { return runtime.Version() }
