// Package pushsub turns a pull subscription into a push subscription, the way
// Pub/Sub pushes to an HTTP endpoint in the cloud.
//
// Neither pstest nor the Pub/Sub emulator pushes, so the local stack runs a
// Pusher: it pulls messages from a subscription (pstest, the emulator through
// PUBSUB_EMULATOR_HOST, or the real service), POSTs each one to an endpoint in
// the standard push envelope
//
//	{"message": {"data": base64, "attributes": {...}, "messageId": "...",
//	             "publishTime": "..."}, "subscription": "projects/P/subscriptions/S"}
//
// and acknowledges it when the endpoint answers 102, 200, 201, 202 or 204, as
// Pub/Sub does. Any other answer, a transport error or no answer within the ack
// deadline is a failed delivery: the message is redelivered after the retry
// policy's exponential backoff (min doubling up to max). Delivery attempts are
// counted per message id; after MaxDeliveryAttempts failed deliveries the
// message is published to the dead-letter topic with Pub/Sub's
// CloudPubSubDeadLetterSource* attributes plus the reason, and the original is
// acknowledged. Pusher does the dead-lettering itself because pstest's own
// dead-lettering repeats messages: do not also set a dead-letter policy on the
// pstest subscription.
package pushsub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
)

// Attributes Pusher adds to a dead-lettered message, beside the message's own.
// The CloudPubSubDeadLetterSource* names are the ones Pub/Sub itself sets.
const (
	AttrDeliveryCount       = "CloudPubSubDeadLetterSourceDeliveryCount"
	AttrSourceSubscription  = "CloudPubSubDeadLetterSourceSubscription"
	AttrSourceProject       = "CloudPubSubDeadLetterSourceSubscriptionProject"
	AttrSourcePublishTime   = "CloudPubSubDeadLetterSourceTopicPublishTime"
	AttrDeadLetterReason    = "gemq-dead-letter-reason"
	defaultMinBackoff       = 10 * time.Second
	defaultMaxBackoff       = 600 * time.Second
	defaultAckDeadline      = 10 * time.Second
	defaultConcurrency      = 16
	defaultPollInterval     = 20 * time.Millisecond
	maxAckDeadline          = 600 * time.Second
	maxReasonBodyCharacters = 200
)

// Options configures a Pusher. Zero values take the subscription's own
// configuration where Pub/Sub has one, else Pub/Sub's defaults.
type Options struct {
	// Endpoint is the URL every message is POSTed to (required).
	Endpoint string
	// Concurrency bounds the deliveries in flight (default 16).
	Concurrency int
	// AckDeadline is how long the endpoint has to answer; default the
	// subscription's ack deadline (10 s when it has none).
	AckDeadline time.Duration
	// MinBackoff and MaxBackoff bound the exponential redelivery delay after a
	// failed delivery; default the subscription's retry policy, else 10 s and
	// 600 s as Pub/Sub's.
	MinBackoff, MaxBackoff time.Duration
	// DeadLetterTopic is the topic id or full name that messages go to after
	// MaxDeliveryAttempts failed deliveries; default the subscription's
	// dead-letter policy. Empty: redeliver for ever.
	DeadLetterTopic string
	// MaxDeliveryAttempts is the number of deliveries before dead-lettering
	// (default the subscription's, else 5 as Pub/Sub's).
	MaxDeliveryAttempts int
	// DuplicateDelivery POSTs every delivery twice, concurrently, as
	// at-least-once delivery may; the message is acked when either succeeds.
	DuplicateDelivery bool
	// PollInterval is the pause after an empty pull (default 20 ms).
	PollInterval time.Duration
	// HTTPClient sends the pushes (default a new client; the ack deadline is
	// applied per request).
	HTTPClient *http.Client
	// Header is added to every push request (e.g. Authorization).
	Header http.Header
	// Logger receives delivery failures (default slog.Default()). Message
	// contents are never logged.
	Logger *slog.Logger
}

