package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gemq-dev/gemq/internal/redistest"
)

// TestRunOnTheLocalStack runs `gemq run` for real: the whole stack in this
// process, a small job through ingest's HTTP API, the summary measured at
// the Gemini stand-in. One stack per process, so this is the only test here
// that starts one.
func TestRunOnTheLocalStack(t *testing.T) {
	rds := redistest.Start(t)
	var keys []string
	for i := range 40 {
		keys = append(keys, fmt.Sprintf("k%02d", i))
	}
	in := writeFile(t, "small.jsonl", jsonl(keys...))
	dir := t.TempDir()
	out := filepath.Join(dir, "results.jsonl")
	code, stdout, stderr := gemq(t, map[string]string{"REDIS_ADDR": rds.Addr},
		"run", "--file", in, "-o", out, "--dir", dir, "--minute", "1s", "--rpm", "15", "--tpm", "100000", "--latency", "fixed:200ms")
	if code != exitOK {
		log, _ := os.ReadFile(filepath.Join(dir, "gemq.log"))
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s\nlog tail:\n%s", code, stdout, stderr, tail(string(log), 3000))
	}
	for _, want := range []string{
		"tasks                 40 (40 succeeded, 0 failed)",
		"time scale            1 quota minute = 1s",
		"429s from Gemini      0 (quota 0, capacity 0); windows over the limit: 0",
		"Gemini calls          40 (1.00 per task; 0 duplicate)",
		"results               " + out,
		"full quota\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	for _, want := range []string{"submitted " + in, "waiting for quota", "100% 40/40", "wrote 40 result(s)",
		"gemq run: Redis        from REDIS_ADDR: " + rds.Addr, "gemq run: Pub/Sub      local    ", "gemq run: Gemini       local    "} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), `"response"`); n != 40 {
		t.Errorf("results file has %d responses, want 40", n)
	}
	if os.Stdout.Name() != "/dev/stdout" {
		t.Errorf("os.Stdout not restored: %s", os.Stdout.Name())
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
