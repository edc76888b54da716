package limiter

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"
)

// refModel is a pure-Go reference of the limiter's semantics, written for
// clarity rather than speed: it keeps every entry forever and finds the
// earliest fit by trying every instant at which some constraint can change.
type refModel struct {
	q                                  Quota
	sliding, daily                     []Dimension
	early, claimLate, blackout, horizo int64
	entries                            [][]refEntry // per sliding dimension
	last, cd                           int64
	cr                                 string
	counts                             []map[int64]int64 // per daily dimension: day start -> amount
	permits                            map[string]*refPermit
}

// refEntry is one admission in one sliding dimension: its time, its amount
// now, and the lowest amount it ever held (an extra charge reconciled later
// raises amt above low).
type refEntry struct{ t, amt, low int64 }

type refPermit struct {
	state    byte // 'r', 'g', 'x'
	t        int64
	req, tok int64
	idx      []int
	day      int64
}

func newRefModel(q Quota) *refModel {
	m := &refModel{q: q, permits: map[string]*refPermit{}}
	g := q.Guard.Milliseconds()
	m.early, m.claimLate, m.blackout, m.horizo = (q.Guard / 4).Milliseconds(), (q.Guard / 4).Milliseconds(), (3 * q.Guard / 4).Milliseconds(), q.Horizon.Milliseconds()
	_ = g
	for _, d := range q.Dimensions {
		if d.Daily() {
			m.daily = append(m.daily, d)
			m.counts = append(m.counts, map[int64]int64{})
		} else {
			m.sliding = append(m.sliding, d)
			m.entries = append(m.entries, nil)
		}
	}
	return m
}

func (m *refModel) win(d Dimension) int64 { return (d.Period + m.q.Guard).Milliseconds() }

func bounds5(now int64) [5]int64 {
	var b [5]int64
	for k := range 5 {
		b[k] = PacificDayStart(time.UnixMilli(now), k-1).UnixMilli()
	}
	return b
}

// fits reports whether cost fits every dimension at c; beyond is true when c
// lies past the known days.
func (m *refModel) fits(c int64, cost Cost, b [5]int64) (ok, beyond bool) {
	for i, d := range m.sliding {
		amt := cost.of(d.Unit)
		if amt == 0 {
			continue
		}
		var sum int64
		for _, e := range m.entries[i] {
			if e.t > c-m.win(d) {
				sum += e.amt
			}
		}
		if sum+amt > m.q.Capacity(d) {
			return false, false
		}
	}
	for i, d := range m.daily {
		amt := cost.of(d.Unit)
		if amt == 0 {
			continue
		}
		j := -1
		for k := range 4 {
			if b[k] <= c && c < b[k+1] {
				j = k
			}
		}
		if j < 0 {
			return false, true
		}
		if c < b[j]+m.early || c >= b[j+1]-m.blackout {
			return false, false
		}
		if m.counts[i][b[j]]+amt > m.q.Capacity(d) {
			return false, false
		}
	}
	return true, false
}

func (m *refModel) dayOf(t int64, b [5]int64) int64 {
	for k := range 4 {
		if b[k] <= t && t < b[k+1] {
			return b[k]
		}
	}
	return -1
}

// earliest returns the earliest instant at or after t0 at which cost fits,
// trying every instant at which a constraint can change (-1: none; beyond:
// the instant returned lies past the known days).
func (m *refModel) earliest(t0 int64, cost Cost, b [5]int64) (t int64, beyond bool) {
	cands := []int64{t0}
	for i, d := range m.sliding {
		for _, e := range m.entries[i] {
			cands = append(cands, e.t+m.win(d))
		}
	}
	for _, x := range b {
		cands = append(cands, x+m.early)
	}
	slices.Sort(cands)
	for _, c := range cands {
		if c < t0 {
			continue
		}
		ok, beyond := m.fits(c, cost, b)
		if beyond || ok {
			return c, beyond
		}
	}
	return -1, false
}

