// Package limiter grants Gemini calls permits so that, across every function
// instance, no quota dimension of a (project, model) scope is ever exceeded.
//
// One Lua script decides all dimensions of a scope atomically in Redis, with
// Redis's clock. A decision is one of:
//
//   - Granted: call Gemini now.
//   - Reserved: the earliest slot at which the call fits every dimension
//     has been reserved for it (FIFO: later requests queue behind it); come
//     back at At and Claim the permit, which then grants without asking
//     again. At is the slot, except while an adaptive limit is below its
//     ceiling: then, for a slot more than half a window ahead, At is an
//     earlier wake (as early as the slot would be at the ceiling), and the
//     Claim there grants if a re-plan has moved the slot to it, or answers
//     Reserved with a later time (see "Re-planning").
//   - Denied: the earliest fit lies beyond the horizon (e.g. the daily quota
//     is spent until Pacific midnight, or a long cooldown); nothing is
//     reserved and At is the earliest time worth asking again (the time from
//     which a new Acquire can reserve that fit).
//   - Rejected: the cost exceeds a whole bucket (capacity of a window or a
//     day); permanent.
//
// # The guarantee
//
// For every sliding dimension with limit L and period P, the calls made under
// permits, as Gemini receives them, total at most floor(safety × L) in ANY
// window of length P; for a daily dimension, at most floor(safety × L) per
// Pacific calendar day. This holds provided each call reaches Gemini within
// its latency budget: with guard g (Quota.Guard), a call made right after a
// Granted Acquire must reach Gemini within 3g/4 of the permit's At, and a call
// made after a Granted Claim within g/2 of the Claim. How: the script keeps,
// per sliding dimension, an exact FIFO log of admissions and admits at time t
// only if the window (t-P-g, t] holds room, and calls happen in
// [At-g/4, At+3g/4]; a window of length P at Gemini's side therefore maps
// into one of length P+g in the log. The cost is at most g/(P+g) of
// throughput (1.6% for g = 1s, P = 1m). Daily dimensions admit nothing within
// 3g/4 before and g/4 after Pacific midnight, so a call is always counted in
// the day Gemini sees it in.
//
// # Re-planning
//
// Reservations hold against estimate error: a reconcile's extra charge
// pushes only later decisions. They move when an effective capacity
// (Throttled, Settle) moves. Once one has risen 10% or more above the
// lowest the reservations ahead were decided at (or is back near its
// ceiling), the next decision first decides them again at the current
// capacities, in order, never after their slot and never before their
// wakes (the times their tasks come back), a cooldown, or now + g/4: they
// move earlier. Once one has fallen 10% or more below the highest they were
// decided at (a 429 said Gemini has less), they are decided again the same
// way but may move later, and a task that comes at its old slot is told the
// new one. Claimed slots never move. While an adaptive capacity is below
// its ceiling admissions are paced: each comes at least a window × its
// share of the capacity after the one before, not a window's worth at once.
// While an adaptive capacity is below its ceiling, a Reserved permit
// whose slot lies more than half a window ahead carries an earlier wake as
// At (as early as the slot would be at the ceiling), so that its task is
// there if its slot moves. The re-planned slots obey the same windows, so
// the guarantee below holds against the capacity of each decision, re-plans
// included. A queue of more than 4,096 reservations ahead, or one whose
// re-plan would cross a Pacific day or the horizon, is not re-planned.
//
// Reservations are exact, not bucketed: for each dimension the earliest t at
// which sum(entries in (t-P-g, t]) + cost <= capacity is found by walking the
// log from its head; entries that can no longer matter are popped, so each
// decision is O(1) amortised and every list stays bounded by the admissions of
// one horizon plus one window.
//
// All keys of a scope share the hash tag {<project>/<model>} and carry TTLs, so
// the limiter runs on Redis Cluster and leaves nothing behind. Scripts are run
// with EVALSHA and reloaded after SCRIPT FLUSH.
package limiter

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Outcome is a permit decision. Its values are JSON-friendly strings.
type Outcome string

const (
	// Granted: call Gemini now.
	Granted Outcome = "granted"
	// Reserved: a slot at Permit.At is held; come back then and Claim.
	Reserved Outcome = "reserved"
	// Denied: nothing held; ask again (Acquire or Claim) at Permit.At.
	Denied Outcome = "denied"
	// Rejected: the cost can never fit; a permanent failure.
	Rejected Outcome = "rejected"
)

