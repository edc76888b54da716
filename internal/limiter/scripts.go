package limiter

import (
	"strings"

	"github.com/redis/go-redis/v9"
)

// Every script takes all of its keys in KEYS (built in Go by the key helpers,
// all under one {hash tag}) so it runs on Redis Cluster, and reads the time
// from Redis TIME unless a test passes one (ARGV "now", empty in production):
// every function instance then agrees on the clock. Numbers travel as integer
// milliseconds and integer amounts; Lua formats them with %d so they never turn
// into exponent notation.
//
// State of one scope (see keys.go). Hot numbers are kept as little-endian
// doubles packed with Redis's struct library (integers up to 2^53 are exact),
// so a decision formats and parses almost no strings.
//
//	meta  HASH   v = packed doubles: epoch (creation time; permits remember it),
//	             fingerprint of the dimensions, l = time of the newest entry,
//	             n = absolute index of the next entry, b = absolute index of the
//	             log's first element, x = expiry last set on the log, xm = expiry
//	             last set on meta (TTLs are refreshed only past them), then per
//	             sliding dimension (configuration order): sum of its amounts in
//	             entries [head, n), head (absolute index of its oldest entry
//	             still in its window), time of the entry at the head (-1: unknown);
//	             k = secret of the epoch (authenticates permit refs),
//	             cd = cooldown until, cr = cooldown reason, rid = the primary's
//	             replication id when meta was last written (a failover changes it),
//	             d:<dim>:<day start ms> = counter of a daily dimension for one
//	             Pacific day (meta then lives until that day's end),
//	             ad = adapted capacities (adapt.go), pr = per sliding dimension
//	             the lowest and highest capacity the reservations ahead were
//	             decided at (re-plans)
//	log   LIST   packed (time_ms, requests, tokens[, wake_ms]), one entry per
//	             admission shared by every sliding dimension, FIFO, times
//	             non-decreasing; the entry with absolute index i sits at position
//	             i - b. Each dimension walks it from its own head; it is trimmed
//	             lazily to the lowest head, keeping the entries after now minus
//	             the longest window (a re-plan reads them).
//	p:<id> STRING permit state "state|t|requests|tokens|fingerprint|epoch|day_start|idx"
//	             (state r = reserved, g = granted/claimed, x = released). Written
//	             for Reserved permits and claims; an immediately Granted permit
//	             carries the same string, signed with the epoch's secret, in
//	             Permit.Ref, and its state is written only on its first
//	             Reconcile or Release.
const luaCommon = `
local function now_ms(arg)
  if arg ~= '' then return tonumber(arg) end
  -- Redis TIME, not the caller's clock: all instances must agree on "now".
  local tm = redis.call('TIME')
  return tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
end

local function split(s)
  local out = {}
  for part in string.gmatch(s, '[^|]+') do out[#out + 1] = part end
  return out
end

-- A log entry is packed (time, requests, tokens), or (time, requests, tokens,
-- wake) when its task was told to come back (and claim) before the entry's
-- time: a re-plan never moves the entry before its wake (see replan in
-- acquireLua).
local function entry(row)
  local t, r, k = struct.unpack('<ddd', row)
  local w = t
  if #row >= 32 then w = struct.unpack('<d', row, 25) end
  return t, r, k, w
end

local function pack_entry(t, r, k, w)
  if w < t then return struct.pack('<dddd', t, r, k, w) end
  return struct.pack('<ddd', t, r, k)
end

-- Sets the amounts of the permit's log entry (p is a split permit state) and
-- keeps the sums of the sliding dimensions still counting it in step. vals is
-- the unpacked meta v; istok[i] tells whether dimension i counts tokens.
-- Returns true when a sum changed.
local function set_entry(log, ns, istok, vals, p, newreq, newtok)
  local idx = tonumber(p[8])
  if idx == nil or tonumber(p[6]) ~= vals[1] or idx >= vals[4] or idx < vals[5] then return false end
  local oldreq, oldtok = tonumber(p[3]), tonumber(p[4])
  if oldreq == newreq and oldtok == newtok then return false end
  -- The entry is set even where no sum counts it any more: a re-plan
  -- reads the amounts of the window before the entries it moves. Its own
  -- time and wake, not the permit's: a re-plan may have moved the entry
  -- since the permit was decided.
  local row = redis.pcall('LINDEX', log, idx - vals[5])
  if type(row) ~= 'string' then return false end -- the log is gone
  local et, _, _, ew = entry(row)
  local ok = redis.pcall('LSET', log, idx - vals[5], pack_entry(et, newreq, newtok, ew))
  if type(ok) == 'table' and ok.err then return false end
  local changed = false
  for i = 1, ns do
    if idx >= vals[6 + 3 * i] then
      local old, new = oldreq, newreq
      if istok[i] then old, new = oldtok, newtok end
      if old ~= new then
        vals[5 + 3 * i] = vals[5 + 3 * i] - old + new
        changed = true
      end
    end
  end
  return changed
end
`

