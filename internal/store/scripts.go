package store

import (
	"strconv"

	"github.com/redis/go-redis/v9"
)

// prelude is shared by the task transition scripts. They all take
//
//	KEYS[1] -> gemq:job:{<job>}:meta
//	KEYS[2] -> gemq:job:{<job>}:tasks
//	KEYS[3] -> gemq:job:{<job>}:done
//	KEYS[4] -> gemq:job:{<job>}:task:<task>
//	KEYS[5] -> gemq:job:{<job>}:failed
//	KEYS[6] -> gemq:job:{<job>}:fps
//	ARGV[1] -> ttl in ms
//	ARGV[2] -> job id
//	ARGV[3] -> task id
//	ARGV[4] -> request key
//	ARGV[5] -> model (for a job created on first sight)
//	ARGV[6] -> job hash the envelope carries ('' for a user-published task)
//	ARGV[7] -> job total the envelope carries ('0' if none)
//	ARGV[8] -> holder: the delivery's identity
//	ARGV[9] -> fence: the holder's token ('' for LeaseTask)
//	ARGV[10] -> the job's creation in ms (Unix) the envelope carries ('0' if none)
//
// Outcome codes: 1 applied, 2 already done, 3 held elsewhere, 4 awaiting,
// 5 not stale / absent, 6 foreign, 7 stale (fenced out).
const prelude = `
-- Time from Redis, so every function instance agrees on lease expiry.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- server_rid is the primary's replication id (INFO replication's
-- master_replid), '' where INFO does not show it. It changes when a replica
-- is promoted and when redis-server starts from an RDB or AOF file (since
-- Redis 7.0 the file's id is loaded as the secondary one only), so a job
-- stamped with another id may have lost its last writes.
local function server_rid()
  return string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)') or ''
end

-- check_rid is set by the scripts that check the job's replication id
-- (LeaseTask, GetJob: every delivery and every status read), so the other
-- transitions do not pay for INFO.
local check_rid = false

-- check_run stamps the existing job KEYS[1] with the server's replication
-- id, given the id it was stamped with (srid) and its lost flag. A job
-- stamped with another id may have lost its last writes: a restart from an
-- RDB or AOF file keeps the data of the last save only, a promoted replica
-- lacks the primary's last writes. Such a job is marked lost from now
-- (true returned), so its status counts the archived results back, as
-- after an empty restart. A job never stamped, or finished, is stamped
-- only.
local function check_run(now, srid, lost)
  if not check_rid then return false end
  local rid = server_rid()
  if srid == rid then return false end
  if srid and lost ~= '1' and redis.call('HEXISTS', KEYS[1], 'finished_ms') == 0 then
    redis.call('HSET', KEYS[1], 'rid', rid, 'lost', '1', 'lost_ms', tostring(now))
    return true
  end
  redis.call('HSET', KEYS[1], 'rid', rid)
  return false
end

-- register makes sure the job and the task exist, and says whether the task
-- belongs here. It returns:
--   'ok'      the task exists (it may have been created just now: see created)
--   'foreign' the envelope is not one of this job's tasks (an ingest job
--             that does not list it, or another run of the job id)
--   'expired' the task finished and its record is gone: compacted once its
--             result was published, or expired (never rerun)
--   'absent'  (create false) no record, and none was created
-- and, second, whether the task record was created by this call.
-- A job record missing for an envelope that carries its job hash means
-- Redis lost the job (a flush, an empty restart): it is re-created from the
-- envelope (hash, total, creation time) and marked lost, never as a new job.
-- An envelope without the creation time (published before ingest wrote it)
-- gives the time of the loss; none is later than now.
local function register(now, create)
  local jhash, jtotal = ARGV[6], ARGV[7]
  local meta = redis.call('HMGET', KEYS[1], 'hash', 'adhoc', 'lost', 'rid')
  local exists = meta[2] ~= false
  if not exists then
    if not create then return 'absent', false end
    if jhash == '' then
      redis.call('HSET', KEYS[1], 'id', ARGV[2], 'model', ARGV[5], 'hash', '', 'adhoc', '1',
        'total', '0', 'created_ms', tostring(now), 'updated_ms', tostring(now))
      meta = {'', '1', false}
    else
      local created = tonumber(ARGV[10]) or 0
      if created <= 0 or created > now then created = now end
      redis.call('HSET', KEYS[1], 'id', ARGV[2], 'model', ARGV[5], 'hash', jhash, 'adhoc', '0',
        'total', jtotal, 'lost', '1', 'lost_ms', tostring(now), 'created_ms', tostring(created),
        'updated_ms', tostring(now))
      meta = {jhash, '0', '1'}
    end
  elseif jhash ~= '' and meta[1] ~= jhash then
    return 'foreign', false
  elseif check_run(now, meta[4], meta[3]) then
    meta[3] = '1'
  end
  -- A finished task whose result was published leaves the tasks set (its
  -- place in the done set says it is the job's).
  if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 0 and not redis.call('ZSCORE', KEYS[3], ARGV[3]) then
    if meta[2] ~= '1' and meta[3] ~= '1' then return 'foreign', false end
    if not create and redis.call('HEXISTS', KEYS[4], 'state') == 0 then return 'absent', false end
    redis.call('SADD', KEYS[2], ARGV[3])
    if meta[2] == '1' then
      redis.call('HINCRBY', KEYS[1], 'total', 1)
      redis.call('HDEL', KEYS[1], 'finished_ms')
    end
  end
  if redis.call('HEXISTS', KEYS[4], 'state') == 0 then
    if redis.call('ZSCORE', KEYS[3], ARGV[3]) then return 'expired', false end
    if not create then return 'absent', false end
    redis.call('HSET', KEYS[4], 'key', ARGV[4], 'state', 'queued', 'fence', '')
    return 'ok', true
  end
  return 'ok', false
end

-- The job's counters: queued is not counted (total minus the others), and
-- calling counts as running.
local counter = {running = 'running', calling = 'running', waiting = 'waiting',
  succeeded = 'succeeded', failed = 'failed'}
local function move(from, to)
  local f, t = counter[from], counter[to]
  if f == t then return end
  if f then redis.call('HINCRBY', KEYS[1], f, -1) end
  if t then redis.call('HINCRBY', KEYS[1], t, 1) end
end

-- touch stamps the job, marks it finished when every task is terminal, and
-- renews the TTL of every key this script wrote, and of the job's
-- fingerprints: a task may wait longer than the TTL for its first lease
-- (a job paced by a per-day quota), and its fingerprint with it.
local function touch(now)
  redis.call('HSET', KEYS[1], 'updated_ms', tostring(now))
  local m = redis.call('HMGET', KEYS[1], 'total', 'succeeded', 'failed')
  local total = tonumber(m[1]) or 0
  if total > 0 and (tonumber(m[2]) or 0) + (tonumber(m[3]) or 0) >= total then
    redis.call('HSETNX', KEYS[1], 'finished_ms', tostring(now))
  end
  for i = 1, 6 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
end

local function terminal(state) return state == 'succeeded' or state == 'failed' end
local function holding(state) return state == 'running' or state == 'calling' end

-- fenced: the common head of the transitions a lease holder makes. It
-- returns a code to answer with, or nil and the task's state when the
-- caller's fence is current (no lease was taken since the caller's).
-- A task record lost since the lease (created just now by register) is
-- the caller's to write: nobody else holds it.
local function fenced(now, allowed)
  local reg, created = register(now, true)
  if reg == 'foreign' then return 6 end
  if reg == 'expired' then return 2 end
  local t = redis.call('HMGET', KEYS[4], 'state', 'fence')
  if terminal(t[1]) then return 2 end
  if created then return nil, t[1] end
  if t[2] ~= ARGV[9] then return 7 end
  if not allowed[t[1]] then return 7 end
  return nil, t[1]
end
`

