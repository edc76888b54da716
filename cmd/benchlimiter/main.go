// Command benchlimiter measures the throughput and latency of gemq's
// 3-dimension Acquire against github.com/go-redis/redis_rate/v10 AllowN (one
// dimension) and EVALSHA of a no-op script (the ceiling of this machine), for
// 1, 16, 64 and 256 concurrent callers, against a real redis-server.
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
	for round := range rounds {
		for _, c := range levels {
			rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: c, MinIdleConns: c})
			lim := limiter.New(rdb, cfg)
			rr := redis_rate.NewLimiter(rdb)
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

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

func goVersion() string { return runtime.Version() }