// Stats counts what a Pusher did. Deliveries counts POSTs (two per delivery
// with DuplicateDelivery); Acks, Nacks and DeadLettered count messages.
type Stats struct {
	Pulled       int64 `json:"pulled"`
	Deliveries   int64 `json:"deliveries"`
	Acks         int64 `json:"acks"`
	Nacks        int64 `json:"nacks"`
	DeadLettered int64 `json:"dead_lettered"`
}

// Pusher delivers one subscription's messages to one endpoint. Its methods
// are safe for concurrent use.
type Pusher struct {
	client   *pubsub.Client
	subName  string
	opts     Options
	dlq      *pubsub.Publisher
	dlqName  string
	log      *slog.Logger
	sem      chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	attempts map[string]int // message id → failed or in-flight deliveries so far
	timers   map[*time.Timer]struct{}

	duplicate atomic.Bool // Options.DuplicateDelivery, changeable at run time

	pulled, deliveries, acks, nacks, deadLettered atomic.Int64
}

// SetDuplicateDelivery turns Options.DuplicateDelivery on or off for the
// deliveries that start from now on.
func (p *Pusher) SetDuplicateDelivery(on bool) { p.duplicate.Store(on) }

// New returns a Pusher for subscription (an id in client's project, or a full
// "projects/P/subscriptions/S" name). It reads the subscription's ack
// deadline, retry policy and dead-letter policy for the options left zero.
func New(ctx context.Context, client *pubsub.Client, subscription string, opts Options) (*Pusher, error) {
	if opts.Endpoint == "" {
		return nil, errors.New("pushsub: Options.Endpoint is required")
	}
	subName := subscription
	if !strings.HasPrefix(subName, "projects/") {
		subName = "projects/" + client.Project() + "/subscriptions/" + subscription
	}
	sub, err := client.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: subName})
	if err != nil {
		return nil, fmt.Errorf("pubsub GetSubscription %s: %w", subName, err)
	}
	if opts.AckDeadline <= 0 {
		opts.AckDeadline = defaultAckDeadline
		if s := sub.GetAckDeadlineSeconds(); s > 0 {
			opts.AckDeadline = time.Duration(s) * time.Second
		}
	}
	if rp := sub.GetRetryPolicy(); rp != nil {
		if opts.MinBackoff <= 0 && rp.GetMinimumBackoff() != nil {
			opts.MinBackoff = rp.GetMinimumBackoff().AsDuration()
		}
		if opts.MaxBackoff <= 0 && rp.GetMaximumBackoff() != nil {
			opts.MaxBackoff = rp.GetMaximumBackoff().AsDuration()
		}
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = defaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = defaultMaxBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if dl := sub.GetDeadLetterPolicy(); dl != nil {
		if opts.DeadLetterTopic == "" {
			opts.DeadLetterTopic = dl.GetDeadLetterTopic()
		}
		if opts.MaxDeliveryAttempts <= 0 {
			opts.MaxDeliveryAttempts = int(dl.GetMaxDeliveryAttempts())
		}
	}
	if opts.MaxDeliveryAttempts <= 0 {
		opts.MaxDeliveryAttempts = 5
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = defaultConcurrency
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = defaultPollInterval
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	p := &Pusher{
		client:   client,
		subName:  subName,
		opts:     opts,
		log:      opts.Logger,
		sem:      make(chan struct{}, opts.Concurrency),
		attempts: make(map[string]int),
		timers:   make(map[*time.Timer]struct{}),
	}
	p.duplicate.Store(opts.DuplicateDelivery)
	if opts.DeadLetterTopic != "" {
		p.dlq = client.Publisher(opts.DeadLetterTopic)
		p.dlqName = p.dlq.String()
	}
	return p, nil
}

// Subscription returns the full name of the subscription p pushes from.
func (p *Pusher) Subscription() string { return p.subName }

// Stats returns the counters so far.
func (p *Pusher) Stats() Stats {
	return Stats{
		Pulled:       p.pulled.Load(),
		Deliveries:   p.deliveries.Load(),
		Acks:         p.acks.Load(),
		Nacks:        p.nacks.Load(),
		DeadLettered: p.deadLettered.Load(),
	}
}

// Run pulls and pushes until ctx is done, then waits for the deliveries in
// flight (their requests are cancelled) and returns nil. It returns an error
// only when pulling fails for a reason other than ctx ending, after retrying
// transient errors for a while. Call Run once.
func (p *Pusher) Run(ctx context.Context) error {
	defer p.shutdown()
	failures := 0
	for {
		// Wait for one free slot, then take every other free one.
		select {
		case <-ctx.Done():
			return nil
		case p.sem <- struct{}{}:
		}
		n := 1
	fill:
		for n < p.opts.Concurrency {
			select {
			case p.sem <- struct{}{}:
				n++
			default:
				break fill
			}
		}
		resp, err := p.client.SubscriptionAdminClient.Pull(ctx, &pubsubpb.PullRequest{
			Subscription:      p.subName,
			MaxMessages:       int32(n),
			ReturnImmediately: true, //nolint:staticcheck // the emulators answer at once; we poll ourselves
		})
		if err != nil {
			p.release(n)
			if ctx.Err() != nil {
				return nil
			}
			failures++
			if failures > 50 {
				return fmt.Errorf("pubsub Pull %s: %w", p.subName, err)
			}
			p.log.Warn("pushsub: pull failed", "subscription", p.subName, "error", err)
			if !sleep(ctx, time.Duration(failures)*100*time.Millisecond) {
				return nil
			}
			continue
		}
		failures = 0
		msgs := resp.GetReceivedMessages()
		p.release(n - len(msgs))
		p.pulled.Add(int64(len(msgs)))
		for _, rm := range msgs {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer p.release(1)
				p.handle(ctx, rm)
			}()
		}
		if len(msgs) == 0 && !sleep(ctx, p.opts.PollInterval) {
			return nil
		}
	}
}

