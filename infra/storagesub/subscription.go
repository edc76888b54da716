package storagesub

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/storage"

	"github.com/gemq-dev/gemq/internal/archive"
)

// Config is a Cloud Storage subscription's cloud_storage_config, with the
// meaning Pub/Sub gives each field (google.pubsub.v1.CloudStorageConfig,
// https://cloud.google.com/pubsub/docs/cloudstorage and
// https://cloud.google.com/pubsub/docs/create-cloudstorage-subscription):
//   - text format: "message payloads will be written to files as raw text,
//     separated by a newline" (TextConfig); only the data, no attributes;
//   - messages are written in batches, one object per batch; a new object is
//     started when max_duration has elapsed since the current one was
//     created ("Min 1 minute, max 10 minutes, default 5 minutes. May not
//     exceed the subscription's acknowledgment deadline"), when max_bytes
//     would be exceeded ("Min 1 KB, max 10 GiB. The max_bytes limit may be
//     exceeded in cases where messages are larger than the limit"), or at
//     max_messages ("Min 1000 messages");
//   - an object is named filename_prefix + the batch's start time in
//     filename_datetime_format (UTC) + "_" + a UUID + filename_suffix; the
//     suffix "must not end in /";
//   - Pub/Sub acknowledges a batch's messages only once the object holding
//     them is written (the write returned OK); a failed write leaves them
//     unacknowledged, so they are delivered again and written to a later
//     object (at least once: a message can appear in two objects).
type Config struct {
	Bucket                 string
	FilenamePrefix         string
	FilenameSuffix         string
	FilenameDatetimeFormat string        // "" → DefaultDatetimeFormat
	MaxDuration            time.Duration // 0 → 5 minutes
	MaxBytes               int64         // 0 → no byte limit
	MaxMessages            int64         // 0 → no message limit
}

// DefaultDatetimeFormat is the datetime format of a subscription that sets
// none.
const DefaultDatetimeFormat = "YYYY-MM-DDThh:mm:ssZ"

// Options tune a Subscription beyond what Pub/Sub lets a user configure.
type Options struct {
	// Minute is how long a minute lasts in this stack (time scaling, as
	// infra/stack's Options.Minute); 0 means a real minute. MaxDuration is
	// checked against the service's bounds after unscaling.
	Minute time.Duration
	// Log receives a line per object written and per failed write.
	Log *slog.Logger
}

// Stats count what a Subscription did.
type Stats struct {
	Objects       int   // objects written
	Messages      int64 // messages written (and then acknowledged)
	FailedWrites  int   // writes that failed (their messages were nacked)
	LastObject    string
	LastWrittenAt time.Time
}

// Subscription writes the messages of one Pub/Sub subscription into a
// bucket as a Cloud Storage subscription does. Start it with Run.
type Subscription struct {
	cfg     Config
	opts    Options
	client  *pubsub.Client
	subName string
	bucket  *storage.BucketHandle

	mu      sync.Mutex
	batch   []*pubsubpb.ReceivedMessage
	bytes   int64
	started time.Time
	timer   *time.Timer
	gen     int // numbers batches, so that a batch's timer writes only that batch
	stats   Stats
	// writing serialises writes so that objects keep the order of batches.
	writing sync.Mutex
}

