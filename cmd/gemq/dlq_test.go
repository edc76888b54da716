package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gemq-dev/gemq/infra/chaos"
	"github.com/gemq-dev/gemq/internal/queue"
	"github.com/gemq-dev/gemq/internal/task"
)

// TestDLQReplay runs `gemq dlq replay` against a running system (the worker
// and ingest as their own processes, a real redis-server, pstest, the Cloud
// Tasks emulator, the Gemini stand-in; infra/chaos): a dead-lettered task
// that never ran is replayed and completes once; a dead-lettered copy of a
// task that already has its result is replayed and changes nothing (no
// Gemini call, no second result); a message that is not a task stays in the
// dead-letter subscription, and replaying again replays nothing.
func TestDLQReplay(t *testing.T) {
	ctx := context.Background()
	cfg := chaos.DefaultConfig
	cfg.Minute = 2 * time.Second
	s, err := chaos.Start(ctx, cfg, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	tap := tapTasks(ctx, t, s.PubSubHost())
	if err := s.Submit(ctx, "dlq-done", 1); err != nil {
		t.Fatal(err)
	}
	doneID := task.TaskID("dlq-done", chaos.Key(0))
	lostID := task.TaskID("dlq-lost", "lost")
	waitResults(t, s, map[string]int{doneID: 1})
	// The finished task's dead-lettered copy is the message ingest published
	// (as Pub/Sub dead-letters it: the same bytes, its job hash included).
	done := tap()

	envelope := func(job, key string) []byte {
		b, err := task.Encode(task.Envelope{V: task.Version, JobID: job, Key: key, Model: "gemini-2.5-flash",
			Request: json.RawMessage(`{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}`)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, data := range [][]byte{done, envelope("dlq-lost", "lost"), []byte("not a task")} {
		if err := s.PublishTo(ctx, chaos.DeadLetterTopic, data, map[string]string{"CloudPubSubDeadLetterSourceDeliveryCount": "10"}); err != nil {
			t.Fatal(err)
		}
	}

	getenv := func(k string) string {
		return map[string]string{"PUBSUB_EMULATOR_HOST": s.PubSubHost(), "GOOGLE_CLOUD_PROJECT": chaos.Project}[k]
	}
	replay := func() string {
		var out, errb bytes.Buffer
		args := []string{"dlq", "replay", "--idle", "1s", "--subscription", chaos.DeadLetterSubscription, "--topic", chaos.TasksTopic}
		if code := runMain(ctx, args, env{stdout: &out, stderr: &errb, getenv: getenv}); code != exitOK {
			t.Fatalf("gemq dlq replay: exit %d, stderr %s", code, errb.String())
		}
		return out.String()
	}
	out := replay()
	if !strings.HasPrefix(out, "replayed 2 message(s)") || !strings.Contains(out, "kept 1\n") || !strings.Contains(out, "not a task envelope") {
		t.Errorf("first replay printed %q, want 2 replayed and the non-task kept", out)
	}
	// The never-run task gets its one result; the finished one no other.
	waitResults(t, s, map[string]int{doneID: 1, lostID: 1})
	calls := map[string]int{}
	for _, e := range s.Gemini.Log() {
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
	if code := runMain(ctx, []string{"dlq", "purge"}, env{stdout: io.Discard, stderr: io.Discard, getenv: getenv}); code != exitUsage {
		t.Errorf("gemq dlq purge: exit %d, want %d", code, exitUsage)
	}
}

// waitResults waits until the results topic holds want's count of results
// for each of its tasks, then two seconds more, and fails on any other
// count (a second result included).
func waitResults(t *testing.T, s *chaos.Env, want map[string]int) {
	t.Helper()
	count := func() map[string]int {
		got := map[string]int{}
		for _, m := range s.Results() {
			got[m.Attributes["task_id"]]++
		}
		return got
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got := count()
		done := true
		for id, n := range want {
			done = done && got[id] >= n
		}
		if done {
			break
		}
	}
	time.Sleep(2 * time.Second)
	if got := count(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("results per task %v, want %v", got, want)
	}
}

// tapTasks subscribes to the tasks topic and returns a function that pulls
// the one message published there since.
func tapTasks(ctx context.Context, t *testing.T, host string) func() []byte {
	t.Helper()
	c, err := pubsub.NewClient(ctx, chaos.Project, option.WithEndpoint(host), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := queue.EnsureSubscription(ctx, c, "dlq-test-tap", chaos.TasksTopic, queue.SubscriptionOptions{AckDeadline: time.Minute}); err != nil {
		t.Fatal(err)
	}
	return func() []byte {
		resp, err := c.SubscriptionAdminClient.Pull(ctx, &pubsubpb.PullRequest{
			Subscription: "projects/" + chaos.Project + "/subscriptions/dlq-test-tap", MaxMessages: 10,
		})
		if err != nil || len(resp.GetReceivedMessages()) != 1 {
			t.Fatalf("tasks topic: %v, %d messages; want the one ingest published", err, len(resp.GetReceivedMessages()))
		}
		return resp.GetReceivedMessages()[0].GetMessage().GetData()
	}
}

// A copy the worker dead-lettered itself (gemq_kind) is kept, valid
// envelope or not: replayed, it would only come back, and a replay running
// until the subscription is idle would loop on it.
func TestReplayableKeepsWorkerCopies(t *testing.T) {
	env, err := task.Encode(task.Envelope{V: task.Version, JobID: "j", Key: "k", Model: "gemini-2.5-flash",
		Request: json.RawMessage(`{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	if why := replayable(env, nil); why != "" {
		t.Fatalf("a task envelope dead-lettered by Pub/Sub: kept (%s), want replayed", why)
	}
	why := replayable(env, map[string]string{"gemq_kind": "conflict", "gemq_reason": "no job hash"})
	if !strings.Contains(why, "conflict") || !strings.Contains(why, "no job hash") {
		t.Fatalf("a worker's conflict copy: %q, want kept with its kind and reason", why)
	}
	if why := replayable([]byte("x"), nil); !strings.Contains(why, "not a task envelope") {
		t.Fatalf("garbage: %q", why)
	}
}
