package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNew(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, slog.LevelDebug)
	l.Debug("d")
	l.Info("i", JobID, "j1")
	l.Warn("w", slog.Group("g", "level", "x"))
	l.Error("e", TaskID, "t1")
	var got []map[string]any
	dec := json.NewDecoder(&buf)
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		if _, ok := m["time"]; !ok {
			t.Errorf("line %v has no time", m)
		}
		delete(m, "time")
		got = append(got, m)
	}
	want := []map[string]any{
		{"severity": "DEBUG", "message": "d"},
		{"severity": "INFO", "message": "i", "job_id": "j1"},
		{"severity": "WARNING", "message": "w", "g": map[string]any{"level": "x"}},
		{"severity": "ERROR", "message": "e", "task_id": "t1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log lines (-want +got):\n%s", diff)
	}
}

func TestLevel(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, slog.LevelWarn).Info("hidden")
	if buf.Len() != 0 {
		t.Errorf("info logged at warn level: %s", buf.String())
	}
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "INFO": slog.LevelInfo, "warn": slog.LevelWarn, "Warning": slog.LevelWarn, "error": slog.LevelError} {
		if got, ok := ParseLevel(in); !ok || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v, true", in, got, ok, want)
		}
	}
	if _, ok := ParseLevel("loud"); ok {
		t.Error(`ParseLevel("loud") ok`)
	}
}

func TestContext(t *testing.T) {
	def, l := Discard(), New(&bytes.Buffer{}, slog.LevelInfo)
	if From(t.Context(), def) != def {
		t.Error("From without a logger did not return the default")
	}
	if From(With(t.Context(), l), def) != l {
		t.Error("From did not return the stored logger")
	}
}