func (p *Pusher) release(n int) {
	for range n {
		<-p.sem
	}
}

// shutdown waits for the deliveries in flight and stops the redelivery timers;
// their messages come back when their ack deadlines pass.
func (p *Pusher) shutdown() {
	p.wg.Wait()
	p.mu.Lock()
	for t := range p.timers {
		t.Stop()
	}
	clear(p.timers)
	p.mu.Unlock()
	if p.dlq != nil {
		p.dlq.Stop()
	}
}

// handle delivers one received message and settles it: ack, dead-letter, or
// nack with backoff.
func (p *Pusher) handle(ctx context.Context, rm *pubsubpb.ReceivedMessage) {
	msg := rm.GetMessage()
	id := msg.GetMessageId()
	p.mu.Lock()
	p.attempts[id]++
	attempt := p.attempts[id]
	p.mu.Unlock()

	ok, reason := p.deliver(ctx, msg, attempt)
	if ctx.Err() != nil {
		// Shutting down: leave the message to its ack deadline.
		return
	}
	// A background context for settling: the delivery already happened.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if ok {
		p.forget(id)
		p.ack(sctx, rm.GetAckId())
		return
	}
	if p.dlq != nil && attempt >= p.opts.MaxDeliveryAttempts {
		if err := p.deadLetter(sctx, msg, attempt, reason); err != nil {
			p.log.Error("pushsub: dead-letter publish failed; redelivering", "message_id", id, "error", err)
			p.nack(sctx, rm.GetAckId(), p.backoff(attempt))
			return
		}
		p.forget(id)
		p.ack(sctx, rm.GetAckId())
		p.deadLettered.Add(1)
		return
	}
	p.log.Info("pushsub: delivery failed; will redeliver", "message_id", id, "attempt", attempt, "reason", reason)
	p.nack(sctx, rm.GetAckId(), p.backoff(attempt))
}

