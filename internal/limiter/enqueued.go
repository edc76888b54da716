package limiter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// KeyPrefix is the prefix of every Redis key of scope s,
// "gemq:{<project>/<model>}": packages that keep state of their own per
// scope (internal/batches) start their keys with it, so that the scope's
// keys share one hash slot and one script may touch them together.
func (s Scope) KeyPrefix() string { return scopePrefix(s) }

// enqueuedKey is the HASH of the scope's held enqueued-token permits: one
// field per holder (a batch group), "<tokens> <expires_ms>".
func enqueuedKey(prefix string) string { return prefix + ":enqueued" }

// Enqueued is the Batch API's per-model limit of enqueued tokens as a
// limiter dimension of its own: the input tokens of every batch that is
// pending or running count against it, from its creation to its end
// (https://ai.google.dev/gemini-api/docs/rate-limits, "Batch API rate
// limits", read 2026-12-03). Unlike the windows of Limiter it is a
// concurrency limit: a permit is held, not spent, and released when the
// batch ends; a permit not released (its holder vanished) lapses after its
// hold time. Time comes from Redis TIME. It is safe for concurrent use.
type Enqueued struct {
	rdb redis.Scripter
}

// NewEnqueued returns the enqueued-token dimension over rdb (any go-redis
// client: every call is one single-slot script).
func NewEnqueued(rdb redis.Scripter) *Enqueued { return &Enqueued{rdb: rdb} }

// EnqueuedResult is Acquire's answer.
type EnqueuedResult struct {
	// Granted is true when holder holds its tokens (now, or since an
	// earlier call: Acquire is idempotent per holder).
	Granted bool
	// Held is the scope's tokens held by every holder after the call.
	Held int64
}

// acquireEnqueuedScript takes or confirms a holder's permit.
//
//	KEYS[1] -> gemq:{<scope>}:enqueued
//	ARGV[1] -> holder
//	ARGV[2] -> tokens
//	ARGV[3] -> limit
//	ARGV[4] -> hold in ms: the permit lapses after it unless released
//	Output: {granted (0|1), held tokens after}
//
// A holder is granted when it holds already, when its tokens fit under the
// limit beside the others, or when nobody holds anything (a group larger
// than the limit then runs alone rather than never). Lapsed permits are
// swept first.
var acquireEnqueuedScript = redis.NewScript(`
-- Time from Redis, shared by every instance.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held, mine = 0, false
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local tokens, expires = string.match(all[i + 1], '^(%d+) (%d+)$')
  if not tokens or tonumber(expires) <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    held = held + tonumber(tokens)
    if all[i] == ARGV[1] then mine = true end
  end
end
if mine then return {1, held} end
local want = tonumber(ARGV[2])
if held > 0 and held + want > tonumber(ARGV[3]) then return {0, held} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. tostring(now + tonumber(ARGV[4])))
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return {1, held + want}
`)

// releaseEnqueuedScript gives a holder's permit back.
//
//	KEYS[1] -> gemq:{<scope>}:enqueued
//	ARGV[1] -> holder
//	Output: 1 released, 0 not held
var releaseEnqueuedScript = redis.NewScript(`return redis.call('HDEL', KEYS[1], ARGV[1])`)

// Acquire takes tokens of scope's enqueued limit for holder, held for at
// most hold (the longest a batch may run, plus margin). Calling it again
// for a holder that holds answers Granted without taking more.
func (e *Enqueued) Acquire(ctx context.Context, scope Scope, holder string, tokens, limit int64, hold time.Duration) (EnqueuedResult, error) {
	if holder == "" || tokens < 0 || limit <= 0 || hold <= 0 {
		return EnqueuedResult{}, errors.New("limiter: enqueued acquire: empty holder, negative tokens, or non-positive limit or hold")
	}
	vals, err := acquireEnqueuedScript.Run(ctx, e.rdb, []string{enqueuedKey(scopePrefix(scope))},
		holder, tokens, limit, hold.Milliseconds()).Int64Slice()
	if err != nil {
		return EnqueuedResult{}, fmt.Errorf("limiter: enqueued acquire script: %w", err)
	}
	if len(vals) != 2 {
		return EnqueuedResult{}, fmt.Errorf("limiter: enqueued acquire script: unexpected result %v", vals)
	}
	return EnqueuedResult{Granted: vals[0] == 1, Held: vals[1]}, nil
}

// Release gives holder's tokens back (a holder that holds none is fine).
func (e *Enqueued) Release(ctx context.Context, scope Scope, holder string) error {
	if err := releaseEnqueuedScript.Run(ctx, e.rdb, []string{enqueuedKey(scopePrefix(scope))}, holder).Err(); err != nil {
		return fmt.Errorf("limiter: enqueued release script: %w", err)
	}
	return nil
}