// lastReleased reports whether the newest entry holds nothing in any
// sliding dimension (its permit was given back).
func (m *refModel) lastReleased() bool {
	seen := false
	for i := range m.sliding {
		if n := len(m.entries[i]); n > 0 {
			if m.entries[i][n-1].amt != 0 {
				return false
			}
			seen = true
		}
	}
	return seen
}

// spacing is the least time between a reservation and the entry before it:
// 1/spacing of the window × the cost's largest share of a capacity.
func (m *refModel) spacing(cost Cost) int64 {
	g := 0.0
	for _, d := range m.sliding {
		if c, amt := m.q.Capacity(d), cost.of(d.Unit); c > 0 && amt > 0 {
			g = max(g, float64(m.win(d))*float64(amt)/float64(c))
		}
	}
	div, err := strconv.ParseFloat(spacingLua, 64)
	if err != nil {
		panic(err)
	}
	return int64(math.Floor(g / div))
}

// acquire returns the outcome and, for Granted/Reserved, the exact slot; for
// Denied, the exact earliest fit minus the horizon.
func (m *refModel) acquire(now int64, id string, cost Cost) (Outcome, int64) {
	for _, d := range m.q.Dimensions {
		if cost.of(d.Unit) > m.q.Capacity(d) {
			return Rejected, 0
		}
	}
	b := bounds5(now)
	t, beyond := m.earliest(max(now, m.last, m.cd), cost, b)
	if !beyond && t > now+m.early && t <= now+m.horizo {
		// A reservation comes at least the spacing after the entry before,
		// unless that entry was given back (no call).
		if p := m.last + m.spacing(cost); p > t && !m.lastReleased() {
			if p > now+m.horizo {
				return Denied, p - m.horizo
			}
			t, beyond = m.earliest(p, cost, b)
		}
	}
	if beyond {
		return Denied, t - m.horizo
	}
	if t < 0 || t > now+m.horizo {
		return Denied, t - m.horizo
	}
	p := &refPermit{state: 'r', t: t, req: cost.Requests, tok: cost.InputTokens, day: m.dayOf(t, b)}
	for i, d := range m.sliding {
		p.idx = append(p.idx, len(m.entries[i]))
		m.entries[i] = append(m.entries[i], refEntry{t, cost.of(d.Unit), cost.of(d.Unit)})
	}
	for i, d := range m.daily {
		if p.day >= 0 {
			m.counts[i][p.day] += cost.of(d.Unit)
		}
	}
	m.last = t
	out := Reserved
	if t <= now+m.early {
		out, p.state = Granted, 'g'
	}
	m.permits[id] = p
	return out, t
}

func (m *refModel) set(p *refPermit, req, tok int64) {
	for i, d := range m.sliding {
		amt := req
		if d.Unit == InputTokens {
			amt = tok
		}
		e := &m.entries[i][p.idx[i]]
		e.amt, e.low = amt, min(e.low, amt)
	}
	for i, d := range m.daily {
		old, nw := p.req, req
		if d.Unit == InputTokens {
			old, nw = p.tok, tok
		}
		if p.day >= 0 {
			m.counts[i][p.day] += nw - old
		}
	}
	p.req, p.tok = req, tok
}

func (m *refModel) claim(now int64, id string, cost Cost) (Outcome, int64) {
	if p := m.permits[id]; p != nil && p.state == 'r' {
		if now < p.t-m.early {
			return Reserved, p.t
		}
		if now <= p.t+m.claimLate && m.cd <= now {
			p.state = 'g'
			return Granted, p.t
		}
		m.set(p, 0, 0)
		p.state = 'x'
	}
	return m.acquire(now, id, cost)
}

func (m *refModel) adjust(id string, release bool, tok int64) {
	p := m.permits[id]
	if p == nil || p.state == 'x' {
		return
	}
	if release {
		m.set(p, 0, 0)
		p.state = 'x'
		return
	}
	m.set(p, p.req, tok)
}

