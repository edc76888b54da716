// Package logging builds slog loggers that write one JSON object per line in
// the shape Cloud Logging reads from a Cloud Run / Cloud Functions process's
// stdout: "severity" (DEBUG, INFO, WARNING, ERROR), "message", and "time".
//
// Callers attach job and task ids with the attribute names below so log
// queries work across both functions. Never log prompts, model outputs,
// request keys or API keys: only ids, counts, durations and error classes.
package logging

import (
	"context"
	"io"
	"log/slog"
	"strings"
)

// Attribute names shared by every gemq log line.
const (
	// JobID is the attribute holding a job id.
	JobID = "job_id"
	// TaskID is the attribute holding a task id.
	TaskID = "task_id"
)

// New returns a logger writing JSON lines to w at level and above, with the
// Cloud Logging field names: severity, message, time. It is safe for
// concurrent use (slog serialises writes to w).
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level:       level,
		ReplaceAttr: replace,
	}))
}

// ParseLevel maps "debug", "info", "warn"/"warning" and "error" (any case) to
// a slog.Level; ok is false for anything else, including "".
func ParseLevel(s string) (level slog.Level, ok bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warn", "warning":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	}
	return slog.LevelInfo, false
}

// Discard returns a logger that writes nothing, for tests and defaults.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// replace renames slog's top-level keys to Cloud Logging's and maps levels to
// its severities.
func replace(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.MessageKey:
		a.Key = "message"
	case slog.LevelKey:
		a.Key = "severity"
		a.Value = slog.StringValue(severity(a.Value.Any().(slog.Level)))
	}
	return a
}

func severity(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARNING"
	case l >= slog.LevelInfo:
		return "INFO"
	default:
		return "DEBUG"
	}
}

// context key for a request-scoped logger.
type ctxKey struct{}

// With returns ctx carrying l, for code below the handler to log with the
// handler's attributes (job id, task id).
func With(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, ctxKey{}, l)
}

// From returns the logger stored in ctx by With, or def when there is none.
func From(ctx context.Context, def *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(ctxKey{}).(*slog.Logger); ok && l != nil {
		return l
	}
	return def
}
