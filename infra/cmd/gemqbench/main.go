// Command gemqbench runs gemq's benchmarks (`make bench`): it prints a table
// and writes the same figures, with the command and the machine, into
// BENCHMARKS.md. Every figure is measured against the Gemini stand-in's own
// log (or, for the limiter simulation, the admissions the instances
// recorded), never against gemq's counters.
//
// Usage:
//
//	go run ./infra/cmd/gemqbench [-only sim,...] [-md BENCHMARKS.md]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/gemq-dev/gemq/infra/bench"
)

// benchmarks in the order they run.
var all = []string{"sim"}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gemqbench:", err)
		os.Exit(1)
	}
}

func run() error {
	only := flag.String("only", strings.Join(all, ","), "comma-separated benchmarks to run: "+strings.Join(all, ", "))
	md := flag.String("md", "BENCHMARKS.md", "file to write the figures into (empty: do not write)")
	instances := flag.Int("instances", 1000, "sim: simulated function instances")
	simMinute := flag.Duration("sim-minute", 20*time.Second, "sim: the scaled minute")
	simWindows := flag.Int("sim-windows", 2, "sim: backlog in per-minute quotas")
	flag.Parse()

	want := strings.Split(*only, ",")
	for _, w := range want {
		if !slices.Contains(all, w) {
			return fmt.Errorf("-only: unknown benchmark %q (have %s)", w, strings.Join(all, ", "))
		}
	}
	command := "make bench"
	if len(os.Args) > 1 {
		command = "go run ./infra/cmd/gemqbench " + strings.Join(os.Args[1:], " ")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir, err := os.MkdirTemp("", "gemqbench")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(dir)

	m := bench.ThisMachine()
	var sections []bench.Section
	emit := func(s bench.Section) {
		sections = append(sections, s)
		fmt.Print(bench.Text(m, []bench.Section{s}))
	}

	if slices.Contains(want, "sim") {
		fmt.Fprintf(os.Stderr, "gemqbench: sim: %d instances ...\n", *instances)
		rds, err := bench.StartRedis(ctx, dir)
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
	}

	if *md != "" && len(sections) > 0 {
		if err := bench.WriteMarkdownFile(*md, m, time.Now(), sections); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "gemqbench: wrote %s\n", *md)
	}
	return nil
}
