// Command gemqbench runs gemq's benchmarks (`make bench`): it prints a table
// and writes the same figures, with the command and the machine, into
// BENCHMARKS.md. Every figure is measured against the Gemini stand-in's own
// log (or, for the limiter simulation, the admissions the instances
// recorded), never against gemq's counters.
//
// Each pipeline scenario runs the whole local stack (infra/stack) in a child
// process of its own, because a process holds one stack and the functions
// read their configuration (e.g. GEMQ_LIMIT_POLICY) once per process.
//
// Usage:
//
//	go run ./infra/cmd/gemqbench [-only rpm,tpm,tpm-skew30,seed-rpm,seed-tpm,est-low,est-high,mixed,dsq,tier,quota,tier-standard,tier-flex,tier-batch,overhead,sim,estimator,redis-bytes] [-md BENCHMARKS.md]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gemq-dev/gemq/infra/bench"
	"github.com/gemq-dev/gemq/infra/stack"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gemqbench:", err)
		os.Exit(1)
	}
}

func run() error {
	sc := bench.DefaultScale
	var all []string
	for _, o := range sc.Scenarios() {
		all = append(all, o.Name)
	}
	quotaRows := sc.QuotaRows()
	for _, q := range quotaRows {
		all = append(all, q.Name)
	}
	for _, o := range sc.TierScenarios() {
		all = append(all, o.Name)
	}
	all = append(all, "overhead", "sim", "estimator", redisBytes)

	only := flag.String("only", strings.Join(all, ","), "comma-separated benchmarks to run: "+strings.Join(all, ", ")+
		" (a quota row runs gemq and the limiter before issue 11; \"quota\" selects every quota row)")
	flag.Float64Var(&sc.QuotaBacklog, "quota-backlog", sc.QuotaBacklog, "quota rows: the estimate-error and tier jobs' size in per-minute quotas")
	md := flag.String("md", "BENCHMARKS.md", "file to write the figures into (empty: do not write)")
	instances := flag.Int("instances", 1000, "sim: simulated function instances")
	simMinute := flag.Duration("sim-minute", 20*time.Second, "sim: the scaled minute")
	simWindows := flag.Int("sim-windows", 2, "sim: backlog in per-minute quotas")
	flag.DurationVar(&sc.Minute, "minute", sc.Minute, "pipeline: the scaled quota minute")
	flag.Int64Var(&sc.RPM, "rpm", sc.RPM, "pipeline: the RPM-bound job's limit (the TPM-bound job's TPM is rpm × 500)")
	flag.Float64Var(&sc.Backlog, "backlog", sc.Backlog, "pipeline: job size in per-minute quotas")
	flag.DurationVar(&sc.Guard, "guard", sc.Guard, "pipeline: the limiter's guard (real time)")
	flag.StringVar(&sc.Latency, "latency", sc.Latency, "pipeline: the stand-in's latency (stand-in time)")
	flag.IntVar(&sc.PushConcurrency, "push-concurrency", sc.PushConcurrency, "pipeline: push loop deliveries in flight")
	flag.Float64Var(&sc.WarmUp, "warmup", sc.WarmUp, "pipeline: a warm-up job of this many per-minute quotas before each utilisation/seed job (0: the job is a fresh deployment's first)")
	child := flag.String("child", "", "internal: run one pipeline scenario in this process")
	childOut := flag.String("child-out", "", "internal: where the child writes its result")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	if *child == "overhead" {
		r, err := bench.RunOverhead(ctx, 10_000, os.Stderr)
		if err != nil {
			r.Error = err.Error()
		}
		if werr := r.WriteJSON(*childOut); werr != nil {
			return werr
		}
		return err
	}
	if *child == redisBytes {
		return runRedisBytesChild(ctx, *childOut)
	}
	if *child != "" {
		o, err := sc.Scenario(*child)
		if err != nil {
			return err
		}
		r, err := bench.RunPipeline(ctx, o, os.Stderr)
		if err != nil && r.Error == "" {
			r.Error = err.Error() // e.g. the submission failed: reported, not taken for an empty run
		}
		if werr := r.WriteJSON(*childOut); werr != nil {
			return werr
		}
		return err
	}

	quotaRows = sc.QuotaRows() // with the flags applied
	var want []string
	for _, w := range strings.Split(*only, ",") {
		if w == "quota" {
			for _, q := range quotaRows {
				want = append(want, q.Name)
			}
			continue
		}
		want = append(want, w)
	}
	for _, w := range want {
		if !slices.Contains(all, w) {
			return fmt.Errorf("-only: unknown benchmark %q (have %s)", w, strings.Join(all, ", "))
		}
	}
	// `make bench` runs exactly "gemqbench -md BENCHMARKS.md"; anything else
	// is printed as the go run command that reproduces it.
	command := "make bench"
	if args := os.Args[1:]; len(args) > 0 && strings.Join(args, " ") != "-md BENCHMARKS.md" {
		quoted := make([]string, len(args))
		for i, a := range args {
			quoted[i] = a
			if a == "" {
				quoted[i] = "''"
			}
		}
		command = "go run ./infra/cmd/gemqbench " + strings.Join(quoted, " ")
	}
	dir, err := os.MkdirTemp("", "gemqbench")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	if os.Getenv("GEMQBENCH_KEEP") == "" {
		defer os.RemoveAll(dir)
	} else {
		fmt.Fprintln(os.Stderr, "gemqbench: keeping", dir)
	}

	m := bench.ThisMachine()
	fmt.Printf("machine: %s\n", m)
	var sections []bench.Section
	emit := func(ss ...bench.Section) {
		sections = append(sections, ss...)
		t := bench.Text(m, ss)
		fmt.Print(t[strings.Index(t, "\n")+1:]) // the machine line is printed once
	}

	results := map[string]bench.PipelineResult{}
	for _, o := range sc.Scenarios() {
		if !slices.Contains(want, o.Name) {
			continue
		}
		r, err := runPipeline(ctx, dir, o)
		if err != nil {
			return err
		}
		results[o.Name] = r
		switch o.Name {
		case "rpm":
			emit(bench.UtilisationSection(r, "Quota utilisation: RPM-bound job", command))
		case "tpm":
			emit(bench.UtilisationSection(r, "Quota utilisation: TPM-bound job", command))
		}
	}
	var quotaRun []bench.QuotaRow
	for _, q := range quotaRows {
		if !slices.Contains(want, q.Name) {
			continue
		}
		for _, o := range []bench.PipelineOptions{q.Gemq, q.Base} {
			r, err := runPipeline(ctx, dir, o)
			if err != nil {
				return err
			}
			results[o.Name] = r
		}
		quotaRun = append(quotaRun, q)
	}
	if len(quotaRun) > 0 {
		emit(bench.QuotaSection(quotaRun, results, command))
	}
	var runs []bench.PipelineResult
	for _, o := range sc.Scenarios() {
		if r, ok := results[o.Name]; ok {
			runs = append(runs, r)
		}
	}
	if len(runs) > 0 {
		w, inv := bench.WasteSection(runs, command)
		emit(w, inv)
	}
	var pairs []bench.SeedPair
	for _, p := range []struct{ job, gemq, seed string }{{"RPM-bound", "rpm", "seed-rpm"}, {"TPM-bound", "tpm", "seed-tpm"}} {
		g, ok1 := results[p.gemq]
		s, ok2 := results[p.seed]
		if ok1 && ok2 {
			pairs = append(pairs, bench.SeedPair{Job: p.job, Gemq: g, Seed: s})
		}
	}
	if len(pairs) > 0 {
		emit(bench.SeedSection(pairs, command), bench.CostSection(pairs, command))
	}

	if err := runTiers(ctx, dir, sc, want, command, emit); err != nil {
		return err
	}

	if slices.Contains(want, "overhead") {
		fmt.Fprintf(os.Stderr, "gemqbench: overhead: 10,000 tasks, unlimited zero-latency stand-in ...\n")
		var r bench.OverheadResult
		if err := runChild(ctx, dir, "overhead", &r); err != nil {
			return err
		}
		if r.Error != "" {
			return fmt.Errorf("overhead: %s", r.Error)
		}
		emit(r.Section(command))
	}

	if slices.Contains(want, redisBytes) {
		s, err := redisBytesSection(ctx, dir, command)
		if err != nil {
			return err
		}
		emit(s)
	}

	if slices.Contains(want, "estimator") {
		fmt.Fprintf(os.Stderr, "gemqbench: estimator ...\n")
		rds, err := stack.StartRedis(ctx, dir, nil)
		if err != nil {
			return err
		}
		r, err := bench.RunEstimator(ctx, rds.Addr, 200, 20)
		rds.Stop()
		if err != nil {
			return err
		}
		emit(r.Section(command))
	}

	var simErr error // reported after the figures are written
	if slices.Contains(want, "sim") {
		fmt.Fprintf(os.Stderr, "gemqbench: sim: %d instances ...\n", *instances)
		rds, err := stack.StartRedis(ctx, dir, nil)
		if err != nil {
			return err
		}
		o := bench.DefaultSimOptions(rds.Addr)
		o.Instances, o.Minute, o.Windows = *instances, *simMinute, *simWindows
		r, err := bench.RunLimiterSim(ctx, o)
		rds.Stop()
		if err != nil {
			return err
		}
		emit(r.Section(command))
		simErr = r.Err()
	}

	if *md != "" && len(sections) > 0 {
		if err := bench.WriteMarkdownFile(*md, m, time.Now(), sections); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "gemqbench: wrote %s\n", *md)
	}
	return simErr
}

