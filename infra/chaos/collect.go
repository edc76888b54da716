package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/redis/go-redis/v9"
)

// Message is one message the harness read from the results or the
// dead-letter topic, with the real time it was read.
type Message struct {
	Data       []byte
	Attributes map[string]string
	At         time.Time
}

// collector drains the harness' own subscriptions to the results and
// dead-letter topics: the independent record of what gemq delivered.
type collector struct {
	client  *pubsub.Client
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	results []Message
	dead    []Message
}

func newCollector(c *pubsub.Client) *collector { return &collector{client: c} }

func (c *collector) start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	for sub, into := range map[string]*[]Message{resultsSub: &c.results, deadLetterSub: &c.dead} {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.drain(ctx, sub, into)
		}()
	}
}

func (c *collector) drain(ctx context.Context, sub string, into *[]Message) {
	name := "projects/" + project + "/subscriptions/" + sub
	for ctx.Err() == nil {
		resp, err := c.client.SubscriptionAdminClient.Pull(ctx, &pubsubpb.PullRequest{
			Subscription: name, MaxMessages: 500, ReturnImmediately: true, //nolint:staticcheck // pstest answers at once
		})
		if err != nil || len(resp.GetReceivedMessages()) == 0 {
			sleepCtx(ctx, 20*time.Millisecond)
			continue
		}
		now := time.Now()
		var ids []string
		c.mu.Lock()
		for _, rm := range resp.GetReceivedMessages() {
			m := rm.GetMessage()
			*into = append(*into, Message{Data: m.GetData(), Attributes: m.GetAttributes(), At: now})
			ids = append(ids, rm.GetAckId())
		}
		c.mu.Unlock()
		c.client.SubscriptionAdminClient.Acknowledge(context.WithoutCancel(ctx), &pubsubpb.AcknowledgeRequest{Subscription: name, AckIds: ids})
	}
}

// snapshot returns copies of what was read so far.
func (c *collector) snapshot() (results, dead []Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Message(nil), c.results...), append([]Message(nil), c.dead...)
}

func (c *collector) stop() {
	if c.cancel != nil {
		c.cancel()
		c.wg.Wait()
	}
}

// redisDo runs one command on the Redis at addr.
func redisDo(ctx context.Context, addr string, args ...any) error {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Do(ctx, args...).Err(); err != nil {
		return fmt.Errorf("redis %v on %s: %w", args, addr, err)
	}
	return nil
}

// redisKeys returns how many keys the Redis at addr holds (DBSIZE).
func redisKeys(ctx context.Context, addr string) (int64, error) {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := c.DBSize(ctx).Result()
	if err != nil {
		return 0, fmt.Errorf("redis DBSIZE on %s: %w", addr, err)
	}
	return n, nil
}
