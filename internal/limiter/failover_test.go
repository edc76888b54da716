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

// TestRestartFromSnapshotLosingGrants: Redis restarts from an RDB file
// saved after one grant of a window of two and before the second: the
// restarted server knows one grant. Without a check it would grant another
// at once — three calls in one window. Redis gives a primary that starts
// from a file a new replication id (since Redis 7.0 it loads the file's id
// as its secondary one only, master_replid2: redis/redis#8015), so the
// failover check sees the restart and the scope's state is treated as lost
// (every window full for one window from the restart), once.
func TestRestartFromSnapshotLosingGrants(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rc := srv.Client(t)
	lim := New(rc, mustParse(t, failoverQuota))
	if p, err := lim.Acquire(ctx, scopeA, Cost{Requests: 1}); err != nil || p.Outcome != Granted {
		t.Fatalf("first acquire: %+v, %v", p, err)
	}
	if err := rc.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	granted := time.Now()
	if p, err := lim.Acquire(ctx, scopeA, Cost{Requests: 1}); err != nil || p.Outcome != Granted {
		t.Fatalf("second acquire (lost in the restart): %+v, %v", p, err)
	}
	srv.Restart(t)
	meta := metaKey(scopePrefix(scopeA))
	if n, err := rc.Exists(ctx, meta).Result(); err != nil || n != 1 {
		t.Fatalf("the scope's state was not restored from the snapshot (%d, %v): not the fault designed", n, err)
	}

	p, err := lim.Acquire(ctx, scopeA, Cost{Requests: 1})
	if err != nil {
		t.Fatal(err)
	}
	if p.Outcome == Granted || p.At.Before(granted.Add(2*time.Second)) || !strings.Contains(p.Reason, "state lost") {
		t.Fatalf("after the restart: %+v; want the state-lost cooldown, nothing granted within a window of the lost grant (%v)", p, granted)
	}
	// Seen once: the next decision queues behind the first (the window
	// holds two), spaced (2100ms / 2 / 8), instead of starting another
	// cooldown.
	q, err := lim.Acquire(ctx, scopeA, Cost{Requests: 1})
	if err != nil {
		t.Fatal(err)
	}
	if want := p.At.Add(131 * time.Millisecond); !q.At.Equal(want) {
		t.Fatalf("next decision %+v, want right after the first's slot, at %v", q, want)
	}
}
