package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run gemq as a child process (the test binary itself, see
// TestMain) and check, through /proc, that nothing it started outlives it:
// its redis-server is found by the --dir it was given (its working
// directory), which is unique per test. They rely on Linux's parent-death signal.

// TestMain runs the test binary as gemq when GEMQ_TEST_CHILD is set: "1"
// for plain gemq, "panic" for a gemq whose component panics on a goroutine
// once the stack is up.
func TestMain(m *testing.M) {
	switch os.Getenv("GEMQ_TEST_CHILD") {
	case "":
		os.Exit(m.Run())
	case "panic":
		e := env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
		e.afterStart = func() { go panic("test: a component panics") }
		os.Exit(mainCode(os.Args[1:], e))
	default:
		os.Exit(mainCode(os.Args[1:], env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}))
	}
}

// childEnv is the test's environment without anything that would point the
// stack elsewhere.
func childEnv(mode string, extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GEMINI_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GEMQ_QUOTAS", "GEMQ_QUOTAS_FILE", "PUBSUB_EMULATOR_HOST",
			"REDIS_ADDR", "GEMQ_CLOUDTASKS_ENDPOINT", "GEMQ_URL", "GEMQ_TEST_CHILD":
			continue
		}
		out = append(out, kv)
	}
	return append(append(out, "GEMQ_TEST_CHILD="+mode), extra...)
}

// child is a running gemq.
type child struct {
	cmd    *exec.Cmd
	dir    string
	stdout *bufio.Reader
	stderr *bytes.Buffer
}

// startChild starts gemq ARGS with a unique --dir for its log and Redis.
func startChild(t *testing.T, mode string, envExtra []string, args ...string) *child {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], append(args, "--dir", dir)...)
	cmd.Env = childEnv(mode, envExtra...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, dir: dir, stdout: bufio.NewReader(out), stderr: &bytes.Buffer{}}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		for _, pid := range processesWith(dir) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return c
}

// waitFor reads stdout until a line contains s (or fails after a minute).
func (c *child) waitFor(t *testing.T, s string) {
	t.Helper()
	found := make(chan error, 1)
	go func() {
		for {
			line, err := c.stdout.ReadString('\n')
			if strings.Contains(line, s) {
				found <- nil
				io.Copy(io.Discard, c.stdout)
				return
			}
			if err != nil {
				found <- err
				return
			}
		}
	}()
	select {
	case err := <-found:
		if err != nil {
			t.Fatalf("gemq ended before printing %q (%v); stderr:\n%s", s, err, c.stderr)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("gemq did not print %q in 90s; stderr:\n%s", s, c.stderr)
	}
}

// wait returns the child's exit code (128+n for a death by signal n).
func (c *child) wait(t *testing.T) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(60 * time.Second):
		t.Fatalf("gemq did not exit within 60s; stderr:\n%s", c.stderr)
		return -1
	}
}

// processesWith returns the pids of live processes whose command line
// contains s or whose working directory is s (zombies excluded: they hold
// nothing).
func processesWith(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		// redis-server rewrites its command line ("redis-server
		// 127.0.0.1:port"), but works in the --dir it was given.
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cwd, _ := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if !bytes.Contains(cmdline, []byte(s)) && cwd != s {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// redisOf returns the pid of the child's redis-server, failing when there
// is none (the checks below would then prove nothing).
func (c *child) redisOf(t *testing.T) int {
	t.Helper()
	pids := processesWith(c.dir)
	var redis []int
	for _, p := range pids {
		if p != c.cmd.Process.Pid {
			redis = append(redis, p)
		}
	}
	if len(redis) != 1 {
		t.Fatalf("want gemq's one redis-server (--dir %s), found pids %v", c.dir, redis)
	}
	return redis[0]
}

// noneLeft fails unless every process whose command line names the child's
// --dir is gone within 10s.
func (c *child) noneLeft(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := processesWith(c.dir)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes started by gemq survive it: %v", pids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var freeAddrs = []string{"--ingest-addr", "127.0.0.1:0", "--pubsub-addr", "127.0.0.1:0"}

// TestChildrenDieWithGemq: gemq dev killed by a signal (SIGKILL: no
// cleanup at all; a panic on a component's goroutine; SIGHUP, SIGPIPE,
// SIGTERM: an orderly stop) leaves no redis-server behind, and the orderly
// stops exit 128 + the signal.
func TestChildrenDieWithGemq(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode string
		sig  syscall.Signal // 0: none sent (the panic)
		code int            // -1: not checked
	}{
		{"SIGKILL", "1", syscall.SIGKILL, 128 + 9},
		{"SIGHUP", "1", syscall.SIGHUP, 129},
		{"SIGPIPE", "1", syscall.SIGPIPE, 141},
		{"SIGTERM", "1", syscall.SIGTERM, 143},
		{"Ctrl-C", "1", syscall.SIGINT, 0},
		// Go exits 2 on a goroutine's panic, with its stack trace.
		{"panic in a component", "panic", 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startChild(t, tc.mode, nil, append([]string{"dev"}, freeAddrs...)...)
			if tc.sig != 0 {
				c.waitFor(t, "the local stack is running")
				c.redisOf(t)
				c.cmd.Process.Signal(tc.sig)
			}
			code := c.wait(t)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, c.stderr)
			}
			// An orderly stop says so (Pdeathsig alone would also take
			// redis-server down, but skip gemq's own shutdown).
			if orderly := tc.sig != 0 && tc.sig != syscall.SIGKILL && tc.sig != syscall.SIGINT; orderly &&
				!strings.Contains(c.stderr.String(), "gemq dev: stopped by "+tc.sig.String()) {
				t.Errorf("stderr lacks %q:\n%s", "gemq dev: stopped by "+tc.sig.String(), c.stderr)
			}
			if tc.mode == "panic" && !strings.Contains(c.stderr.String(), "test: a component panics") {
				t.Errorf("stderr lacks the panic:\n%s", c.stderr)
			}
			c.noneLeft(t)
		})
	}
}