// Permit is a decision. It is JSON-serialisable and travels inside the Cloud
// Task body, so that Claim, Reconcile and Release can find its state later.
type Permit struct {
	// ID identifies the permit's state in Redis ([A-Za-z0-9_-]).
	ID string `json:"id"`
	// Scope and Cost are those of the request.
	Scope Scope `json:"scope"`
	Cost  Cost  `json:"cost"`
	// Outcome is the decision.
	Outcome Outcome `json:"outcome"`
	// At is, for Granted, the admission time (≈ now); for Reserved, when
	// to come back and Claim (the reserved slot, or an earlier wake while
	// an adaptive limit is lowered; see "Re-planning"); for Denied, when to
	// ask again; zero for Rejected.
	At time.Time `json:"at"`
	// Reason says what held the permit back (Reserved, Denied, Rejected): the
	// binding dimension's name, "fifo" (queued behind earlier reservations),
	// "spaced" (a reservation kept 1/8 of its paced gap after the one before:
	// see "Pacing" in acquireLua), "paced" (spaced after the one before
	// while an adaptive limit is lowered), or "cooldown: <reason>". Empty for
	// Granted.
	Reason string `json:"reason,omitempty"`
	// Ref is opaque: for a permit Granted by Acquire it carries the permit's
	// state (signed with the scope's secret kept in Redis, so a forged or
	// stale Ref is ignored), which Reconcile and Release need; Redis holds
	// no state for such a permit until then. Keep it with the permit; empty
	// otherwise.
	Ref string `json:"ref,omitempty"`
	// Early is set on a Claim's Reserved answer when the reservation
	// still holds and the claim only came before its slot: At is then the
	// slot (which a re-plan may have moved, later after a fall of an
	// adaptive limit) or a wake before it. Unset when the claim came late
	// or met a cooldown and the permit was decided again.
	Early bool `json:"-"`
}

// ErrUnknownScope is returned (wrapped) for a scope with no configured quota.
var ErrUnknownScope = errors.New("no quota configured for the scope")

// Limiter decides permits. It is safe for concurrent use.
type Limiter struct {
	rdb   redis.Scripter
	cfg   Config
	plans sync.Map // Scope -> *plan
	nonce string   // seeds the secret of a new epoch of a scope's state
	log   *slog.Logger
	est   estimates
	// static: no learning, no AIMD, no quota-value lowering (WithoutAdaptation).
	static bool
	// unspaced: reservations are not spaced (WithoutSpacing).
	unspaced bool

	// clock, when set (tests only), replaces Redis TIME in the scripts and
	// time.Now in the client.
	clock func() time.Time
	// calendar shifts the Pacific calendar the client reads (ShiftCalendar).
	calendar time.Duration
	// maxWalk, when set (tests only), replaces MaxUsageWalk.
	maxWalk int
}

// ShiftCalendar makes the limiter read the Pacific calendar d away from the
// real time: day boundaries are those of the day containing now+d, moved
// back by d, while "now" stays Redis TIME in every script. It is the chaos
// harness' test clock hook (config.EnvTestCalendarOffset, compiled only into
// test binaries) for putting Pacific midnight, or the end of a 23- or 25-hour
// day, inside a job; production never calls it. Call it before first use.
func (l *Limiter) ShiftCalendar(d time.Duration) *Limiter {
	l.calendar = d
	return l
}

// New returns a Limiter over rdb (any go-redis client: standalone, cluster,
// ring) with quotas cfg.
func New(rdb redis.Scripter, cfg Config, opts ...Option) *Limiter {
	l := &Limiter{rdb: rdb, cfg: cfg, nonce: newID(), log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(l)
	}
	return l
}

// Option configures a Limiter in New.
type Option func(*Limiter)

// WithLogger sends the limiter's warnings (an effective limit lowered by a
// quota value Gemini reported: one warning per change) to lg. Without it
// they are discarded; the limiter never logs to slog.Default.
func WithLogger(lg *slog.Logger) Option {
	return func(l *Limiter) {
		if lg != nil {
			l.log = lg
		}
	}
}

// WithoutAdaptation switches off everything that adapts to what Gemini
// reports: Estimate returns the raw estimate (factor 1, nothing learned),
// Settle only reconciles (no learning, no AIMD increase), Throttled changes
// nothing. It is gemq's limiter as it was before estimates learned and limits
// adapted, kept for benchmarks that measure the difference in the same run
// (the worker's GEMQ_LIMITER_BASELINE); reservations still hold.
func WithoutAdaptation() Option { return func(l *Limiter) { l.static = true } }

