package store

import "github.com/redis/go-redis/v9"

// prelude is shared by the task transition scripts. They all take
//
//	KEYS[1] -> gemq:job:{<job>}:meta
//	KEYS[2] -> gemq:job:{<job>}:tasks
//	KEYS[3] -> gemq:job:{<job>}:done
//	KEYS[4] -> gemq:job:{<job>}:task:<task>
//	ARGV[1] -> ttl in ms
//	ARGV[2] -> job id
//	ARGV[3] -> task id
//	ARGV[4] -> request key
//	ARGV[5] -> model (for a job created on first sight)
//	ARGV[6] -> holder
//
// and return an Outcome: 1 applied, 2 already done, 3 held elsewhere.
const prelude = `
-- Time from Redis, so every function instance agrees on lease expiry.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- register makes sure the job and the task exist. A task id not yet in the
-- job's set (a user-published task) increments total exactly once. It
-- returns true when the task finished but its record has expired (so it is
-- never run or counted again).
local function register(now)
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('HSET', KEYS[1], 'id', ARGV[2], 'model', ARGV[5], 'hash', '', 'adhoc', '1',
      'total', '0', 'created_ms', tostring(now), 'updated_ms', tostring(now))
  end
  if redis.call('SADD', KEYS[2], ARGV[3]) == 1 then
    redis.call('HINCRBY', KEYS[1], 'total', 1)
    redis.call('HDEL', KEYS[1], 'finished_ms')
  end
  if redis.call('HEXISTS', KEYS[4], 'state') == 0 then
    if redis.call('ZSCORE', KEYS[3], ARGV[3]) then return true end
    redis.call('HSET', KEYS[4], 'key', ARGV[4], 'state', 'queued')
  end
  return false
end

-- move shifts one task between the job's state counters (queued is not
-- counted: it is total minus the others).
local counted = {running = true, waiting = true, succeeded = true, failed = true}
local function move(from, to)
  if from == to then return end
  if counted[from] then redis.call('HINCRBY', KEYS[1], from, -1) end
  if counted[to] then redis.call('HINCRBY', KEYS[1], to, 1) end
end

-- touch stamps the job, marks it finished when every task is terminal, and
-- renews the TTL of every key this script wrote.
local function touch(now)
  redis.call('HSET', KEYS[1], 'updated_ms', tostring(now))
  local m = redis.call('HMGET', KEYS[1], 'total', 'succeeded', 'failed')
  local total = tonumber(m[1]) or 0
  if total > 0 and (tonumber(m[2]) or 0) + (tonumber(m[3]) or 0) >= total then
    redis.call('HSETNX', KEYS[1], 'finished_ms', tostring(now))
  end
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
end

local function terminal(state) return state == 'succeeded' or state == 'failed' end

-- held_elsewhere: another holder's lease is still live.
local function held_elsewhere(t, now)
  return t[1] == 'running' and t[2] ~= ARGV[6] and (tonumber(t[3]) or 0) > now
end
`

// leaseTaskScript leases a task, knowing which delivery a waiting task
// waits for.
//
//	ARGV[7] -> lease in ms
//	ARGV[8] -> the deferral number the delivery carries
//	ARGV[9] -> '1': take over only a stale task (running under an expired
//	           lease, or waiting past its deadline), else answer 5
//	Output: {code, previous state, published, deferral, wait_until_ms, lease_ms}
//	code: 1 leased, 2 terminal, 3 held elsewhere, 4 waiting for another
//	deferral until wait_until_ms, 5 nothing stale to take over;
//	published: '1' when the terminal result was marked published;
//	deferral: the deferral number the task was last marked waiting for;
//	lease_ms: when the live lease (code 3) or the new one (code 1) expires
var leaseTaskScript = redis.NewScript(prelude + `
local now = now_ms()
if register(now) then return {2, 'expired', '1', '0', '0', '0'} end
local t = redis.call('HMGET', KEYS[4], 'state', 'holder', 'lease_ms', 'published', 'deferral', 'wait_until_ms')
local prev = t[1]
local deferral = t[5] or '0'
local waituntil = tonumber(t[6]) or 0
if terminal(prev) then return {2, prev, t[4] or '0', deferral, '0', '0'} end
if held_elsewhere(t, now) then return {3, prev, '0', deferral, '0', t[3]} end
local stale = (prev == 'running' and (tonumber(t[3]) or 0) <= now) or
  (prev == 'waiting' and waituntil > 0 and waituntil <= now)
if prev == 'waiting' and waituntil > now and tostring(ARGV[8]) ~= deferral then
  return {4, prev, '0', deferral, t[6], '0'}
end
if ARGV[9] == '1' and not stale then return {5, prev, '0', deferral, t[6] or '0', t[3] or '0'} end
move(prev, 'running')
local lease = tostring(now + tonumber(ARGV[7]))
redis.call('HSET', KEYS[4], 'state', 'running', 'holder', ARGV[6], 'lease_ms', lease)
redis.call('HDEL', KEYS[4], 'wait_until_ms')
redis.call('HINCRBY', KEYS[4], 'leases', 1)
touch(now)
return {1, prev, '0', deferral, t[6] or '0', lease}
`)

