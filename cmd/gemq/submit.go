package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
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

// jobFile is a Batch-API JSONL file checked locally before submitting.
type jobFile struct {
	data  []byte
	lines []int // lines[i] is the file line of request i
}

var requestIndex = regexp.MustCompile(`^requests\[(\d+)\]`)

// lineOf rewrites an ingest field path "requests[3].request…" into the file
// line it came from.
func (f *jobFile) lineOf(field string) string {
	m := requestIndex.FindStringSubmatch(field)
	if m == nil {
		return ""
	}
	i, _ := strconv.Atoi(m[1])
	if i < 0 || i >= len(f.lines) {
		return ""
	}
	return fmt.Sprintf("line %d", f.lines[i])
}

// readJobFile reads and checks a Batch-API JSONL file: one JSON object per
// non-blank line with a non-empty string "key" (unique) and an object
// "request". Ingest checks the rest (and names the field).
func readJobFile(path string) (*jobFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &exitError{code: exitInput, msg: fmt.Sprintf("read job file: %v", err)}
	}
	if !utf8.Valid(data) {
		return nil, &exitError{code: exitInput, msg: fmt.Sprintf("%s is not UTF-8 text", path)}
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
		if p := checkLine(line, seen, n); p != "" {
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
	return f, nil
}

func checkLine(line []byte, seen map[string]int, n int) string {
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
		return fmt.Sprintf("duplicate key %q (first on line %d)", *l.Key, prev)
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
	fs := newFlagSet("submit", "submit FILE.jsonl [--url URL] [--model M] [--job-id ID] [--wait] [-o results.jsonl]", e)
	urlF := urlFlag(fs, e)
	model := fs.String("model", e.getenv("GEMQ_MODEL"), "Gemini model for every request (default $GEMQ_MODEL; empty: ingest's default)")
	jobID := fs.String("job-id", "", "job id, [A-Za-z0-9_-]{1,64} (default: FILE-TIMESTAMP-RANDOM); resubmitting the same id and content is a no-op")
	wait := fs.Bool("wait", false, "wait until every task has finished, showing progress")
	out := fs.String("o", "", "with --wait: write the results (Batch API JSONL) to this file")
	interval := fs.Duration("interval", time.Second, "with --wait: how often to poll the job's status")
	pos, err := parse(fs, args, e, 1)
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
	if *jobID == "" {
		*jobID = newJobID(pos[0])
	}
	ans, err := c.submit(ctx, f.data, *model, *jobID)
	if err != nil {
		if ae, ok := err.(*apiError); ok {
			if l := f.lineOf(ae.Field); l != "" {
				ae.Field += ", " + pos[0] + " " + l
			}
		}
		return err
	}
	fmt.Fprintln(e.stdout, ans.JobID)
	fmt.Fprintf(e.stderr, "gemq: job %s accepted %d request(s)\n", ans.JobID, ans.Accepted)
	if !*wait {
		return nil
	}
	st, err := waitJob(ctx, c, ans.JobID, *interval, e, nil)
	if err != nil {
		return err
	}
	if *out != "" {
		if _, _, err := writeResults(ctx, c, ans.JobID, *out, e); err != nil {
			return err
		}
	}
	return jobOutcome(st)
}

// jobOutcome is nil for a job without failed tasks, else exit code 1.
func jobOutcome(st jobStatus) error {
	if st.Counts.Failed > 0 {
		return &exitError{code: exitJobFailures, msg: fmt.Sprintf("job %s: %d of %d task(s) failed", st.JobID, st.Counts.Failed, st.Counts.Total)}
	}
	return nil
}

// waitJob polls the job until it is done, drawing progress on stderr. extra,
// when set, adds live figures to the progress line (gemq run's 429s, rates).
func waitJob(ctx context.Context, c *client, jobID string, interval time.Duration, e env, extra func() string) (jobStatus, error) {
	p := newProgress(e.stderr, e.stderrTTY, time.Now())
	failures := 0
	for {
		st, err := c.status(ctx, jobID)
		switch {
		case err == nil:
			failures = 0
			p.update(time.Now(), st.Counts, extra)
			if st.State == "done" || (st.Counts.Total > 0 && st.Counts.finished() >= st.Counts.Total) {
				p.finish(time.Now(), st.Counts)
				return st, nil
			}
		case ctx.Err() != nil:
			p.finish(time.Now(), jobCounts{})
			return st, ctx.Err()
		default:
			// A deployed ingest may blip; give up after a minute of errors.
			failures++
			if failures*int(interval/time.Millisecond+1) > 60_000 || failures > 60 {
				return st, err
			}
		}
		select {
		case <-ctx.Done():
			p.finish(time.Now(), jobCounts{})
			return st, ctx.Err()
		case <-time.After(interval):
		}
	}
}

func cmdStatus(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("status", "status JOB [--url URL] [--json]", e)
	urlF := urlFlag(fs, e)
	asJSON := fs.Bool("json", false, "print the raw JSON status")
	pos, err := parse(fs, args, e, 1)
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
	st, err := c.status(ctx, pos[0])
	if err != nil {
		return err
	}
	if *asJSON {
		b, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintln(e.stdout, string(b))
	} else {
		printStatus(e.stdout, st)
	}
	if st.Counts.Failed > 0 {
		return &exitError{code: exitJobFailures}
	}
	return nil
}

func printStatus(w io.Writer, st jobStatus) {
	c := st.Counts
	fmt.Fprintf(w, "job       %s\n", st.JobID)
	fmt.Fprintf(w, "model     %s\n", st.Model)
	fmt.Fprintf(w, "state     %s\n", st.State)
	fmt.Fprintf(w, "tasks     %d total: %d succeeded, %d failed, %d running, %d waiting for quota, %d queued\n",
		c.Total, c.Succeeded, c.Failed, c.Running, c.Waiting, c.Queued)
	if !st.CreatedAt.IsZero() {
		fmt.Fprintf(w, "created   %s\n", st.CreatedAt.Local().Format(time.RFC3339))
	}
	if st.FinishedAt != nil {
		fmt.Fprintf(w, "finished  %s (%s)\n", st.FinishedAt.Local().Format(time.RFC3339), st.FinishedAt.Sub(st.CreatedAt).Round(time.Millisecond))
	}
}

func cmdResults(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("results", "results JOB [--url URL] [-o FILE]", e)
	urlF := urlFlag(fs, e)
	out := fs.String("o", "", "write the results to FILE instead of stdout")
	pos, err := parse(fs, args, e, 1)
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
	_, failed, err := writeResults(ctx, c, pos[0], *out, e)
	if err != nil {
		return err
	}
	if failed > 0 {
		return &exitError{code: exitJobFailures}
	}
	return nil
}

// writeResults streams a job's results to path ("" or "-": stdout), writing
// a file atomically, and reports the counts on stderr.
func writeResults(ctx context.Context, c *client, jobID, path string, e env) (lines, failed int, err error) {
	if path == "" || path == "-" {
		lines, failed, err = c.results(ctx, jobID, e.stdout)
		if err == nil {
			fmt.Fprintf(e.stderr, "gemq: %d result(s), %d with an error\n", lines, failed)
		}
		return lines, failed, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return 0, 0, &exitError{code: exitInput, msg: fmt.Sprintf("create results file: %v", err)}
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 1<<16)
	lines, failed, err = c.results(ctx, jobID, bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return lines, failed, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return lines, failed, &exitError{code: exitInput, msg: fmt.Sprintf("write results file: %v", err)}
	}
	fmt.Fprintf(e.stderr, "gemq: wrote %d result(s) to %s (%d with an error)\n", lines, path, failed)
	return lines, failed, nil
}