// runPipeline runs pipeline scenario o in a child process; a run that did
// not finish is reported with what it measured.
func runPipeline(ctx context.Context, dir string, o bench.PipelineOptions) (bench.PipelineResult, error) {
	fmt.Fprintf(os.Stderr, "gemqbench: %s: %d tasks through the local stack (policy %s, baseline %t) ...\n", o.Name, o.Tasks, o.Policy, o.Baseline)
	var r bench.PipelineResult
	if err := runChild(ctx, dir, o.Name, &r); err != nil {
		return r, err
	}
	if r.Error != "" {
		fmt.Fprintf(os.Stderr, "gemqbench: %s: %s; reporting what was measured\n", o.Name, r.Error)
	}
	return r, nil
}

// runChild runs one scenario in a child process (its function logs go to a
// file in dir) and reads its result into r.
func runChild(ctx context.Context, dir, name string, r any) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("executable: %w", err)
	}
	out := filepath.Join(dir, name+".json")
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("child log: %w", err)
	}
	defer logf.Close()
	args := append([]string{"-child", name, "-child-out", out}, passFlags()...)
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "GEMQ_LOG_LEVEL=info")
	runErr := cmd.Run()
	b, err := os.ReadFile(out)
	if err != nil {
		tail, _ := exec.Command("tail", "-n", "20", logPath).Output()
		return fmt.Errorf("scenario %s: %v (no result: %v); log tail:\n%s", name, runErr, err, tail)
	}
	if err := json.Unmarshal(b, r); err != nil {
		return fmt.Errorf("scenario %s: result: %w", name, err)
	}
	return nil
}

