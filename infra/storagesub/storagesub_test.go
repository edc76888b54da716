package storagesub_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/pstest"
	"cloud.google.com/go/storage"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gemq-dev/gemq/infra/storagesub"
	"github.com/gemq-dev/gemq/internal/queue"
)

const project = "p"

// pubsubPair starts pstest with topic "results" and pull subscription
// "results-storage", and returns a client.
func pubsubPair(t *testing.T) *pubsub.Client {
	t.Helper()
	srv := pstest.NewServer()
	t.Cleanup(func() { srv.Close() })
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c, err := pubsub.NewClient(context.Background(), project, option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	if err := queue.EnsureTopic(ctx, c, "results"); err != nil {
		t.Fatal(err)
	}
	if err := queue.EnsureSubscription(ctx, c, "results-storage", "results", queue.SubscriptionOptions{AckDeadline: 60 * time.Second}); err != nil {
		t.Fatal(err)
	}
	return c
}

func publish(t *testing.T, c *pubsub.Client, msgs []string) {
	t.Helper()
	p := queue.NewPublisher(c, "results", queue.OneDelay)
	defer p.Stop()
	qm := make([]queue.Message, len(msgs))
	for i, m := range msgs {
		qm[i] = queue.Message{Data: []byte(m)}
	}
	if err := p.Publish(context.Background(), qm); err != nil {
		t.Fatal(err)
	}
}

// objects returns every object of bucket: name → content.
func objects(t *testing.T, client *storage.Client, bucket string) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	it := client.Bucket(bucket).Objects(ctx, nil)
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		r, err := client.Bucket(bucket).Object(a.Name).NewReader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[a.Name] = string(b)
	}
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The subscription writes every message once, data only, a line each, into
// objects named prefix + start time + "_" + UUID + suffix, starting a new
// object at max_messages and after max_duration.
func TestWritesBatchesAsCloudStorageSubscription(t *testing.T) {
	ps := pubsubPair(t)
	_, client := storagesub.ForTest(t, "results-bucket")
	sub, err := storagesub.New(context.Background(), ps, "results-storage", client, storagesub.Config{
		Bucket: "results-bucket", FilenamePrefix: "results/", FilenameSuffix: ".jsonl",
		FilenameDatetimeFormat: "YYYY-MM-DD/hh_mm_ssZ", MaxDuration: 2 * time.Second, MaxMessages: 1000,
	}, storagesub.Options{Minute: time.Second}) // 2 scaled minutes
	if err != nil {
		t.Fatal(err)
	}
	// The messages wait in the subscription before it runs, so batches fill
	// as fast as pulls go, whatever the machine's load.
	before := time.Now().UTC()
	var msgs []string
	for i := range 2300 {
		msgs = append(msgs, fmt.Sprintf(`{"job_id":"j","key":"k%04d","response":{}}`, i))
	}
	publish(t, ps, msgs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- sub.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor(t, "2300 messages written", 20*time.Second, func() bool { return sub.Stats().Messages == 2300 })

	objs := objects(t, client, "results-bucket")
	nameRE := regexp.MustCompile(`^results/(\d{4}-\d{2}-\d{2}/\d{2}_\d{2}_\d{2})Z_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.jsonl$`)
	var lines []string
	var sizes []int
	for name, content := range objs {
		m := nameRE.FindStringSubmatch(name)
		if m == nil {
			t.Errorf("object name %q does not follow prefix + YYYY-MM-DD/hh_mm_ssZ + _UUID + suffix", name)
			continue
		}
		at, err := time.Parse("2006-01-02/15_04_05", m[1])
		if err != nil || at.Before(before.Truncate(time.Second)) || at.After(time.Now().UTC()) {
			t.Errorf("object %s: time %v not within the run (%v)", name, at, err)
		}
		if !strings.HasSuffix(content, "\n") {
			t.Errorf("object %s does not end its last message with a newline", name)
		}
		ls := strings.Split(strings.TrimSuffix(content, "\n"), "\n")
		sizes = append(sizes, len(ls))
		lines = append(lines, ls...)
	}
	sort.Strings(lines)
	if len(lines) != len(msgs) {
		t.Fatalf("%d lines written, want %d", len(lines), len(msgs))
	}
	for i := range msgs {
		if lines[i] != msgs[i] {
			t.Fatalf("line %d = %q, want %q", i, lines[i], msgs[i])
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(sizes)))
	if diff := cmp.Diff([]int{1000, 1000, 300}, sizes); diff != "" {
		t.Errorf("batch sizes (-want +got): %s: want two of max_messages, then the rest after max_duration", diff)
	}
	if took := sub.Stats().LastWrittenAt.Sub(start); took < 2*time.Second {
		t.Errorf("the last, partial batch was written %v after the start, before max_duration (2s)", took)
	}
}

// A message is acknowledged only once its object is written: while the
// bucket refuses writes (here: it does not exist), nothing is acked and
// nothing is lost; once writes succeed, every message lands.
func TestAcksOnlyAfterTheObjectIsWritten(t *testing.T) {
	ps := pubsubPair(t)
	_, client := storagesub.ForTest(t)
	sub, err := storagesub.New(context.Background(), ps, "results-storage", client, storagesub.Config{
		Bucket: "late-bucket", FilenamePrefix: "r/", MaxDuration: 100 * time.Millisecond,
	}, storagesub.Options{Minute: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	defer func() { cancel(); <-done }()

	publish(t, ps, []string{"a", "b", "c"})
	waitFor(t, "a failed write", 10*time.Second, func() bool { return sub.Stats().FailedWrites > 0 })
	if s := sub.Stats(); s.Messages != 0 || s.Objects != 0 {
		t.Fatalf("stats %+v after failed writes: want nothing written", s)
	}
	if err := client.Bucket("late-bucket").Create(context.Background(), project, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the three messages redelivered and written", 30*time.Second, func() bool { return sub.Stats().Messages >= 3 })
	var all bytes.Buffer
	for _, c := range objects(t, client, "late-bucket") {
		all.WriteString(c)
	}
	for _, m := range []string{"a\n", "b\n", "c\n"} {
		if !strings.Contains(all.String(), m) {
			t.Errorf("message %q missing from the bucket: %q", m, all.String())
		}
	}
}

func TestConfigValidatedAsPubSubDoes(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  storagesub.Config
		ack  time.Duration
		want string
	}{
		{"no bucket", storagesub.Config{}, 0, "bucket: required"},
		{"suffix ends in /", storagesub.Config{Bucket: "b", FilenameSuffix: "x/"}, 0, "must not end in"},
		{"max_duration too short", storagesub.Config{Bucket: "b", MaxDuration: 30 * time.Second}, 0, "outside 1 to 10 minutes"},
		{"max_duration too long", storagesub.Config{Bucket: "b", MaxDuration: 11 * time.Minute}, 0, "outside 1 to 10 minutes"},
		{"max_duration over the ack deadline", storagesub.Config{Bucket: "b", MaxDuration: 5 * time.Minute}, 10 * time.Second, "acknowledgment deadline"},
		{"max_bytes too small", storagesub.Config{Bucket: "b", MaxBytes: 999}, 0, "1 KB to 10 GiB"},
		{"max_messages too small", storagesub.Config{Bucket: "b", MaxMessages: 999}, 0, "below 1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate(0, tc.ack)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// What terraform/pubsub.tf configures is valid (with its ack deadline).
	tf := storagesub.Config{Bucket: "b", FilenamePrefix: "results/", FilenameSuffix: ".jsonl",
		FilenameDatetimeFormat: "YYYY-MM-DD/hh_mm_ssZ", MaxDuration: 300 * time.Second, MaxBytes: 100000000}
	if err := tf.Validate(0, 300*time.Second); err != nil {
		t.Errorf("Terraform's configuration: %v", err)
	}
}