func (p *Pusher) forget(id string) {
	p.mu.Lock()
	delete(p.attempts, id)
	p.mu.Unlock()
}

// backoff returns the delay before redelivering after the attempt-th failed
// delivery: MinBackoff doubled per earlier failure, capped at MaxBackoff.
func (p *Pusher) backoff(attempt int) time.Duration {
	d := float64(p.opts.MinBackoff) * math.Pow(2, float64(attempt-1))
	if d > float64(p.opts.MaxBackoff) {
		return p.opts.MaxBackoff
	}
	return time.Duration(d)
}

// Delivery is the JSON body Pub/Sub POSTs to a push endpoint (the "wrapped"
// payload format).
type Delivery struct {
	Message         PushMessage `json:"message"`
	Subscription    string      `json:"subscription"`
	DeliveryAttempt int         `json:"deliveryAttempt,omitempty"`
}

// PushMessage is the "message" object of a push body. Pub/Sub writes the id
// and publish time both in camelCase and snake_case; so does Pusher.
type PushMessage struct {
	Data             []byte            `json:"data,omitempty"` // base64 in JSON
	Attributes       map[string]string `json:"attributes,omitempty"`
	MessageID        string            `json:"messageId"`
	MessageIDSnake   string            `json:"message_id"`
	PublishTime      string            `json:"publishTime"`
	PublishTimeSnake string            `json:"publish_time"`
	OrderingKey      string            `json:"orderingKey,omitempty"`
}

// Envelope returns the push body for msg as delivered the attempt-th time
// from subscription. attempt 0 leaves deliveryAttempt out, as Pub/Sub does
// for subscriptions without a dead-letter policy.
func Envelope(subscription string, msg *pubsubpb.PubsubMessage, attempt int) ([]byte, error) {
	pt := ""
	if ts := msg.GetPublishTime(); ts != nil {
		pt = ts.AsTime().UTC().Format(time.RFC3339Nano)
	}
	b, err := json.Marshal(Delivery{
		Message: PushMessage{
			Data:             msg.GetData(),
			Attributes:       msg.GetAttributes(),
			MessageID:        msg.GetMessageId(),
			MessageIDSnake:   msg.GetMessageId(),
			PublishTime:      pt,
			PublishTimeSnake: pt,
			OrderingKey:      msg.GetOrderingKey(),
		},
		Subscription:    subscription,
		DeliveryAttempt: attempt,
	})
	if err != nil {
		return nil, fmt.Errorf("json.Marshal push envelope: %w", err)
	}
	return b, nil
}

// deliver POSTs msg (twice with DuplicateDelivery) and reports whether it was
// acknowledged, or why not.
func (p *Pusher) deliver(ctx context.Context, msg *pubsubpb.PubsubMessage, attempt int) (bool, string) {
	da := 0
	if p.dlq != nil {
		da = attempt
	}
	body, err := Envelope(p.subName, msg, da)
	if err != nil {
		return false, err.Error()
	}
	if !p.duplicate.Load() {
		return p.post(ctx, body)
	}
	type result struct {
		ok     bool
		reason string
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			ok, reason := p.post(ctx, body)
			results <- result{ok, reason}
		}()
	}
	a, b := <-results, <-results
	if a.ok || b.ok {
		return true, ""
	}
	return false, a.reason
}

// post sends one push request and reports whether its status acknowledges.
func (p *Pusher) post(ctx context.Context, body []byte) (bool, string) {
	p.deliveries.Add(1)
	ctx, cancel := context.WithTimeout(ctx, p.opts.AckDeadline)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.opts.Endpoint, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Sprintf("http.NewRequest: %v", err)
	}
	for k, vs := range p.opts.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html) gemq-pushsub")
	resp, err := p.opts.HTTPClient.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return false, fmt.Sprintf("push endpoint did not answer within the ack deadline (%s)", p.opts.AckDeadline)
		}
		return false, fmt.Sprintf("push: %v", err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxReasonBodyCharacters))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if Acknowledges(resp.StatusCode) {
		return true, ""
	}
	return false, fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(snippet)))
}

