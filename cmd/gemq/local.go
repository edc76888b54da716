package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gemq-dev/gemq/infra/geminisim"
	"github.com/gemq-dev/gemq/infra/stack"
)

// stackFlags are the flags `dev` and `run` share.
type stackFlags struct {
	dir                    *string
	model                  *string
	minute                 *time.Duration
	rpm, tpm, rpd          *int64
	latency                *string
	ingestAddr, pubsubAddr *string
	workerAddr, tasksAddr  *string
	geminiAddr             *string
	viewAddr               *string
}

func addStackFlags(fs *flag.FlagSet, minute time.Duration, rpm, tpm int64, ingestAddr, pubsubAddr string) *stackFlags {
	return &stackFlags{
		dir:        fs.String("dir", "", "directory for the log file (default a new temporary directory, kept)"),
		model:      fs.String("model", stack.DefaultModel, "model the stand-in serves and the quota covers"),
		minute:     fs.Duration("minute", minute, "how long a quota minute lasts for the Gemini stand-in and the limiter (1m = real time)"),
		rpm:        fs.Int64("rpm", rpm, "stand-in limit: requests per minute"),
		tpm:        fs.Int64("tpm", tpm, "stand-in limit: input tokens per minute"),
		rpd:        fs.Int64("rpd", 100_000, "stand-in limit: requests per Pacific day"),
		latency:    fs.String("latency", "lognormal:median=1.5s,sigma=0.5,max=20s", `stand-in latency in its own time: "none", "fixed:800ms", "uniform:200ms,2s", "lognormal:median=1.5s,sigma=0.5,max=20s"`),
		ingestAddr: fs.String("ingest-addr", ingestAddr, "ingest listen address (port 0: a free one)"),
		workerAddr: fs.String("worker-addr", "127.0.0.1:0", "worker listen address"),
		pubsubAddr: fs.String("pubsub-addr", pubsubAddr, "pstest (Pub/Sub) listen address, unless PUBSUB_EMULATOR_HOST is set"),
		tasksAddr:  fs.String("tasks-addr", "127.0.0.1:0", "Cloud Tasks emulator listen address"),
		geminiAddr: fs.String("gemini-addr", "127.0.0.1:0", "Gemini stand-in listen address"),
		viewAddr:   fs.String("view-addr", "127.0.0.1:0", "listen address of the live view, a web page of the worker's metrics (off: none)"),
	}
}

// flagFor names the flag of a stack.Options listen address.
var flagFor = map[string]string{
	"IngestAddr": "--ingest-addr", "WorkerAddr": "--worker-addr", "PubSubAddr": "--pubsub-addr",
	"TasksAddr": "--tasks-addr", "GeminiAddr": "--gemini-addr",
}

// check refuses flag values the stack would otherwise replace silently.
func (f *stackFlags) check() error {
	for _, v := range []struct {
		name string
		n    int64
	}{{"rpm", *f.rpm}, {"tpm", *f.tpm}, {"rpd", *f.rpd}} {
		if v.n <= 0 {
			return &exitError{code: exitUsage, msg: fmt.Sprintf("--%s %d: want a positive number (the stand-in's limit)", v.name, v.n)}
		}
	}
	if *f.minute <= 0 {
		return &exitError{code: exitUsage, msg: fmt.Sprintf("--minute %v: want a positive duration, e.g. 10s (1m is real time)", *f.minute)}
	}
	return nil
}

// logDir is where a stack's log file lives: --dir, kept, or a temporary
// directory removed when the command ends well (kept when it failed, so
// that the log it points to is there).
type logDir struct {
	path string
	temp bool
}

func (f *stackFlags) logDir() (*logDir, error) {
	if *f.dir != "" {
		if err := os.MkdirAll(*f.dir, 0o755); err != nil {
			return nil, &exitError{code: exitStack, msg: fmt.Sprintf("--dir: %v", err)}
		}
		return &logDir{path: *f.dir}, nil
	}
	dir, err := os.MkdirTemp("", "gemq-")
	if err != nil {
		return nil, &exitError{code: exitStack, msg: fmt.Sprintf("temporary directory for the log: %v", err)}
	}
	return &logDir{path: dir, temp: true}, nil
}

