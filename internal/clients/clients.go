// Package clients opens what both functions share from their configuration:
// the log, the Redis client and the Pub/Sub client, closing what it opened
// when a later one fails.
package clients

import (
	"context"
	"io"
	"log/slog"
	"os"

	"cloud.google.com/go/pubsub/v2"
	"github.com/redis/go-redis/v9"

	"github.com/gemq-dev/gemq/internal/config"
	"github.com/gemq-dev/gemq/internal/logging"
	"github.com/gemq-dev/gemq/internal/queue"
)

// Base is a function's shared clients. None connects before first use.
type Base struct {
	// Log writes JSON lines to stdout, or to GEMQ_LOG_FILE when set.
	Log *slog.Logger
	// Redis is the store's and the limiter's client.
	Redis *redis.Client
	// PubSub publishes tasks, results and dead letters.
	PubSub  *pubsub.Client
	logFile io.Closer
}

// Open opens the log (stdout unless cfg.LogFile), the Redis client and the
// Pub/Sub client for cfg. On error nothing stays open.
func Open(ctx context.Context, cfg config.Config, stdout io.Writer) (*Base, error) {
	logw, err := config.OpenLog(cfg.LogFile, stdout)
	if err != nil {
		return nil, err
	}
	b := &Base{Log: logging.New(logw, cfg.LogLevel), logFile: logw}
	if b.Redis, err = config.NewRedis(cfg); err != nil {
		b.Close()
		return nil, err
	}
	if b.PubSub, err = queue.NewPubSubClient(ctx, cfg.Project); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// Close closes whatever Open opened (the log file last, so failures can be
// logged until then).
func (b *Base) Close() {
	if b.PubSub != nil {
		b.PubSub.Close()
	}
	if b.Redis != nil {
		b.Redis.Close()
	}
	b.logFile.Close()
}

// ReportSetupFailure logs, as an ERROR line "<function> setup failed", that
// a function could not be built, where its log would have gone
// (config.SetupLog: GEMQ_LOG_FILE read from the environment, else stdout).
func ReportSetupFailure(function string, err error) {
	lw := config.SetupLog(os.Getenv, os.Stdout)
	defer lw.Close()
	logging.New(lw, slog.LevelInfo).Error(function+" setup failed", "error", err.Error())
}
