// Command gemq runs gemq locally and talks to a gemq ingest function.
//
//	gemq run                      the example job on a local stack (what `make run` does)
//	gemq dev                      the local stack, left running, with its URLs and env vars
//	gemq submit FILE.jsonl        submit a Batch-API JSONL job (optionally --wait for it)
//	gemq status JOB               a job's state and counts
//	gemq results JOB [-o FILE]    a job's results, Batch-API JSONL
//
// Exit codes, for scripts:
//
//	0    success (and, when the job was waited for or inspected, no task failed)
//	1    the job has failed tasks
//	2    usage: unknown command, bad flag, missing argument
//	3    ingest unreachable, or it answered an HTTP error (5xx, 404 unknown job, …)
//	4    input refused: the file is unreadable or not Batch-API JSONL, or ingest
//	     rejected the job (400, 409, 413, 415)
//	5    credentials: no Google ID token for a deployed URL, or ingest answered 401/403
//	6    the local stack could not start (e.g. no redis-server)
//	130  interrupted (Ctrl-C)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes; see the package comment.
const (
	exitOK          = 0
	exitJobFailures = 1
	exitUsage       = 2
	exitHTTP        = 3
	exitInput       = 4
	exitAuth        = 5
	exitStack       = 6
	exitInterrupted = 130
)

// exitError carries a message and the exit code it ends the command with.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// env is what a command sees of the world; tests replace every part.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// stderrTTY says whether stderr is a terminal (progress redrawn in place).
	stderrTTY bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(runMain(ctx, os.Args[1:], env{
		stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, stderrTTY: isTerminal(os.Stderr),
	}))
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

const usage = `gemq runs many Gemini calls on Google Cloud without breaking the Gemini quota.

Usage:
  gemq run     [flags]               run the example job on a local stack and print a summary (make run)
  gemq dev     [flags]               start the local stack and leave it running
  gemq submit  FILE.jsonl [flags]    submit a Gemini Batch API JSONL file as a job
  gemq status  JOB [flags]           show a job's state and counts
  gemq results JOB [flags]           write a job's results (Batch API JSONL)

Run "gemq COMMAND --help" for a command's flags.

The ingest URL comes from --url, else $GEMQ_URL (gemq dev prints it). For a URL that is not
localhost, gemq attaches a Google ID token from Application Default Credentials, or
$GEMQ_ID_TOKEN when set (e.g. export GEMQ_ID_TOKEN=$(gcloud auth print-identity-token)).

Exit codes:
  0    success (no task failed, where the command looks at the job)
  1    the job has failed tasks
  2    usage error
  3    ingest unreachable, or an HTTP error from it (5xx, 404 unknown job, ...)
  4    input refused: unreadable/invalid file, or ingest rejected it (400, 409, 413, 415)
  5    credentials: no ID token for a deployed URL, or ingest answered 401/403
  6    the local stack could not start (e.g. redis-server missing)
  130  interrupted
`

// runMain runs one gemq command line and returns its exit code.
func runMain(ctx context.Context, args []string, e env) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitUsage
	}
	cmds := map[string]func(context.Context, []string, env) error{
		"submit":  cmdSubmit,
		"status":  cmdStatus,
		"results": cmdResults,
		"dev":     cmdDev,
		"run":     cmdRun,
		"dlq":     cmdDLQ,
	}
	name := args[0]
	switch name {
	case "-h", "--help", "-help", "help":
		if len(args) > 1 && cmds[args[1]] != nil {
			return runMain(ctx, []string{args[1], "--help"}, e)
		}
		fmt.Fprint(e.stdout, usage)
		return exitOK
	}
	cmd := cmds[name]
	if cmd == nil {
		fmt.Fprintf(e.stderr, "gemq: unknown command %q\n\n%s", name, usage)
		return exitUsage
	}
	err := cmd(ctx, args[1:], e)
	return report(ctx, e, name, err)
}

// report prints err (if any) and returns the exit code it stands for.
func report(ctx context.Context, e env, name string, err error) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, ctx.Err())) {
		fmt.Fprintf(e.stderr, "gemq %s: interrupted\n", name)
		return exitInterrupted
	}
	code := exitHTTP
	var ee *exitError
	var ae *apiError
	var ue *unreachableError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case errors.As(err, &ae):
		code = ae.exitCode()
	case errors.As(err, &ue):
		code = exitHTTP
	}
	if code == exitJobFailures && ee != nil && ee.msg == "" {
		return code // already reported
	}
	fmt.Fprintf(e.stderr, "gemq %s: %v\n", name, err)
	return code
}

// newFlagSet returns a FlagSet that writes its help to e.stdout and errors
// to e.stderr.
func newFlagSet(name, synopsis string, e env) *flag.FlagSet {
	fs := flag.NewFlagSet("gemq "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: gemq %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args allowing flags after positional arguments ("gemq submit
// f.jsonl --wait"), and checks the number of positional arguments.
func parse(fs *flag.FlagSet, args []string, e env, positional int) ([]string, error) {
	var pos []string
	for {
		// Parse prints the usage itself, to stderr, even for --help: silence
		// it and print it once below, on the stream the case calls for.
		fs.SetOutput(io.Discard)
		err := fs.Parse(args)
		if err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(e.stdout)
				fs.Usage()
				return nil, flag.ErrHelp
			}
			fs.SetOutput(e.stderr)
			fs.Usage()
			return nil, &exitError{code: exitUsage, msg: err.Error()}
		}
		fs.SetOutput(e.stderr)
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != positional {
		fs.Usage()
		return nil, &exitError{code: exitUsage, msg: fmt.Sprintf("want %d argument(s), got %d: %s", positional, len(pos), strings.Join(pos, " "))}
	}
	return pos, nil
}

// urlFlag registers --url with its $GEMQ_URL default.
func urlFlag(fs *flag.FlagSet, e env) *string {
	return fs.String("url", e.getenv("GEMQ_URL"), "ingest URL (default $GEMQ_URL)")
}

func requireURL(u string) error {
	if u == "" {
		return &exitError{code: exitUsage, msg: "no ingest URL: pass --url or set GEMQ_URL (`gemq dev` starts a local stack and prints one)"}
	}
	return nil
}