// WithoutSpacing decides reservations without spacing them (see "Pacing"
// in acquireLua): for the benchmarks' deny-and-retry seed policy
// (GEMQ_LIMIT_POLICY=seed), whose refusals are reservations given back at
// once: spaced, concurrent refusals pushed the queue's tail a spacing
// further each (seed-rpm: 13.3 minutes and 9.5 invocations per task
// instead of 11.1 and 7.7), and the limiter as it was before issue 11
// (GEMQ_LIMITER_BASELINE), which did not space.
func WithoutSpacing() Option { return func(l *Limiter) { l.unspaced = true } }

const (
	// ttlSlack is added to every key's TTL.
	ttlSlack = time.Minute
	// permitTTL is how long a permit's state outlives its slot beyond the
	// longest window, so a Reconcile after a long call still finds it.
	permitTTL = time.Hour
)

// plan is the precomputed, per-scope part of every script call.
type plan struct {
	q           Quota
	prefix      string
	fp          string
	meta, log   string
	gen, est    string
	acquireTail string   // settings and dimensions, packed: ARGV[7] of acquireScript after the day boundaries
	names       string   // the Limiter's nonce, then the names of the sliding and the daily dimensions, joined by "|"
	caps        []int64  // capacity of each dimension of q.Dimensions
	adjustArgs  []any    // ARGV[7..]
	dayPrefixes []string // "d:<name>:" of each daily dimension
	adapt       adaptPlan

	day    atomic.Pointer[planDay] // ARGV parts that change once a day
	secret atomic.Pointer[string]  // the scope's secret as last returned by Redis
}

// planDay is the part of a plan's script arguments that depends on the
// Pacific day of the client's clock.
type planDay struct {
	dw     *dayWindow
	packed string // the day boundaries, then plan.acquireTail
	fields []any  // the meta fields of today's daily counters
}

// today returns the plan's arguments for the day window dw.
func (p *plan) today(dw *dayWindow) *planDay {
	if pd := p.day.Load(); pd != nil && pd.dw == dw {
		return pd
	}
	pd := &planDay{dw: dw, packed: dw.packed + p.acquireTail}
	for _, dp := range p.dayPrefixes {
		pd.fields = append(pd.fields, dp+dw.today)
	}
	p.day.Store(pd)
	return pd
}

// packDoubles encodes xs as little-endian IEEE-754 doubles, the layout of
// Lua's struct.pack('<d...'); integers up to 2^53 are exact.
func packDoubles(xs ...int64) string {
	b := make([]byte, 0, 8*len(xs))
	for _, x := range xs {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(float64(x)))
	}
	return string(b)
}

func (l *Limiter) plan(s Scope) (*plan, error) {
	if p, ok := l.plans.Load(s); ok {
		return p.(*plan), nil
	}
	q, ok := l.cfg.Quota(s)
	if !ok {
		return nil, fmt.Errorf("%s: %w", s, ErrUnknownScope)
	}
	g := q.Guard
	// A reservation is granted, and claimable, within g/4 either side of its slot.
	early, claimLate := g/4, g/4
	var sliding, daily []Dimension
	p := &plan{q: q, prefix: scopePrefix(s)}
	p.meta, p.log = metaKey(p.prefix), logKey(p.prefix)
	p.gen, p.est = genKey(p.prefix), estKey(p.prefix)
	h := fnv.New64a()
	var maxWin time.Duration
	for _, d := range q.Dimensions {
		fmt.Fprintf(h, "%s|%s|%s;", d.Name, d.Unit, d.Per)
		if d.Daily() {
			daily = append(daily, d)
			continue
		}
		sliding = append(sliding, d)
		maxWin = max(maxWin, d.Period+g)
	}
	p.fp = strconv.FormatUint(h.Sum64(), 16)
	fpNum := int64(h.Sum64() >> 12) // exact as a double
	pbase := (maxWin + permitTTL).Milliseconds()
	settings := packDoubles(q.Horizon.Milliseconds(), early.Milliseconds(), claimLate.Milliseconds(),
		(3 * g / 4).Milliseconds(), ttlSlack.Milliseconds(), pbase, maxWin.Milliseconds(), fpNum,
		int64(len(sliding)), int64(len(daily)))
	var dims []int64
	var slidingUnits, dailyUnits string
	for _, d := range sliding {
		dims = append(dims, unitFlag(d.Unit), q.StartCapacity(d), (d.Period + g).Milliseconds())
		slidingUnits += unitCode(d.Unit)
	}
	for _, d := range daily {
		dims = append(dims, unitFlag(d.Unit), q.StartCapacity(d))
		dailyUnits += unitCode(d.Unit)
	}
	p.adapt = newAdaptPlan(q, sliding, daily)
	vfmt := "<" + strings.Repeat("d", 7+3*len(sliding))
	p.acquireTail = settings + packDoubles(dims...)
	var names []string
	for _, d := range sliding {
		names = append(names, d.Name)
	}
	for _, d := range daily {
		names = append(names, d.Name)
		p.dayPrefixes = append(p.dayPrefixes, "d:"+d.Name+":")
	}
	p.names = l.nonce + "|" + strings.Join(names, "|")
	for _, d := range q.Dimensions {
		p.caps = append(p.caps, q.Capacity(d))
	}
	p.secret.Store(new(string))
	p.adjustArgs = []any{pbase, vfmt, slidingUnits, dailyUnits, fpNum}
	for _, d := range daily {
		p.adjustArgs = append(p.adjustArgs, d.Name)
	}
	actual, _ := l.plans.LoadOrStore(s, p)
	return actual.(*plan), nil
}

