package limiter

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"regexp"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Estimates that learn. A caller estimates a request's input tokens locally
// (raw), names the request's kind of content (e.g. "prose", "digits",
// "cjk", "code", "media": whatever its estimator tells apart), and asks
// Estimate for the cost to Acquire with: raw times the kind's learned
// correction factor. Settle, after the call, feeds the actual
// promptTokenCount back. Corrections are shared by every instance through
// Redis, per scope and kind:
//
//   - the state of a kind is an exponentially weighted mean and variance of
//     log(actual/raw) (weight 1/n for the first samples, then 1/10), so it
//     follows a job whose content changes;
//   - the factor used is exp(mean + 2 × standard deviation), clamped to
//     [factorMin, factorMax]: biased high, because an estimate too low costs
//     429s at Gemini while one too high only delays later admissions until
//     the reconcile refunds it;
//   - with fewer than warmSamples samples the factor is at least
//     startFactor (a conservative start);
//   - memory is bounded: at most maxKinds kinds per scope in Redis (kinds
//     beyond are not learned and use the start factor), a key that expires
//     after estTTL without learning, and a local cache of one small map per
//     scope refreshed at most every estRefresh.
const (
	startFactor = 1.25
	warmSamples = 4
	factorMin   = 0.25
	factorMax   = 16
	maxKinds    = 16
	estTTL      = 7 * 24 * time.Hour
	estRefresh  = 2 * time.Second
)

// Estimate is how a Cost's input tokens were estimated, kept in the Cost so
// that Settle can learn from the actual count.
type Estimate struct {
	// Kind is the request's kind of content ([a-z]{1,16}).
	Kind string `json:"kind"`
	// Raw is the local estimate before correction.
	Raw int64 `json:"raw"`
}

var kindRE = regexp.MustCompile(`^[a-z]{1,16}$`)

const luaLearn = `
local function learn(key, kind, raw, actual)
  if raw <= 0 or actual <= 0 then return nil end
  local cur = redis.call('HGET', key, kind)
  local n, mu, var = 0, 0, 0
  if cur and #cur == 24 then
    n, mu, var = struct.unpack('<ddd', cur)
  elseif redis.call('HLEN', key) >= ` + "16" + ` then
    return nil
  end
  local x = math.log(actual / raw)
  local a = math.max(1 / (n + 1), 0.1)
  local d = x - mu
  mu = mu + a * d
  var = (1 - a) * (var + a * d * d)
  local packed = struct.pack('<ddd', n + 1, mu, var)
  redis.call('HSET', key, kind, packed)
  redis.call('PEXPIRE', key, ` + "604800000" + `)
  return packed
end
`

// learned is one kind's state.
type learned struct{ n, mean, variance float64 }

func (s learned) factor() float64 {
	f := math.Exp(s.mean + 2*math.Sqrt(max(0, s.variance)))
	if s.n < warmSamples {
		f = max(f, startFactor)
	}
	return min(factorMax, max(factorMin, f))
}

func parseLearned(p string) (learned, bool) {
	if len(p) != 24 {
		return learned{}, false
	}
	b := []byte(p)
	f := func(i int) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])) }
	return learned{f(0), f(1), f(2)}, true
}

// estimates is the local cache of the learned corrections.
type estimates struct {
	mu     sync.Mutex
	scopes map[Scope]*scopeEstimates
}

type scopeEstimates struct {
	fetched time.Time
	kinds   map[string]learned
}

func (e *estimates) get(s Scope) *scopeEstimates {
	if e.scopes == nil {
		e.scopes = map[Scope]*scopeEstimates{}
	}
	se := e.scopes[s]
	if se == nil {
		se = &scopeEstimates{kinds: map[string]learned{}}
		e.scopes[s] = se
	}
	return se
}

var readEstScript = redis.NewScript(`return redis.call('HGETALL', KEYS[1])`)

