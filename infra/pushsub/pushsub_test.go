package pushsub_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gemq-dev/gemq/infra/pushsub"
)

const project = "p"

// fixture is a pstest server with a topic "t", a subscription "s" and a
// dead-letter topic "dl" with its own subscription "dl-sub".
type fixture struct {
	srv    *pstest.Server
	client *pubsub.Client
}

func newFixture(t *testing.T, sub *pubsubpb.Subscription) *fixture {
	t.Helper()
	ctx := context.Background()
	srv := pstest.NewServer()
	t.Cleanup(func() { srv.Close() })
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	client, err := pubsub.NewClient(ctx, project, option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	for _, topic := range []string{"t", "dl"} {
		if _, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: "projects/p/topics/" + topic}); err != nil {
			t.Fatal(err)
		}
	}
	if sub == nil {
		sub = &pubsubpb.Subscription{}
	}
	sub.Name, sub.Topic = "projects/p/subscriptions/s", "projects/p/topics/t"
	if _, err := client.SubscriptionAdminClient.CreateSubscription(ctx, sub); err != nil {
		t.Fatal(err)
	}
	if _, err := client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name: "projects/p/subscriptions/dl-sub", Topic: "projects/p/topics/dl",
	}); err != nil {
		t.Fatal(err)
	}
	return &fixture{srv: srv, client: client}
}

func (f *fixture) publish(t *testing.T, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		ids = append(ids, f.srv.Publish("projects/p/topics/t", fmt.Appendf(nil, "msg-%d", i), map[string]string{"i": fmt.Sprint(i)}))
	}
	return ids
}

// run starts p and returns a stop function that waits for Run to return.
func run(t *testing.T, p *pushsub.Pusher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// remaining reports the messages published to topic t not acked yet.
func (f *fixture) remaining(t *testing.T) int {
	t.Helper()
	n := 0
	for _, m := range f.srv.Messages() {
		if m.Topic == "projects/p/topics/t" && m.Acks == 0 {
			n++
		}
	}
	return n
}

// pullAll pulls every message available on the dead-letter subscription.
func (f *fixture) pullDeadLetters(t *testing.T) []*pubsubpb.PubsubMessage {
	t.Helper()
	resp, err := f.client.SubscriptionAdminClient.Pull(context.Background(), &pubsubpb.PullRequest{
		Subscription: "projects/p/subscriptions/dl-sub", MaxMessages: 100, ReturnImmediately: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []*pubsubpb.PubsubMessage
	for _, rm := range resp.GetReceivedMessages() {
		out = append(out, rm.GetMessage())
	}
	return out
}

func TestAcksOnSuccessCodes(t *testing.T) {
	for _, code := range []int{200, 201, 202, 204} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			f := newFixture(t, nil)
			var got atomic.Int64
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got.Add(1)
				w.WriteHeader(code)
			}))
			defer ts.Close()
			p, err := pushsub.New(context.Background(), f.client, "s", pushsub.Options{Endpoint: ts.URL, MinBackoff: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			f.publish(t, 5)
			stop := run(t, p)
			waitFor(t, "acks", func() bool { return p.Stats().Acks == 5 })
			stop()
			if diff := cmp.Diff(pushsub.Stats{Pulled: 5, Deliveries: 5, Acks: 5}, p.Stats()); diff != "" {
				t.Errorf("Stats (-want +got):\n%s", diff)
			}
			if n := f.remaining(t); n != 0 {
				t.Errorf("%d messages left unacked", n)
			}
			if got.Load() != 5 {
				t.Errorf("endpoint saw %d requests, want 5", got.Load())
			}
		})
	}
}

func TestAcknowledges(t *testing.T) {
	for code := 100; code < 600; code++ {
		want := code == 102 || code == 200 || code == 201 || code == 202 || code == 204
		if got := pushsub.Acknowledges(code); got != want {
			t.Errorf("Acknowledges(%d) = %v, want %v", code, got, want)
		}
	}
}

