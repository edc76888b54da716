package worker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildLogsToLogFile builds the worker from the environment as the
// entry point does: with GEMQ_LOG_FILE its log lines are appended to that
// file; a file that cannot be opened is a setup error.
func TestBuildLogsToLogFile(t *testing.T) {
	t.Setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:1") // no credentials needed; nothing connects
	path := filepath.Join(t.TempDir(), "gemq.log")
	if err := os.WriteFile(path, []byte("earlier line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := workerEnv("GEMQ_LOG_FILE", path, "GEMQ_CLOUDTASKS_ENDPOINT", "127.0.0.1:1")
	h, err := build(t.Context(), env)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	h.log.Info("second line")
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(got)), "\n")
	if len(lines) != 3 || lines[0] != "earlier line" ||
		!strings.Contains(lines[1], `"message":"worker ready"`) || !strings.Contains(lines[2], `"message":"second line"`) {
		t.Errorf("log file:\n%s", got)
	}
	if strings.Contains(string(got), apiKey) {
		t.Errorf("API key in the log file:\n%s", got)
	}

	bad := filepath.Join(t.TempDir(), "no-such-dir", "gemq.log")
	if _, err := build(t.Context(), workerEnv("GEMQ_LOG_FILE", bad, "GEMQ_CLOUDTASKS_ENDPOINT", "127.0.0.1:1")); err == nil || !strings.Contains(err.Error(), "GEMQ_LOG_FILE") {
		t.Errorf("build with GEMQ_LOG_FILE=%s: %v, want an error naming GEMQ_LOG_FILE", bad, err)
	}
}
