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

	"github.com/gemq-dev/gemq/infra/chaos"
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

	if err := s.Submit(ctx, "dlq-done", 1); err != nil {
		t.Fatal(err)
	}
	doneID := task.TaskID("dlq-done", chaos.Key(0))
	lostID := task.TaskID("dlq-lost", "lost")
	waitResults(t, s, map[string]int{doneID: 1})

	envelope := func(job, key string) []byte {
		b, err := task.Encode(task.Envelope{V: task.Version, JobID: job, Key: key, Model: "gemini-2.5-flash",
			Request: json.RawMessage(`{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}`)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, data := range [][]byte{envelope("dlq-done", chaos.Key(0)), envelope("dlq-lost", "lost"), []byte("not a task")} {
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