func (m *refModel) cooldown(now, until int64, reason string) {
	if until > now && until > m.cd {
		m.cd, m.cr = until, reason
	}
}

// fakeClock is a settable clock for the scripts' ARGV time.
type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time      { return c.t }
func (c *fakeClock) Add(d time.Duration) { c.t = c.t.Add(d) }
func (c *fakeClock) Set(t time.Time)     { c.t = t }
func (c *fakeClock) ms() int64           { return c.t.UnixMilli() }
func pacificTime(y int, mo time.Month, d, h, mi, s int) time.Time {
	return time.Date(y, mo, d, h, mi, s, 0, pacific)
}

const randomQuota = `{"safety": 0.9, "horizon": "3s", "guard": "40ms", "scopes": [
  {"project": "*", "model": "m", "dimensions": [
    {"name": "rpm", "unit": "requests", "limit": 6, "period": "1s"},
    {"name": "tpm", "unit": "input_tokens", "limit": 1000, "period": "1500ms"},
    {"name": "rpd", "unit": "requests", "limit": 45, "per": "pacific_day"},
    {"name": "tpd", "unit": "input_tokens", "limit": 20000, "per": "pacific_day"}]}]}`

// TestRandomAgainstModel drives the real script and the reference model with
// the same random operations and clock, and requires identical decisions.
func TestRandomAgainstModel(t *testing.T) {
	cfg := mustParse(t, randomQuota)
	rdb := startRedis(t)
	ctx := context.Background()
	starts := []time.Time{
		pacificTime(2026, 3, 7, 23, 59, 40), // before the spring-forward day
		pacificTime(2026, 10, 31, 23, 59, 50),
		pacificTime(2026, 6, 15, 12, 0, 0),
		pacificTime(2026, 11, 1, 23, 59, 55),
	}
	jumps := 0
	for seed := range 24 {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(seed), 7))
			clock := &fakeClock{t: starts[seed%len(starts)]}
			scope := Scope{Project: fmt.Sprint("p", seed), Model: "m"}
			l := New(rdb, cfg)
			l.clock = clock.Now
			q, _ := cfg.Quota(scope)
			m := newRefModel(q)
			extraCharges := seed % 3 // an extra charge can overfill windows already planned
			var ids []string
			costs := map[string]Cost{}
			// held is the latest Granted or Reserved permit of each id, as a
			// worker holds it (with its Ref), for Reconcile and Release.
			held := map[string]Permit{}
			seen := map[string]int{}
			for op := range 160 {
				switch x := r.IntN(100); {
				case x < 30:
					clock.Add(time.Duration(r.IntN(300)) * time.Millisecond)
				case x < 34:
					// jump to just before the next Pacific midnight
					next := PacificDayStart(clock.Now(), 1)
					clock.Set(next.Add(-time.Duration(r.IntN(3000)) * time.Millisecond))
					seen["jump to midnight"]++
					jumps++
				case x < 40:
					clock.Add(time.Duration(r.IntN(2000)) * time.Millisecond)
				}
				now := clock.ms()
				var got Permit
				var wantOut Outcome
				var wantAt int64
				var what string
				switch x := r.IntN(100); {
				case x < 55 || len(ids) == 0:
					cost := Cost{Requests: 1, InputTokens: int64(r.IntN(300))}
					switch r.IntN(12) {
					case 0:
						cost.InputTokens = int64(700 + r.IntN(300)) // up to and past the bucket
					case 1:
						cost.Requests = 0
					case 2:
						cost.InputTokens = 0
					}
					p, err := l.Acquire(ctx, scope, cost)
					if err != nil {
						t.Fatal(err)
					}
					got, what = p, fmt.Sprintf("acquire %+v", cost)
					wantOut, wantAt = m.acquire(now, p.ID, cost)
					ids = append(ids, p.ID)
					costs[p.ID] = cost
				case x < 80:
					id := ids[r.IntN(len(ids))]
					if p := m.permits[id]; p != nil && p.state == 'r' && p.t > now && r.IntN(2) == 0 {
						// come back around the slot, as a Cloud Task would
						clock.Set(time.UnixMilli(p.t + int64(r.IntN(41)-15)))
						now = clock.ms()
					}
					p, err := l.Claim(ctx, Permit{ID: id, Scope: scope, Cost: costs[id], Outcome: Reserved})
					if err != nil {
						t.Fatal(err)
					}
					got, what = p, "claim "+id
					wantOut, wantAt = m.claim(now, id, costs[id])
				case x < 90:
					id := ids[r.IntN(len(ids))]
					tok := int64(r.IntN(600))
					if p := m.permits[id]; extraCharges == 0 && p != nil {
						tok = r.Int64N(p.tok + 1) // refunds only: the windows must then hold
					}
					if err := l.Reconcile(ctx, Permit{ID: id, Scope: scope, Outcome: Granted, At: time.UnixMilli(now), Ref: held[id].Ref}, tok); err != nil {
						t.Fatal(err)
					}
					m.adjust(id, false, tok)
					continue
				case x < 96:
					id := ids[r.IntN(len(ids))]
					if err := l.Release(ctx, Permit{ID: id, Scope: scope, Outcome: Granted, At: time.UnixMilli(now), Ref: held[id].Ref}); err != nil {
						t.Fatal(err)
					}
					m.adjust(id, true, 0)
					continue
				default:
					until := now + int64(r.IntN(4000))
					if err := l.Cooldown(ctx, scope, time.UnixMilli(until), "429"); err != nil {
						t.Fatal(err)
					}
					m.cooldown(now, until, "429")
					continue
				}
				seen[what[:5]+" "+string(got.Outcome)]++
				if got.Outcome != wantOut {
					t.Fatalf("op %d %s at %d: outcome %s (at %d, %s), model %s (at %d)", op, what, now, got.Outcome, got.At.UnixMilli(), got.Reason, wantOut, wantAt)
				}
				if got.Outcome == Granted || got.Outcome == Reserved {
					held[got.ID] = got
				}
				switch got.Outcome {
				case Granted, Reserved:
					if got.At.UnixMilli() != wantAt {
						t.Fatalf("op %d %s at %d: %s at %d, model at %d", op, what, now, got.Outcome, got.At.UnixMilli(), wantAt)
					}
				case Denied:
					// The script may stop at a lower bound of the earliest fit.
					if a := got.At.UnixMilli(); a > wantAt || a+m.horizo <= now+m.horizo {
						t.Fatalf("op %d %s at %d: denied until %d, model's earliest %d", op, what, now, a, wantAt)
					}
				}
			}
			// The model's admissions respect every window of P+g, up to the
			// extra charges reconciled after later decisions (none when
			// extraCharges == 0: then exactly).
			t.Logf("decisions: %v", seen)
			checkModel(t, m)
		})
	}
	if jumps == 0 {
		t.Error("no operation jumped to Pacific midnight: the midnight branch is unreachable")
	}
}

// checkModel checks the overshoot bound of the reservations that hold: in
// every window (x-P-g, x] of a sliding dimension, the admitted amounts total
// at most the capacity plus the extra charges of the entries in it (each
// entry's amount now above the lowest it held). A decision only ever saw
// amounts at least as low as those, and made its own window fit; so without
// extra charges this is exactly the capacity.
func checkModel(t *testing.T, m *refModel) {
	t.Helper()
	for i, d := range m.sliding {
		es := m.entries[i]
		for j := range es {
			var sum, extra int64
			for _, e := range es {
				if e.t > es[j].t-m.win(d) && e.t <= es[j].t {
					sum += e.amt
					extra += max(0, e.amt-e.low)
				}
			}
			if capacity := m.q.Capacity(d); sum > capacity+extra {
				t.Fatalf("%s: window ending %d holds %d > capacity %d + extra charges %d", d.Name, es[j].t, sum, capacity, extra)
			}
		}
	}
}