// leaseTaskScript leases a task for one delivery, knowing which delivery a
// waiting task waits for and which delivery holds it.
//
//	ARGV[11] -> lease in ms
//	ARGV[12] -> the deferral number the delivery carries
//	ARGV[13] -> '1': take over only a stale task (running under an expired
//	            lease, or waiting past its deadline), else answer 5; a task
//	            without a record is not created
//	ARGV[14] -> the delivery's attempt (Pub/Sub deliveryAttempt, Cloud Tasks
//	            retry count): a higher attempt of the holder's own delivery
//	            resumes at once
//	ARGV[15] -> '1': refuse (6) a task of a job created by ingest (poison
//	            copies may only settle user-published tasks)
//	ARGV[16] -> a nonce of this request: running the script again for it
//	            (a retry after a lost reply) answers the same lease
//	ARGV[17] -> the request's fingerprint ('' not checked): compared with
//	            the one ingest recorded at the job's creation (KEYS[6], its
//	            first 16 characters) until the first lease, which records
//	            it in the task's record (and drops the job's copy); a
//	            different one is refused (8) in any state
//	Output: {code, previous state, published, deferral, wait_until_ms, lease_ms, fence, resumed}
//	code: 1 leased, 2 terminal, 3 held elsewhere, 4 waiting for another
//	deferral until wait_until_ms, 5 nothing stale to take over, 6 foreign,
//	8 conflict (another request than the task's);
//	published: '1' when the terminal result was marked published;
//	deferral: the deferral number the task was last marked waiting for;
//	lease_ms: when the live lease (code 3) or the new one (code 1) expires;
//	fence: the new lease's token (code 1);
//	resumed: '1' when the lease passed from an earlier attempt of the same
//	delivery (it died or gave up mid-way)
var leaseTaskScript = redis.NewScript(prelude + `
check_rid = true
local now = now_ms()
local takeover = ARGV[13] == '1'
if ARGV[15] == '1' and redis.call('HGET', KEYS[1], 'adhoc') == '0' then
  return {6, '', '0', '0', '0', '0', '0', '0', '0'}
end
-- Before register: a refused copy must not create the task's record.
if ARGV[17] ~= '' then
  local want = redis.call('HGET', KEYS[6], ARGV[3])
  if want and want ~= string.sub(ARGV[17], 1, ` + strconv.Itoa(fpPrefix) + `) then
    return {8, redis.call('HGET', KEYS[4], 'state') or 'queued', '0', '0', '0', '0', '0', '0', '0'}
  end
end
local reg = register(now, not takeover)
if reg == 'foreign' then return {6, '', '0', '0', '0', '0', '0', '0', '0'} end
if reg == 'expired' then return {2, 'expired', '1', '0', '0', '0', '0', '0', '0'} end
if reg == 'absent' then return {5, 'queued', '0', '0', '0', '0', '0', '0', '0'} end
local t = redis.call('HMGET', KEYS[4], 'state', 'holder', 'lease_ms', 'published', 'deferral',
  'wait_until_ms', 'attempt', 'fence', 'nonce', 'prev', 'resumed', 'rfp')
if ARGV[17] ~= '' and t[12] and t[12] ~= ARGV[17] then
  return {8, t[1] or 'queued', '0', '0', '0', '0', '0', '0', '0'}
end
local prev = t[1]
local deferral = t[5] or '0'
local waituntil = tonumber(t[6]) or 0
local leaseuntil = tonumber(t[3]) or 0
if terminal(prev) then return {2, prev, t[4] or '0', deferral, '0', '0', '0', '0', '0'} end
-- The job was cancelled (CancelJob): the lease is taken so that its holder
-- ends the task as cancelled.
local cancelled = redis.call('HEXISTS', KEYS[1], 'cancelled_ms') == 1 and '1' or '0'
-- This very request leased it already (a client retry of a script whose
-- reply was lost): the same answer again.
if prev == 'running' and t[9] == ARGV[16] then
  return {1, t[10] or 'queued', '0', deferral, '0', t[3], t[8], t[11] or '0', cancelled}
end
-- An earlier attempt of this very delivery wrote the state: it died, timed
-- out or answered non-2xx; this attempt carries on from there.
local own = t[2] == ARGV[8] and tonumber(ARGV[14]) > (tonumber(t[7]) or -1)
local resumed = '0'
if holding(prev) and leaseuntil > now then
  if not own then return {3, prev, '0', deferral, '0', t[3], '0', '0', '0'} end
  resumed = '1'
end
if prev == 'waiting' and waituntil > now and ARGV[12] ~= deferral then
  if not own then return {4, prev, '0', deferral, t[6], '0', '0', '0', '0'} end
  resumed = '1'
end
local stale = (holding(prev) and leaseuntil <= now) or (prev == 'waiting' and waituntil <= now)
if takeover and not stale then return {5, prev, '0', deferral, t[6] or '0', t[3] or '0', '0', '0', '0'} end
move(prev, 'running')
local lease = tostring(now + tonumber(ARGV[11]))
-- The token is unique across a loss of Redis' data too: time, then a count.
local fence = tostring(now) .. '-' .. tostring(redis.call('HINCRBY', KEYS[4], 'leases', 1))
redis.call('HSET', KEYS[4], 'state', 'running', 'holder', ARGV[8], 'attempt', ARGV[14], 'lease_ms', lease,
  'fence', fence, 'nonce', ARGV[16], 'prev', prev, 'resumed', resumed)
-- The task's record keeps the fingerprint from now on (for as long as its
-- answer stays in Redis); the job's copy of it is no longer needed.
if ARGV[17] ~= '' and not t[12] then
  redis.call('HSET', KEYS[4], 'rfp', ARGV[17])
  redis.call('HDEL', KEYS[6], ARGV[3])
end
redis.call('HDEL', KEYS[4], 'wait_until_ms')
touch(now)
return {1, prev, '0', deferral, t[6] or '0', lease, fence, resumed, cancelled}
`)