// waitScript:
//
//	ARGV[7] -> deferral number the task now waits for ('' for none)
//	ARGV[8] -> deadline in ms (Unix) after which any delivery may take the
//	           task over ('' for none: any delivery may, at once)
//	Output: 1 waiting, 2 terminal, 3 held elsewhere
var waitScript = redis.NewScript(prelude + `
local now = now_ms()
if register(now) then return 2 end
local t = redis.call('HMGET', KEYS[4], 'state', 'holder', 'lease_ms')
if terminal(t[1]) then return 2 end
if held_elsewhere(t, now) then return 3 end
move(t[1], 'waiting')
redis.call('HSET', KEYS[4], 'state', 'waiting')
redis.call('HDEL', KEYS[4], 'holder', 'lease_ms', 'wait_until_ms')
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[4], 'deferral', ARGV[7])
  if ARGV[8] ~= '' then redis.call('HSET', KEYS[4], 'wait_until_ms', ARGV[8]) end
end
touch(now)
return 1
`)

// publishedScript marks a terminal task's result as published.
//
//	KEYS[1] -> gemq:job:{<job>}:task:<task>
//	Output: 1 marked, 0 no such record, -1 not terminal (nothing written)
var publishedScript = redis.NewScript(`
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
if state ~= 'succeeded' and state ~= 'failed' then return -1 end
redis.call('HSET', KEYS[1], 'published', '1')
return 1
`)

// releaseScript:
//
//	Output: 1 released (running → queued) or nothing to release, 2 terminal, 3 held elsewhere
var releaseScript = redis.NewScript(prelude + `
local now = now_ms()
if register(now) then return 2 end
local t = redis.call('HMGET', KEYS[4], 'state', 'holder', 'lease_ms')
if terminal(t[1]) then return 2 end
if held_elsewhere(t, now) then return 3 end
if t[1] == 'running' then
  move('running', 'queued')
  redis.call('HSET', KEYS[4], 'state', 'queued')
  redis.call('HDEL', KEYS[4], 'holder', 'lease_ms')
end
touch(now)
return 1
`)

// finishScript writes a terminal state once.
//
//	ARGV[7] -> 'succeeded' | 'failed'
//	ARGV[8] -> payload field: 'response' | 'error'
//	ARGV[9] -> payload JSON
//	Output: 1 written, 2 already terminal (nothing written)
var finishScript = redis.NewScript(prelude + `
local now = now_ms()
if register(now) then return 2 end
local state = redis.call('HGET', KEYS[4], 'state')
if terminal(state) then return 2 end
move(state, ARGV[7])
redis.call('HSET', KEYS[4], 'state', ARGV[7], ARGV[8], ARGV[9], 'holder', ARGV[6], 'finished_ms', tostring(now))
redis.call('HDEL', KEYS[4], 'lease_ms')
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('ZADD', KEYS[3], seq, ARGV[3])
touch(now)
return 1
`)

// createJobScript creates a job or checks an existing one, and registers a
// chunk of its task ids.
//
//	KEYS[1] -> gemq:job:{<job>}:meta
//	KEYS[2] -> gemq:job:{<job>}:tasks
//	ARGV[1] -> ttl in ms
//	ARGV[2] -> job id
//	ARGV[3] -> model
//	ARGV[4] -> content hash
//	ARGV[5..] -> task ids
//	Output: 1 created, 0 existed with the same hash, -1 conflict (nothing written)
var createJobScript = redis.NewScript(`
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- Time from Redis, like every other timestamp of the store.
  local t = redis.call('TIME')
  local now = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  redis.call('HSET', KEYS[1], 'id', ARGV[2], 'model', ARGV[3], 'hash', ARGV[4], 'adhoc', '0',
    'total', '0', 'created_ms', now, 'updated_ms', now)
  created = 1
elseif redis.call('HGET', KEYS[1], 'hash') ~= ARGV[4] then
  return -1
end
local added = 0
for i = 5, #ARGV do
  added = added + redis.call('SADD', KEYS[2], ARGV[i])
end
if added > 0 then
  redis.call('HINCRBY', KEYS[1], 'total', added)
  redis.call('HDEL', KEYS[1], 'finished_ms')
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return created
`)

// getJobScript:
//
//	KEYS[1] -> gemq:job:{<job>}:meta
//	Output: the hash as {field, value, …}; empty when the job does not exist
var getJobScript = redis.NewScript(`return redis.call('HGETALL', KEYS[1])`)

// resultScript:
//
//	KEYS[1] -> gemq:job:{<job>}:tasks
//	KEYS[2] -> gemq:job:{<job>}:task:<task>
//	KEYS[3] -> gemq:job:{<job>}:done
//	ARGV[1] -> task id
//	Output: nil when the job has no such task, else {key, state, response, error, finished_ms, seq, published};
//	state is 'expired' for a finished task whose record has expired
var resultScript = redis.NewScript(`
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return false end
local r = redis.call('HMGET', KEYS[2], 'key', 'state', 'response', 'error', 'finished_ms', 'published')
local published = r[6]
r[6] = redis.call('ZSCORE', KEYS[3], ARGV[1])
r[7] = published
if not r[2] and r[6] then r[2] = 'expired' end
return r
`)

// pageScript:
//
//	KEYS[1] -> gemq:job:{<job>}:done
//	ARGV[1] -> sequence number to start after
//	ARGV[2] -> page size
//	Output: {task id, seq, task id, seq, …} in finish order
var pageScript = redis.NewScript(`
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
`)

// readTasksScript:
//
//	KEYS[i] -> gemq:job:{<job>}:task:<task>
//	Output: for each key {key, state, response, error, finished_ms, nil, published}
var readTasksScript = redis.NewScript(`
local out = {}
for i = 1, #KEYS do
  local r = redis.call('HMGET', KEYS[i], 'key', 'state', 'response', 'error', 'finished_ms', 'published')
  r[7], r[6] = r[6], false
  out[i] = r
end
return out
`)
