package storagesub

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/storage"

	"github.com/gemq-dev/gemq/internal/queue"
)

// Local defaults: the names Terraform gives (terraform/pubsub.tf), with the
// local project's bucket.
const (
	DefaultBucket         = "gemq-local-results"
	DefaultSubscriptionID = "gemq-results-storage"
	DefaultPrefix         = "results/"
	DefaultSuffix         = ".jsonl"
	// TerraformDatetimeFormat is terraform/pubsub.tf's filename_datetime_format.
	TerraformDatetimeFormat = "YYYY-MM-DD/hh_mm_ssZ"
	// TerraformMaxBytes is terraform/pubsub.tf's max_bytes.
	TerraformMaxBytes = 100_000_000
)

// LocalOptions configure StartLocal.
type LocalOptions struct {
	// Addr is the stand-in's listen address ("" or "127.0.0.1:0": a free port).
	Addr string
	// Bucket (default DefaultBucket) and SubscriptionID (default
	// DefaultSubscriptionID) are created; Topic (the results topic id) must
	// exist in the Pub/Sub client's project.
	Bucket, SubscriptionID, Topic string
	// MaxDuration is the subscription's max_duration in this stack's time
	// (default 5 minutes, as Terraform sets it, scaled by Minute).
	MaxDuration time.Duration
	// Minute is how long a minute lasts here (time scaling; 0: real time).
	Minute time.Duration
	Log    *slog.Logger
}

// Local is a Cloud Storage stand-in with a Cloud Storage subscription of
// the results topic writing into it, configured as terraform/pubsub.tf
// configures the real one (prefix, suffix, datetime format, max_bytes;
// max_duration scaled with the stack's time).
type Local struct {
	Storage *Storage
	Sub     *Subscription
	Bucket  string
	Config  Config
	client  *storage.Client
	cancel  context.CancelFunc
	done    chan error
}

// StartLocal starts the stand-in and the subscription on ps. Close stops
// both, writing the open batch first.
func StartLocal(ctx context.Context, ps *pubsub.Client, o LocalOptions) (_ *Local, err error) {
	if o.Bucket == "" {
		o.Bucket = DefaultBucket
	}
	if o.SubscriptionID == "" {
		o.SubscriptionID = DefaultSubscriptionID
	}
	minute := o.Minute
	if minute <= 0 {
		minute = time.Minute
	}
	if o.MaxDuration <= 0 {
		o.MaxDuration = 5 * minute
	}
	st, err := StartStorage(o.Addr, o.Bucket)
	if err != nil {
		return nil, err
	}
	l := &Local{Storage: st, Bucket: o.Bucket}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	if l.client, err = st.Client(ctx); err != nil {
		return nil, err
	}
	// Pub/Sub requires max_duration within the ack deadline (10 s to 600 s).
	ack := min(max(o.MaxDuration, 10*time.Second), 600*time.Second)
	if err := queue.EnsureSubscription(ctx, ps, o.SubscriptionID, o.Topic, queue.SubscriptionOptions{AckDeadline: ack}); err != nil {
		return nil, err
	}
	l.Config = Config{Bucket: o.Bucket, FilenamePrefix: DefaultPrefix, FilenameSuffix: DefaultSuffix,
		FilenameDatetimeFormat: TerraformDatetimeFormat, MaxDuration: o.MaxDuration, MaxBytes: TerraformMaxBytes}
	if l.Sub, err = New(ctx, ps, o.SubscriptionID, l.client, l.Config, Options{Minute: o.Minute, Log: o.Log}); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel, l.done = cancel, make(chan error, 1)
	go func() { l.done <- l.Sub.Run(runCtx) }()
	return l, nil
}

// Env is what the functions need to read the results back and to let
// answers leave Redis grace after publishing (GEMQ_RESULT_BODY_GRACE; 0:
// config's default of three max_durations), plus STORAGE_EMULATOR_HOST for
// the storage client.
func (l *Local) Env(grace time.Duration) map[string]string {
	env := map[string]string{
		"STORAGE_EMULATOR_HOST":        l.Storage.Host,
		"GEMQ_RESULTS_BUCKET":          l.Bucket,
		"GEMQ_RESULTS_PREFIX":          l.Config.FilenamePrefix,
		"GEMQ_RESULTS_DATETIME_FORMAT": l.Config.FilenameDatetimeFormat,
		"GEMQ_RESULTS_MAX_DURATION":    l.Config.MaxDuration.String(),
	}
	if grace > 0 {
		env["GEMQ_RESULT_BODY_GRACE"] = grace.String()
	}
	return env
}

// Where describes the stand-in for a list of a stack's parts.
func (l *Local) Where() string {
	return fmt.Sprintf("%s (fake-gcs-server, in this process; bucket %s, written by a Cloud Storage subscription of the results topic every %v)",
		l.Storage.Host, l.Bucket, l.Config.MaxDuration)
}

// Close stops the subscription (writing its open batch) and the stand-in.
func (l *Local) Close() {
	if l == nil {
		return
	}
	if l.cancel != nil {
		l.cancel()
		<-l.done
	}
	if l.client != nil {
		l.client.Close()
	}
	l.Storage.Stop()
}