// TestStartFailuresLeaveNothing: gemq dev on a taken port exits 6 naming
// the port, the flag and what to do, and starts nothing; refused after
// Redis started (PUBSUB_EMULATOR_HOST unreachable), it leaves nothing.
func TestStartFailuresLeaveNothing(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().String()
	_, port, _ := net.SplitHostPort(taken)

	c := startChild(t, "1", nil, "dev", "--ingest-addr", "127.0.0.1:0", "--pubsub-addr", taken)
	if code := c.wait(t); code != exitStack {
		t.Errorf("exit %d, want %d", code, exitStack)
	}
	for _, want := range []string{"port " + port + " (Pub/Sub (pstest), --pubsub-addr " + taken + ") is already in use",
		"gcloud's Pub/Sub emulator", "--pubsub-addr 127.0.0.1:0 takes a free one"} {
		if !strings.Contains(c.stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, c.stderr)
		}
	}
	if strings.Contains(c.stderr.String(), "goroutine ") {
		t.Errorf("a stack trace:\n%s", c.stderr)
	}
	c.noneLeft(t)

	c = startChild(t, "1", []string{"PUBSUB_EMULATOR_HOST=" + taken}, append([]string{"dev"}, freeAddrs...)...)
	if code := c.wait(t); code != exitStack {
		t.Errorf("exit %d, want %d", code, exitStack)
	}
	if !strings.Contains(c.stderr.String(), "PUBSUB_EMULATOR_HOST="+taken) || !strings.Contains(c.stderr.String(), "unset PUBSUB_EMULATOR_HOST") {
		t.Errorf("stderr does not name PUBSUB_EMULATOR_HOST and what to do:\n%s", c.stderr)
	}
	c.noneLeft(t)

	// A dead REDIS_ADDR is named, without go-redis' own log lines.
	c = startChild(t, "1", []string{"REDIS_ADDR=" + deadAddr(t)}, append([]string{"dev"}, freeAddrs...)...)
	if code := c.wait(t); code != exitStack {
		t.Errorf("exit %d, want %d", code, exitStack)
	}
	if s := c.stderr.String(); !strings.Contains(s, "REDIS_ADDR=") || !strings.Contains(s, "unset REDIS_ADDR") || strings.Contains(s, "redis: ") {
		t.Errorf("stderr should name REDIS_ADDR and hold no go-redis log line:\n%s", s)
	}
	c.noneLeft(t)
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestRunShowsFailuresAsTheyHappen: gemq run against a "real" Gemini that
// cannot be reached (a key, and GOOGLE_GEMINI_BASE_URL on a dead port: the
// issue's no-network case) prints the transient errors as they happen,
// with their reason, instead of "waiting for quota"; --timeout then ends it
// with exit 7, naming what was not done.
func TestRunShowsFailuresAsTheyHappen(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	job := filepath.Join(t.TempDir(), "small.jsonl")
	os.WriteFile(job, []byte(jsonl("a", "b", "c")), 0o644)
	c := startChild(t, "1", []string{"GEMINI_API_KEY=not-a-key", "GOOGLE_GEMINI_BASE_URL=http://" + dead},
		"run", "--file", job, "-o", filepath.Join(t.TempDir(), "r.jsonl"), "--timeout", "20s")
	code := c.wait(t)
	stderr := c.stderr.String()
	for _, want := range []string{
		"gemq run: Gemini       from GEMINI_API_KEY: the real Gemini API",
		"gemq: transient: ", "(so far: 429s 0, transient errors ",
		"· transient errors ",
		"gave up after --timeout 20s: job small-",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if code != exitIncomplete {
		t.Errorf("exit %d, want %d", code, exitIncomplete)
	}
	if strings.Contains(stderr, "not-a-key") {
		t.Errorf("the key was printed:\n%s", stderr)
	}
	c.noneLeft(t)
}