func unitFlag(u Unit) int64 {
	if u == InputTokens {
		return 1
	}
	return 0
}

func unitCode(u Unit) string {
	if u == InputTokens {
		return "t"
	}
	return "r"
}

// dayWindow caches the Pacific day boundaries used while the clock stays in
// one day.
type dayWindow struct {
	shift  time.Duration // the calendar shift it was computed for
	bounds [5]int64
	packed string // bounds, packed for the script's ARGV
	today  string // bounds[1] in decimal: the day of the daily counters read up front
}

// lastDays caches the most recent dayWindow: it changes once a day.
var lastDays atomic.Pointer[dayWindow]

// days returns the boundaries of the Pacific days d-1 .. d+2 (5 boundaries)
// around the day d containing now, on the calendar shifted by shift (0 but
// in the chaos harness; see ShiftCalendar).
func days(now time.Time, shift time.Duration) *dayWindow {
	ms := now.UnixMilli()
	if w := lastDays.Load(); w != nil && w.shift == shift && w.bounds[1] <= ms && ms < w.bounds[2] {
		return w
	}
	w := &dayWindow{shift: shift}
	cal := now.Add(shift)
	for k := range 5 {
		w.bounds[k] = PacificDayStart(cal, k-1).Add(-shift).UnixMilli()
	}
	w.packed = packDoubles(w.bounds[:]...)
	w.today = strconv.FormatInt(w.bounds[1], 10)
	lastDays.Store(w)
	return w
}

