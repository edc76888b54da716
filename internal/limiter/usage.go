package limiter

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Usage is a scope's state as the acquire script sees it at one instant,
// for metrics: each dimension's effective limit, today's count of each daily
// dimension, and the queue of reserved slots. It is read, never written.
//
// A sliding window's occupancy now is not part of it: the script keeps
// what its decisions and re-plans need, not the sums of the window ending
// now. The admissions' owners know it (internal/metrics sums them).
type Usage struct {
	// At is Redis's time of the reading.
	At time.Time
	// Dimensions in configuration order.
	Dimensions []DimensionUsage
	// Reserved counts the admissions whose slot is still ahead of At: the
	// tasks waiting for a reserved slot (released reservations included
	// until their slot passes, at cost 0).
	Reserved int64
	// LastSlot is the latest reserved slot, zero when Reserved is 0.
	LastSlot time.Time
	// Partial is true when the reading stopped after MaxUsageWalk
	// reservations: Reserved and LastSlot are then lower bounds.
	Partial bool
}

// MaxUsageWalk bounds the reservations one Usage reads, so that a reading
// never holds Redis for more than a few milliseconds.
const MaxUsageWalk = 20000

// DimensionUsage is one dimension's occupancy.
type DimensionUsage struct {
	Name  string
	Unit  Unit
	Daily bool // resets at Pacific midnight
	// Used is, for a daily dimension, what today's Pacific day holds
	// (reservations for today included); 0 for a sliding dimension.
	Used int64
	// Limit is the effective capacity now (adapted by 429s and successes,
	// see Limiter.Throttled); Configured is floor(Safety × Limit) of the
	// configuration (for an adaptive dimension, its ceiling).
	Limit, Configured float64
}

// usageScript reads the state of a scope, walking its log back from the
// newest entry over the reservations still ahead: O(reserved ahead).
//
// KEYS[1] -> gemq:{<scope>}:meta
// KEYS[2] -> gemq:{<scope>}:log
// ARGV[1] -> now in ms, or "" to use Redis TIME
// ARGV[2] -> the most entries to walk
// ARGV[3..] -> the meta fields of today's daily counters
// Output: {now, reserved, last slot ms, partial (0|1), count per daily dimension..., ad or false}
var usageScript = redis.NewScript(`
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  -- Redis TIME, as the acquire script decides with.
  local tm = redis.call('TIME')
  now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
end
local budget = tonumber(ARGV[2])
local reserved, last, partial = 0, 0, 0
local len = redis.call('LLEN', KEYS[2])
local hi, done = len - 1, false
while hi >= 0 and not done do
  local lo = hi - 127
  if lo < 0 then lo = 0 end
  local rows = redis.call('LRANGE', KEYS[2], lo, hi)
  for j = #rows, 1, -1 do
    local t = struct.unpack('<ddd', rows[j])
    if t <= now then
      done = true
      break
    end
    if reserved >= budget then
      partial, done = 1, true
      break
    end
    reserved = reserved + 1
    if t > last then last = t end
  end
  hi = lo - 1
end
local out = {now, reserved, last, partial}
for i = 3, #ARGV do
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[1], ARGV[i])) or 0
end
out[#out + 1] = redis.call('HGET', KEYS[1], 'ad')
return out
`)

// Usage reads scope's state (one script, read-only, O(reservations ahead),
// at most MaxUsageWalk of them). Meant for metrics collected every
// few seconds, not for the hot path. Errors: ErrUnknownScope (wrapped),
// Redis failures.
func (l *Limiter) Usage(ctx context.Context, scope Scope) (Usage, error) {
	pl, err := l.plan(scope)
	if err != nil {
		return Usage{}, fmt.Errorf("limiter usage: %w", err)
	}
	now, nowArg := l.now()
	dw := days(now, l.calendar)
	args := []any{nowArg, l.usageWalk()}
	var daily []Dimension
	for _, d := range pl.adapt.dims { // sliding, then daily
		if d.Daily() {
			daily = append(daily, d)
			args = append(args, "d:"+d.Name+":"+dw.today)
		}
	}
	res, err := usageScript.Run(ctx, l.rdb, []string{pl.meta, pl.log}, args...).Slice()
	if err != nil {
		return Usage{}, fmt.Errorf("limiter usage: redis script: %w", err)
	}
	n := len(pl.adapt.dims)
	if len(res) != 5+len(daily) {
		return Usage{}, fmt.Errorf("limiter usage: redis script: unexpected reply %v", res)
	}
	num := func(v any) int64 { x, _ := v.(int64); return x }
	u := Usage{At: time.UnixMilli(num(res[0])).UTC(), Reserved: num(res[1]), Partial: num(res[3]) == 1}
	if ms := num(res[2]); u.Reserved > 0 {
		u.LastSlot = time.UnixMilli(ms).UTC()
	}
	ad, _ := res[4+len(daily)].(string)
	k := 0
	for i, d := range pl.adapt.dims {
		du := DimensionUsage{Name: d.Name, Unit: d.Unit, Daily: d.Daily(),
			Limit: float64(pl.q.StartCapacity(d)), Configured: float64(pl.q.Capacity(d))}
		if d.Daily() {
			du.Used = num(res[4+k])
			k++
		}
		if len(ad) == 8*(1+2*n) {
			du.Limit = unpackFloat(ad, 1+2*i)
		}
		u.Dimensions = append(u.Dimensions, du)
	}
	// Back to configuration order (the scripts count sliding, then daily).
	byName := map[string]DimensionUsage{}
	for _, du := range u.Dimensions {
		byName[du.Name] = du
	}
	u.Dimensions = u.Dimensions[:0]
	for _, d := range pl.q.Dimensions {
		u.Dimensions = append(u.Dimensions, byName[d.Name])
	}
	return u, nil
}

// usageWalk is MaxUsageWalk, or the tests' smaller bound.
func (l *Limiter) usageWalk() int {
	if l.maxWalk > 0 {
		return l.maxWalk
	}
	return MaxUsageWalk
}