// Acknowledges reports whether a push endpoint's HTTP status acknowledges the
// message: 102, 200, 201, 202 and 204, the codes Pub/Sub accepts.
func Acknowledges(status int) bool {
	switch status {
	case http.StatusProcessing, http.StatusOK, http.StatusCreated, http.StatusAccepted, http.StatusNoContent:
		return true
	}
	return false
}

func (p *Pusher) ack(ctx context.Context, ackID string) {
	p.acks.Add(1)
	err := p.client.SubscriptionAdminClient.Acknowledge(ctx, &pubsubpb.AcknowledgeRequest{
		Subscription: p.subName, AckIds: []string{ackID},
	})
	if err != nil {
		// The message will come back after its ack deadline: at-least-once.
		p.log.Warn("pushsub: acknowledge failed", "subscription", p.subName, "error", err)
	}
}

// nack makes the message deliverable again after d: it first extends the ack
// deadline past d (so a crash still redelivers), then expires it at d.
func (p *Pusher) nack(ctx context.Context, ackID string, d time.Duration) {
	p.nacks.Add(1)
	hold := int32(min(math.Ceil(d.Seconds())+1, maxAckDeadline.Seconds()))
	if err := p.modack(ctx, ackID, hold); err != nil {
		p.log.Warn("pushsub: modifyAckDeadline failed", "subscription", p.subName, "error", err)
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		p.mu.Lock()
		_, live := p.timers[t]
		delete(p.timers, t)
		p.mu.Unlock()
		if !live {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.modack(ctx, ackID, 0); err != nil {
			p.log.Warn("pushsub: nack failed", "subscription", p.subName, "error", err)
		}
	})
	p.mu.Lock()
	p.timers[t] = struct{}{}
	p.mu.Unlock()
}

func (p *Pusher) modack(ctx context.Context, ackID string, seconds int32) error {
	err := p.client.SubscriptionAdminClient.ModifyAckDeadline(ctx, &pubsubpb.ModifyAckDeadlineRequest{
		Subscription: p.subName, AckIds: []string{ackID}, AckDeadlineSeconds: seconds,
	})
	if err != nil {
		return fmt.Errorf("pubsub ModifyAckDeadline: %w", err)
	}
	return nil
}

// deadLetter publishes msg to the dead-letter topic with the source
// attributes Pub/Sub sets, plus the reason of the last failure.
func (p *Pusher) deadLetter(ctx context.Context, msg *pubsubpb.PubsubMessage, attempts int, reason string) error {
	attrs := make(map[string]string, len(msg.GetAttributes())+5)
	for k, v := range msg.GetAttributes() {
		attrs[k] = v
	}
	project := strings.TrimPrefix(p.subName, "projects/")
	project, _, _ = strings.Cut(project, "/")
	attrs[AttrDeliveryCount] = strconv.Itoa(attempts)
	attrs[AttrSourceSubscription] = p.subName[strings.LastIndex(p.subName, "/")+1:]
	attrs[AttrSourceProject] = project
	if ts := msg.GetPublishTime(); ts != nil {
		attrs[AttrSourcePublishTime] = ts.AsTime().UTC().Format(time.RFC3339Nano)
	}
	attrs[AttrDeadLetterReason] = fmt.Sprintf("%d delivery attempts failed; last: %s", attempts, reason)
	_, err := p.dlq.Publish(ctx, &pubsub.Message{
		Data:       msg.GetData(),
		Attributes: attrs,
	}).Get(ctx)
	if err != nil {
		return fmt.Errorf("pubsub Publish %s: %w", p.dlqName, err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