func (l *Limiter) now() (time.Time, string) {
	if l.clock != nil {
		t := l.clock()
		return t, strconv.FormatInt(t.UnixMilli(), 10)
	}
	return time.Now(), ""
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Acquire decides a permit for one call of cost in scope, for every dimension
// of the scope at once: either all dimensions are charged or none is. A
// Granted or Reserved permit holds its charge until Released (or its windows
// pass). Errors: ErrUnknownScope (wrapped), invalid cost, Redis failures —
// on error nothing is held and the caller must not call Gemini.
func (l *Limiter) Acquire(ctx context.Context, scope Scope, cost Cost) (Permit, error) {
	p, err := l.decide(ctx, "a", Permit{ID: newID(), Scope: scope, Cost: cost})
	if err != nil {
		return Permit{}, fmt.Errorf("limiter acquire: %w", err)
	}
	return p, nil
}

// Claim uses permit p when its task comes back. For a Reserved permit
// arriving in time for its slot (from slot-g/4 to slot+g/4, g the guard;
// the slot is the one a re-plan may have moved) it returns Granted with the
// slot as At without charging again; arriving early it returns Reserved
// with the time to come back as At (the slot, or a new wake while an
// adaptive capacity is below its ceiling). Arriving late, during a cooldown, or for any
// permit not currently reserved (Granted and already used, Denied, released,
// expired) it gives back what p held and decides afresh as Acquire does, under
// the same ID, so a late call never lands in a window planned without it and
// one reservation never grants twice. A Rejected permit is returned unchanged.
func (l *Limiter) Claim(ctx context.Context, p Permit) (Permit, error) {
	if p.Outcome == Rejected {
		return p, nil
	}
	if !idRE.MatchString(p.ID) {
		return Permit{}, fmt.Errorf("limiter claim: invalid permit id %q", p.ID)
	}
	np, err := l.decide(ctx, "c", p)
	if err != nil {
		return Permit{}, fmt.Errorf("limiter claim: %w", err)
	}
	if np.Outcome == Reserved && np.Reason == "" {
		np.Early = true
		np.Reason = p.Reason
	}
	return np, nil
}

func (l *Limiter) decide(ctx context.Context, mode string, in Permit) (Permit, error) {
	cost := in.Cost
	if cost.Requests < 0 || cost.InputTokens < 0 {
		return Permit{}, fmt.Errorf("invalid cost %+v: negative", cost)
	}
	pl, err := l.plan(in.Scope)
	if err != nil {
		return Permit{}, err
	}
	out := Permit{ID: in.ID, Scope: in.Scope, Cost: cost}
	for i, d := range pl.q.Dimensions {
		if c, cp := cost.of(d.Unit), pl.caps[i]; c > cp {
			out.Outcome = Rejected
			out.Reason = fmt.Sprintf("%s: cost %d exceeds the whole bucket of %d %s", d.Name, c, cp, d.Unit)
			return out, nil
		}
	}
	now, nowArg := l.now()
	pd := pl.today(days(now, l.calendar))
	secret := *pl.secret.Load()
	keys := []string{pl.meta, pl.log, permitKey(pl.prefix, in.ID), pl.gen}
	floor := ""
	if mode == "c" && in.Outcome == Reserved && !in.At.IsZero() {
		floor = strconv.FormatInt(in.At.UnixMilli(), 10)
	}
	args := make([]any, 0, 10+len(pd.fields))
	args = append(args, nowArg, mode, in.ID, pl.fp, cost.Requests, cost.InputTokens, pd.packed, secret, pl.names, floor)
	args = append(args, pd.fields...)
	script := acquireScript
	if l.unspaced {
		script = acquireUnspacedScript
	}
	res, err := script.Run(ctx, l.rdb, keys, args...).Slice()
	if err != nil {
		return Permit{}, fmt.Errorf("redis script: %w", err)
	}
	if len(res) < 3 || len(res) > 6 || len(res) == 4 {
		return Permit{}, fmt.Errorf("redis script: unexpected reply %v", res)
	}
	code, _ := res[0].(int64)
	at, _ := res[1].(int64)
	if len(res) == 3 {
		out.Reason, _ = res[2].(string)
	} else {
		// A Granted Acquire with no state in Redis: the permit carries its
		// state, signed with the scope's secret (sent by Redis when the
		// client's copy is not current).
		epoch, _ := res[2].(int64)
		dstart, _ := res[3].(int64)
		idx, _ := res[4].(int64)
		if len(res) == 6 {
			if s, _ := res[5].(string); s != "" {
				secret = s
				pl.secret.Store(&s)
			}
		}
		out.Ref = signedRef(secret, in.ID, grantedState(at, cost, pl.fp, epoch, dstart, idx))
	}
	out.At = time.UnixMilli(at).UTC()
	switch code {
	case 1:
		out.Outcome = Granted
	case 2:
		out.Outcome = Reserved
	case 3:
		out.Outcome = Denied
	default:
		return Permit{}, fmt.Errorf("redis script: unexpected reply %v", res)
	}
	return out, nil
}

// grantedState is the permit state string of a Granted permit, as
// "g|t|requests|tokens|fingerprint|epoch|day_start|idx".
func grantedState(at int64, cost Cost, fp string, epoch, dstart, idx int64) string {
	b := make([]byte, 0, 96)
	b = append(b, "g|"...)
	b = strconv.AppendInt(b, at, 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, cost.Requests, 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, cost.InputTokens, 10)
	b = append(b, '|')
	b = append(b, fp...)
	b = append(b, '|')
	b = strconv.AppendInt(b, epoch, 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, dstart, 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, idx, 10)
	return string(b)
}

// signedRef returns Permit.Ref for permit id with state pv: pv, "|", and the
// hex SHA-1 of "<secret>|<id>|<pv>" (checked by adjustScript).
func signedRef(secret, id, pv string) string {
	sum := sha1.Sum([]byte(secret + "|" + id + "|" + pv))
	return pv + "|" + hex.EncodeToString(sum[:])
}

// Reconcile sets the input-token charge of permit p to actualInputTokens (from
// usageMetadata.promptTokenCount): a refund when the estimate was high, an
// extra charge when it was low, in every input-token dimension. It is
// idempotent (it sets, not adds). An extra charge holds back only decisions
// made after it. Entries whose windows have passed, and permits that are not
// Granted or Reserved or whose state expired, are left alone (nil error).
func (l *Limiter) Reconcile(ctx context.Context, p Permit, actualInputTokens int64) error {
	if actualInputTokens < 0 {
		return fmt.Errorf("limiter reconcile: negative input tokens %d", actualInputTokens)
	}
	if err := l.adjust(ctx, "r", p, actualInputTokens); err != nil {
		return fmt.Errorf("limiter reconcile: %w", err)
	}
	return nil
}

// Release gives back everything a Granted or Reserved permit holds, for a
// permit whose call will not happen, e.g. when the task failed permanently
// before calling Gemini, or a reservation is not kept. It is NOT for a permit
// whose call is running or done: releasing a Granted permit lets others use
// its room at once, so the guarantee holds only if no call was or will be
// made under it. A permit held as Reserved (p.Outcome) that has been claimed
// since (by another delivery of the task, whose call may be running) is left
// alone. Releasing twice, or a permit holding nothing, is a no-op.
func (l *Limiter) Release(ctx context.Context, p Permit) error {
	mode := "x"
	if p.Outcome == Reserved {
		mode = "y"
	}
	if err := l.adjust(ctx, mode, p, 0); err != nil {
		return fmt.Errorf("limiter release: %w", err)
	}
	return nil
}

func (l *Limiter) adjust(ctx context.Context, mode string, p Permit, tokens int64) error {
	if p.Outcome != Granted && p.Outcome != Reserved {
		return nil
	}
	pl, err := l.plan(p.Scope)
	if err != nil {
		return err
	}
	_, err = l.runAdjust(ctx, pl, mode, p, tokens, "", "")
	return err
}

// runAdjust runs adjustScript; learn and success are Settle's extra
// arguments ("" for none). It returns the learned state the script replied.
func (l *Limiter) runAdjust(ctx context.Context, pl *plan, mode string, p Permit, tokens int64, learn, success string) (string, error) {
	id := p.ID
	if p.Outcome != Granted && p.Outcome != Reserved {
		id = "none" // nothing to reconcile; the script still learns and counts the success
	}
	if !idRE.MatchString(id) {
		return "", fmt.Errorf("invalid permit id %q", id)
	}
	_, nowArg := l.now()
	keys := []string{pl.meta, pl.log, permitKey(pl.prefix, id), pl.est}
	args := make([]any, 0, 9+len(pl.adjustArgs))
	args = append(args, nowArg, mode, pl.fp, tokens, id, p.Ref)
	args = append(args, pl.adjustArgs[:5]...)
	args = append(args, learn, success, (pl.q.Horizon + permitTTL).Milliseconds())
	args = append(args, pl.adjustArgs[5:]...)
	res, err := adjustScript.Run(ctx, l.rdb, keys, args...).Slice()
	if err != nil {
		return "", fmt.Errorf("redis script: %w", err)
	}
	if len(res) == 2 {
		s, _ := res[1].(string)
		return s, nil
	}
	return "", nil
}

// Cooldown pauses scope until the given time, e.g. when Gemini answered 429
// with a RetryInfo: every later Acquire (and Claim) in the scope, from any
// instance, admits nothing before until, and says "cooldown: <reason>". A
// cooldown only ever extends; an earlier or past until is a no-op.
func (l *Limiter) Cooldown(ctx context.Context, scope Scope, until time.Time, reason string) error {
	pl, err := l.plan(scope)
	if err != nil {
		return fmt.Errorf("limiter cooldown: %w", err)
	}
	if len(reason) > 200 {
		reason = reason[:200]
	}
	_, nowArg := l.now()
	err = cooldownScript.Run(ctx, l.rdb, []string{pl.meta}, nowArg, until.UnixMilli(), reason, ttlSlack.Milliseconds()).Err()
	if err != nil {
		return fmt.Errorf("limiter cooldown: redis script: %w", err)
	}
	return nil
}