// Validate checks cfg as Pub/Sub checks a cloud_storage_config, with
// durations in a minute of length minute (0: real time), and ackDeadline
// the subscription's acknowledgment deadline (0: not checked).
func (cfg Config) Validate(minute, ackDeadline time.Duration) error {
	if minute <= 0 {
		minute = time.Minute
	}
	unscaled := func(d time.Duration) time.Duration {
		return time.Duration(float64(d) * float64(time.Minute) / float64(minute))
	}
	var errs []error
	if cfg.Bucket == "" {
		errs = append(errs, errors.New("bucket: required"))
	}
	if strings.HasSuffix(cfg.FilenameSuffix, "/") {
		errs = append(errs, errors.New(`filename_suffix: must not end in "/"`))
	}
	if d := unscaled(cfg.MaxDuration); cfg.MaxDuration != 0 && (d < time.Minute || d > 10*time.Minute) {
		errs = append(errs, fmt.Errorf("max_duration: %v is outside 1 to 10 minutes", d))
	}
	if ackDeadline > 0 && cfg.MaxDuration > ackDeadline {
		errs = append(errs, fmt.Errorf("max_duration: %v exceeds the subscription's acknowledgment deadline %v", cfg.MaxDuration, ackDeadline))
	}
	if cfg.MaxBytes != 0 && (cfg.MaxBytes < 1000 || cfg.MaxBytes > 10<<30) {
		errs = append(errs, fmt.Errorf("max_bytes: %d is outside 1 KB to 10 GiB", cfg.MaxBytes))
	}
	if cfg.MaxMessages != 0 && cfg.MaxMessages < 1000 {
		errs = append(errs, fmt.Errorf("max_messages: %d is below 1000", cfg.MaxMessages))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cloud storage subscription: %w", err)
	}
	return nil
}

// New returns a Subscription that will pull subscriptionID (of ps's
// project) and write into the bucket of client named cfg.Bucket, after
// checking cfg against the subscription as Pub/Sub does (max_duration
// within the acknowledgment deadline: messages stay unacknowledged while
// their batch is open).
func New(ctx context.Context, ps *pubsub.Client, subscriptionID string, client *storage.Client, cfg Config, opts Options) (*Subscription, error) {
	if cfg.FilenameDatetimeFormat == "" {
		cfg.FilenameDatetimeFormat = DefaultDatetimeFormat
	}
	if cfg.MaxDuration == 0 {
		cfg.MaxDuration = 5 * time.Minute
		if opts.Minute > 0 {
			cfg.MaxDuration = 5 * opts.Minute
		}
	}
	name := "projects/" + ps.Project() + "/subscriptions/" + subscriptionID
	sub, err := ps.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: name})
	if err != nil {
		return nil, fmt.Errorf("cloud storage subscription: pubsub get subscription %s: %w", subscriptionID, err)
	}
	if err := cfg.Validate(opts.Minute, time.Duration(sub.GetAckDeadlineSeconds())*time.Second); err != nil {
		return nil, err
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Subscription{cfg: cfg, opts: opts, client: ps, subName: name, bucket: client.Bucket(cfg.Bucket)}, nil
}

// pollInterval is how long Run waits after an empty pull (a results file
// waits for max_duration anyway; an idle stack should not spin).
const pollInterval = 100 * time.Millisecond

