package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// jobFile is a job file checked locally before submitting: Batch-API
// JSONL, or the JSON job format of POST /v1/jobs.
type jobFile struct {
	data  []byte
	lines []int // lines[i] is the file line of request i (JSONL)
	// isJSON: the file is one JSON job object {"requests": [...], ...};
	// jobID and model are its "job_id" and "model", if any.
	isJSON       bool
	jobID, model string
	requests     int
}

// contentType is the Content-Type ingest expects for the file's format.
func (f *jobFile) contentType() string {
	if f.isJSON {
		return "application/json"
	}
	return "application/jsonl"
}

var requestIndex = regexp.MustCompile(`^requests\[(\d+)\]`)

// lineOf rewrites an ingest field path "requests[3].request…" into the file
// line it came from.
func (f *jobFile) lineOf(field string) string {
	m := requestIndex.FindStringSubmatch(field)
	if m == nil || f.isJSON {
		return ""
	}
	i, _ := strconv.Atoi(m[1])
	if i < 0 || i >= len(f.lines) {
		return ""
	}
	return fmt.Sprintf("line %d", f.lines[i])
}

// readJobFile reads and checks a job file: a Batch-API JSONL file, one
// JSON object per non-blank line with a non-empty string "key" (unique) and
// an object "request"; or a JSON job, one object whose "requests" array
// holds such objects. Ingest checks the rest (and names the field).
func readJobFile(path string) (*jobFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &exitError{code: exitInput, msg: fmt.Sprintf("read job file: %v", err)}
	}
	if !utf8.Valid(data) {
		return nil, &exitError{code: exitInput, msg: fmt.Sprintf("%s is not UTF-8 text", path)}
	}
	if f, ok, err := readJSONJob(path, data); ok || err != nil {
		return f, err
	}
	f := &jobFile{data: data}
	seen := map[string]int{}
	var problems []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), len(data)+1)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if p := checkLine(line, seen, n, "on line %d"); p != "" {
			problems = append(problems, fmt.Sprintf("%s:%d: %s", path, n, p))
		}
		f.lines = append(f.lines, n)
	}
	if err := sc.Err(); err != nil {
		return nil, &exitError{code: exitInput, msg: fmt.Sprintf("read %s: %v", path, err)}
	}
	if len(problems) > 0 {
		more := ""
		if len(problems) > 5 {
			more = fmt.Sprintf("\n  … and %d more", len(problems)-5)
			problems = problems[:5]
		}
		return nil, &exitError{code: exitInput, msg: fmt.Sprintf(
			"%s is not Gemini Batch API JSONL (one {\"key\": ..., \"request\": {...}} per line):\n  %s%s",
			path, strings.Join(problems, "\n  "), more)}
	}
	if len(f.lines) == 0 {
		return nil, &exitError{code: exitInput, msg: fmt.Sprintf("%s holds no requests", path)}
	}
	f.requests = len(f.lines)
	return f, nil
}

// readJSONJob recognises the JSON job format: the whole file is one JSON
// object with a "requests" member. ok is false for anything else (JSONL is
// tried next); err reports a JSON job whose requests are malformed.
func readJSONJob(path string, data []byte) (f *jobFile, ok bool, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var top map[string]json.RawMessage
	if dec.Decode(&top) != nil || dec.More() {
		return nil, false, nil
	}
	raw, has := top["requests"]
	if !has {
		return nil, false, nil
	}
	bad := func(format string, args ...any) (*jobFile, bool, error) {
		return nil, true, &exitError{code: exitInput, msg: fmt.Sprintf("%s: %s (the JSON job format: {\"requests\": [{\"key\": ..., \"request\": {...}}, ...]})", path, fmt.Sprintf(format, args...))}
	}
	var reqs []json.RawMessage
	if err := json.Unmarshal(raw, &reqs); err != nil {
		return bad(`"requests" must be an array of objects`)
	}
	if len(reqs) == 0 {
		return bad(`"requests" is empty`)
	}
	f = &jobFile{data: data, isJSON: true, requests: len(reqs)}
	for _, name := range []string{"job_id", "model"} {
		if v, has := top[name]; has {
			var str string
			if json.Unmarshal(v, &str) != nil {
				return bad("%q must be a string", name)
			}
			if name == "job_id" {
				f.jobID = str
			} else {
				f.model = str
			}
		}
	}
	seen := map[string]int{}
	var problems []string
	for i, r := range reqs {
		if p := checkLine(r, seen, i, "at requests[%d]"); p != "" {
			problems = append(problems, fmt.Sprintf("requests[%d]: %s", i, p))
		}
	}
	if len(problems) > 0 {
		if len(problems) > 5 {
			problems = append(problems[:5], fmt.Sprintf("… and %d more", len(problems)-5))
		}
		return nil, true, &exitError{code: exitInput, msg: fmt.Sprintf("%s is a JSON job with bad requests:\n  %s", path, strings.Join(problems, "\n  "))}
	}
	return f, true, nil
}

