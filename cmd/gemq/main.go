// Command gemq runs gemq locally and talks to a gemq ingest function.
//
//	gemq run                      the example job on a local stack (what `make run` does)
//	gemq dev                      the local stack, left running, with its URLs and env vars
//	gemq submit FILE.jsonl        submit a Batch-API JSONL job (optionally --wait for it)
//	gemq status JOB               a job's state and counts
//	gemq cancel JOB               cancel a job (its tasks end without calling Gemini)
//	gemq results JOB [-o FILE]    a job's results, Batch-API JSONL
//
// Exit codes, for scripts (the same table is in the usage text):
//
//	0    success (and, when the job was waited for or inspected, no task failed)
//	1    the job has failed tasks
//	2    usage: unknown command, bad flag, missing argument; or gemq run would
//	     spend real Gemini quota without --real-gemini
//	3    ingest unreachable, or it answered an HTTP error (5xx, 404 unknown job, …)
//	4    input refused: the file is unreadable or not a job (Batch-API JSONL or
//	     the JSON job format), or ingest rejected the job (400, 409, 413, 415)
//	5    credentials: no Google ID token for a deployed URL, or ingest answered 401/403
//	6    the local stack could not start: a port in use, an environment variable
//	     naming something unreachable or invalid (the message names it), no redis-server
//	7    results incomplete: the job is still running (gemq results without --partial)
//	8    the job's state was lost (Redis lost it: gemq status on a state_lost job)
//	70   internal error (a bug in gemq)
//	129  hang-up (SIGHUP), 130 interrupted (Ctrl-C), 141 broken pipe (SIGPIPE),
//	     143 terminated (SIGTERM): 128 + the signal, after stopping what gemq started
//
// A go run or make in front of gemq replaces these codes with its own (go run
// exits 1, make 2; make prints the command's code as "Error N").
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
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
	exitIncomplete  = 7
	exitStateLost   = 8
	exitInternal    = 70
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
	// signal, when set, names the signal that cancelled the context (its
	// exit code is 128 + the signal).
	signal func() os.Signal
	// afterStart, when set, runs once the local stack is up (tests: a
	// component that panics).
	afterStart func()
}

// stopSignals end gemq in order: the local stack stopped, then exit 128+n.
// SIGPIPE is among them because Go kills a program writing to a closed
// stdout pipe (`gemq run | head`) outright, which would skip the shutdown;
// notified instead, the write fails and the context ends.
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE}

func main() {
	os.Exit(mainCode(os.Args[1:], env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, stderrTTY: isTerminal(os.Stderr)}))
}

// mainCode runs the command line under stopSignals: the first cancels the
// context, a second one exits at once (children die with gemq: see
// infra/stack). A panic on this goroutine ends in exitInternal after the
// deferred stops ran.
func mainCode(args []string, e env) (code int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, stopSignals...)
	defer signal.Stop(sigc)
	var got atomic.Value
	e.signal = func() os.Signal {
		s, _ := got.Load().(os.Signal)
		return s
	}
	go func() {
		s := <-sigc
		got.Store(s)
		cancel()
		// Every write to a closed pipe raises SIGPIPE again: only another
		// signal means "now".
		for s = range sigc {
			if s != syscall.SIGPIPE {
				fmt.Fprintf(e.stderr, "gemq: %v again: exiting now\n", s)
				os.Exit(signalCode(s))
			}
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(e.stderr, "gemq: internal error (a bug, please report it): %v\n%s", r, debug.Stack())
			code = exitInternal
		}
	}()
	return runMain(ctx, args, e)
}

// signalCode is the shell's exit code for a death by signal s.
func signalCode(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return exitInterrupted
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
  gemq cancel  JOB [flags]           cancel a job: its tasks end without calling Gemini
  gemq results JOB [flags]           write a job's results (Batch API JSONL)

Run "gemq COMMAND --help" for a command's flags.

The ingest URL comes from --url, else $GEMQ_URL (gemq dev prints it). For a URL that is not
localhost, gemq attaches a Google ID token from Application Default Credentials, or
$GEMQ_ID_TOKEN when set (e.g. export GEMQ_ID_TOKEN=$(gcloud auth print-identity-token)).

Exit codes:
  0    success (no task failed, where the command looks at the job)
  1    the job has failed tasks
  2    usage error (also: gemq run would use the real Gemini without --real-gemini)
  3    ingest unreachable, or an HTTP error from it (5xx, 404 unknown job, ...)
  4    input refused: unreadable/invalid file, or ingest rejected it (400, 409, 413, 415)
  5    credentials: no ID token for a deployed URL, or ingest answered 401/403
  6    the local stack could not start (a port in use, a bad or unreachable
       environment variable, redis-server missing: the message names it)
  7    results incomplete: the job is still running (gemq results without --partial)
  8    the job's state was lost (Redis lost it; gemq status says what to do)
  70   internal error
  129/130/141/143  stopped by SIGHUP / Ctrl-C / SIGPIPE / SIGTERM
(go run and make replace these with their own codes: build gemq to see them.)
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
		"cancel":  cmdCancel,
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
		var sig os.Signal
		if e.signal != nil {
			sig = e.signal()
		}
		if sig == nil || sig == os.Interrupt {
			fmt.Fprintf(e.stderr, "gemq %s: interrupted\n", name)
			return exitInterrupted
		}
		fmt.Fprintf(e.stderr, "gemq %s: stopped by %v\n", name, sig)
		return signalCode(sig)
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
func parse(fs *flag.FlagSet, args []string, e env, names ...string) ([]string, error) {
	positional := len(names)
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
			return nil, &exitError{code: exitUsage, msg: flagError(fs, err) + fmt.Sprintf("\n  (%s --help lists the flags)", fs.Name())}
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
		synopsis := fs.Name() + " " + strings.Join(names, " ")
		switch {
		case len(pos) < positional:
			return nil, &exitError{code: exitUsage, msg: fmt.Sprintf("missing %s\n  usage: %s (%s --help lists the flags)", names[len(pos)], synopsis, fs.Name())}
		case positional == 0:
			return nil, &exitError{code: exitUsage, msg: fmt.Sprintf("unexpected argument %q: %s takes flags only (%s --help lists them)", pos[0], fs.Name(), fs.Name())}
		}
		return nil, &exitError{code: exitUsage, msg: fmt.Sprintf("too many arguments: %s\n  usage: %s", strings.Join(pos, " "), synopsis)}
	}
	return pos, nil
}

// flagError rewrites the flag package's terse "invalid value" errors
// ("parse error") to say what the flag wants.
func flagError(fs *flag.FlagSet, err error) string {
	msg := err.Error()
	m := invalidValue.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	f := fs.Lookup(m[2])
	if f == nil {
		return msg
	}
	want := "a valid value"
	switch f.Value.(flag.Getter).Get().(type) {
	case time.Duration:
		want = "a duration with a unit, such as 10s, 1m or 500ms"
	case int, int64, uint, uint64:
		want = "a whole number"
	case bool:
		want = "true or false"
	}
	return fmt.Sprintf("invalid value %q for --%s: want %s", m[1], m[2], want)
}

var invalidValue = regexp.MustCompile(`^invalid value "(.*)" for flag -(\S+): `)

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