// Run pulls messages until ctx ends, then writes what the open batch holds
// (so that a stopping stack leaves its results in the bucket). It returns
// nil when ctx ended, or the error of a pull that kept failing.
func (s *Subscription) Run(ctx context.Context) error {
	defer s.flush(context.WithoutCancel(ctx), -1)
	failures := 0
	for ctx.Err() == nil {
		resp, err := s.client.SubscriptionAdminClient.Pull(ctx, &pubsubpb.PullRequest{
			Subscription:      s.subName,
			MaxMessages:       1000,
			ReturnImmediately: true, //nolint:staticcheck // the emulators answer at once; we poll ourselves
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if failures++; failures > 50 {
				return fmt.Errorf("cloud storage subscription: pubsub pull: %w", err)
			}
			s.opts.Log.Warn("cloud storage subscription: pull failed", "error", err.Error())
			sleep(ctx, time.Duration(failures)*100*time.Millisecond)
			continue
		}
		failures = 0
		msgs := resp.GetReceivedMessages()
		for _, m := range msgs {
			s.add(m)
		}
		if len(msgs) == 0 {
			sleep(ctx, pollInterval)
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Stats returns the counts so far.
func (s *Subscription) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// add puts m in the open batch, first writing the batch when m would take
// it over max_bytes, or m brings it to max_messages.
func (s *Subscription) add(m *pubsubpb.ReceivedMessage) {
	size := int64(len(m.GetMessage().GetData())) + 1
	s.mu.Lock()
	if len(s.batch) > 0 && s.cfg.MaxBytes > 0 && s.bytes+size > s.cfg.MaxBytes {
		s.mu.Unlock()
		s.flush(context.Background(), -1)
		s.mu.Lock()
	}
	if len(s.batch) == 0 {
		s.gen++
		gen := s.gen
		s.started = time.Now()
		s.timer = time.AfterFunc(s.cfg.MaxDuration, func() { s.flush(context.Background(), gen) })
	}
	s.batch = append(s.batch, m)
	s.bytes += size
	full := s.cfg.MaxMessages > 0 && int64(len(s.batch)) >= s.cfg.MaxMessages
	s.mu.Unlock()
	if full {
		s.flush(context.Background(), -1)
	}
}

// flush writes the open batch as one object, then acknowledges its
// messages; a failed write nacks them (they come back, into a later batch).
// gen >= 0 writes the batch only if it is still batch number gen (its
// max_duration timer fired).
func (s *Subscription) flush(ctx context.Context, gen int) {
	s.writing.Lock()
	defer s.writing.Unlock()
	s.mu.Lock()
	if gen >= 0 && gen != s.gen {
		s.mu.Unlock()
		return
	}
	batch, started := s.batch, s.started
	s.batch, s.bytes = nil, 0
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	var buf bytes.Buffer
	ackIDs := make([]string, len(batch))
	for i, m := range batch {
		buf.Write(m.GetMessage().GetData())
		buf.WriteByte('\n')
		ackIDs[i] = m.GetAckId()
	}
	name := s.cfg.FilenamePrefix + archive.FormatDatetime(s.cfg.FilenameDatetimeFormat, started) + "_" + uuid() + s.cfg.FilenameSuffix
	err := s.write(ctx, name, buf.Bytes())
	s.mu.Lock()
	if err != nil {
		s.stats.FailedWrites++
	} else {
		s.stats.Objects++
		s.stats.Messages += int64(len(batch))
		s.stats.LastObject, s.stats.LastWrittenAt = name, time.Now()
	}
	s.mu.Unlock()
	if err != nil {
		s.opts.Log.Warn("cloud storage subscription: write failed; messages nacked", "object", name,
			"messages", len(batch), "error", err.Error())
		s.settle(ctx, ackIDs, false)
		return
	}
	s.opts.Log.Info("cloud storage subscription: object written", "object", name, "messages", len(batch), "bytes", buf.Len())
	s.settle(ctx, ackIDs, true)
}

// settle acknowledges (ack) or nacks (a zero ack deadline: redeliver now)
// a batch's messages, 1000 ids a request.
func (s *Subscription) settle(ctx context.Context, ackIDs []string, ack bool) {
	for start := 0; start < len(ackIDs); start += 1000 {
		ids := ackIDs[start:min(start+1000, len(ackIDs))]
		var err error
		if ack {
			err = s.client.SubscriptionAdminClient.Acknowledge(ctx, &pubsubpb.AcknowledgeRequest{Subscription: s.subName, AckIds: ids})
		} else {
			err = s.client.SubscriptionAdminClient.ModifyAckDeadline(ctx, &pubsubpb.ModifyAckDeadlineRequest{
				Subscription: s.subName, AckIds: ids, AckDeadlineSeconds: 0})
		}
		if err != nil {
			// Unacknowledged messages come back after their deadline and
			// are written again (at least once, like the service).
			s.opts.Log.Warn("cloud storage subscription: settle failed", "ack", ack, "error", err.Error())
		}
	}
}

func (s *Subscription) write(ctx context.Context, name string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	w := s.bucket.Object(name).If(storage.Conditions{DoesNotExist: true}).NewWriter(ctx)
	w.ContentType = "text/plain"
	if _, err := w.Write(data); err != nil {
		w.Close()
		return fmt.Errorf("storage write %s: %w", name, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("storage write %s: %w", name, err)
	}
	return nil
}

// uuid returns a random (version 4) UUID.
func uuid() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