// checkLine checks one request object; n is its place, printed with
// where ("on line %d" or "at requests[%d]") in a message about a duplicate key.
func checkLine(line []byte, seen map[string]int, n int, where string) string {
	var l struct {
		Key     *string         `json:"key"`
		Request json.RawMessage `json:"request"`
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&l); err != nil {
		return fmt.Sprintf("not a JSON object: %v", err)
	}
	if dec.More() {
		return "more than one JSON value on the line"
	}
	switch {
	case l.Key == nil:
		return `missing "key"`
	case *l.Key == "":
		return `empty "key"`
	case len(l.Request) == 0 || l.Request[0] != '{':
		return `"request" must be a JSON object (a GenerateContentRequest)`
	}
	if prev, ok := seen[*l.Key]; ok {
		return fmt.Sprintf("duplicate key %q (first "+where+")", *l.Key, prev)
	}
	seen[*l.Key] = n
	return ""
}

// newJobID returns a fresh job id ([A-Za-z0-9_-], as ingest requires) named
// after the file, so a retried submission reuses it and stays idempotent.
func newJobID(path string) string {
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	base = regexp.MustCompile(`[^A-Za-z0-9_-]+`).ReplaceAllString(base, "-")
	if len(base) > 32 {
		base = base[:32]
	}
	b := make([]byte, 4)
	rand.Read(b)
	return strings.Trim(base+"-"+time.Now().UTC().Format("20060102-150405")+"-"+hex.EncodeToString(b), "-")
}

func cmdSubmit(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("submit", "submit FILE [--url URL] [--model M] [--job-id ID] [--service-tier T [--deadline D]] [--wait] [-o results.jsonl]\n\nFILE is a Gemini Batch API JSONL file, or a job in the JSON format of POST /v1/jobs\n({\"job_id\": ..., \"model\": ..., \"requests\": [{\"key\": ..., \"request\": {...}}]}).", e)
	urlF := urlFlag(fs, e)
	model := fs.String("model", e.getenv("GEMQ_MODEL"), "Gemini model for every request (default $GEMQ_MODEL; empty: ingest's default)")
	jobID := fs.String("job-id", "", "job id, [A-Za-z0-9_-]{1,64} (default: FILE-TIMESTAMP-RANDOM); resubmitting the same id and content is a no-op")
	wait := fs.Bool("wait", false, "wait until every task has finished, showing progress")
	out := fs.String("o", "", "with --wait: write the results (Batch API JSONL) to this file")
	interval := fs.Duration("interval", time.Second, "with --wait: how often to poll the job's status")
	tf := addTierFlags(fs)
	pos, err := parse(fs, args, e, "FILE")
	if err != nil {
		return err
	}
	if err := requireURL(*urlF); err != nil {
		return err
	}
	if *out != "" && !*wait {
		return &exitError{code: exitUsage, msg: "-o needs --wait (or use `gemq results JOB -o FILE` later)"}
	}
	f, err := readJobFile(pos[0])
	if err != nil {
		return err
	}
	c, err := newClient(ctx, *urlF, e.getenv)
	if err != nil {
		return err
	}
	// A named job may exist already: ingest answers a resubmission of the
	// same content as it answered the first one, so ask first, to say
	// that nothing was sent again.
	existed := false
	if *jobID != "" || f.jobID != "" {
		id := *jobID
		if id == "" {
			id = f.jobID
		}
		_, serr := c.status(ctx, id)
		existed = serr == nil
	} else {
		*jobID = newJobID(pos[0])
	}
	tier, deadline, err := tf.params(time.Now())
	if err != nil {
		return err
	}
	ans, err := c.submit(ctx, f, *model, *jobID, tier, deadline)
	if err != nil {
		if ae, ok := err.(*apiError); ok {
			if l := f.lineOf(ae.Field); l != "" {
				ae.Field += ", " + pos[0] + " " + l
			}
		}
		return err
	}
	fmt.Fprintln(e.stdout, ans.JobID)
	if existed {
		fmt.Fprintf(e.stderr, "gemq: job %s already existed with this content: nothing was sent again (%d request(s); `gemq status %s` shows where it is)\n", ans.JobID, ans.Accepted, ans.JobID)
	} else {
		fmt.Fprintf(e.stderr, "gemq: job %s accepted %d request(s)\n", ans.JobID, ans.Accepted)
	}
	if !*wait {
		return nil
	}
	st, err := waitJob(ctx, c, ans.JobID, *interval, e, nil)
	if err != nil {
		return err
	}
	if *out != "" {
		if err := writeAll(ctx, c, ans.JobID, *out, e); err != nil {
			return err
		}
	}
	return jobOutcome(st)
}