// callingScript records, before the Gemini call, that the holder is calling
// (write-ahead: a takeover knows the call may have reached Gemini), and
// extends its lease to cover the call.
//
//	ARGV[11] -> lease in ms from now
//	Output: 1 calling, 2 terminal, 6 foreign, 7 fenced out (nothing written)
var callingScript = redis.NewScript(prelude + `
local now = now_ms()
local code, state = fenced(now, {running = true, calling = true})
if code then return code end
move(state, 'calling')
redis.call('HSET', KEYS[4], 'state', 'calling', 'fence', ARGV[9], 'holder', ARGV[8],
  'lease_ms', tostring(now + tonumber(ARGV[11])))
touch(now)
return 1
`)

// waitScript records, before Cloud Task N is created (write-ahead), that the
// task waits for deferral N until a deadline. The holder and its attempt
// stay recorded, so a later attempt of the same delivery resumes at once.
//
//	ARGV[11] -> deferral number the task now waits for
//	ARGV[12] -> deadline in ms (Unix) after which any delivery may take the
//	            task over
//	Output: 1 waiting, 2 terminal, 6 foreign, 7 fenced out (nothing written)
var waitScript = redis.NewScript(prelude + `
local now = now_ms()
local code, state = fenced(now, {running = true, calling = true, waiting = true})
if code then return code end
move(state, 'waiting')
redis.call('HSET', KEYS[4], 'state', 'waiting', 'deferral', ARGV[11], 'wait_until_ms', ARGV[12],
  'fence', ARGV[9], 'holder', ARGV[8])
redis.call('HDEL', KEYS[4], 'lease_ms')
touch(now)
return 1
`)

