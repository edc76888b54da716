package limiter

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gemq-dev/gemq/internal/redistest"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
)

// smallQuota: 3 requests and 100 tokens per second, guard 40ms (so the
// script's windows are 1040ms, early tolerance 10ms, claim allowance 10ms).
const smallQuota = `{"safety": 1, "horizon": "5s", "guard": "40ms", "scopes": [
  {"project": "*", "model": "m", "dimensions": [
    {"name": "rpm", "unit": "requests", "limit": 3, "period": "1s"},
    {"name": "tpm", "unit": "input_tokens", "limit": 100, "period": "1s"}]}]}`

var scopeA = Scope{Project: "proj", Model: "m"}

type fixture struct {
	l     *Limiter
	rdb   *redis.Client
	clock *fakeClock
}

func newFixture(t *testing.T, quota string) *fixture {
	t.Helper()
	rdb := startRedis(t)
	clock := &fakeClock{t: time.UnixMilli(1_780_000_000_000)}
	l := New(rdb, mustParse(t, quota))
	l.clock = clock.Now
	return &fixture{l, rdb, clock}
}

func (f *fixture) acquire(t *testing.T, c Cost) Permit {
	t.Helper()
	p, err := f.l.Acquire(context.Background(), scopeA, c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) claim(t *testing.T, p Permit) Permit {
	t.Helper()
	np, err := f.l.Claim(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return np
}

// meta returns the scope's meta hash with the packed field v decoded into
// named fields: e, fp, l, n, b, x, xm and, per sliding dimension, s:<dim>
// (sum), h:<dim> (head index) and t:<dim> (head time).
func (f *fixture) meta(t *testing.T) map[string]string {
	t.Helper()
	m, err := f.rdb.HGetAll(context.Background(), metaKey(scopePrefix(scopeA))).Result()
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := m["v"]; ok {
		delete(m, "v")
		names := []string{"e", "fp", "l", "n", "b", "x", "xm"}
		q, _ := f.l.cfg.Quota(scopeA)
		for _, d := range q.Dimensions {
			if !d.Daily() {
				names = append(names, "s:"+d.Name, "h:"+d.Name, "t:"+d.Name)
			}
		}
		vals := unpackDoubles(t, v)
		if len(vals) != len(names) {
			t.Fatalf("meta v holds %d numbers, want %d", len(vals), len(names))
		}
		for i, name := range names {
			m[name] = strconv.FormatInt(vals[i], 10)
		}
	}
	return m
}

func unpackDoubles(t *testing.T, s string) []int64 {
	t.Helper()
	if len(s)%8 != 0 {
		t.Fatalf("packed doubles of %d bytes", len(s))
	}
	var out []int64
	for i := 0; i < len(s); i += 8 {
		out = append(out, int64(math.Float64frombits(binary.LittleEndian.Uint64([]byte(s[i:i+8])))))
	}
	return out
}

// list returns the entries of dimension dim's window as "time|amount": the
// shared log from the dimension's head on.
func (f *fixture) list(t *testing.T, dim string) []string {
	t.Helper()
	ctx := context.Background()
	m := f.meta(t)
	head, _ := strconv.ParseInt(m["h:"+dim], 10, 64)
	base, _ := strconv.ParseInt(m["b"], 10, 64)
	l, err := f.rdb.LRange(ctx, logKey(scopePrefix(scopeA)), head-base, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	q, _ := f.l.cfg.Quota(scopeA)
	amt := 1
	for _, d := range q.Dimensions {
		if d.Name == dim && d.Unit == InputTokens {
			amt = 2
		}
	}
	out := []string{}
	for _, e := range l {
		v := unpackDoubles(t, e)
		out = append(out, strconv.FormatInt(v[0], 10)+"|"+strconv.FormatInt(v[amt], 10))
	}
	return out
}

func (f *fixture) ms(d time.Duration) time.Time { return f.clock.Now().Add(d).UTC() }

type decision struct {
	Outcome Outcome
	At      time.Time
}

func dec(p Permit) decision { return decision{p.Outcome, p.At} }

func TestReservationsAreFIFO(t *testing.T) {
	f := newFixture(t, smallQuota)
	var got []decision
	for range 7 {
		got = append(got, dec(f.acquire(t, Cost{Requests: 1, InputTokens: 10})))
	}
	// Reservations are spaced: 1040ms / 3 requests / 8 = 43ms apart.
	w, sp := 1040*time.Millisecond, 43*time.Millisecond
	want := []decision{
		{Granted, f.ms(0)}, {Granted, f.ms(0)}, {Granted, f.ms(0)},
		{Reserved, f.ms(w)}, {Reserved, f.ms(w + sp)}, {Reserved, f.ms(w + 2*sp)},
		{Reserved, f.ms(2 * w)},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("decisions (-want +got):\n%s", d)
	}
	// A small request arriving later never overtakes the queue (FIFO), even
	// though it would fit an earlier gap in the token dimension: it comes
	// after the tail, spaced (1040ms × 1 token / 100 / 8: 1ms).
	f.clock.Add(100 * time.Millisecond)
	tail := f.ms(2*w - 100*time.Millisecond + time.Millisecond)
	if p := f.acquire(t, Cost{Requests: 0, InputTokens: 1}); p.Outcome != Reserved || !p.At.Equal(tail) {
		t.Fatalf("late small request: %+v, want reserved after the tail, at %v", p, tail)
	}
}

func TestAllOrNothing(t *testing.T) {
	f := newFixture(t, strings.Replace(smallQuota, `"horizon": "5s"`, `"horizon": "0s"`, 1))
	if p := f.acquire(t, Cost{Requests: 1, InputTokens: 80}); p.Outcome != Granted {
		t.Fatalf("first: %+v", p)
	}
	before := f.meta(t)
	// Fits the requests dimension (1 of 3) but not the tokens one (80+30 > 100):
	// with a zero horizon it is denied, and nothing at all is charged.
	p := f.acquire(t, Cost{Requests: 1, InputTokens: 30})
	if p.Outcome != Denied || p.Reason != "tpm" {
		t.Fatalf("second: %+v, want denied by tpm", p)
	}
	if d := cmp.Diff(before, f.meta(t)); d != "" {
		t.Fatalf("state changed by a denied request (-before +after):\n%s", d)
	}
	if n := len(f.list(t, "rpm")); n != 1 {
		t.Fatalf("rpm list has %d entries, want 1", n)
	}
	if p := f.acquire(t, Cost{Requests: 1, InputTokens: 20}); p.Outcome != Granted {
		t.Fatalf("third (fits both): %+v", p)
	}
}

func TestRejectedTooLarge(t *testing.T) {
	f := newFixture(t, smallQuota)
	p := f.acquire(t, Cost{Requests: 1, InputTokens: 101})
	if p.Outcome != Rejected || !strings.HasPrefix(p.Reason, "tpm: cost 101 exceeds") {
		t.Fatalf("got %+v, want rejected by tpm", p)
	}
	if n, _ := f.rdb.DBSize(context.Background()).Result(); n != 0 {
		t.Fatalf("a rejected request wrote %d keys", n)
	}
	if p := f.acquire(t, Cost{Requests: 1, InputTokens: 100}); p.Outcome != Granted {
		t.Fatalf("a request of exactly one bucket: %+v", p)
	}
	if p, _ := f.l.Claim(context.Background(), p); p.Outcome != Rejected {
		t.Fatalf("claiming a rejected permit: %+v", p)
	}
}

func TestUnknownScopeAndBadInput(t *testing.T) {
	f := newFixture(t, smallQuota)
	ctx := context.Background()
	if _, err := f.l.Acquire(ctx, Scope{Project: "p", Model: "other"}, Cost{Requests: 1}); !errors.Is(err, ErrUnknownScope) {
		t.Fatalf("unknown scope: %v", err)
	}
	if _, err := f.l.Acquire(ctx, scopeA, Cost{Requests: -1}); err == nil {
		t.Fatal("negative cost accepted")
	}
	if _, err := f.l.Claim(ctx, Permit{ID: "bad id}", Scope: scopeA, Outcome: Reserved}); err == nil {
		t.Fatal("bad permit id accepted")
	}
	if err := f.l.Cooldown(ctx, Scope{Project: "p", Model: "other"}, time.Now(), "x"); !errors.Is(err, ErrUnknownScope) {
		t.Fatalf("cooldown of unknown scope: %v", err)
	}
}

func TestClaim(t *testing.T) {
	f := newFixture(t, smallQuota)
	for range 3 {
		f.acquire(t, Cost{Requests: 1, InputTokens: 10})
	}
	r := f.acquire(t, Cost{Requests: 1, InputTokens: 10})
	if r.Outcome != Reserved || r.Reason != "rpm" {
		t.Fatalf("want a reservation by rpm, got %+v", r)
	}
	at := r.At

	// Early: nothing changes.
	f.clock.Set(at.Add(-500 * time.Millisecond))
	if p := f.claim(t, r); dec(p) != dec(r) || p.Reason != "rpm" || !p.Early {
		t.Fatalf("early claim: %+v, want the same reservation, early", p)
	}
	// On time (within the early tolerance): granted at the reserved slot.
	f.clock.Set(at.Add(-10 * time.Millisecond))
	g := f.claim(t, r)
	if g.Outcome != Granted || !g.At.Equal(at) || g.ID != r.ID {
		t.Fatalf("on-time claim: %+v", g)
	}
	// A second claim of the same reservation does not grant on it again: it
	// queues afresh behind it (3 requests at `at`... 1 per window left).
	entries := len(f.list(t, "rpm"))
	g2 := f.claim(t, r)
	if g2.Outcome == Granted && g2.At.Equal(at) && len(f.list(t, "rpm")) == entries {
		t.Fatalf("second claim granted on the same reservation: %+v", g2)
	}
	if n := len(f.list(t, "rpm")); n != entries+1 {
		t.Fatalf("second claim should append a fresh entry: %d -> %d", entries, n)
	}
	if g2.Outcome == Reserved && g2.Early {
		t.Fatalf("second claim decided afresh but marked early: %+v", g2)
	}
}

func TestLateClaimReacquires(t *testing.T) {
	f := newFixture(t, smallQuota)
	for range 3 {
		f.acquire(t, Cost{Requests: 1, InputTokens: 10})
	}
	r := f.acquire(t, Cost{Requests: 1, InputTokens: 10}) // reserved at +1040ms
	f.clock.Set(r.At.Add(11 * time.Millisecond))          // just past the 10ms allowance
	p := f.claim(t, r)
	if p.Outcome != Granted || !p.At.Equal(f.ms(0)) {
		t.Fatalf("late claim: %+v, want granted now %v", p, f.ms(0))
	}
	// The old entry was zeroed in place and a new one appended at now.
	want := []string{fmtEntry(r.At, 0), fmtEntry(f.clock.Now(), 1)}
	if d := cmp.Diff(want, f.list(t, "rpm")); d != "" {
		t.Fatalf("rpm list (-want +got):\n%s", d)
	}
	if m := f.meta(t); m["s:rpm"] != "1" || m["s:tpm"] != "10" {
		t.Fatalf("sums after late claim: %v", m)
	}
}

func fmtEntry(t time.Time, amt int64) string {
	return strconv.FormatInt(t.UnixMilli(), 10) + "|" + strconv.FormatInt(amt, 10)
}

func TestReconcileBothWays(t *testing.T) {
	f := newFixture(t, smallQuota)
	ctx := context.Background()
	p := f.acquire(t, Cost{Requests: 1, InputTokens: 50})
	// Refund: 50 estimated, 20 used.
	if err := f.l.Reconcile(ctx, p, 20); err != nil {
		t.Fatal(err)
	}
	if m := f.meta(t); m["s:tpm"] != "20" {
		t.Fatalf("after refund tpm sum = %s, want 20", m["s:tpm"])
	}
	if q := f.acquire(t, Cost{Requests: 1, InputTokens: 80}); q.Outcome != Granted {
		t.Fatalf("refunded room not usable: %+v", q)
	}
	// Extra charge: actually 45 (20 -> 45): 45+80 > 100 so the next small
	// request must wait for the window.
	if err := f.l.Reconcile(ctx, p, 45); err != nil {
		t.Fatal(err)
	}
	if m := f.meta(t); m["s:tpm"] != "125" {
		t.Fatalf("after extra charge tpm sum = %s, want 125", m["s:tpm"])
	}
	if q := f.acquire(t, Cost{Requests: 0, InputTokens: 1}); q.Outcome != Reserved || q.Reason != "tpm" {
		t.Fatalf("after extra charge: %+v, want reserved by tpm", q)
	}
	// Idempotent. (The reservation above popped the old entries: the sum is
	// now that of the list, one entry of 1 token.)
	before := f.meta(t)
	if err := f.l.Reconcile(ctx, p, 45); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(before, f.meta(t)); d != "" || before["s:tpm"] != "1" {
		t.Fatalf("reconcile twice changed the state (-before +after):\n%s", d)
	}
}

func TestRelease(t *testing.T) {
	f := newFixture(t, smallQuota)
	ctx := context.Background()
	var ps []Permit
	for range 3 {
		ps = append(ps, f.acquire(t, Cost{Requests: 1, InputTokens: 30}))
	}
	for range 2 { // releasing twice is a no-op
		if err := f.l.Release(ctx, ps[1]); err != nil {
			t.Fatal(err)
		}
	}
	if m := f.meta(t); m["s:rpm"] != "2" || m["s:tpm"] != "60" {
		t.Fatalf("after release: %v", m)
	}
	if p := f.acquire(t, Cost{Requests: 1, InputTokens: 40}); p.Outcome != Granted {
		t.Fatalf("released room not usable: %+v", p)
	}
}

func TestCooldown(t *testing.T) {
	f := newFixture(t, smallQuota)
	ctx := context.Background()
	if err := f.l.Cooldown(ctx, scopeA, f.ms(700*time.Millisecond), "429 rpm"); err != nil {
		t.Fatal(err)
	}
	// A shorter cooldown never shortens it.
	if err := f.l.Cooldown(ctx, scopeA, f.ms(100*time.Millisecond), "other"); err != nil {
		t.Fatal(err)
	}
	p := f.acquire(t, Cost{Requests: 1, InputTokens: 1})
	if p.Outcome != Reserved || !p.At.Equal(f.ms(700*time.Millisecond)) || p.Reason != "cooldown: 429 rpm" {
		t.Fatalf("during cooldown: %+v", p)
	}
	// Beyond the horizon: denied, ask again when a reservation would land at its end.
	if err := f.l.Cooldown(ctx, scopeA, f.ms(time.Minute), "429 long"); err != nil {
		t.Fatal(err)
	}
	p = f.acquire(t, Cost{Requests: 1, InputTokens: 1})
	if p.Outcome != Denied || !p.At.Equal(f.ms(time.Minute-5*time.Second)) || p.Reason != "cooldown: 429 long" {
		t.Fatalf("long cooldown: %+v", p)
	}
	// A reservation claimed on time during a (new) cooldown is re-queued after it.
	f.clock.Add(2 * time.Minute)
	r := f.acquire(t, Cost{Requests: 1})
	if r.Outcome != Granted {
		t.Fatalf("after cooldown: %+v", r)
	}
	ttl, _ := f.rdb.PTTL(ctx, metaKey(scopePrefix(scopeA))).Result()
	if ttl <= 0 {
		t.Fatalf("meta key has no TTL: %v", ttl)
	}
}

func TestScriptFlushMidRun(t *testing.T) {
	f := newFixture(t, smallQuota)
	ctx := context.Background()
	p := f.acquire(t, Cost{Requests: 1, InputTokens: 1})
	if err := f.rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if q := f.acquire(t, Cost{Requests: 1, InputTokens: 1}); q.Outcome != Granted {
		t.Fatalf("after SCRIPT FLUSH: %+v", q)
	}
	f.rdb.ScriptFlush(ctx)
	if err := f.l.Reconcile(ctx, p, 0); err != nil {
		t.Fatal(err)
	}
	f.rdb.ScriptFlush(ctx)
	if err := f.l.Cooldown(ctx, scopeA, f.ms(time.Second), "x"); err != nil {
		t.Fatal(err)
	}
}

func TestEveryKeyHasTTLAndOneSlot(t *testing.T) {
	f := newFixture(t, randomQuota)
	ctx := context.Background()
	f.clock.Set(pacificTime(2026, 5, 1, 10, 0, 0))
	for range 10 {
		p := f.acquire(t, Cost{Requests: 1, InputTokens: 200})
		f.l.Reconcile(ctx, p, 100)
	}
	f.l.Cooldown(ctx, scopeA, f.ms(time.Second), "x")
	keys, err := f.rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) < 4 {
		t.Fatalf("keys: %v", keys)
	}
	for _, k := range keys {
		ttl, _ := f.rdb.PTTL(ctx, k).Result()
		if ttl <= 0 {
			t.Errorf("key %s has no TTL (%v)", k, ttl)
		}
		if !strings.HasPrefix(k, "gemq:{proj/m}:") {
			t.Errorf("key %s outside the scope's hash tag", k)
		}
	}
}

func TestScopePrefixEscapes(t *testing.T) {
	got := scopePrefix(Scope{Project: "a}b{c/d", Model: "gemini-2.5-flash"})
	if want := "gemq:{a%7Db%7Bc%2Fd/gemini-2.5-flash}"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestCluster runs reservations, claims, reconcile and cooldown on a real
// 3-master Redis Cluster: every key of a scope must hash to one slot.
func TestCluster(t *testing.T) {
	addrs := redistest.StartCluster(t, 3)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { cc.Close() })
	ctx := context.Background()
	l := New(cc, mustParse(t, randomQuota))
	for i, s := range []Scope{{"p1", "m"}, {"p2", "m"}, {"{odd}/x", "m"}} {
		var last Permit
		for range 8 {
			p, err := l.Acquire(ctx, s, Cost{Requests: 1, InputTokens: 100})
			if err != nil {
				t.Fatalf("scope %d: %v", i, err)
			}
			if p.Outcome != Granted && p.Outcome != Reserved {
				t.Fatalf("scope %d: %+v", i, p)
			}
			last = p
		}
		if last.Outcome != Reserved {
			t.Fatalf("scope %d: 8 requests of a 5-per-second quota: last %+v", i, last)
		}
		if _, err := l.Claim(ctx, last); err != nil {
			t.Fatal(err)
		}
		if err := l.Reconcile(ctx, last, 10); err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx, last); err != nil {
			t.Fatal(err)
		}
		if err := l.Cooldown(ctx, s, time.Now().Add(time.Second), "429"); err != nil {
			t.Fatal(err)
		}
	}
}

// A permit held as Reserved that has been claimed since (a call may be
// running under it) is not released through the Reserved copy; the Granted
// one from the claim, and an unclaimed reservation, are.
func TestReleaseOfClaimedReservation(t *testing.T) {
	f := newFixture(t, smallQuota)
	ctx := context.Background()
	for range 3 {
		f.acquire(t, Cost{Requests: 1, InputTokens: 10})
	}
	r := f.acquire(t, Cost{Requests: 1, InputTokens: 10})
	r2 := f.acquire(t, Cost{Requests: 1, InputTokens: 10})
	if r.Outcome != Reserved || r2.Outcome != Reserved {
		t.Fatalf("want two reservations, got %+v, %+v", r, r2)
	}
	f.clock.Set(r.At)
	g := f.claim(t, r)
	if g.Outcome != Granted {
		t.Fatalf("claim: %+v", g)
	}
	before := f.meta(t)
	if err := f.l.Release(ctx, r); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(before, f.meta(t)); d != "" {
		t.Fatalf("releasing the Reserved copy of a claimed permit changed the state (-before +after):\n%s", d)
	}
	if err := f.l.Release(ctx, r2); err != nil {
		t.Fatal(err)
	}
	mid := f.meta(t)
	if mid["s:tpm"] == before["s:tpm"] {
		t.Fatalf("an unclaimed reservation was not released: %v", mid)
	}
	if err := f.l.Release(ctx, g); err != nil {
		t.Fatal(err)
	}
	if m := f.meta(t); m["s:tpm"] == mid["s:tpm"] {
		t.Fatalf("the claimed (Granted) permit was not released: %v", m)
	}
}

// When a scope's state is recreated (new epoch, new secret), a Limiter that
// knew the old secret signs new refs with the new one, and old refs are
// ignored.
func TestRefAfterNewEpoch(t *testing.T) {
	f := newFixture(t, smallQuota)
	ctx := context.Background()
	p1 := f.acquire(t, Cost{Requests: 1, InputTokens: 10})
	if err := f.rdb.Del(ctx, metaKey(scopePrefix(scopeA)), logKey(scopePrefix(scopeA))).Err(); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(5 * time.Millisecond)
	p2 := f.acquire(t, Cost{Requests: 1, InputTokens: 50})
	if p1.Outcome != Granted || p2.Outcome != Granted || p2.Ref == "" {
		t.Fatalf("want two grants with refs: %+v, %+v", p1, p2)
	}
	if err := f.l.Reconcile(ctx, p1, 0); err != nil {
		t.Fatal(err)
	}
	if m := f.meta(t); m["s:tpm"] != "50" {
		t.Fatalf("a ref of the old epoch changed the new state: %v", m)
	}
	if err := f.l.Reconcile(ctx, p2, 20); err != nil {
		t.Fatal(err)
	}
	if m := f.meta(t); m["s:tpm"] != "20" {
		t.Fatalf("reconcile with the new epoch's ref: %v, want s:tpm 20", m)
	}
}

// TestReleasedReservationsDoNotPushTheQueue: a reservation given back at
// once (the seed policy refuses and retries later) leaves no call behind,
// so the next reservation is not spaced after it: a run of refusals keeps
// the queue's tail where the window frees, instead of pushing it a spacing
// further each time until nothing is granted again.
func TestReleasedReservationsDoNotPushTheQueue(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, smallQuota)
	for range 3 {
		if p := f.acquire(t, Cost{Requests: 1}); p.Outcome != Granted {
			t.Fatalf("setup: %+v", p)
		}
	}
	w := 1040 * time.Millisecond
	for i := range 10 {
		p := f.acquire(t, Cost{Requests: 1})
		if p.Outcome != Reserved || !p.At.Equal(f.ms(w)) {
			t.Fatalf("refusal %d: %+v, want reserved at %v (where the window frees)", i, p, f.ms(w))
		}
		if err := f.l.Release(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	// A reservation kept is spaced after the one before it.
	first, second := f.acquire(t, Cost{Requests: 1}), f.acquire(t, Cost{Requests: 1})
	if !first.At.Equal(f.ms(w)) || !second.At.Equal(f.ms(w+43*time.Millisecond)) {
		t.Fatalf("kept reservations at %v and %v, want %v and 43ms later", first.At, second.At, f.ms(w))
	}
}

// TestWithoutSpacing: the seed policy's limiter (and the baseline's) keeps
// a window's reservations at the instant the window frees, unspaced.
func TestWithoutSpacing(t *testing.T) {
	f := newFixture(t, smallQuota)
	f.l.unspaced = true
	w := 1040 * time.Millisecond
	for i := range 6 {
		p := f.acquire(t, Cost{Requests: 1})
		if want := f.ms(0); i >= 3 {
			if want = f.ms(w); p.Outcome != Reserved || !p.At.Equal(want) {
				t.Fatalf("acquire %d: %+v, want reserved at %v, unspaced", i, p, want)
			}
		} else if p.Outcome != Granted {
			t.Fatalf("acquire %d: %+v, want granted", i, p)
		}
	}
}