// writeAll writes the results of a job that is done, failing with
// exitIncomplete when the server says they are not all there.
func writeAll(ctx context.Context, c *client, jobID, path string, e env) error {
	info, err := writeResults(ctx, c, jobID, path, e)
	if err == nil && info.partial() {
		return &exitError{code: exitIncomplete, msg: fmt.Sprintf("the results of job %s are incomplete (state %q): %d written; fetch them again with gemq results %s", jobID, info.state, info.lines, jobID)}
	}
	return err
}

// jobOutcome is nil for a job without failed tasks, else exit code 1.
func jobOutcome(st jobStatus) error {
	if st.Counts.Failed > 0 {
		return &exitError{code: exitJobFailures, msg: fmt.Sprintf("job %s: %d of %d task(s) failed", st.JobID, st.Counts.Failed, st.Counts.Total)}
	}
	return nil
}

// waitJob polls the job until it is done, drawing progress on stderr.
// liveFn, when set, adds what gemq run knows beyond the status API
// (failures as they happen, reserved slots for the ETA).
func waitJob(ctx context.Context, c *client, jobID string, interval time.Duration, e env, liveFn func() *live) (jobStatus, error) {
	p := newProgress(e.stderr, e.stderrTTY, time.Now())
	defer p.finish()
	failures := 0
	var last jobStatus // the last status read, returned with an error
	for {
		st, err := c.status(ctx, jobID)
		switch {
		case err == nil:
			failures, last = 0, st
			var lv *live
			if liveFn != nil {
				lv = liveFn()
			}
			p.update(time.Now(), st.Counts, lv)
			if st.State == "done" || (st.Counts.Total > 0 && st.Counts.finished() >= st.Counts.Total) {
				return st, nil
			}
		case ctx.Err() != nil:
			return last, ctx.Err()
		default:
			// A deployed ingest may blip; give up after a minute of errors.
			failures++
			if failures*int(interval/time.Millisecond+1) > 60_000 || failures > 60 {
				return last, err
			}
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// jobClient parses a command line of one JOB argument and returns the
// client for the ingest URL and the job id.
func jobClient(ctx context.Context, fs *flag.FlagSet, url *string, args []string, e env) (*client, string, error) {
	pos, err := parse(fs, args, e, "JOB")
	if err != nil {
		return nil, "", err
	}
	if err := requireURL(*url); err != nil {
		return nil, "", err
	}
	c, err := newClient(ctx, *url, e.getenv)
	return c, pos[0], err
}

func cmdStatus(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("status", "status JOB [--url URL] [--json]", e)
	urlF := urlFlag(fs, e)
	asJSON := fs.Bool("json", false, "print the raw JSON status")
	c, jobID, err := jobClient(ctx, fs, urlF, args, e)
	if err != nil {
		return err
	}
	st, err := c.status(ctx, jobID)
	if err != nil {
		return err
	}
	if *asJSON {
		b, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintln(e.stdout, string(b))
	} else {
		printStatus(e.stdout, st)
	}
	if st.State == "state_lost" {
		return &exitError{code: exitStateLost, msg: "job " + st.JobID + ": " + st.StateLost}
	}
	if st.Counts.Failed > 0 {
		return &exitError{code: exitJobFailures}
	}
	return nil
}

func cmdCancel(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("cancel", "cancel JOB [--url URL] [--wait]\n\nCancels a job: its tasks that have not called Gemini yet end failed (CANCELLED) at their next\ndelivery; tasks calling Gemini now finish as they are. --wait waits until every task has ended.", e)
	urlF := urlFlag(fs, e)
	wait := fs.Bool("wait", false, "wait until every task of the job has ended")
	c, jobID, err := jobClient(ctx, fs, urlF, args, e)
	if err != nil {
		return err
	}
	st, err := c.cancel(ctx, jobID)
	if err != nil {
		return err
	}
	if *wait && st.State != "done" {
		if st, err = waitJob(ctx, c, jobID, time.Second, e, nil); err != nil {
			return err
		}
	}
	printStatus(e.stdout, st)
	return nil
}

func printStatus(w io.Writer, st jobStatus) {
	c := st.Counts
	fmt.Fprintf(w, "job       %s\n", st.JobID)
	fmt.Fprintf(w, "model     %s\n", st.Model)
	fmt.Fprintf(w, "state     %s\n", st.State)
	if st.CancelledAt != nil {
		fmt.Fprintf(w, "cancelled %s\n", st.CancelledAt.Local().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "tasks     %d total: %d succeeded, %d failed, %d running, %d waiting for quota, %d queued\n",
		c.Total, c.Succeeded, c.Failed, c.Running, c.Waiting, c.Queued)
	if !st.CreatedAt.IsZero() {
		fmt.Fprintf(w, "created   %s\n", st.CreatedAt.Local().Format(time.RFC3339))
	}
	if st.FinishedAt != nil {
		fmt.Fprintf(w, "finished  %s (%s)\n", st.FinishedAt.Local().Format(time.RFC3339), st.FinishedAt.Sub(st.CreatedAt).Round(time.Millisecond))
	}
	printTierAndCost(w, st)
}

func cmdResults(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("results", "results JOB [--url URL] [-o FILE] [--partial]\n\nWrites the job's results so far. While the job is still running that is only part of them:\ngemq says so on stderr and exits 7, unless --partial.", e)
	urlF := urlFlag(fs, e)
	out := fs.String("o", "", "write the results to FILE instead of stdout")
	partial := fs.Bool("partial", false, "accept the results of a job still running (exit 0 or 1, not 7)")
	pos, err := parse(fs, args, e, "JOB")
	if err != nil {
		return err
	}
	if err := requireURL(*urlF); err != nil {
		return err
	}
	c, err := newClient(ctx, *urlF, e.getenv)
	if err != nil {
		return err
	}
	info, err := writeResults(ctx, c, pos[0], *out, e)
	if err != nil {
		return err
	}
	if info.partial() {
		why := fmt.Sprintf("job %s is still running", pos[0])
		if info.state == "done" {
			why = fmt.Sprintf("the results of job %s ended early (the server said they are incomplete)", pos[0])
		}
		if !*partial {
			return &exitError{code: exitIncomplete, msg: fmt.Sprintf("%s: these %d result(s) are not all of them.\n  Wait (gemq status %s), or pass --partial to accept part of them.", why, info.lines, pos[0])}
		}
		fmt.Fprintf(e.stderr, "gemq: %s: %d result(s) so far (--partial)\n", why, info.lines)
	}
	if info.failed > 0 {
		return &exitError{code: exitJobFailures}
	}
	return nil
}

// writeResults streams a job's results to path ("" or "-": stdout), writing
// a file atomically (mode 0644, or the mode of the file it replaces), and
// reports the counts on stderr.
func writeResults(ctx context.Context, c *client, jobID, path string, e env) (resultsInfo, error) {
	if path == "" || path == "-" {
		info, err := c.results(ctx, jobID, e.stdout)
		if err == nil {
			fmt.Fprintf(e.stderr, "gemq: %d result(s), %d with an error\n", info.lines, info.failed)
		}
		return info, err
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return resultsInfo{}, &exitError{code: exitInput, msg: fmt.Sprintf("create results file: %v", err)}
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 1<<16)
	info, err := c.results(ctx, jobID, bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		// CreateTemp makes the file 0600; a results file is for reading.
		err = tmp.Chmod(mode)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return info, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return info, &exitError{code: exitInput, msg: fmt.Sprintf("write results file: %v", err)}
	}
	fmt.Fprintf(e.stderr, "gemq: wrote %d result(s) to %s (%d with an error)\n", info.lines, path, info.failed)
	return info, nil
}
