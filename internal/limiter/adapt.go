package limiter

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Adaptive limits. Every dimension of a scope has an effective capacity
// that the acquire script uses in place of the configured one; it is kept in
// meta (field "ad") so every instance sees the same value at once and the
// decision that reads it stays one atomic script:
//
//   - a 429 whose QuotaFailure.quotaValue is below the configured limit
//     lowers that dimension's capacity (and its ceiling) to
//     floor(Safety × quotaValue): Gemini enforces less than the tier the
//     user configured;
//   - a 429 without quota details (or any 429 on Vertex AI, whose Dynamic
//     Shared Quota publishes no number) multiplies the capacity of every
//     sliding dimension by aimdDecrease, at most once per aimdHoldoff of the
//     shortest period (one overload answers several calls in flight at once)
//     and never below the dimension's floor. (0.5, as TCP's, was tried
//     before pacing, with re-plans in both directions: no more capacity
//     used in the DSQ benchmark, and 0.3-4.5% of calls answered 429
//     instead of 0.2%);
//   - each success raises every sliding dimension's capacity by
//     aimdIncrease × ceiling / (request capacity at the ceiling), up to its
//     ceiling: two requests per success, so a period's worth of successes
//     at the current rate triples it, and a scope at 40% of its ceiling is
//     back in about one period once Gemini's capacity is. Slower climbs
//     (5% of the ceiling per period; one request per success, counting no
//     success within a period of a decrease) left the DSQ benchmark's job
//     running well below the recovered capacity for one to two periods.
//     While a capacity is below its ceiling admissions are paced (see
//     acquireLua), so a climb that overshoots meets one 429, not a
//     window's worth; the reservations decided meanwhile are re-planned as
//     the capacity moves (see acquireLua's replan);
//   - a decrease also pauses the scope for the holdoff (a shared cooldown
//     "capacity 429"), so that reservations claimed meanwhile are decided
//     again under the lowered capacity instead of meeting the same
//     shortage: the DSQ benchmark's 429s fell from 9-12% to 0.1-0.3% of calls.
//
// The adapted state lives as long as meta: after a scope has been idle for a
// window it starts again from the configuration.
const aimdDecreaseLua = "0.8" // aimdDecrease, as the scripts read it

const (
	aimdDecrease = 0.8
	aimdIncrease = 2.0
	aimdHoldoff  = 4 // the holdoff is the shortest sliding period over this
)

// adaptPlan is the per-scope part of the adaptive scripts' arguments.
type adaptPlan struct {
	spec    string // per dimension (sliding, then daily): start, floor, ceiling, step
	holdoff int64  // ms
	dims    []Dimension
	safety  float64
}

func newAdaptPlan(q Quota, sliding, daily []Dimension) adaptPlan {
	reqCeil := int64(0)
	var minPeriod int64
	for _, d := range sliding {
		if d.Unit == Requests && reqCeil == 0 {
			reqCeil = q.Capacity(d)
		}
		if p := d.Period.Milliseconds(); minPeriod == 0 || p < minPeriod {
			minPeriod = p
		}
	}
	if reqCeil == 0 {
		reqCeil = 20 // no request dimension: assume a period holds about 20 calls
	}
	var xs []float64
	all := append(append([]Dimension{}, sliding...), daily...)
	for i, d := range all {
		step := 0.0
		if i < len(sliding) {
			step = aimdIncrease * float64(q.Capacity(d)) / float64(reqCeil)
		}
		xs = append(xs, float64(q.StartCapacity(d)), float64(q.FloorCapacity(d)), float64(q.Capacity(d)), step)
	}
	return adaptPlan{spec: packFloats(xs...), holdoff: minPeriod / aimdHoldoff, dims: all, safety: q.Safety}
}

// packFloats encodes xs as little-endian IEEE-754 doubles.
func packFloats(xs ...float64) string {
	b := make([]byte, 0, 8*len(xs))
	for _, x := range xs {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	}
	return string(b)
}

// dimension returns the index (sliding first, then daily, as the scripts
// count) of the dimension a Gemini quota id names, or -1: "PerDay" ids name
// a daily dimension, "InputToken" ids a token dimension, other ids a request
// dimension; among several candidates the first configured wins.
func (a adaptPlan) dimension(quotaID string) int {
	daily := strings.Contains(quotaID, "PerDay")
	unit := Requests
	if strings.Contains(quotaID, "InputToken") || strings.Contains(quotaID, "Tokens") {
		unit = InputTokens
	}
	for i, d := range a.dims {
		if d.Daily() == daily && d.Unit == unit {
			return i
		}
	}
	return -1
}