// releaseScript gives a lease back: a task running, calling, or waiting by
// the holder's own mark (a Cloud Task that could not be created) goes back
// to queued.
//
//	Output: 1 released, 2 terminal, 6 foreign, 7 fenced out (nothing written)
var releaseScript = redis.NewScript(prelude + `
local now = now_ms()
local code, state = fenced(now, {running = true, calling = true, waiting = true, queued = true})
if code then return code end
move(state, 'queued')
redis.call('HSET', KEYS[4], 'state', 'queued')
redis.call('HDEL', KEYS[4], 'holder', 'lease_ms', 'wait_until_ms', 'attempt')
touch(now)
return 1
`)

// finishScript writes a terminal state once, for the current holder only.
//
//	ARGV[11] -> 'succeeded' | 'failed'
//	ARGV[12] -> payload field: 'response' | 'error'
//	ARGV[13] -> payload JSON
//	ARGV[14] -> optional: the service tier the tokens below are billed at ('' or absent: no usage)
//	ARGV[15..18] -> input, cached, output, thinking tokens
//	ARGV[19] -> '' or 'asked>served' when the call was served at another tier than asked
//	Output: 1 written (now, or before by the same lease), 2 already terminal,
//	6 foreign, 7 fenced out (nothing written)
var finishScript = redis.NewScript(prelude + `
local now = now_ms()
-- Written already by this very lease (a retry after a lost reply).
local own = redis.call('HMGET', KEYS[4], 'state', 'fence')
if own[1] == ARGV[11] and ARGV[9] ~= '' and own[2] == ARGV[9] then return 1 end
local code, state = fenced(now, {running = true, calling = true})
if code then return code end
move(state, ARGV[11])
redis.call('HSET', KEYS[4], 'state', ARGV[11], ARGV[12], ARGV[13], 'holder', ARGV[8], 'finished_ms', tostring(now))
redis.call('HDEL', KEYS[4], 'lease_ms', 'wait_until_ms', 'attempt', 'deferral', 'nonce', 'prev', 'resumed')
redis.call('HDEL', KEYS[6], ARGV[3])
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('ZADD', KEYS[3], seq, ARGV[3])
-- Which finished tasks failed outlives the task's record (compact).
if ARGV[11] == 'failed' then redis.call('SADD', KEYS[5], ARGV[3]) end
-- Usage is summed per job and tier by the terminal write itself: a retry
-- of this write (returned above) or a later one (refused) adds nothing.
if ARGV[14] and ARGV[14] ~= '' then
  local u = 'usage:' .. ARGV[14] .. ':'
  redis.call('HINCRBY', KEYS[1], u .. 'tasks', 1)
  redis.call('HINCRBY', KEYS[1], u .. 'input', ARGV[15])
  redis.call('HINCRBY', KEYS[1], u .. 'cached', ARGV[16])
  redis.call('HINCRBY', KEYS[1], u .. 'output', ARGV[17])
  redis.call('HINCRBY', KEYS[1], u .. 'thinking', ARGV[18])
  if ARGV[19] ~= '' then
    redis.call('HSET', KEYS[4], 'downgrade', ARGV[19])
    redis.call('HINCRBY', KEYS[1], 'downgraded', 1)
  end
end
touch(now)
return 1
`)