// done removes a temporary directory when the command succeeded and
// returns what became of the log, for the user.
func (d *logDir) done(ok bool) string {
	log := filepath.Join(d.path, "gemq.log")
	if d.temp && ok {
		os.RemoveAll(d.path)
		return "removed (--dir DIR keeps it)"
	}
	return log
}

// start starts the stack with its log file in dir. Everything logs there,
// not on the terminal: the stack and redis-server, and the functions
// through GEMQ_LOG_FILE (in the cloud they log to stdout). A failure is an
// exitError with exitStack naming the port or variable at fault and what
// to do; whatever had started is stopped.
func (f *stackFlags) start(ctx context.Context, e env, dir *logDir) (*stack.Stack, error) {
	lat, err := geminisim.ParseLatency(*f.latency)
	if err != nil {
		return nil, &exitError{code: exitUsage, msg: "--latency: " + err.Error()}
	}
	s, err := stack.Start(ctx, stack.Options{
		Getenv:     e.getenv,
		Dir:        dir.path,
		Model:      *f.model,
		Minute:     *f.minute,
		RPM:        *f.rpm,
		TPM:        *f.tpm,
		RPD:        *f.rpd,
		Gemini:     stack.GeminiOptions{Latency: lat},
		IngestAddr: *f.ingestAddr, WorkerAddr: *f.workerAddr,
		PubSubAddr: *f.pubsubAddr, TasksAddr: *f.tasksAddr, GeminiAddr: *f.geminiAddr,
	})
	if err == nil {
		return s, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var le *stack.ListenError
	var ee *stack.EnvError
	var msg string
	switch {
	case errors.As(err, &le) && le.InUse():
		flag := flagFor[le.Option]
		msg = fmt.Sprintf("port %s (%s, %s %s) is already in use", le.Port(), le.Part, flag, le.Addr)
		if le.Option == "PubSubAddr" {
			msg += ": another `gemq dev`, or gcloud's Pub/Sub emulator (which uses 8085 by default)?"
		} else {
			msg += ": another `gemq dev`?"
		}
		msg += fmt.Sprintf("\n  Stop it, or pick another port: %s 127.0.0.1:0 takes a free one.", flag)
	case errors.As(err, &le):
		msg = fmt.Sprintf("%v\n  Check %s.", err, flagFor[le.Option])
	case errors.As(err, &ee), errors.Is(err, stack.ErrNoRedis):
		msg = err.Error()
	default:
		msg = fmt.Sprintf("the local stack could not start: %v\n  (log: %s)", err, filepath.Join(dir.path, "gemq.log"))
	}
	return nil, &exitError{code: exitStack, msg: msg}
}

// printParts says which parts run here and which come from the user's
// environment, and what the environment changed.
func printParts(w io.Writer, prefix string, s *stack.Stack) {
	for _, p := range s.Parts {
		where := "local    " + p.Where
		if !p.Local {
			where = "from " + p.Var + ": " + p.Where
		}
		fmt.Fprintf(w, "%s%-12s %s\n", prefix, p.Name, where)
	}
	for _, n := range s.Notes {
		fmt.Fprintf(w, "%snote: %s\n", prefix, n)
	}
}

func describeGemini(s *stack.Stack) string {
	if r := s.RealGemini(); r != "" {
		return fmt.Sprintf("the real %s (quotas from GEMQ_QUOTAS / GEMQ_QUOTAS_FILE, else a free-tier default)", r)
	}
	l := s.Limits
	scale := ""
	if l.Minute != time.Minute {
		scale = fmt.Sprintf("; time scaled: 1 quota minute = %s", l.Minute)
	}
	return fmt.Sprintf("stand-in %s, limits %d requests/min, %d input tokens/min, %d requests/day (gemq keeps to %.0f%%%s)",
		s.GeminiURL, l.RPM, l.TPM, l.RPD, l.Safety*100, scale)
}

// cmdDev starts the local stack and leaves it running until Ctrl-C.
func cmdDev(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("dev", "dev [flags]\n\nStarts the whole stack on this machine and leaves it running until Ctrl-C: Redis, Pub/Sub\n(pstest) with a push loop, the Cloud Tasks emulator, the Gemini stand-in (or the real Gemini API when\nGEMINI_API_KEY is set), and the Ingest and Worker functions served by the functions framework.", e)
	sf := addStackFlags(fs, time.Minute, 60, 100_000, "127.0.0.1:8080", "127.0.0.1:8085")
	if _, err := parse(fs, args, e); err != nil {
		return err
	}
	if err := sf.check(); err != nil {
		return err
	}
	dir, err := sf.logDir()
	if err != nil {
		return err
	}
	v, err := startView(*sf.viewAddr)
	if err != nil {
		dir.done(true)
		return err
	}
	defer v.close()
	s, err := sf.start(ctx, e, dir)
	if err != nil {
		dir.done(!keepLog(err))
		return err
	}
	defer s.Close()
	w := e.stdout
	logs := s.LogPath
	if dir.temp {
		logs += " (removed when gemq dev stops; --dir DIR keeps it)"
	}
	fmt.Fprintf(w, "gemq dev: the local stack is running (Ctrl-C stops it)\n\n")
	fmt.Fprintf(w, "  ingest       %s\n", s.IngestURL)
	fmt.Fprintf(w, "  worker       %s (push loop from %s, Cloud Tasks target)\n", s.WorkerURL, stack.PushSubscription)
	fmt.Fprintf(w, "  pubsub       %s, project %s: topics %s, %s, %s\n", s.PubSubHost, s.Project, stack.TasksTopic, stack.ResultsTopic, stack.DeadLetterTopic)
	fmt.Fprintf(w, "  cloud tasks  %s, queue %s\n", s.TasksEndpoint, s.QueuePath)
	fmt.Fprintf(w, "  gemini       %s\n", describeGemini(s))
	fmt.Fprintf(w, "  redis        %s\n", s.RedisAddr)
	if v != nil {
		fmt.Fprintf(w, "  live view    %s (quota windows, reserved slots, outcomes)\n", v.URL)
	}
	fmt.Fprintf(w, "  storage      %s, bucket %s: the results files (STORAGE_EMULATOR_HOST=%s)\n", s.StorageHost, s.ResultsBucket, s.StorageHost)
	fmt.Fprintf(w, "  logs         %s\n\n", logs)
	fmt.Fprintf(w, "Where each part comes from:\n\n")
	printParts(w, "  ", s)
	fmt.Fprintf(w, "\nIn another shell:\n\n")
	fmt.Fprintf(w, "  export GEMQ_URL=%s\n", s.IngestURL)
	fmt.Fprintf(w, "  gemq submit examples/prompts.jsonl --wait -o results.jsonl\n\n")
	fmt.Fprintf(w, "  curl -s -X POST \"$GEMQ_URL/v1/jobs?job_id=demo\" -H 'Content-Type: application/jsonl' --data-binary @examples/prompts.jsonl\n")
	fmt.Fprintf(w, "  curl -s \"$GEMQ_URL/v1/jobs/demo\"\n")
	fmt.Fprintf(w, "  curl -s \"$GEMQ_URL/v1/jobs/demo/results\"\n\n")
	fmt.Fprintf(w, "  # publish a task envelope straight to the topic with any Pub/Sub client library\n")
	fmt.Fprintf(w, "  # (pstest speaks gRPC only, so gcloud's REST calls cannot reach it). Set the variable\n")
	fmt.Fprintf(w, "  # for that one command: left exported, a later gemq run or gemq dev in the shell\n")
	fmt.Fprintf(w, "  # would use this stack's Pub/Sub (they refuse it while this one runs):\n")
	fmt.Fprintf(w, "  PUBSUB_EMULATOR_HOST=%s GOOGLE_CLOUD_PROJECT=%s your-publisher\n", s.PubSubHost, s.Project)
	fmt.Fprintf(w, "  # topic %s, data: {\"v\":1,\"job_id\":\"mine\",\"key\":\"k1\",\"model\":\"%s\",\"request\":{\"contents\":[{\"parts\":[{\"text\":\"Hello\"}]}]}}\n", stack.TasksTopic, s.Model)
	if s.GeminiURL != "" {
		fmt.Fprintf(w, "\n  curl -s %s/_stats   # what the Gemini stand-in received: windows, 429s, duplicates\n", s.GeminiURL)
	}
	if e.afterStart != nil {
		e.afterStart()
	}
	<-ctx.Done()
	fmt.Fprintf(w, "\ngemq dev: stopping\n")
	cerr := s.Close()
	fmt.Fprintf(w, "gemq dev: stopped; log %s\n", dir.done(cerr == nil))
	if cerr != nil {
		return &exitError{code: exitStack, msg: fmt.Sprintf("shutdown: %v", cerr)}
	}
	// Ctrl-C is how gemq dev is meant to stop: exit 0. Another signal
	// (hang-up, broken pipe, kill) is reported as such.
	if e.signal != nil {
		if sig := e.signal(); sig != nil && sig != os.Interrupt {
			return ctx.Err()
		}
	}
	return nil
}

// keepLog reports whether a start-up failure's message points to the log
// file (an unexpected failure), so its directory must stay.
func keepLog(err error) bool {
	var ee *exitError
	return errors.As(err, &ee) && strings.Contains(ee.msg, "(log: ")
}

// defaultJob is gemq run's job when --file is not given.
const defaultJob = "examples/prompts.jsonl"

// cmdRun runs the example job on a fresh local stack and prints a summary.
func cmdRun(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("run", "run [flags]\n\nStarts the local stack on free ports, submits the example job (a Batch API JSONL file), shows\nprogress, writes the results and prints what gemq achieved against the quota. This is `make run`.\nWith GEMINI_API_KEY (or GOOGLE_GENAI_USE_VERTEXAI=true) set it uses the real Gemini, and refuses a\njob larger than one quota minute unless --real-gemini is given.", e)
	sf := addStackFlags(fs, 10*time.Second, 100, 40_000, "127.0.0.1:0", "127.0.0.1:0")
	file := fs.String("file", defaultJob, "the job: a Gemini Batch API JSONL file, or the JSON job format")
	out := fs.String("o", "results.jsonl", "results file (Batch API JSONL)")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long")
	realOK := fs.Bool("real-gemini", false, "with GEMINI_API_KEY set: spend real Gemini quota on a job larger than one quota minute")
	tf := addTierFlags(fs)
	if _, err := parse(fs, args, e); err != nil {
		return err
	}
	tier, deadline, err := tf.params(time.Now())
	if err != nil {
		return err
	}
	if err := sf.check(); err != nil {
		return err
	}
	if _, err := os.Stat(*file); errors.Is(err, os.ErrNotExist) && *file == defaultJob {
		wd, _ := os.Getwd()
		return &exitError{code: exitInput, msg: fmt.Sprintf("%s not found in %s: the example job is in the gemq repository;\n  run gemq run from the repository's root, or pass --file YOUR-JOB.jsonl", defaultJob, wd)}
	}
	f, err := readJobFile(*file)
	if err != nil {
		return err
	}
	if err := guardRealGemini(e, f, *sf.model, *realOK); err != nil {
		return err
	}
	dir, err := sf.logDir()
	if err != nil {
		return err
	}
	v, err := startView(*sf.viewAddr)
	if err != nil {
		dir.done(true)
		return err
	}
	defer v.close()
	s, err := sf.start(ctx, e, dir)
	if err != nil {
		dir.done(!keepLog(err))
		return err
	}
	ok := false
	defer func() {
		s.Close()
		dir.done(ok)
	}()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	w := e.stderr
	fmt.Fprintf(w, "gemq run: local stack up (ingest %s; log %s)\n", s.IngestURL, s.LogPath)
	printParts(w, "gemq run: ", s)
	fmt.Fprintf(w, "gemq run: Gemini: %s\n", describeGemini(s))
	if v != nil {
		fmt.Fprintf(w, "gemq run: live view %s\n", v.URL)
	}
	if e.afterStart != nil {
		e.afterStart()
	}

	c, err := newClient(ctx, s.IngestURL, e.getenv)
	if err != nil {
		return err
	}
	start := time.Now()
	id := f.jobID
	if id == "" {
		id = newJobID(*file)
	}
	ans, err := c.submit(ctx, f, *sf.model, id, tier, deadline)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "gemq run: submitted %s: job %s, %d requests\n", *file, ans.JobID, ans.Accepted)
	v.setJob(ans.JobID, ans.Accepted)
	perMinute := 0.0
	if s.RealGemini() == "" {
		l := s.Limits
		perMinute = float64(l.RPM) * l.Safety * float64(time.Minute) / float64(l.Minute)
	}
	liveFn := func() *live {
		ev := s.JobEvents(ans.JobID)
		return &live{Throttled: ev.Throttled, Transient: ev.Transient, DeadLettered: ev.DeadLettered + int(s.Stats().Push.DeadLettered),
			Last: ev.Last, LastSlot: ev.LastSlot, PerMinute: perMinute}
	}
	st, err := waitJob(ctx, c, ans.JobID, 250*time.Millisecond, e, liveFn)
	if errors.Is(err, context.DeadlineExceeded) && parent.Err() == nil {
		return &exitError{code: exitIncomplete, msg: fmt.Sprintf("gave up after --timeout %v: job %s is not done (%d of %d tasks finished)",
			*timeout, ans.JobID, st.Counts.finished(), st.Counts.Total)}
	}
	if err != nil {
		return err
	}
	wall := time.Since(start)
	if err := writeAll(ctx, c, ans.JobID, *out, e); err != nil {
		return err
	}
	ok = st.Counts.Failed == 0
	logs := s.LogPath
	if dir.temp && ok {
		logs = "removed at exit (--dir DIR keeps it)"
	}
	printSummary(e, s, st, wall, *out, logs)
	return jobOutcome(st)
}