func TestEnvelope(t *testing.T) {
	f := newFixture(t, nil)
	bodies := make(chan []byte, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("got %s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
		}
		if r.Header.Get("X-Test") != "yes" {
			t.Errorf("extra header missing")
		}
		b, _ := io.ReadAll(r.Body)
		bodies <- b
	}))
	defer ts.Close()
	p, err := pushsub.New(context.Background(), f.client, "projects/p/subscriptions/s", pushsub.Options{
		Endpoint: ts.URL, Header: http.Header{"X-Test": {"yes"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := f.srv.Publish("projects/p/topics/t", []byte(`{"v":1}`), map[string]string{"a": "b"})
	run(t, p)
	var got map[string]any
	if err := json.Unmarshal(<-bodies, &got); err != nil {
		t.Fatal(err)
	}
	msg := got["message"].(map[string]any)
	pt := msg["publishTime"].(string)
	if _, err := time.Parse(time.RFC3339Nano, pt); err != nil {
		t.Errorf("publishTime %q: %v", pt, err)
	}
	want := map[string]any{
		"subscription": "projects/p/subscriptions/s",
		"message": map[string]any{
			"data":         base64.StdEncoding.EncodeToString([]byte(`{"v":1}`)),
			"attributes":   map[string]any{"a": "b"},
			"messageId":    id,
			"message_id":   id,
			"publishTime":  pt,
			"publish_time": pt,
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("push body (-want +got):\n%s", diff)
	}
}

func TestRedeliversWithExponentialBackoff(t *testing.T) {
	f := newFixture(t, nil)
	var mu sync.Mutex
	var times []time.Time
	codes := []int{500, 429, 400, 200}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		w.WriteHeader(codes[len(times)-1])
	}))
	defer ts.Close()
	p, err := pushsub.New(context.Background(), f.client, "s", pushsub.Options{
		Endpoint: ts.URL, MinBackoff: 50 * time.Millisecond, MaxBackoff: 120 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(t, 1)
	stop := run(t, p)
	waitFor(t, "ack", func() bool { return p.Stats().Acks == 1 })
	stop()
	if diff := cmp.Diff(pushsub.Stats{Pulled: 4, Deliveries: 4, Acks: 1, Nacks: 3}, p.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	// Gaps follow min × 2^(n-1) capped at max: 50, 100, 120 ms.
	for i, want := range []time.Duration{50, 100, 120} {
		want *= time.Millisecond
		gap := times[i+1].Sub(times[i])
		if gap < want || gap > want+400*time.Millisecond {
			t.Errorf("gap %d = %v, want about %v", i, gap, want)
		}
	}
}

func TestRetryPolicyFromSubscription(t *testing.T) {
	f := newFixture(t, &pubsubpb.Subscription{RetryPolicy: &pubsubpb.RetryPolicy{
		MinimumBackoff: durationpb.New(20 * time.Millisecond),
		MaximumBackoff: durationpb.New(40 * time.Millisecond),
	}})
	var n atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) < 4 {
			w.WriteHeader(503)
		}
	}))
	defer ts.Close()
	p, err := pushsub.New(context.Background(), f.client, "s", pushsub.Options{Endpoint: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(t, 1)
	start := time.Now()
	run(t, p)
	// With Pub/Sub's default 10 s minimum this would take 70 s.
	waitFor(t, "ack", func() bool { return p.Stats().Acks == 1 })
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v: the subscription's retry policy was not used", d)
	}
}

func TestDeadLetter(t *testing.T) {
	f := newFixture(t, nil)
	var mu sync.Mutex
	attempts := map[string][]int{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var d pushsub.Delivery
		if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
			t.Error(err)
		}
		mu.Lock()
		attempts[d.Message.MessageID] = append(attempts[d.Message.MessageID], d.DeliveryAttempt)
		mu.Unlock()
		http.Error(w, "backend unavailable", http.StatusServiceUnavailable)
	}))
	defer ts.Close()
	p, err := pushsub.New(context.Background(), f.client, "s", pushsub.Options{
		Endpoint: ts.URL, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		DeadLetterTopic: "dl", MaxDeliveryAttempts: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := f.publish(t, 4)
	stop := run(t, p)
	waitFor(t, "dead letters", func() bool { return p.Stats().DeadLettered == 4 })
	time.Sleep(100 * time.Millisecond) // nothing more should be delivered
	stop()
	if diff := cmp.Diff(pushsub.Stats{Pulled: 12, Deliveries: 12, Acks: 4, Nacks: 8, DeadLettered: 4}, p.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	for _, id := range ids {
		if diff := cmp.Diff([]int{1, 2, 3}, attempts[id]); diff != "" {
			t.Errorf("deliveryAttempt of %s (-want +got):\n%s", id, diff)
		}
	}
	if n := f.remaining(t); n != 0 {
		t.Errorf("%d originals left unacked", n)
	}
	dead := f.pullDeadLetters(t)
	if len(dead) != 4 {
		t.Fatalf("dead-letter topic holds %d messages, want 4", len(dead))
	}
	for _, m := range dead {
		a := m.GetAttributes()
		if !strings.HasPrefix(string(m.GetData()), "msg-") || a["i"] == "" {
			t.Errorf("dead letter lost its data or attributes: %q %v", m.GetData(), a)
		}
		if a[pushsub.AttrDeliveryCount] != "3" || a[pushsub.AttrSourceSubscription] != "s" || a[pushsub.AttrSourceProject] != "p" || a[pushsub.AttrSourcePublishTime] == "" {
			t.Errorf("dead-letter attributes = %v", a)
		}
		if r := a[pushsub.AttrDeadLetterReason]; !strings.Contains(r, "HTTP 503") || !strings.Contains(r, "backend unavailable") {
			t.Errorf("reason = %q", r)
		}
	}
}

func TestAckDeadlineIsTheRequestTimeout(t *testing.T) {
	f := newFixture(t, nil)
	release := make(chan struct{})
	var n atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	}))
	defer ts.Close()
	defer close(release)
	p, err := pushsub.New(context.Background(), f.client, "s", pushsub.Options{
		Endpoint: ts.URL, AckDeadline: 100 * time.Millisecond, MinBackoff: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(t, 1)
	stop := run(t, p)
	waitFor(t, "ack", func() bool { return p.Stats().Acks == 1 })
	stop()
	if got := p.Stats(); got.Nacks != 1 || got.Deliveries != 2 {
		t.Errorf("Stats = %+v, want one timed-out delivery then one ack", got)
	}
}

func TestConcurrencyIsBounded(t *testing.T) {
	f := newFixture(t, nil)
	var inFlight, peak atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		inFlight.Add(-1)
	}))
	defer ts.Close()
	p, err := pushsub.New(context.Background(), f.client, "s", pushsub.Options{Endpoint: ts.URL, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(t, 40)
	run(t, p)
	waitFor(t, "acks", func() bool { return p.Stats().Acks == 40 })
	if got := peak.Load(); got != 4 {
		t.Errorf("peak concurrency = %d, want 4", got)
	}
}

func TestDuplicateDelivery(t *testing.T) {
	f := newFixture(t, nil)
	var mu sync.Mutex
	seen := map[string]int{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var d pushsub.Delivery
		if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
			t.Error(err)
		}
		mu.Lock()
		seen[d.Message.MessageID]++
		mu.Unlock()
	}))
	defer ts.Close()
	p, err := pushsub.New(context.Background(), f.client, "s", pushsub.Options{Endpoint: ts.URL, DuplicateDelivery: true})
	if err != nil {
		t.Fatal(err)
	}
	ids := f.publish(t, 10)
	stop := run(t, p)
	waitFor(t, "acks", func() bool { return p.Stats().Acks == 10 })
	stop()
	for _, id := range ids {
		if seen[id] != 2 {
			t.Errorf("message %s delivered %d times, want 2", id, seen[id])
		}
	}
	if got := p.Stats(); got.Deliveries != 20 || got.Acks != 10 {
		t.Errorf("Stats = %+v", got)
	}
}