// acquireScript decides one permit for all dimensions of a scope, atomically.
//
// KEYS[1] -> gemq:{<scope>}:meta
// KEYS[2] -> gemq:{<scope>}:log
// KEYS[3] -> gemq:{<scope>}:p:<id>
// KEYS[4] -> gemq:{<scope>}:gen (the scope's generation: written at first use, outlives meta)
// ARGV[1]  -> now in ms, or "" to use Redis TIME
// ARGV[2]  -> mode: "a" acquire, "c" claim the permit KEYS[3] (re-acquire if it cannot be used)
// ARGV[3]  -> permit id
// ARGV[4]  -> dimensions fingerprint
// ARGV[5]  -> requests cost, ARGV[6] -> input tokens cost
// ARGV[7]  -> packed doubles (ms where a duration; built once per scope and day;
// its struct format is '<' and one 'd' per 8 bytes):
// [1..5] 5 Pacific day boundaries (4 consecutive days, the 2nd contains the
// client's now); [6..15] settings: horizon; early tolerance (grant when
// t <= now + early, claim from t - early); claim lateness allowance (claim until t + it,
// else re-acquire); midnight blackout (no admission in [midnight - blackout, midnight +
// early)); TTL slack; permit lifetime beyond its time; longest window; fingerprint as a
// number; ns; nd; [16..] ns × (counts tokens 0|1, capacity, window ms), nd × (counts
// tokens 0|1, capacity)
// ARGV[8]  -> the scope's secret as the client last saw it ("" if none)
// ARGV[9]  -> read only by the general path: a random nonce (seeds the secret of a
// new epoch), then the ns sliding and the nd daily dimension names, joined by "|"
// ARGV[10] -> for a claim of a Reserved permit, its slot in ms (a claim whose
// state vanished is decided no earlier), else ""
// ARGV[11..] -> the meta fields of the nd daily counters of the day between the
// 2nd and 3rd boundaries
// The struct format of meta v is '<' and 7 + 3 × ns 'd's.
// Output: {code (1 granted, 2 reserved, 3 denied), at_ms, reason}, or for a Granted
// Acquire whose state was not written (the client builds and signs Permit.Ref):
// {1, at_ms, epoch, day_start, log index}, with the scope's secret appended when
// ARGV[8] is not current.
var acquireScript = redis.NewScript(acquireLua)

// spacingLua: a reservation at the ceiling comes at least 1/spacing of
// the paced gap after the entry before it (see "Pacing" in acquireLua).
const spacingLua = "8"

// acquireUnspacedScript is acquireScript with reservations not spaced
// (WithoutSpacing).
var acquireUnspacedScript = redis.NewScript(strings.Replace(acquireLua,
	"local spacing = "+spacingLua+"\n", "local spacing = 0\n", 1))

