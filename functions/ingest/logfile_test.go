package ingest

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gemq-dev/gemq/internal/logging"
)

// TestFromEnvLogFile: with GEMQ_LOG_FILE ingest logs to that file, not to
// stdout; a file that cannot be opened is a setup error.
func TestFromEnvLogFile(t *testing.T) {
	t.Setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:1")
	path := filepath.Join(t.TempDir(), "gemq.log")
	env := map[string]string{
		"REDIS_ADDR":           "127.0.0.1:1",
		"GOOGLE_CLOUD_PROJECT": "p",
		"GEMQ_QUOTAS":          quotas,
		"GEMQ_LOG_FILE":        path,
	}
	var stdout syncBuffer
	s, err := fromEnv(t.Context(), func(k string) string { return env[k] }, &stdout)
	if err != nil {
		t.Fatalf("fromEnv: %v", err)
	}
	s.log.Info("another line")
	if got := readFile(t, path); strings.Count(got, "\n") != 2 || !strings.Contains(got, `"message":"ingest configured"`) ||
		!strings.Contains(got, `"message":"another line"`) {
		t.Errorf("log file:\n%s", got)
	}
	if stdout.b.Len() != 0 {
		t.Errorf("stdout written with GEMQ_LOG_FILE set: %s", stdout.b.String())
	}

	env["GEMQ_LOG_FILE"] = filepath.Join(t.TempDir(), "no-such-dir", "gemq.log")
	if _, err := fromEnv(t.Context(), func(k string) string { return env[k] }, &stdout); err == nil || !strings.Contains(err.Error(), "GEMQ_LOG_FILE") {
		t.Errorf("fromEnv with an unopenable GEMQ_LOG_FILE: %v, want an error naming it", err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestLogger(w io.Writer) *slog.Logger { return logging.New(w, slog.LevelDebug) }