// luaAdapt updates the adapted capacities in meta. kind: "q" (a quota value:
// dimension j lowered to obs), "c" (a capacity 429: multiplicative decrease),
// "s" (a success: additive increase). spec packs 4 doubles per dimension
// (start, floor, ceiling, step); meta's "ad" packs the time of the last
// decrease, then per dimension the effective capacity and its ceiling.
// Returns the capacity of dimension j before a "q" (or -1) and whether
// anything changed.
const luaAdapt = `
local function adapt(meta, now, kind, spec, holdoff, j, obs, ttl)
  local nall = math.floor(#spec / 32)
  local S = {struct.unpack('<' .. string.rep('d', 4 * nall), spec)}
  local afmt = '<' .. string.rep('d', 1 + 2 * nall)
  local cur = redis.call('HGET', meta, 'ad')
  local A
  if cur and #cur == 8 * (1 + 2 * nall) then
    A = {struct.unpack(afmt, cur)}
  else
    A = {-1e15}
    for k = 1, nall do A[2 * k], A[2 * k + 1] = S[4 * k - 3], S[4 * k - 1] end
  end
  local changed, old = false, -1
  if kind == 'q' then
    old = A[2 * j]
    if obs < A[2 * j + 1] then A[2 * j + 1], changed = obs, true end
    if obs < A[2 * j] then A[2 * j], changed = obs, true end
  elseif kind == 'c' then
    if now - A[1] >= holdoff then
      for k = 1, nall do
        if S[4 * k] > 0 then
          local v = math.max(S[4 * k - 2], A[2 * k] * ` + aimdDecreaseLua + `)
          if v < A[2 * k] then A[2 * k], changed = v, true end
        end
      end
      if changed then
        A[1] = now
        -- Pause the scope for the holdoff too, shared like any cooldown:
        -- reservations claimed during it are decided again under the
        -- lowered capacity instead of meeting the same shortage.
        local cd = tonumber(redis.call('HGET', meta, 'cd') or '0')
        if cd < now + holdoff then redis.call('HSET', meta, 'cd', now + holdoff, 'cr', 'capacity 429') end
      end
    end
  else
    for k = 1, nall do
      if S[4 * k] > 0 and A[2 * k] < A[2 * k + 1] then
        -- The same step per success: a period of successes at the
        -- current rate multiplies it by 1 + aimdIncrease.
        A[2 * k], changed = math.min(A[2 * k + 1], A[2 * k] + S[4 * k]), true
      end
    end
  end
  if changed then
    redis.call('HSET', meta, 'ad', struct.pack(afmt, unpack(A, 1, 1 + 2 * nall)))
    if redis.call('PTTL', meta) < 0 then redis.call('PEXPIRE', meta, ttl) end
  end
  return old, changed
end
`

// throttleScript applies one 429 to the scope's adapted capacities.
//
// KEYS[1] -> gemq:{<scope>}:meta
// ARGV[1] -> now in ms, or "" to use Redis TIME
// ARGV[2] -> "q" (quota value) or "c" (capacity)
// ARGV[3] -> adapt spec (adaptPlan.spec)
// ARGV[4] -> holdoff ms
// ARGV[5] -> for "q": dimension index (1-based, sliding then daily); ARGV[6] -> observed capacity
// ARGV[7] -> TTL of a meta created here, ms
// Output: {changed (0|1), capacity before (string; "-1" for "c")}
var throttleScript = redis.NewScript(luaCommon + luaAdapt + `
local old, changed = adapt(KEYS[1], now_ms(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4]),
  tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
return {changed and 1 or 0, string.format('%.17g', old)}
`)

// Throttle429 is what a 429 from Gemini said, for Limiter.Throttled.
type Throttle429 struct {
	// QuotaID and QuotaValue are the QuotaFailure violation's quotaId and
	// quotaValue (gemini.Failure.QuotaID, QuotaValue); QuotaValue 0 when the
	// 429 carried none.
	QuotaID    string
	QuotaValue int64
	// Capacity is true for a 429 without quota details, or any 429 on Vertex
	// AI: the shared capacity is short, not a published quota.
	Capacity bool
}