func TestUnreachableEndpointRedelivers(t *testing.T) {
	f := newFixture(t, nil)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	url := ts.URL
	ts.Close() // nothing listens there now
	p, err := pushsub.New(context.Background(), f.client, "s", pushsub.Options{
		Endpoint: url, MinBackoff: 5 * time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		DeadLetterTopic: "projects/p/topics/dl", MaxDeliveryAttempts: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.publish(t, 1)
	run(t, p)
	waitFor(t, "dead letter", func() bool { return p.Stats().DeadLettered == 1 })
	dead := f.pullDeadLetters(t)
	if len(dead) != 1 || !strings.Contains(dead[0].GetAttributes()[pushsub.AttrDeadLetterReason], "push:") {
		t.Errorf("dead letters = %v", dead)
	}
}

func TestNewErrors(t *testing.T) {
	f := newFixture(t, nil)
	if _, err := pushsub.New(context.Background(), f.client, "s", pushsub.Options{}); err == nil {
		t.Error("New without Endpoint: no error")
	}
	_, err := pushsub.New(context.Background(), f.client, "missing", pushsub.Options{Endpoint: "http://x"})
	if err == nil || !strings.Contains(err.Error(), "GetSubscription") {
		t.Errorf("New for a missing subscription: %v", err)
	}
}

func TestSetDuplicateDelivery(t *testing.T) {
	f := newFixture(t, nil)
	var n atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.Add(1) }))
	defer ts.Close()
	p, err := pushsub.New(context.Background(), f.client, "s", pushsub.Options{Endpoint: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	run(t, p)
	f.publish(t, 3)
	waitFor(t, "acks", func() bool { return p.Stats().Acks == 3 })
	p.SetDuplicateDelivery(true)
	f.publish(t, 3)
	waitFor(t, "acks", func() bool { return p.Stats().Acks == 6 })
	if got := n.Load(); got != 3+6 {
		t.Errorf("endpoint saw %d requests, want 3 single then 3 double deliveries", got)
	}
}
