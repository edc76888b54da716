package limiter

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/redistest"
)

// failoverQuota: 2 requests per 2 s (guard 100 ms).
const failoverQuota = `{"safety": 1, "horizon": "1m", "guard": "100ms", "scopes": [
  {"project": "*", "model": "m", "dimensions": [
    {"name": "rpm", "unit": "requests", "limit": 2, "period": "2s"}]}]}`

// TestFailoverLosingGrants: a replica is promoted after the primary granted
// a call it never replicated (Redis replication is asynchronous). The
// promoted replica knows one grant of a window of two; without the
// replication-id check it would grant another at once — three calls in one
// window at Gemini's side. With it, the limiter treats the scope's state as
// lost (a new replication id) and admits nothing for one window.
func TestFailoverLosingGrants(t *testing.T) {
	ctx := context.Background()
	primary := redistest.Start(t)
	host, port, _ := strings.Cut(primary.Addr, ":")
	replica := redistest.Start(t, "--replicaof", host, port)
	cfg := mustParse(t, failoverQuota)
	onPrimary, onReplica := New(primary.Client(t), cfg), New(replica.Client(t), cfg)

	if p, err := onPrimary.Acquire(ctx, scopeA, Cost{Requests: 1}); err != nil || p.Outcome != Granted {
		t.Fatalf("first acquire: %+v, %v", p, err)
	}
	// The first grant reaches the replica; then the link is cut.
	pc, rc := primary.Client(t), replica.Client(t)
	if n, err := pc.Do(ctx, "WAIT", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT: %d replicas, %v", n, err)
	}
	if err := rc.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	granted := time.Now()
	if p, err := onPrimary.Acquire(ctx, scopeA, Cost{Requests: 1}); err != nil || p.Outcome != Granted {
		t.Fatalf("second acquire (lost in the failover): %+v, %v", p, err)
	}
	primary.Stop()

	// The promoted replica: the next call waits out a whole window (2 s +
	// guard) from the failover, though its own log has room for one.
	p, err := onReplica.Acquire(ctx, scopeA, Cost{Requests: 1})
	if err != nil {
		t.Fatal(err)
	}
	if p.Outcome == Granted || p.At.Before(granted.Add(2*time.Second)) {
		t.Fatalf("after the failover: %+v; want nothing granted within a window of the lost grant (%v)", p, granted)
	}
	if !strings.Contains(p.Reason, "state lost") {
		t.Fatalf("reason %q, want the state-lost cooldown", p.Reason)
	}
	// Seen once: meta now carries the new primary's replication id.
	info, err := rc.Info(ctx, "replication").Result()
	if err != nil {
		t.Fatal(err)
	}
	rid, _ := rc.HGet(ctx, metaKey(scopePrefix(scopeA)), "rid").Result()
	if rid == "" || !strings.Contains(info, "master_replid:"+rid) {
		t.Fatalf("meta rid %q, not the promoted replica's replication id:\n%s", rid, info)
	}
}
