package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/gemq-dev/gemq/infra/stack"
	"github.com/gemq-dev/gemq/internal/task"
)

// TestDLQReplay runs `gemq dlq replay` against a local stack (real
// redis-server, pstest, the worker): a dead-lettered task that never ran
// is replayed and completes once; a dead-lettered copy of a task that
// already has its result is replayed and changes nothing (no Gemini call,
// no second result); a message that is not a task stays in the
// dead-letter subscription, and replaying again replays nothing.
func TestDLQReplay(t *testing.T) {
	ctx := context.Background()
	s, err := stack.Start(ctx, stack.Options{Dir: t.TempDir(), Minute: 2 * time.Second, RPM: 60})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ps := s.PubSubClient()

	// A job that finishes normally.
	body := `{"key":"done","request":{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}}` + "\n"
	resp, err := http.Post(s.IngestURL+"/v1/jobs?job_id=dlq-done&model="+s.Model, "application/jsonl", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/jobs: %d", resp.StatusCode)
	}
	doneID := task.TaskID("dlq-done", "done")
	waitResults(t, ps, map[string]int{doneID: 1})

	envelope := func(job, key string) []byte {
		b, err := task.Encode(task.Envelope{V: task.Version, JobID: job, Key: key, Model: s.Model,
			Request: json.RawMessage(`{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}`)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	lostID := task.TaskID("dlq-lost", "lost")
	for _, data := range [][]byte{envelope("dlq-done", "done"), envelope("dlq-lost", "lost"), []byte("not a task")} {
		_, err := ps.TopicAdminClient.Publish(ctx, &pubsubpb.PublishRequest{
			Topic:    "projects/" + s.Project + "/topics/" + stack.DeadLetterTopic,
			Messages: []*pubsubpb.PubsubMessage{{Data: data, Attributes: map[string]string{"CloudPubSubDeadLetterSourceDeliveryCount": "5"}}},
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	getenv := func(k string) string {
		return map[string]string{"PUBSUB_EMULATOR_HOST": s.PubSubHost, "GOOGLE_CLOUD_PROJECT": s.Project}[k]
	}
	replay := func() string {
		var out, errb bytes.Buffer
		if code := runMain(ctx, []string{"dlq", "replay", "--idle", "1s"}, env{stdout: &out, stderr: &errb, getenv: getenv}); code != exitOK {
			t.Fatalf("gemq dlq replay: exit %d, stderr %s", code, errb.String())
		}
		return out.String()
	}
	out := replay()
	if !strings.HasPrefix(out, "replayed 2 message(s)") || !strings.Contains(out, "kept 1\n") || !strings.Contains(out, "not a task envelope") {
		t.Errorf("first replay printed %q, want 2 replayed and the non-task kept", out)
	}
	// The never-run task gets its one result; the finished one no other.
	waitResults(t, ps, map[string]int{lostID: 1})
	calls := map[string]int{}
	for _, e := range s.GeminiStandIn().Log() {
		if e.Method == "generateContent" {
			calls[e.TaskID]++
		}
	}
	if calls[doneID] != 1 || calls[lostID] != 1 {
		t.Errorf("Gemini calls: finished task %d, replayed task %d; want 1 and 1", calls[doneID], calls[lostID])
	}
	if out := replay(); !strings.HasPrefix(out, "replayed 0 message(s)") || !strings.Contains(out, "kept 1\n") {
		t.Errorf("second replay printed %q, want nothing replayed and the non-task still kept", out)
	}
	var usage bytes.Buffer
	if code := runMain(ctx, []string{"dlq", "purge"}, env{stdout: io.Discard, stderr: &usage, getenv: getenv}); code != exitUsage {
		t.Errorf("gemq dlq purge: exit %d, want %d", code, exitUsage)
	}
}

// waitResults reads the stack's results subscription until every task in
// want has its count of results, then a second more, and fails on any
// other count.
func waitResults(t *testing.T, ps *pubsub.Client, want map[string]int) {
	t.Helper()
	c := ps.SubscriptionAdminClient
	sub := "projects/" + ps.Project() + "/subscriptions/" + stack.ResultsSubscription
	got := map[string]int{}
	deadline := time.Now().Add(30 * time.Second)
	settled := time.Time{}
	for time.Now().Before(deadline) {
		r, err := c.Pull(context.Background(), &pubsubpb.PullRequest{
			Subscription: sub, MaxMessages: 100, ReturnImmediately: true, //nolint:staticcheck
		})
		if err != nil {
			t.Fatal(err)
		}
		var acks []string
		for _, m := range r.GetReceivedMessages() {
			got[m.GetMessage().GetAttributes()["task_id"]]++
			acks = append(acks, m.GetAckId())
		}
		if len(acks) > 0 {
			c.Acknowledge(context.Background(), &pubsubpb.AcknowledgeRequest{Subscription: sub, AckIds: acks})
		}
		complete := true
		for id, n := range want {
			complete = complete && got[id] >= n
		}
		if complete && settled.IsZero() {
			settled = time.Now()
		}
		if !settled.IsZero() && time.Since(settled) > time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("results per task %v, want %v", got, want)
	}
}