// publishedScript marks a terminal task's result as published. With a
// grace (the results reach a durable archive), the task leaves the tasks set
// (the done set keeps it) and its record, answer included, expires after the
// grace, leaving the compact terminal record: its place in the done set and,
// for a failure, in the failed set.
//
//	KEYS[1] -> gemq:job:{<job>}:tasks
//	KEYS[2] -> gemq:job:{<job>}:done
//	KEYS[3] -> gemq:job:{<job>}:task:<task>
//	ARGV[1] -> task id
//	ARGV[2] -> grace in ms; 0 keeps the record for its TTL
//	Output: 1 marked (or compacted already), 0 no such record, -1 not terminal (nothing written)
var publishedScript = redis.NewScript(`
local state = redis.call('HGET', KEYS[3], 'state')
if not state then
  if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 1 end
  return 0
end
if state ~= 'succeeded' and state ~= 'failed' then return -1 end
redis.call('HSET', KEYS[3], 'published', '1')
local grace = tonumber(ARGV[2])
if grace > 0 then
  redis.call('SREM', KEYS[1], ARGV[1])
  local ttl = redis.call('PTTL', KEYS[3])
  if ttl < 0 or ttl > grace then redis.call('PEXPIRE', KEYS[3], grace) end
end
return 1
`)