// Factor returns the correction factor the scope currently applies to raw
// estimates of kind (startFactor for an unknown kind), refreshing the local
// cache from Redis when it is older than estRefresh.
func (l *Limiter) Factor(ctx context.Context, scope Scope, kind string) (float64, error) {
	pl, err := l.plan(scope)
	if err != nil {
		return 0, fmt.Errorf("limiter factor: %w", err)
	}
	now := time.Now()
	l.est.mu.Lock()
	se := l.est.get(scope)
	stale := now.Sub(se.fetched) >= estRefresh
	l.est.mu.Unlock()
	if stale {
		kv, err := readEstScript.Run(ctx, l.rdb, []string{pl.est}).StringSlice()
		if err != nil && err != redis.Nil {
			return 0, fmt.Errorf("limiter factor: redis script: %w", err)
		}
		fresh := map[string]learned{}
		for i := 0; i+1 < len(kv) && len(fresh) < maxKinds; i += 2 {
			if st, ok := parseLearned(kv[i+1]); ok {
				fresh[kv[i]] = st
			}
		}
		l.est.mu.Lock()
		se.kinds, se.fetched = fresh, now
		l.est.mu.Unlock()
	}
	l.est.mu.Lock()
	defer l.est.mu.Unlock()
	return se.kinds[kind].factor(), nil
}

// Estimate returns the cost of one call whose local estimate is raw input
// tokens of content kind: raw times the learned factor (Factor), rounded up,
// with the Estimate recorded for Settle. A kind that does not match
// [a-z]{1,16} is an error. Errors from Redis leave the caller to decide (the
// worker fails closed: no call without a permit).
func (l *Limiter) Estimate(ctx context.Context, scope Scope, kind string, raw int64) (Cost, error) {
	if !kindRE.MatchString(kind) {
		return Cost{}, fmt.Errorf("limiter estimate: invalid kind %q: want [a-z]{1,16}", kind)
	}
	if raw < 0 {
		return Cost{}, fmt.Errorf("limiter estimate: negative raw estimate %d", raw)
	}
	if l.static {
		if _, err := l.plan(scope); err != nil {
			return Cost{}, fmt.Errorf("limiter estimate: %w", err)
		}
		return Cost{Requests: 1, InputTokens: raw}, nil
	}
	f, err := l.Factor(ctx, scope, kind)
	if err != nil {
		return Cost{}, err
	}
	return Cost{Requests: 1, InputTokens: int64(math.Ceil(float64(raw) * f)), Estimate: &Estimate{Kind: kind, Raw: raw}}, nil
}

// Settle closes a successful call made under permit p, in one script:
// it reconciles the input-token charge with actualInputTokens (as
// Reconcile), learns from the estimate recorded in p.Cost.Estimate (if
// any), and counts a success for the scope's adaptive limits (AIMD
// increase). Call it once per successful Gemini call, with
// usageMetadata.promptTokenCount.
func (l *Limiter) Settle(ctx context.Context, p Permit, actualInputTokens int64) error {
	if actualInputTokens < 0 {
		return fmt.Errorf("limiter settle: negative input tokens %d", actualInputTokens)
	}
	pl, err := l.plan(p.Scope)
	if err != nil {
		return fmt.Errorf("limiter settle: %w", err)
	}
	if l.static {
		return l.Reconcile(ctx, p, actualInputTokens)
	}
	learn := ""
	if e := p.Cost.Estimate; e != nil && kindRE.MatchString(e.Kind) && e.Raw > 0 {
		learn = e.Kind + "|" + fmt.Sprint(e.Raw)
	}
	res, err := l.runAdjust(ctx, pl, "r", p, actualInputTokens, learn, pl.adapt.spec)
	if err != nil {
		return fmt.Errorf("limiter settle: %w", err)
	}
	if st, ok := parseLearned(res); ok && learn != "" {
		l.est.mu.Lock()
		l.est.get(p.Scope).kinds[p.Cost.Estimate.Kind] = st
		l.est.mu.Unlock()
	}
	return nil
}