const acquireLua = `
-- Redis TIME, not the caller's clock: all instances must agree on "now".
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local tm = redis.call('TIME')
  now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
end
local mode, id, fp = ARGV[2], ARGV[3], ARGV[4]
local creq, ctok = tonumber(ARGV[5]), tonumber(ARGV[6])
local b1, b2, b3, b4, b5, horizon, early, claimlate, blackout, slack, pbase, maxwin, fpnum, ns, nd =
  struct.unpack('<ddddddddddddddd', ARGV[7])
-- D[j] is the packed ARGV[7]'s (15 + j)th double (the dimensions).
local D = {struct.unpack('<' .. string.rep('d', 3 * ns + 2 * nd), ARGV[7], 121)}
local nv = 7 + 3 * ns
local vfmt = '<' .. string.rep('d', nv)
local meta, log, pkey = KEYS[1], KEYS[2], KEYS[3]
local m
if nd == 1 then
  m = redis.call('HMGET', meta, 'v', 'k', 'cd', 'ad', ARGV[11])
else
  m = redis.call('HMGET', meta, 'v', 'k', 'cd', 'ad', unpack(ARGV, 11, 10 + nd))
end
local cd = tonumber(m[3]) or 0
-- A failover that promoted a replica may have lost the primary's last
-- writes (replication is asynchronous) while the epoch survived: the scope's
-- state is then partly stale, and grants it no longer knows may be in use.
-- Promotion gives the primary a new replication id, which meta remembers
-- (rid): a state written under another id is treated as lost, fail safe, as
-- after a flush (every window full for one window from now). INFO runs in
-- scripts on Redis and Memorystore alike; where it shows no master_replid
-- the check is off.
local rid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)') or ''
local srid = redis.call('HGET', meta, 'rid')
local failover = m[1] ~= false and srid ~= false and srid ~= rid
-- Adapted capacities (see adaptLua): the effective capacity of each
-- dimension replaces the configured one.
-- ratio: the lowest effective/ceiling of the sliding dimensions (1 when
-- nothing was adapted), which wake times and re-plans read.
local ratio, adapted = 1, false
local cap0 = {} -- the sliding capacities before adaptation
local ceil = {} -- their ceilings (a quotaValue may have lowered one)
for i = 1, ns do cap0[i], ceil[i] = D[3 * i - 1], D[3 * i - 1] end
if m[4] and #m[4] == 8 * (1 + 2 * (ns + nd)) then
  local A = {struct.unpack('<' .. string.rep('d', 1 + 2 * (ns + nd)), m[4])}
  for i = 1, ns do D[3 * i - 1], ceil[i] = A[2 * i], A[2 * i + 1] end
  for i = 1, nd do D[3 * ns + 2 * i] = A[2 * (ns + i)] end
  adapted = true
  for i = 1, ns do
    if A[2 * i + 1] > 0 and A[2 * i] / A[2 * i + 1] < ratio then ratio = A[2 * i] / A[2 * i + 1] end
  end
end

-- Pacing: while an adaptive limit is lowered below its ceiling, admissions
-- are spread evenly over the window (each one a window × its share of the
-- capacity after the one before) instead of a window's worth at once, so
-- that probing a shortage costs a call or two, not a burst of 429s, and
-- the shortage's room is used as it frees. At the ceiling the admissions
-- granted now go at once (the fast path), as a fixed quota allows, but a
-- reservation is spaced: at least 1/spacing of that gap after the entry
-- before it. Reservations replicate the times of the admissions a window
-- earlier, so without it a burst of arrivals (64 pushes at once) came back
-- every window as 64 claims within a few milliseconds, and a shortage that
-- began under them (Dynamic Shared Quota, a 429 below the published limit)
-- answered all 64 with 429 before the first one was seen (the DSQ
-- benchmark: 64 of 1,627 calls; spaced: 4). A window's worth of
-- reservations then takes at least 1/spacing of the window, which the
-- arrivals' own spread mostly covers (TPM-bound benchmark: completion
-- 1.052 × the minimum spaced and unspaced alike, on 2026-12-03's ingest).
local pace = adapted and ratio < 0.95
local spacing = ` + spacingLua + `
local function gap(amounts)
  local g = 0
  for i = 1, ns do
    local c = D[3 * i - 1]
    if c > 0 and amounts[i] > 0 then g = math.max(g, D[3 * i] * amounts[i] / c) end
  end
  if not pace then
    if spacing == 0 then return 0 end
    g = g / spacing
  end
  return math.floor(g)
end

-- Fast path: an Acquire granted now, under the replication id meta was
-- written under, in today's Pacific day, with no
-- cooldown, whose every head is still inside its window (nothing to walk)
-- and which fits every dimension on the sums alone. It does exactly what the
-- general path below does in that case, with plain locals and no closures.
if mode == 'a' and not pace and m[1] and m[2] and #m[1] == 8 * nv and b2 <= now and now < b3 and srid == rid then
  local vals = {struct.unpack(vfmt, m[1])}
  local t = vals[3]
  if t < now then t = now end
  local n = vals[4]
  local ok = vals[2] == fpnum and cd <= t and t <= now + early and t < b3
  if ok then
    for i = 1, ns do
      local h = vals[6 + 3 * i]
      if h < n then
        local ht, c = vals[7 + 3 * i], creq
        if D[3 * i - 2] == 1 then c = ctok end
        if ht < 0 or ht <= t - D[3 * i] or (c ~= 0 and vals[5 + 3 * i] + c > D[3 * i - 1]) then
          ok = false
          break
        end
      end
    end
  end
  local dayend = nil
  if ok then
    for i = 1, nd do
      local c = creq
      if D[3 * ns + 2 * i - 1] == 1 then c = ctok end
      if c ~= 0 then
        local cnt = m[4 + i]
        if not cnt or t < b2 + early or t >= b3 - blackout or tonumber(cnt) + c > D[3 * ns + 2 * i] then
          ok = false
          break
        end
        dayend = b3
      end
    end
  end
  if ok then
    local idx, created = n, false
    vals[4] = n + 1
    if ns > 0 then
      local len = redis.call('RPUSH', log, struct.pack('<ddd', t, creq, ctok))
      vals[5] = n + 1 - len
      created = len == 1
      local low = n + 1
      for i = 1, ns do
        local h = vals[6 + 3 * i]
        if h == idx then vals[7 + 3 * i] = t end
        if D[3 * i - 2] == 1 then
          vals[5 + 3 * i] = vals[5 + 3 * i] + ctok
        else
          vals[5 + 3 * i] = vals[5 + 3 * i] + creq
        end
        if h < low then low = h end
      end
      if low - vals[5] >= 64 then
        redis.call('LTRIM', log, low - vals[5], -1)
        vals[5] = low
      end
    end
    -- As write_meta below.
    vals[3] = t
    local logexp = created
    local needl = t + maxwin + slack
    if ns > 0 and needl > vals[6] then
      vals[6] = needl + maxwin
      logexp = true
    end
    local need = t + maxwin + slack
    if cd > t then need = cd + maxwin + slack end
    if dayend and dayend + slack > need then need = dayend + slack end
    if vals[6] > need then need = vals[6] end
    local metaexp = false
    if need > vals[7] then
      vals[7] = need + maxwin
      metaexp = true
    end
    if nd == 0 then
      redis.call('HSET', meta, 'v', struct.pack(vfmt, unpack(vals, 1, nv)))
    elseif nd == 1 then
      -- The common shape; dayend is set when the day counter counts this cost.
      if dayend then
        redis.call('HSET', meta, 'v', struct.pack(vfmt, unpack(vals, 1, nv)), ARGV[11], tonumber(m[5]) + (D[3 * ns + 1] == 1 and ctok or creq))
      else
        redis.call('HSET', meta, 'v', struct.pack(vfmt, unpack(vals, 1, nv)))
      end
    else
      local hs = {'v', struct.pack(vfmt, unpack(vals, 1, nv))}
      for i = 1, nd do
        local c = creq
        if D[3 * ns + 2 * i - 1] == 1 then c = ctok end
        if c ~= 0 then
          hs[#hs + 1], hs[#hs + 2] = ARGV[10 + i], tonumber(m[4 + i]) + c
        end
      end
      redis.call('HSET', meta, unpack(hs))
    end
    if metaexp then redis.call('PEXPIRE', meta, vals[7] - now) end
    if logexp then redis.call('PEXPIRE', log, vals[6] - now) end
    if ARGV[8] == m[2] then return {1, t, vals[1], b2, idx} end
    return {1, t, vals[1], b2, idx, m[2]}
  end
end
` + luaCommon + `
local names = split(ARGV[9]) -- nonce, then the dimension names
local dv = D
local bounds = {b1, b2, b3, b4, b5}
local today
for k = 1, 4 do
  if bounds[k] <= now and now < bounds[k + 1] then today = k break end
end
if not today then
  return redis.error_reply('gemq: Redis time ' .. string.format('%d', now) .. ' is outside the Pacific days computed by the client (clock skew?)')
end

local istok, cost = {}, {}
for i = 1, ns do
  istok[i] = dv[3 * i - 2] == 1
  cost[i] = istok[i] and ctok or creq
end
local dl = {}
for i = 1, nd do
  local tok = dv[3 * ns + 2 * i - 1] == 1
  dl[i] = {name = names[1 + ns + i], cap = dv[3 * ns + 2 * i], cost = tok and ctok or creq, tok = tok, counts = {}, exists = {}, dirty = {}}
end

local vals, secret, fresh, lost = nil, m[2], false, false
local gen_ttl = 35 * 86400000
if m[1] and secret then
  local old = {struct.unpack('<ddddddd', m[1])}
  if old[2] == fpnum and #m[1] == 8 * nv then
    vals = {struct.unpack(vfmt, m[1])}
  else
    -- The dimensions changed: recount every sliding dimension from the log.
    local n, rows = old[4], redis.call('LRANGE', log, 0, -1)
    vals = {old[1], fpnum, old[3], n, n - #rows, old[6], old[7]}
    for i = 1, ns do
      local sum, ht = 0, -1
      for j = 1, #rows do
        local et, er, ek = struct.unpack('<ddd', rows[j])
        if j == 1 then ht = et end
        sum = sum + (istok[i] and ek or er)
      end
      vals[5 + 3 * i], vals[6 + 3 * i], vals[7 + 3 * i] = sum, n - #rows, ht
    end
  end
else
  -- Fresh state: a log without its meta has unknown indices; drop it.
  redis.call('DEL', log)
  fresh = true
  secret = redis.sha1hex(names[1] .. '|' .. id .. '|' .. string.format('%d', now))
  vals = {now, fpnum, 0, 0, 0, 0, 0}
  for i = 1, ns do vals[5 + 3 * i], vals[6 + 3 * i], vals[7 + 3 * i] = 0, 0, -1 end
  -- The generation outlives meta, which expires when idle: meta gone with
  -- the generation gone too, seen by a client that knew a secret (or by a
  -- claim of a reservation), means Redis lost the scope's state (flush,
  -- empty restart), not an idle scope.
  if not redis.call('GET', KEYS[4]) then
    if ARGV[8] ~= '' or mode == 'c' then lost = true end
  end
  redis.call('SET', KEYS[4], string.format('%d', vals[1]), 'PX', gen_ttl)
end
for i = 1, nd do
  local c = m[4 + i]
  dl[i].exists[2] = c ~= false
  dl[i].counts[2] = tonumber(c) or 0
end

-- The counter of daily dimension d for day k (1..4), read once.
local function dayfield(d, k)
  return 'd:' .. d.name .. ':' .. string.format('%d', bounds[k])
end
local function daycount(d, k)
  if d.counts[k] == nil then
    local c = redis.call('HGET', meta, dayfield(d, k))
    d.exists[k] = c ~= false
    d.counts[k] = tonumber(c) or 0
  end
  return d.counts[k]
end

local created = false
local function write_meta(t, dayend)
  vals[3] = t
  -- TTLs are refreshed only when the keys would expire too early, and then
  -- one window further, so most decisions skip the PEXPIREs. The log lives
  -- until its newest entry's windows have passed; meta at least as long, and
  -- until the end of every day it counts.
  local logexp = created
  local needl = math.max(t, now) + maxwin + slack
  if ns > 0 and needl > vals[6] then
    vals[6] = needl + maxwin
    logexp = true
  end
  local need = math.max(t, cd, now) + maxwin + slack
  if dayend then need = math.max(need, dayend + slack) end
  need = math.max(need, vals[6])
  local metaexp = false
  if need > vals[7] then
    vals[7] = need + maxwin
    metaexp = true
  end
  local hs = {'v', struct.pack(vfmt, unpack(vals, 1, nv))}
  if fresh then hs[3], hs[4] = 'k', secret end
  if srid ~= rid then hs[#hs + 1], hs[#hs + 2] = 'rid', rid end
  if lost then hs[#hs + 1], hs[#hs + 2], hs[#hs + 3], hs[#hs + 4] = 'cd', cd, 'cr', 'state lost' end
  for i = 1, nd do
    local d = dl[i]
    for k = 1, 4 do
      if d.dirty[k] then
        hs[#hs + 1], hs[#hs + 2] = k == 2 and ARGV[10 + i] or dayfield(d, k), d.counts[k]
      end
    end
  end
  redis.call('HSET', meta, unpack(hs))
  if metaexp then redis.call('PEXPIRE', meta, vals[7] - now) end
  if logexp then redis.call('PEXPIRE', log, vals[6] - now) end
end

-- When a slot lies more than half a window ahead while the effective
-- capacity is below its ceiling, the task is told to come back (and claim)
-- earlier, at its wake: as early as the slot would be at the ceiling. A
-- re-plan after the capacity rose may have moved its entry there by then;
-- otherwise the claim tells it a new wake, the slot once the capacity is
-- back at its ceiling (never later than first decided unless the capacity
-- fell since). The queue ahead drains at the rates it was decided at, the
-- lowest of which (meta pr) may lie below today's: wratio, the lower of
-- the two as a share of the ceiling, is read once pr is (below). With
-- today's alone, a task queued at the back after a 429 was told a wake
-- later than where the re-planned queue ended, and finished alone, a
-- quarter minute after the rest (DSQ benchmark).
local wratio = ratio
local function wake(t)
  if not pace or t - now <= maxwin / 2 then return t end
  return math.min(t, math.max(math.floor(now + wratio * (t - now)), now + early))
end

-- Re-plan: once the effective capacity of a sliding dimension has risen 10%
-- or more above the lowest the reservations still ahead were decided at
-- (meta pr: per sliding dimension the lowest and the highest), or is back
-- at its ceiling above what they were decided at, every entry
-- after now + early is decided again, in order, by the same earliest fit at
-- today's capacities (paced while below the ceiling), never before its wake
-- (the time its task comes back), the cooldown or now + early, and never
-- after where it was. Every window ending at a moved entry then fits the
-- current capacities; one ending at an entry kept where it was holds a
-- subset of what it held when that entry was decided (every entry before
-- it moved earlier or stayed, any after it at the same time was fitted
-- there); so no window of the log exceeds the capacity of the decisions in
-- it. Once a capacity has fallen 10% or more below the highest they were
-- decided at (down), the entries ahead are decided again the same way but
-- may move later: slots decided at a capacity Gemini no longer has would
-- meet 429s, and the room a shortage still has is used in order instead of
-- by the queue's tail; a task that comes at its old slot is told the new
-- one. Claimed entries lie at or before now + early and never move. A queue
-- longer than 4,096 entries ahead, one whose re-plan would cross a Pacific
-- day boundary or the horizon, is left as it is.
local caps = {}
for i = 1, ns do caps[i] = dv[3 * i - 1] end
-- pr: xs holds per sliding dimension the lowest and the highest capacity.
local function write_pr(xs)
  redis.call('HSET', meta, 'pr', struct.pack('<' .. string.rep('d', 2 * ns), unpack(xs)))
end
local function replan(down)
  local b, n = vals[5], vals[4]
  local function first_after(x)
    local l, h = b, n
    while l < h do
      local mid = math.floor((l + h) / 2)
      local row = redis.call('LINDEX', log, mid - b)
      if not row then return nil end
      if struct.unpack('<d', row) > x then h = mid else l = mid + 1 end
    end
    return l
  end
  local lo = math.max(now + early, cd)
  local k0 = first_after(now + early)
  if not k0 or k0 >= n or n - k0 > 4096 then return end
  local c0 = first_after(now + early - maxwin)
  if not c0 or n - c0 > 16384 then return end
  local rows = redis.call('LRANGE', log, c0 - b, n - 1 - b)
  local mm = #rows
  if mm ~= n - c0 then return end
  local T, R, K, W, O = {}, {}, {}, {}, {}
  for j = 1, mm do
    T[j], R[j], K[j], W[j] = entry(rows[j])
    O[j] = T[j]
  end
  local function amt(i, j)
    if istok[i] then return K[j] end
    return R[j]
  end
  local j0 = k0 - c0 + 1
  local ptr, sum = {}, {}
  for i = 1, ns do
    ptr[i], sum[i] = 1, 0
    for j = 1, j0 - 1 do sum[i] = sum[i] + amt(i, j) end
  end
  local prev = lo
  if j0 > 1 and T[j0 - 1] > prev then prev = T[j0 - 1] end
  local dlo, dhi = nil, nil
  if nd > 0 then dlo, dhi = bounds[today] + early, bounds[today + 1] - blackout end
  local a = {} -- the amounts of entry j, for its pacing gap
  for j = j0, mm do
    local t = math.max(prev, W[j])
    if j > 1 then
      for i = 1, ns do a[i] = amt(i, j) end
      t = math.max(t, prev + gap(a))
    end
    local again = true
    while again do
      again = false
      for i = 1, ns do
        local win, c = dv[3 * i], amt(i, j)
        while ptr[i] < j and T[ptr[i]] <= t - win do
          sum[i] = sum[i] - amt(i, ptr[i])
          ptr[i] = ptr[i] + 1
        end
        while c > 0 and ptr[i] < j and sum[i] + c > caps[i] do
          t, again = T[ptr[i]] + win, true
          while ptr[i] < j and T[ptr[i]] <= t - win do
            sum[i] = sum[i] - amt(i, ptr[i])
            ptr[i] = ptr[i] + 1
          end
        end
      end
    end
    if t > O[j] and not down then
      -- Kept where it was: the windows walked past it count again.
      t = O[j]
      for i = 1, ns do
        while ptr[i] > 1 and T[ptr[i] - 1] > t - dv[3 * i] do
          ptr[i] = ptr[i] - 1
          sum[i] = sum[i] + amt(i, ptr[i])
        end
      end
    end
    if t > now + horizon then return end
    if dlo and (t < dlo or t >= dhi or O[j] < dlo or O[j] >= dhi) then return end
    T[j] = t
    for i = 1, ns do sum[i] = sum[i] + amt(i, j) end
    prev = t
  end
  -- The tail from the first moved entry is written again in one LTRIM and
  -- a few RPUSHes (an LSET per entry walks the list each time: about half
  -- of a 4,000-entry re-plan's time; BenchmarkReplan).
  local jf = nil
  for j = j0, mm do
    if T[j] ~= O[j] then jf = j break end
  end
  if jf then
    local keep, ttl = c0 + jf - 2 - b, nil
    if keep >= 0 then
      redis.call('LTRIM', log, 0, keep)
    else
      ttl = redis.call('PTTL', log)
      redis.call('DEL', log)
    end
    local buf = {}
    for j = jf, mm do
      buf[#buf + 1] = pack_entry(T[j], R[j], K[j], W[j])
      if #buf == 1000 or j == mm then
        redis.call('RPUSH', log, unpack(buf))
        buf = {}
      end
    end
    if ttl and ttl > 0 then redis.call('PEXPIRE', log, ttl) end
  end
  -- The heads and sums of the window before the new last entry (every
  -- entry before c0 lies out of it).
  local last2 = T[mm]
  vals[3] = last2
  for i = 1, ns do
    local h, s2 = mm + 1, 0
    for j = mm, 1, -1 do
      if T[j] <= last2 - dv[3 * i] then break end
      h, s2 = j, s2 + amt(i, j)
    end
    vals[5 + 3 * i], vals[6 + 3 * i] = s2, c0 + h - 1
    vals[7 + 3 * i] = h <= mm and T[h] or -1
  end
  local needl = last2 + maxwin + slack
  if needl > vals[6] then
    vals[6] = needl + maxwin
    redis.call('PEXPIRE', log, vals[6] - now)
  end
  if vals[6] > vals[7] then
    vals[7] = vals[6] + maxwin
    redis.call('PEXPIRE', meta, vals[7] - now)
  end
  redis.call('HSET', meta, 'v', struct.pack(vfmt, unpack(vals, 1, nv)))
end
-- pr as read now ({} when absent or stale).
local pr = {}
if adapted and ns > 0 and not fresh then
  local raw = redis.call('HGET', meta, 'pr')
  if raw and #raw == 16 * ns then
    pr = {struct.unpack('<' .. string.rep('d', 2 * ns), raw)}
  elseif vals[3] > now + early then
    -- Reservations ahead, decided before anything was adapted.
    for i = 1, ns do pr[2 * i - 1], pr[2 * i] = cap0[i], cap0[i] end
  end
  if pr[1] and vals[3] > now + early then
    local need, down = false, false
    for i = 1, ns do
      if caps[i] >= 1.1 * pr[2 * i - 1] or ratio >= 1 and pr[2 * i - 1] < caps[i] then need = true end
      if caps[i] <= 0.9 * pr[2 * i] then need, down = true, true end
    end
    if need then
      replan(down)
      pr = {}
      for i = 1, ns do pr[2 * i - 1], pr[2 * i] = caps[i], caps[i] end
      write_pr(pr)
    end
  end
end
if pr[1] then
  for i = 1, ns do
    if ceil[i] > 0 and pr[2 * i - 1] / ceil[i] < wratio then wratio = pr[2 * i - 1] / ceil[i] end
  end
end

local dirty, floor = false, nil
if mode == 'c' then
  local pv = redis.call('GET', pkey)
  if not pv and ARGV[10] ~= '' then
    -- The reservation's state vanished although it cannot have expired
    -- yet: Redis lost state. Decide again, no earlier than the slot.
    floor = tonumber(ARGV[10])
    if floor + pbase > now then lost = true end
  end
  if pv then
    local p = split(pv)
    if p[1] == 'r' and p[5] == fp then
      -- The slot is the entry's time: a re-plan may have moved it.
      local pt, prow, pidx = tonumber(p[2]), nil, tonumber(p[8])
      if pidx and tonumber(p[6]) == vals[1] and pidx >= vals[5] and pidx < vals[4] then
        prow = redis.call('LINDEX', log, pidx - vals[5])
        if prow then pt = entry(prow) end
      end
      if now < pt - early then
        -- Early: come back at a new wake (the slot, unless the capacity is
        -- still below its ceiling), which the entry remembers: a task told
        -- its slot could no longer move earlier with a re-plan.
        local w = wake(pt)
        if prow then
          local et, er, ek, ew = entry(prow)
          if ew ~= w then redis.call('LSET', log, pidx - vals[5], pack_entry(et, er, ek, w)) end
        end
        return {2, w, ''}
      end
      if now <= pt + claimlate and cd <= now then
        redis.call('SET', pkey, 'g' .. string.sub(pv, 2), 'KEEPTTL')
        return {1, pt, ''}
      end
      -- Late (or a cooldown began): give the slot back and queue again, so
      -- the late call never lands in a window planned without it.
      set_entry(log, ns, istok, vals, p, 0, 0)
      for i = 1, nd do
        local d = dl[i]
        local old = tonumber(d.tok and p[4] or p[3])
        if old ~= 0 then
          for k = 1, 4 do
            if string.format('%d', bounds[k]) == p[7] then
              local c = daycount(d, k)
              if d.exists[k] then
                d.counts[k] = math.max(0, c - old)
                d.dirty[k] = true
              end
            end
          end
        end
      end
      p[1], p[3], p[4] = 'x', '0', '0'
      redis.call('SET', pkey, table.concat(p, '|'), 'KEEPTTL')
      dirty = true
    end
  end
end

-- The log, read in chunks of 2, 4 ... 64 entries on demand, by absolute
-- index. The time of each head is kept in meta, so a decision whose heads
-- all stay in their windows reads nothing.
local n, base = vals[4], vals[5]
local ET, ER, EK = {}, {}, {}
local chunk = 2
for i = 1, ns do
  local h, ht = vals[6 + 3 * i], vals[7 + 3 * i]
  if ht >= 0 and h < n then ET[h] = ht end
end
local function load(k)
  local rows = redis.call('LRANGE', log, k - base, k - base + chunk - 1)
  for j = 1, #rows do
    ET[k + j - 1], ER[k + j - 1], EK[k + j - 1] = struct.unpack('<ddd', rows[j])
  end
  if #rows < chunk then
    -- Past the end: the log expired (every entry is out of every window).
    for j = k + #rows, n - 1 do ET[j], ER[j] = false, false end
  end
  chunk = math.min(64, chunk * 2)
end
local function etime(k)
  if k >= n then return nil end
  if ET[k] == nil then load(k) end
  return ET[k] or nil
end

-- Smallest t' >= t whose window (t' - win, t'] has room for dimension i's
-- cost. Entries at or before t' - win are consumed; they can never matter
-- again once an entry at t' is appended, so the head moves past them then.
local pos, rem = {}, {}
local function fit(i, t)
  local win, sum = dv[3 * i], vals[5 + 3 * i]
  while true do
    while true do
      local k = pos[i]
      local et = etime(k)
      if et == nil then
        pos[i], rem[i] = n, sum -- every entry is out of the window
        return t
      end
      if et > t - win then break end
      if ER[k] == nil then load(k) end
      if not ER[k] then
        pos[i], rem[i] = n, sum
        return t
      end
      pos[i] = k + 1
      rem[i] = rem[i] + (istok[i] and EK[k] or ER[k])
    end
    if cost[i] == 0 or sum - rem[i] + cost[i] <= dv[3 * i - 1] then return t end
    t = etime(pos[i]) + win
  end
end

-- Smallest t' >= t outside the midnight blackouts whose Pacific day has room
-- for d.cost; nil when that is beyond the known days.
local function dayfit(d, t)
  if d.cost == 0 then return t end
  while true do
    local j
    for k = 1, 4 do
      if bounds[k] <= t and t < bounds[k + 1] then j = k break end
    end
    if j == nil then return nil end
    if t < bounds[j] + early then
      t = bounds[j] + early
    elseif t >= bounds[j + 1] - blackout then
      t = bounds[j + 1] + early
    else
      if daycount(d, j) + d.cost <= d.cap then return t end
      t = bounds[j + 1] + early
    end
  end
end

-- After a loss, every window is taken as full for one window from the new
-- epoch's start, or from now after a failover (fail safe): a cooldown, shared
-- like any other.
local lostcr, lostfrom = nil, vals[1]
-- (dirty: the new rid is written whatever happens, so it is seen once.)
if failover then lost, lostfrom, dirty = true, now, true end
if lost and lostfrom + maxwin > cd then
  cd, lostcr, dirty = lostfrom + maxwin, 'state lost', true
else
  lost = false
end
for i = 1, ns do pos[i], rem[i] = vals[6 + 3 * i], 0 end
local last = vals[3]
local t, why = math.max(now, last), 'fifo'
if pace then
  local p = last + gap(cost)
  if p > t then t, why = p, 'paced' end
end
if floor and floor > t then t = floor end
if cd > t then t, why = cd, 'cooldown: ' .. (lostcr or redis.call('HGET', meta, 'cr') or '') end
local limit = now + horizon
local spaced = pace
repeat
  local changed = true
  while changed and t <= limit do
    changed = false
    for i = 1, ns do
      if t > limit then break end
      local t2 = fit(i, t)
      if t2 > t then t, why, changed = t2, names[1 + i], true end
    end
    for i = 1, nd do
      if t > limit then break end
      local t2 = dayfit(dl[i], t)
      if t2 == nil then t2 = bounds[5] + early end
      if t2 > t then t, why, changed = t2, dl[i].name, true end
    end
  end
  -- A reservation (not a grant) comes at least gap after the entry before
  -- it (see gap); later than where it fits, it still fits every sliding
  -- window, but the day and the horizon are checked again. Not after a
  -- released entry (amounts 0: no call): spaced from each refusal given
  -- back, a run of refusals (the seed policy's) would push the queue's
  -- tail ahead by a gap each, and nothing would be granted again.
  local again = false
  if spacing > 0 and not spaced and t > now + early and t <= limit then
    spaced = true
    local p = last + gap(cost)
    if p > t then
      local row, released = ns > 0 and redis.call('LINDEX', log, -1), false
      if row then
        local _, tr, tk = entry(row)
        released = tr == 0 and tk == 0
      end
      if not released then t, why, again = p, 'spaced', true end
    end
  end
until not again

if t > limit then
  if dirty then write_meta(last, nil) end
  return {3, t - horizon, why}
end

local idx = n
local w = t
if t > now + early then w = wake(t) end
if ns > 0 then
  local len = redis.call('RPUSH', log, pack_entry(t, creq, ctok, w))
  vals[4] = n + 1
  vals[5] = n + 1 - len
  -- A log emptied by LTRIM (or expired) is gone: the new one needs its TTL.
  created = len == 1
  local low = n + 1
  for i = 1, ns do
    local h = vals[6 + 3 * i]
    if pos[i] > h then
      vals[5 + 3 * i] = vals[5 + 3 * i] - rem[i]
      h = pos[i]
      vals[6 + 3 * i] = h
      if h == idx then vals[7 + 3 * i] = t else vals[7 + 3 * i] = ET[h] end
    elseif h == idx then
      vals[7 + 3 * i] = t
    end
    vals[5 + 3 * i] = vals[5 + 3 * i] + cost[i]
    if h < low then low = h end
  end
  -- Consumed entries are trimmed in batches, but not those a re-plan may
  -- need (after now - the longest window): with reservations more than a
  -- window ahead the heads are past entries still to come.
  if low - vals[5] >= 64 then
    local k = vals[5]
    while k < low do
      local et = etime(k)
      if et == nil or et > now - maxwin then break end
      k = k + 1
    end
    if k - vals[5] >= 64 then
      redis.call('LTRIM', log, k - vals[5], -1)
      vals[5] = k
    end
  end
else
  vals[4] = n + 1
end

local dstart, dayend = -1, nil
for k = 1, 4 do
  if bounds[k] <= t and t < bounds[k + 1] then
    dstart = bounds[k]
    for i = 1, nd do
      local d = dl[i]
      if d.cost > 0 then
        local c = daycount(d, k)
        if not d.exists[k] then
          -- The first count of a day: drop the counters of days gone by.
          for _, fname in ipairs(redis.call('HKEYS', meta)) do
            local ds = string.match(fname, '^d:.*:(%d+)$')
            if ds and tonumber(ds) < bounds[1] then redis.call('HDEL', meta, fname) end
          end
          d.exists[k] = true
        end
        d.counts[k] = c + d.cost
        d.dirty[k] = true
        dayend = bounds[k + 1]
      end
    end
  end
end
write_meta(t, dayend)

local code, state = 2, 'r'
if t <= now + early then code, state, why = 1, 'g', '' end
if code == 1 and mode == 'a' then
  -- No state written: the permit carries it, signed with the epoch's secret
  -- (by the client, which gets the secret when it does not have it yet).
  if ARGV[8] == secret then return {1, t, vals[1], dstart, idx} end
  return {1, t, vals[1], dstart, idx, secret}
end
local pv = string.format('%s|%d|%d|%d|%s|%d|%d|%d', state, t, creq, ctok, fp, vals[1], dstart, idx)
redis.call('SET', pkey, pv, 'PX', t - now + pbase)
if code == 2 and adapted and ns > 0 then
  -- The capacities the reservations ahead were decided at (see replan).
  local upd = not pr[1] or last <= now + early
  if not upd then
    for i = 1, ns do
      if caps[i] < pr[2 * i - 1] or caps[i] > pr[2 * i] then upd = true end
    end
  end
  if upd then
    local xs = {}
    for i = 1, ns do
      local a, z = caps[i], caps[i]
      if pr[1] and last > now + early then a, z = math.min(a, pr[2 * i - 1]), math.max(z, pr[2 * i]) end
      xs[2 * i - 1], xs[2 * i] = a, z
    end
    write_pr(xs)
  end
end
if code == 2 then return {2, w, why} end
return {code, t, why}
`