// Adaptation says what Throttled changed.
type Adaptation struct {
	// Lowered is true when this call lowered an effective limit.
	Lowered bool
	// Dimension is the dimension a quota value lowered ("" for a capacity
	// decrease, which applies to every sliding dimension).
	Dimension string
	// Configured is the dimension's configured limit and Observed the quota
	// value Gemini reported (0 for a capacity decrease).
	Configured, Observed int64
}

// Throttled adapts the scope's effective limits to a 429 from Gemini, for
// every instance at once. A quota value below the dimension's current
// effective capacity lowers it (logged once, as a warning naming the quota
// id, the configured and the observed value); a capacity 429 lowers every
// sliding dimension multiplicatively (AIMD), at most once per holdoff. A
// quota 429 at or above the configured limit changes nothing (the shared
// cooldown, Cooldown, handles it). Errors: ErrUnknownScope (wrapped), Redis
// failures; the caller's own back-off remains the fallback then.
func (l *Limiter) Throttled(ctx context.Context, scope Scope, t Throttle429) (Adaptation, error) {
	pl, err := l.plan(scope)
	if err != nil {
		return Adaptation{}, fmt.Errorf("limiter throttled: %w", err)
	}
	if l.static {
		return Adaptation{}, nil
	}
	kind, j, obs := "c", 0, 0.0
	var a Adaptation
	if !t.Capacity {
		i := pl.adapt.dimension(t.QuotaID)
		if i < 0 || t.QuotaValue <= 0 {
			return Adaptation{}, nil
		}
		d := pl.adapt.dims[i]
		if t.QuotaValue >= d.Limit {
			return Adaptation{}, nil
		}
		kind, j = "q", i+1
		obs = float64(max(1, pl.q.capacityOf(t.QuotaValue)))
		a = Adaptation{Dimension: d.Name, Configured: d.Limit, Observed: t.QuotaValue}
	}
	_, nowArg := l.now()
	res, err := throttleScript.Run(ctx, l.rdb, []string{pl.meta}, nowArg, kind, pl.adapt.spec, pl.adapt.holdoff,
		j, obs, (pl.q.Horizon + permitTTL).Milliseconds()).Slice()
	if err != nil {
		return Adaptation{}, fmt.Errorf("limiter throttled: redis script: %w", err)
	}
	if len(res) == 2 {
		ch, _ := res[0].(int64)
		a.Lowered = ch == 1
	}
	if a.Lowered && kind == "q" {
		l.log.Warn("Gemini enforces a lower limit than configured; using it for this scope",
			"scope", scope.String(), "quota_id", t.QuotaID, "dimension", a.Dimension,
			"configured", a.Configured, "observed", a.Observed)
	}
	if a.Lowered && kind == "c" {
		l.log.Info("Gemini is short of capacity (429 without quota details); lowered the scope's effective rate",
			"scope", scope.String(), "factor", aimdDecrease)
	}
	return a, nil
}

// Limits returns the scope's effective capacity per dimension name as the
// acquire script sees it now (the configured capacity where nothing was
// adapted). For tests, benchmarks and operators.
func (l *Limiter) Limits(ctx context.Context, scope Scope) (map[string]float64, error) {
	pl, err := l.plan(scope)
	if err != nil {
		return nil, fmt.Errorf("limiter limits: %w", err)
	}
	res, err := readAdaptScript.Run(ctx, l.rdb, []string{pl.meta}).Text()
	if err != nil && err != redis.Nil {
		return nil, fmt.Errorf("limiter limits: redis script: %w", err)
	}
	out := map[string]float64{}
	n := len(pl.adapt.dims)
	for i, d := range pl.adapt.dims {
		out[d.Name] = float64(pl.q.StartCapacity(d))
		if len(res) == 8*(1+2*n) {
			out[d.Name] = unpackFloat(res, 1+2*i)
		}
	}
	return out, nil
}

var readAdaptScript = redis.NewScript(`return redis.call('HGET', KEYS[1], 'ad')`)

func unpackFloat(s string, i int) float64 {
	return math.Float64frombits(binary.LittleEndian.Uint64([]byte(s[8*i : 8*i+8])))
}
