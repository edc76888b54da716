package pushsub_test

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/google/go-cmp/cmp"

	"github.com/gemq-dev/gemq/infra/pushsub"
)

// pullTopic pulls what subscription s (on topic t) holds, acking it.
func (f *fixture) pullTopic(t *testing.T) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	for range 20 {
		resp, err := f.client.SubscriptionAdminClient.Pull(context.Background(), &pubsubpb.PullRequest{
			Subscription: "projects/p/subscriptions/s", MaxMessages: 100, ReturnImmediately: true, //nolint:staticcheck
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, rm := range resp.GetReceivedMessages() {
			out[string(rm.GetMessage().GetData())] = rm.GetMessage().GetAttributes()
			f.client.SubscriptionAdminClient.Acknowledge(context.Background(), &pubsubpb.AcknowledgeRequest{
				Subscription: "projects/p/subscriptions/s", AckIds: []string{rm.GetAckId()}})
		}
		time.Sleep(10 * time.Millisecond)
	}
	return out
}

func TestReplay(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	for _, d := range []string{"task-a", "task-b", "poison"} {
		f.srv.Publish("projects/p/topics/dl", []byte(d), map[string]string{
			"own": d, pushsub.AttrDeliveryCount: "5", pushsub.AttrDeadLetterReason: "HTTP 503", pushsub.AttrSourceSubscription: "s",
		})
	}
	check := func(data []byte, _ map[string]string) string {
		if strings.HasPrefix(string(data), "task-") {
			return ""
		}
		return "not a task"
	}

	// A dry run moves nothing.
	res, err := pushsub.Replay(ctx, f.client, "dl-sub", "t", pushsub.ReplayOptions{Check: check, DryRun: true, Idle: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Replayed != 2 || len(res.Kept) != 1 || res.Kept[0].Reason != "not a task" {
		t.Errorf("dry run: %+v, want 2 replayable and the poison kept", res)
	}
	if got := f.pullTopic(t); len(got) != 0 {
		t.Errorf("dry run published %v", got)
	}

	// Max bounds the replay; the rest stays for the next one.
	res, err = pushsub.Replay(ctx, f.client, "dl-sub", "t", pushsub.ReplayOptions{Check: check, Max: 1, Idle: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Replayed != 1 {
		t.Errorf("--max 1 replayed %d", res.Replayed)
	}
	res, err = pushsub.Replay(ctx, f.client, "dl-sub", "t", pushsub.ReplayOptions{Check: check, Idle: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Replayed != 1 || len(res.Kept) != 1 {
		t.Errorf("second replay: %+v, want the other task replayed and the poison kept", res)
	}
	got := f.pullTopic(t)
	var data []string
	for d, attrs := range got {
		data = append(data, d)
		// Pub/Sub's dead-letter attributes go; the message's own stay.
		want := map[string]string{"own": d, pushsub.AttrReplayOf: attrs[pushsub.AttrReplayOf]}
		if diff := cmp.Diff(want, attrs); diff != "" || attrs[pushsub.AttrReplayOf] == "" {
			t.Errorf("attributes of %s (-want +got):\n%s", d, diff)
		}
	}
	sort.Strings(data)
	if diff := cmp.Diff([]string{"task-a", "task-b"}, data); diff != "" {
		t.Errorf("replayed (-want +got):\n%s", diff)
	}
	// The poison is still in the dead-letter subscription, available at once.
	if dl := f.pullDeadLetters(t); len(dl) != 1 || string(dl[0].GetData()) != "poison" {
		t.Errorf("left in the dead-letter subscription: %v, want only the poison", dl)
	}
}