// adjustScript reconciles or releases a permit: it sets the amounts of the
// permit's log entry in place (refund or extra charge), the sums of the
// dimensions still counting it, and its day counters.
//
// KEYS[1] -> gemq:{<scope>}:meta
// KEYS[2] -> gemq:{<scope>}:log
// KEYS[3] -> gemq:{<scope>}:p:<id>
// ARGV[1] -> now in ms, or "" to use Redis TIME
// ARGV[2] -> mode: "r" reconcile input tokens to ARGV[4], "x" release (all amounts to 0),
// "y" release of a permit its holder knows as Reserved: refused (0) when the
// permit has been claimed since (a call may be running under it)
// ARGV[3] -> dimensions fingerprint
// ARGV[4] -> actual input tokens
// ARGV[5] -> permit id
// ARGV[6] -> permit ref (Permit.Ref), used when KEYS[3] does not exist
// ARGV[7] -> permit lifetime ms beyond its time
// ARGV[8] -> struct format of meta v
// ARGV[9] -> units of the sliding dimensions, one letter each ("r" requests, "t" tokens)
// ARGV[10] -> units of the daily dimensions, likewise
// ARGV[11] -> dimensions fingerprint as a number (as stored in meta v)
// ARGV[12] -> for Settle: "<kind>|<raw estimate>" to learn from (ARGV[4] is the
// actual count), else ""
// ARGV[13] -> for Settle: the adapt spec, to count a success (AIMD), else ""
// ARGV[14] -> TTL of a meta created by the success, ms
// ARGV[15..] -> names of the daily dimensions
// KEYS[4] -> gemq:{<scope>}:est (learned estimate corrections)
// Output: {1 when the permit changed, 0 when there was nothing to do
// (unknown, forged or expired permit, already released, same amount);
// the learned state of the kind (packed n, mean, variance), or ""}.
var adjustScript = redis.NewScript(luaCommon + luaAdapt + luaLearn + `
local function adjust()
local mode, fp, tokens, id, ref = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local pbase, vfmt, su, du = tonumber(ARGV[7]), ARGV[8], ARGV[9], ARGV[10]
local ns, nd = #su, #du
local meta, log, pkey = KEYS[1], KEYS[2], KEYS[3]
local pv = redis.call('GET', pkey)
local mac
if not pv then
  -- A Granted permit whose state was never written: its ref, if genuine.
  pv, mac = string.match(ref, '^(g|.*)|(%x+)$')
  if not pv then return 0 end
end
local p = split(pv)
if p[1] == 'x' or p[5] ~= fp or #p ~= 8 then return 0 end
if mode == 'y' and p[1] == 'g' then return 0 end
local release = mode ~= 'r'
local newreq, newtok = tonumber(p[3]), tokens
if release then newreq, newtok = 0, 0 end
if newreq == tonumber(p[3]) and newtok == tonumber(p[4]) and not release then return 0 end

local fields = {'v', 'k'}
for i = 1, nd do fields[2 + i] = 'd:' .. ARGV[14 + i] .. ':' .. p[7] end
local m = redis.call('HMGET', meta, unpack(fields))
local now
if mac then
  -- Only a ref signed in this epoch, for this id, within the permit's
  -- lifetime, counts; anything else is left alone.
  if not m[2] or redis.sha1hex(m[2] .. '|' .. id .. '|' .. pv) ~= mac then return 0 end
  now = now_ms(ARGV[1])
  if now >= tonumber(p[2]) + pbase then return 0 end
end

local hs = {}
if m[1] and ns > 0 and #m[1] == 8 * (7 + 3 * ns) then
  local vals = {struct.unpack(vfmt, m[1])}
  local istok = {}
  for i = 1, ns do istok[i] = string.sub(su, i, i) == 't' end
  if vals[2] == tonumber(ARGV[11]) and set_entry(log, ns, istok, vals, p, newreq, newtok) then
    hs[1], hs[2] = 'v', struct.pack(vfmt, unpack(vals, 1, 7 + 3 * ns))
  end
end
for i = 1, nd do
  local c = m[2 + i]
  local old, new = tonumber(p[3]), newreq
  if string.sub(du, i, i) == 't' then old, new = tonumber(p[4]), newtok end
  if c and old ~= new then
    hs[#hs + 1], hs[#hs + 2] = fields[2 + i], math.max(0, tonumber(c) - old + new)
  end
end
if #hs > 0 then redis.call('HSET', meta, unpack(hs)) end
if release then p[1] = 'x' end
p[3], p[4] = string.format('%d', newreq), string.format('%d', newtok)
if mac then
  redis.call('SET', pkey, table.concat(p, '|'), 'PX', tonumber(p[2]) + pbase - now)
else
  redis.call('SET', pkey, table.concat(p, '|'), 'KEEPTTL')
end
return 1
end

local changed = adjust()
local learned = ''
if ARGV[12] ~= '' then
  local kind, raw = string.match(ARGV[12], '^([a-z]+)|(%d+)$')
  if kind then learned = learn(KEYS[4], kind, tonumber(raw), tonumber(ARGV[4])) or '' end
end
if ARGV[13] ~= '' then adapt(KEYS[1], now_ms(ARGV[1]), 's', ARGV[13], 0, 0, 0, tonumber(ARGV[14])) end
return {changed, learned}
`)

// cooldownScript extends a scope's cooldown.
//
// KEYS[1] -> gemq:{<scope>}:meta
// ARGV[1] -> now in ms, or "" to use Redis TIME
// ARGV[2] -> until ms
// ARGV[3] -> reason
// ARGV[4] -> TTL slack ms
// Output: 1 when the cooldown was set or extended, 0 when an equal or later one holds
var cooldownScript = redis.NewScript(luaCommon + `
local now = now_ms(ARGV[1])
local untilms, reason, slack = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if untilms <= now then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[1], 'cd') or '0')
if cur >= untilms then return 0 end
redis.call('HSET', KEYS[1], 'cd', untilms, 'cr', reason)
local ttl = untilms - now + slack
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
-- The log's TTL is not extended here: the next decision refreshes it
-- (the cooldown raises its need above the recorded expiry).

return 1
`)
