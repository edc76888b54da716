// Command gemqchaos runs gemq's fault-injection suite (package infra/chaos)
// and prints one Markdown table row per scenario: what `make chaos` runs.
//
//	go run ./infra/chaos/cmd/gemqchaos [-run REGEXP] [-out FILE] [-logs DIR]
//
// It exits 1 when any scenario missed a target of issue 10's "Must show"
// (or could not be run), 2 on bad flags.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/gemq-dev/gemq/infra/chaos"
)

func main() {
	run := flag.String("run", "", "run only the scenarios whose name matches this regular expression")
	out := flag.String("out", "", "also write the table to this file")
	logs := flag.String("logs", "", "keep each scenario's log under this directory (default the system's temporary directory)")
	flag.Parse()
	re, err := regexp.Compile(*run)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gemqchaos: -run:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	var reports []chaos.Report
	failed := 0
	for _, sc := range chaos.Catalogue() {
		if !re.MatchString(sc.Name) {
			continue
		}
		r := chaos.Run(ctx, chaos.DefaultConfig, sc, *logs)
		reports = append(reports, r)
		verdict := "PASS"
		if !r.Pass() {
			failed++
			verdict = "FAIL: " + strings.Join(r.Failures(), "; ")
		}
		fmt.Fprintf(os.Stderr, "gemqchaos: %-20s %5.0fs  %s  (log %s)\n", sc.Name, r.Duration.Seconds(), verdict, r.Log)
		if ctx.Err() != nil {
			break
		}
	}
	table := chaos.Table(reports)
	fmt.Print(table)
	fmt.Printf("\n%d scenarios, %d passed, %d failed in %s (quota minute %s, %d RPM)\n",
		len(reports), len(reports)-failed, failed, time.Since(start).Round(time.Second), chaos.DefaultConfig.Minute, chaos.DefaultConfig.RPM)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(table), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gemqchaos:", err)
			os.Exit(1)
		}
	}
	if failed > 0 {
		os.Exit(1)
	}
}
