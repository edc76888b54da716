// Package queue connects gemq to its two Google Cloud queues: a Pub/Sub (v2)
// publisher with batching, used for task and result messages, and a Cloud Tasks
// scheduler that creates named HTTP tasks (with an OIDC token for the worker) at the
// moment a permit is reserved. It also creates the topics, subscriptions and queue
// the local stack needs.
//
// Both work against the real services and against the local stand-ins (pstest
// through PUBSUB_EMULATOR_HOST or client options; infra/tasksemu through
// NewCloudTasksClient with an endpoint).
package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Message is one Pub/Sub message to publish.
type Message struct {
	Data       []byte
	Attributes map[string]string
	// OrderingKey, when set, orders the message after earlier ones with the same key
	// (the subscription must enable ordering for delivery order to hold).
	OrderingKey string
}

// maxErrorsShown bounds how many individual failures a Publish error spells out.
const maxErrorsShown = 5

// Publisher publishes batches of messages to one topic. It is safe for concurrent
// use; call Stop when done to flush and release its goroutines.
type Publisher struct {
	p *pubsub.Publisher
}

// How long a message may wait for others to share its publish request.
const (
	// ManyDelay suits many messages published at once (a job's tasks).
	ManyDelay = 10 * time.Millisecond
	// OneDelay suits one message its caller waits for: a worker's result,
	// whose wait is billed function time and holds the push that carries
	// its task (make bench's TPM job: a granted push's handling 0.255 s
	// mean at 10 ms, 0.249 s at 1 ms).
	OneDelay = time.Millisecond
)

// NewPublisher returns a Publisher for topicID (an id, or a full
// "projects/P/topics/T" name) of client's project. Messages are batched (up to
// 1000 messages, 5 MB, or delay: ManyDelay or OneDelay) and ordering keys are
// enabled.
func NewPublisher(client *pubsub.Client, topicID string, delay time.Duration) *Publisher {
	p := client.Publisher(topicID)
	p.PublishSettings.DelayThreshold = delay
	p.PublishSettings.CountThreshold = 1000
	p.PublishSettings.ByteThreshold = 5_000_000
	// Block callers, instead of buffering without bound, when a huge job is
	// published faster than Pub/Sub accepts it.
	p.PublishSettings.FlowControlSettings = pubsub.FlowControlSettings{
		MaxOutstandingMessages: 0,
		MaxOutstandingBytes:    256 << 20,
		LimitExceededBehavior:  pubsub.FlowControlBlock,
	}
	p.EnableMessageOrdering = true
	return &Publisher{p: p}
}

// Publish sends msgs and returns only when every one of them has a server-assigned
// id (nil), or when some failed or ctx ended: then the error says how many of them
// failed ("pubsub publish: 3 of 100 messages failed: ...") and wraps the first few
// causes. Messages not reported as failed were published. A message whose wait
// ended with ctx may still be published by the server.
func (p *Publisher) Publish(ctx context.Context, msgs []Message) error {
	results := make([]*pubsub.PublishResult, len(msgs))
	for i, m := range msgs {
		results[i] = p.p.Publish(ctx, &pubsub.Message{Data: m.Data, Attributes: m.Attributes, OrderingKey: m.OrderingKey})
	}
	var errs []error
	failed := 0
	for i, r := range results {
		if _, err := r.Get(ctx); err != nil {
			failed++
			if len(errs) < maxErrorsShown {
				errs = append(errs, fmt.Errorf("message %d: %w", i, err))
			}
			if k := msgs[i].OrderingKey; k != "" {
				// A failed publish pauses its ordering key; let later calls retry it.
				p.p.ResumePublish(k)
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("pubsub publish: %d of %d messages failed: %w", failed, len(msgs), errors.Join(errs...))
	}
	return nil
}

// Stop flushes pending messages and stops the publisher's goroutines. Publish
// after Stop fails.
func (p *Publisher) Stop() { p.p.Stop() }

// NewPubSubClient returns a Pub/Sub v2 client for projectID. The library itself
// honours PUBSUB_EMULATOR_HOST (no credentials, plain gRPC); opts are passed on.
func NewPubSubClient(ctx context.Context, projectID string, opts ...option.ClientOption) (*pubsub.Client, error) {
	c, err := pubsub.NewClient(ctx, projectID, opts...)
	if err != nil {
		return nil, fmt.Errorf("pubsub new client: %w", err)
	}
	return c, nil
}

func topicName(project, topicID string) string {
	if strings.HasPrefix(topicID, "projects/") {
		return topicID
	}
	return "projects/" + project + "/topics/" + topicID
}

// EnsureTopic creates topicID in client's project unless it exists.
func EnsureTopic(ctx context.Context, client *pubsub.Client, topicID string) error {
	_, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topicName(client.Project(), topicID)})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("pubsub create topic %s: %w", topicID, err)
	}
	return nil
}

// SubscriptionOptions configures EnsureSubscription. Zero fields take the service's
// defaults.
type SubscriptionOptions struct {
	// AckDeadline: 10 s to 600 s (service default 10 s).
	AckDeadline time.Duration
	// PushEndpoint makes it a push subscription; empty means pull.
	PushEndpoint string
	// EnableMessageOrdering delivers messages with the same ordering key in order.
	EnableMessageOrdering bool
	// DeadLetterTopicID and MaxDeliveryAttempts (5 to 100) set a dead-letter policy.
	DeadLetterTopicID   string
	MaxDeliveryAttempts int
	// MinBackoff and MaxBackoff set the redelivery retry policy (both or neither).
	MinBackoff, MaxBackoff time.Duration
}

// EnsureSubscription creates subscriptionID on topicID (both in client's project)
// unless a subscription with that id exists; an existing one is left unchanged.
func EnsureSubscription(ctx context.Context, client *pubsub.Client, subscriptionID, topicID string, opts SubscriptionOptions) error {
	project := client.Project()
	sub := &pubsubpb.Subscription{
		Name:                  "projects/" + project + "/subscriptions/" + subscriptionID,
		Topic:                 topicName(project, topicID),
		AckDeadlineSeconds:    int32(opts.AckDeadline / time.Second),
		EnableMessageOrdering: opts.EnableMessageOrdering,
	}
	if opts.PushEndpoint != "" {
		sub.PushConfig = &pubsubpb.PushConfig{PushEndpoint: opts.PushEndpoint}
	}
	if opts.DeadLetterTopicID != "" {
		sub.DeadLetterPolicy = &pubsubpb.DeadLetterPolicy{
			DeadLetterTopic:     topicName(project, opts.DeadLetterTopicID),
			MaxDeliveryAttempts: int32(opts.MaxDeliveryAttempts),
		}
	}
	if opts.MinBackoff > 0 || opts.MaxBackoff > 0 {
		sub.RetryPolicy = &pubsubpb.RetryPolicy{MinimumBackoff: durationpb.New(opts.MinBackoff), MaximumBackoff: durationpb.New(opts.MaxBackoff)}
	}
	_, err := client.SubscriptionAdminClient.CreateSubscription(ctx, sub)
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("pubsub create subscription %s: %w", subscriptionID, err)
	}
	return nil
}