// printSummary prints what the run achieved against the limits, measured at
// the Gemini stand-in (its request log is the ground truth).
func printSummary(e env, s *stack.Stack, st jobStatus, wall time.Duration, out, logs string) {
	w := e.stdout
	stats := s.Stats()
	c := st.Counts
	perTask := func(n int64) string {
		if c.Total == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f", float64(n)/float64(c.Total))
	}
	fmt.Fprintf(w, "\ngemq run summary\n")
	fmt.Fprintf(w, "  tasks                 %d (%d succeeded, %d failed)\n", c.Total, c.Succeeded, c.Failed)
	fmt.Fprintf(w, "  wall time             %s\n", wall.Round(10*time.Millisecond))
	g := stats.Gemini
	ms := g.Models[s.Model]
	if s.RealGemini() == "" && ms != nil {
		l := s.Limits
		if l.Minute != time.Minute {
			fmt.Fprintf(w, "  time scale            1 quota minute = %s (the stand-in and the limiter alike)\n", l.Minute)
		}
		pct := func(v float64, lim int64) string {
			if lim <= 0 {
				return ""
			}
			return fmt.Sprintf(" = %.0f%% of %d", 100*v/float64(lim), lim)
		}
		var calls []call
		for _, en := range s.GeminiStandIn().Log() {
			if en.Method == "generateContent" && en.Model == s.Model && en.Charged {
				calls = append(calls, call{at: en.Received, tokens: en.InputTokens})
			}
		}
		// Stand-in time: its minute is a quota minute.
		u := fullWindows(calls, time.Minute)
		if u.windows == 0 {
			fmt.Fprintf(w, "  achieved              not measured: the calls spanned %.2f of a quota minute, and utilisation\n"+
				"                        is only meaningful over full quota windows (a longer job, or a shorter --minute)\n", u.span)
		} else {
			fmt.Fprintf(w, "  achieved              %.1f requests/min%s, %.0f input tokens/min%s (mean of the %d full quota\n"+
				"                        minute(s) from the first call; the last %.2f minute left out)\n",
				u.requests, pct(u.requests, l.RPM), u.tokens, pct(u.tokens, l.TPM), u.windows, u.span-float64(u.windows))
		}
		fmt.Fprintf(w, "  busiest minute        %d requests%s, %d input tokens%s (gemq keeps to %.0f%%)\n",
			ms.Peaks.RPM, pct(float64(ms.Peaks.RPM), l.RPM), ms.Peaks.TPM, pct(float64(ms.Peaks.TPM), l.TPM), 100*l.Safety)
		fmt.Fprintf(w, "  429s from Gemini      %d (quota %d, capacity %d); windows over the limit: %d\n",
			g.Quota429+g.Capacity429, g.Quota429, g.Capacity429, len(ms.Violations))
		fmt.Fprintf(w, "  Gemini calls          %d (%s per task; %d duplicate)\n", g.Requests, perTask(int64(g.Requests)), g.DuplicateCalls)
	} else if mins := wall.Minutes(); mins < 1 {
		fmt.Fprintf(w, "  achieved              not measured: the job took %s, less than a quota minute\n", fmtDuration(wall))
	} else {
		fmt.Fprintf(w, "  achieved (mean)       %.1f tasks/min over %s against %s\n", float64(c.Total)/mins, fmtDuration(wall), describeGemini(s))
	}
	fmt.Fprintf(w, "  worker invocations    %d (%s per task: %d pushes, %d Cloud Tasks callbacks)\n",
		stats.WorkerCalls, perTask(stats.WorkerCalls), stats.WorkerCalls-stats.WorkerTaskCalls, stats.WorkerTaskCalls)
	printCostSummary(w, st)
	fmt.Fprintf(w, "  results               %s\n", out)
	fmt.Fprintf(w, "  logs                  %s\n", logs)
	if c.Failed > 0 {
		fmt.Fprintf(w, "  %d task(s) failed: see the \"error\" lines in %s\n", c.Failed, out)
	}
}

