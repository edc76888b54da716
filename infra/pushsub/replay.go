package pushsub

import (
	"context"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
)

// AttrReplayOf is set on a replayed message: the id of the dead-lettered
// message it copies.
const AttrReplayOf = "gemq-replay-of"

// ReplayOptions configures Replay.
type ReplayOptions struct {
	// Check says why a message must not be replayed ("" to replay it), from
	// its data and attributes, e.g. because its data is not a task envelope
	// or the worker itself dead-lettered it as one that can never succeed;
	// nil replays everything. Such messages stay in the dead-letter
	// subscription.
	Check func(data []byte, attrs map[string]string) string
	// Max bounds the messages replayed (0: no bound).
	Max int
	// DryRun reports what would be replayed and leaves every message in
	// the dead-letter subscription.
	DryRun bool
	// Idle ends the replay once no new message arrived for this long
	// (default 2 s).
	Idle time.Duration
}

// Kept is a dead-lettered message Replay left in place.
type Kept struct {
	MessageID string
	Reason    string
}

// ReplayResult is what Replay did.
type ReplayResult struct {
	// Replayed counts messages published to the topic and acknowledged on
	// the dead-letter subscription (with DryRun: that would be).
	Replayed int
	// Kept lists the messages left in the dead-letter subscription, with
	// why.
	Kept []Kept
}

// Replay moves the messages of a dead-letter subscription back to topic:
// each is published with its data and its own attributes (Pub/Sub's
// CloudPubSubDeadLetter* attributes and AttrDeadLetterReason dropped,
// AttrReplayOf added), and acknowledged on the dead-letter subscription
// only once the publish succeeded, so a replay that dies half way loses
// nothing and at worst publishes a message twice. That is safe for gemq's
// task messages: the worker deduplicates by task id, and a task that
// already has a terminal result is acknowledged as a duplicate without a
// Gemini call. Messages that opts.Check refuses, and every message in a
// dry run, are left in the subscription (their ack deadline is reset at
// the end, so they are at once available again). subscription and topic
// are ids in client's project or full names.
func Replay(ctx context.Context, client *pubsub.Client, subscription, topic string, opts ReplayOptions) (ReplayResult, error) {
	var res ReplayResult
	if opts.Idle <= 0 {
		opts.Idle = 2 * time.Second
	}
	subName := fullName(client.Project(), "subscriptions", subscription)
	topicName := fullName(client.Project(), "topics", topic)
	seen := map[string]bool{}
	var keptAcks []string
	defer func() {
		if len(keptAcks) > 0 {
			// Give the kept messages back now rather than after their ack
			// deadline.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			client.SubscriptionAdminClient.ModifyAckDeadline(sctx, &pubsubpb.ModifyAckDeadlineRequest{
				Subscription: subName, AckIds: keptAcks, AckDeadlineSeconds: 0,
			})
		}
	}()
	lastNew := time.Now()
	for opts.Max == 0 || res.Replayed < opts.Max {
		if time.Since(lastNew) > opts.Idle {
			return res, nil
		}
		n := int32(100)
		if opts.Max > 0 {
			n = int32(min(100, opts.Max-res.Replayed))
		}
		resp, err := client.SubscriptionAdminClient.Pull(ctx, &pubsubpb.PullRequest{
			Subscription: subName, MaxMessages: n, ReturnImmediately: true, //nolint:staticcheck // poll with our own idle bound
		})
		if err != nil {
			return res, fmt.Errorf("pubsub Pull %s: %w", subName, err)
		}
		msgs := resp.GetReceivedMessages()
		if len(msgs) == 0 {
			if !sleep(ctx, 100*time.Millisecond) {
				return res, ctx.Err()
			}
			continue
		}
		for _, rm := range msgs {
			m := rm.GetMessage()
			id := m.GetMessageId()
			if seen[id] {
				// A kept message back after its ack deadline.
				keptAcks = append(keptAcks, rm.GetAckId())
				continue
			}
			seen[id] = true
			lastNew = time.Now()
			reason := ""
			if opts.Check != nil {
				reason = opts.Check(m.GetData(), m.GetAttributes())
			}
			if reason == "" && opts.Max > 0 && res.Replayed >= opts.Max {
				reason = "over --max"
			}
			if reason != "" || opts.DryRun {
				if reason != "" {
					res.Kept = append(res.Kept, Kept{MessageID: id, Reason: reason})
				} else {
					res.Replayed++
				}
				keptAcks = append(keptAcks, rm.GetAckId())
				continue
			}
			if err := republish(ctx, client, topicName, m); err != nil {
				keptAcks = append(keptAcks, rm.GetAckId())
				return res, err
			}
			if err := client.SubscriptionAdminClient.Acknowledge(ctx, &pubsubpb.AcknowledgeRequest{
				Subscription: subName, AckIds: []string{rm.GetAckId()},
			}); err != nil {
				// Published but still dead-lettered: a later replay
				// publishes it again, which the worker deduplicates.
				return res, fmt.Errorf("pubsub Acknowledge %s: %w", subName, err)
			}
			res.Replayed++
		}
	}
	return res, nil
}

func republish(ctx context.Context, client *pubsub.Client, topic string, m *pubsubpb.PubsubMessage) error {
	attrs := map[string]string{}
	for k, v := range m.GetAttributes() {
		if strings.HasPrefix(k, "CloudPubSubDeadLetter") || k == AttrDeadLetterReason {
			continue
		}
		attrs[k] = v
	}
	attrs[AttrReplayOf] = m.GetMessageId()
	_, err := client.TopicAdminClient.Publish(ctx, &pubsubpb.PublishRequest{
		Topic:    topic,
		Messages: []*pubsubpb.PubsubMessage{{Data: m.GetData(), Attributes: attrs, OrderingKey: m.GetOrderingKey()}},
	})
	if err != nil {
		return fmt.Errorf("pubsub Publish %s: %w", topic, err)
	}
	return nil
}

func fullName(project, kind, id string) string {
	if strings.HasPrefix(id, "projects/") {
		return id
	}
	return "projects/" + project + "/" + kind + "/" + id
}