// passFlags returns the pipeline flags given to this process, for the child.
func passFlags() []string {
	var out []string
	flag.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "minute", "rpm", "backlog", "guard", "latency", "push-concurrency", "quota-backlog", "warmup":
			out = append(out, "-"+f.Name+"="+f.Value.String())
		}
	})
	return out
}

// runTiers runs the service tier scenarios that are wanted and, when both
// ran, emits their comparison.
func runTiers(ctx context.Context, dir string, sc bench.Scale, want []string, command string, emit func(...bench.Section)) error {
	got := map[string]bench.PipelineResult{}
	for _, o := range sc.TierScenarios() {
		if !slices.Contains(want, o.Name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "gemqbench: %s: %d tasks at service_tier %s ...\n", o.Name, o.Tasks, o.ServiceTier)
		var r bench.PipelineResult
		if err := runChild(ctx, dir, o.Name, &r); err != nil {
			return err
		}
		if r.Error != "" {
			fmt.Fprintf(os.Stderr, "gemqbench: %s: %s; reporting what was measured\n", o.Name, r.Error)
		}
		got[o.ServiceTier] = r
	}
	std, ok1 := got["standard"]
	flex, ok2 := got["flex"]
	var batch *bench.PipelineResult
	if b, ok := got["batch"]; ok {
		batch = &b
	}
	if ok1 && ok2 {
		emit(bench.TierSection(std, flex, batch, command))
	}
	return nil
}