// call is one Gemini call the stand-in counted against the quota.
type call struct {
	at     time.Time
	tokens int64
}

// utilisation is what full quota windows saw.
type utilisation struct {
	windows          int     // full windows from the first call to the last
	span             float64 // first to last call, in windows
	requests, tokens float64 // per window, mean over the full windows
}

// fullWindows measures calls over the whole windows of length window that
// start at the first call: a mean over a span shorter than the window (or
// with a part-window tail) overstates the rate, e.g. a burst of one
// window's quota in 40 s reads as 150% of the limit.
func fullWindows(calls []call, window time.Duration) utilisation {
	if len(calls) == 0 {
		return utilisation{}
	}
	first, last := calls[0].at, calls[0].at
	for _, c := range calls {
		if c.at.Before(first) {
			first = c.at
		}
		if c.at.After(last) {
			last = c.at
		}
	}
	u := utilisation{span: float64(last.Sub(first)) / float64(window)}
	u.windows = int(u.span)
	if u.windows == 0 {
		return u
	}
	end := first.Add(time.Duration(u.windows) * window)
	var n, toks int64
	for _, c := range calls {
		if c.at.Before(end) {
			n++
			toks += c.tokens
		}
	}
	u.requests = float64(n) / float64(u.windows)
	u.tokens = float64(toks) / float64(u.windows)
	return u
}