// createJobScript creates a job or checks an existing one, and registers a
// chunk of its task ids, with their request fingerprints when given: a task
// id registered by this call (not registered before, not finished) gets its
// fingerprint in KEYS[4] until its first lease (write-ahead: before any of
// the job's messages is published). A task registered before keeps what
// it has: its fingerprint, or its record's (the same, as the content hash
// covers every request).
//
//	KEYS[1] -> gemq:job:{<job>}:meta
//	KEYS[2] -> gemq:job:{<job>}:tasks
//	KEYS[3] -> gemq:job:{<job>}:done
//	KEYS[4] -> gemq:job:{<job>}:fps
//	ARGV[1] -> ttl in ms
//	ARGV[2] -> job id
//	ARGV[3] -> model
//	ARGV[4] -> content hash
//	ARGV[5] -> '1': each task id below is followed by its fingerprint's first 16 characters
//	ARGV[6..] -> task ids (and fingerprints)
//	Output: 1 created, 0 existed with the same hash, -1 conflict (nothing written)
var createJobScript = redis.NewScript(`
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- Whatever an earlier job of this id left (nothing: its keys expire
  -- together) is not this job's.
  redis.call('DEL', KEYS[4])
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
local step = ARGV[5] == '1' and 2 or 1
for i = 6, #ARGV, step do
  -- A finished task whose result was published has left the tasks set.
  if not redis.call('ZSCORE', KEYS[3], ARGV[i]) and redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    added = added + 1
    if step == 2 then redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]) end
  end
end
-- A job re-created after Redis lost it already has its total (from the
-- envelopes); its ids are only registered again.
if added > 0 and redis.call('HGET', KEYS[1], 'lost') ~= '1' then
  redis.call('HINCRBY', KEYS[1], 'total', added)
  redis.call('HDEL', KEYS[1], 'finished_ms')
end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return created
`)

// getJobScript returns a job's record, marked lost first when it was
// stamped with another replication id (see check_run in prelude): a
// job whose last task finished before a restart from a snapshot that does
// not hold it gets no other delivery to notice.
//
//	KEYS[1] -> gemq:job:{<job>}:meta
//	Output: the hash as {field, value, …}; empty when the job does not exist
var getJobScript = redis.NewScript(prelude + `
check_rid = true
local m = redis.call('HMGET', KEYS[1], 'adhoc', 'rid', 'lost')
if m[1] then check_run(now_ms(), m[2], m[3]) end
return redis.call('HGETALL', KEYS[1])
`)

// resultScript:
//
//	KEYS[1] -> gemq:job:{<job>}:tasks
//	KEYS[2] -> gemq:job:{<job>}:task:<task>
//	KEYS[3] -> gemq:job:{<job>}:done
//	KEYS[4] -> gemq:job:{<job>}:failed
//	ARGV[1] -> task id
//	Output: nil when the job has no such task, else {key, state, response, error, finished_ms, seq, published, archived, downgrade};
//	for a finished task whose record is gone (compacted after its result was
//	published, or expired) state is 'succeeded' or 'failed' and archived '1'
var resultScript = redis.NewScript(`
local seq = redis.call('ZSCORE', KEYS[3], ARGV[1])
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 and not seq then return false end
local r = redis.call('HMGET', KEYS[2], 'key', 'state', 'response', 'error', 'finished_ms', 'published', 'downgrade')
local published, downgrade = r[6], r[7]
r[6] = seq
r[7] = published
r[8] = '0'
r[9] = downgrade
if not r[2] and seq then
  r[2] = 'succeeded'
  if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then r[2] = 'failed' end
  r[7], r[8] = '1', '1'
end
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
//	KEYS[1] -> gemq:job:{<job>}:failed
//	KEYS[1+i] -> gemq:job:{<job>}:task:<task i>
//	ARGV[i] -> task id i
//	Output: for each task {key, state, response, error, finished_ms, nil, published, archived, downgrade},
//	as resultScript
var readTasksScript = redis.NewScript(`
local out = {}
for i = 2, #KEYS do
  local r = redis.call('HMGET', KEYS[i], 'key', 'state', 'response', 'error', 'finished_ms', 'published', 'downgrade')
  r[9], r[7], r[6], r[8] = r[7], r[6], false, '0'
  if not r[2] then
    r[2] = 'succeeded'
    if redis.call('SISMEMBER', KEYS[1], ARGV[i - 1]) == 1 then r[2] = 'failed' end
    r[7], r[8] = '1', '1'
  end
  out[i - 1] = r
end
return out
`)

// cancelJobScript marks a job cancelled, once: every later lease of one of
// its tasks says so (LeaseResult.Cancelled), and its holder ends the task.
//
//	KEYS[1] -> gemq:job:{<job>}:meta
//	Output: {code, cancelled_ms}: 1 cancelled now, 2 cancelled before,
//	3 finished before it was cancelled (nothing written), 0 no such job
var cancelJobScript = redis.NewScript(prelude + `
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '0'} end
local m = redis.call('HMGET', KEYS[1], 'finished_ms', 'cancelled_ms')
if m[2] then return {2, m[2]} end
if m[1] then return {3, '0'} end
local now = tostring(now_ms())
redis.call('HSET', KEYS[1], 'cancelled_ms', now, 'updated_ms', now)
return {1, now}
`)

// jobTiersScript records a job's service tier settings once (fields already
// set are kept, so a retried CreateJob changes nothing).
//
//	KEYS[1] -> gemq:job:{<job>}:meta
//	ARGV[1..] -> field, value, field, value, …
//	Output: 1
var jobTiersScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
`)

// restoreScript records tasks of a job as finished from the results
// archive (after Redis lost the job): each task not already finished here
// gets the compact terminal record a published result leaves (a place in
// the done set, the failed set for a failure), its record (a lease or a
// waiting mark taken since the loss) removed, and the job's counters moved.
// A holder of such a record is refused from then on (AlreadyDone): the
// task has a result already.
//
//	KEYS[1] -> gemq:job:{<job>}:meta
//	KEYS[2] -> gemq:job:{<job>}:tasks
//	KEYS[3] -> gemq:job:{<job>}:done
//	KEYS[4] -> gemq:job:{<job>}:failed
//	KEYS[5] -> gemq:job:{<job>}:fps
//	KEYS[5+i] -> gemq:job:{<job>}:task:<task i>
//	ARGV[1] -> ttl in ms
//	ARGV[2i], ARGV[2i+1] -> task id i, 'succeeded' | 'failed'
//	Output: how many tasks were recorded (not finished here before)
var restoreScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local counter = {running = 'running', calling = 'running', waiting = 'waiting'}
local n = 0
for i = 1, #KEYS - 5 do
  local id, st = ARGV[2 * i], ARGV[2 * i + 1]
  local tkey = KEYS[5 + i]
  local cur = redis.call('HGET', tkey, 'state')
  if not redis.call('ZSCORE', KEYS[3], id) and cur ~= 'succeeded' and cur ~= 'failed' then
    if cur and counter[cur] then redis.call('HINCRBY', KEYS[1], counter[cur], -1) end
    redis.call('HINCRBY', KEYS[1], st, 1)
    redis.call('DEL', tkey)
    redis.call('HDEL', KEYS[5], id)
    redis.call('SREM', KEYS[2], id)
    redis.call('ZADD', KEYS[3], redis.call('HINCRBY', KEYS[1], 'seq', 1), id)
    if st == 'failed' then redis.call('SADD', KEYS[4], id) end
    n = n + 1
  end
end
if n > 0 then
  local t = redis.call('TIME')
  local now = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  redis.call('HSET', KEYS[1], 'updated_ms', now, 'restored', tostring(n + (tonumber(redis.call('HGET', KEYS[1], 'restored')) or 0)))
  local m = redis.call('HMGET', KEYS[1], 'total', 'succeeded', 'failed')
  local total = tonumber(m[1]) or 0
  if total > 0 and (tonumber(m[2]) or 0) + (tonumber(m[3]) or 0) >= total then
    redis.call('HSETNX', KEYS[1], 'finished_ms', now)
  end
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
end
return n
`)
