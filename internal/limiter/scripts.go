package limiter

import "github.com/redis/go-redis/v9"

// Every script takes all of its keys in KEYS (built in Go by the key helpers,
// all under one {hash tag}) so it runs on Redis Cluster, and reads the time
// from Redis TIME unless a test passes one (ARGV "now", empty in production):
// every function instance then agrees on the clock. Numbers travel as integer
// milliseconds and integer amounts; Lua formats them with %d so they never turn
// into exponent notation.
//
// State of one scope (see keys.go):
//
//	meta    HASH   e = epoch (creation time; permits remember it), l = time of the
//	               newest entry, cd = cooldown until, cr = cooldown reason,
//	               x = expiry last set on meta and lists (TTLs refreshed only past it),
//	               s:<dim> = sum of the amounts in the dimension's list,
//	               n:<dim> = number of entries ever appended (the next absolute index)
//	w:<dim> LIST   "time_ms|amount", FIFO, times non-decreasing; an entry with absolute
//	               index i sits at position i - (n - LLEN)
//	d:<dim>:<date> STRING counter of one Pacific day
//	p:<id>  STRING permit state "state|t|requests|tokens|fingerprint|epoch|day_start|idx_1|...|idx_ns"
//	               (state r = reserved, g = granted/claimed, x = released)
const luaCommon = `
local function fmt(x) return string.format('%d', x) end

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

-- Sets the amount of the permit's entry in every sliding dimension, when the
-- entry is still in its list, and keeps the list's sum in step. p is a split
-- permit state; amounts(d) returns the new amount for dimension d.
local function set_entries(sl, p, epoch, newreq, newtok)
  local changed = false
  for i = 1, #sl do
    local d = sl[i]
    local old = tonumber(d.unit == 't' and p[4] or p[3])
    local new = d.unit == 't' and newtok or newreq
    if old ~= new and p[6] == epoch and p[7 + i] ~= nil then
      local len = redis.call('LLEN', d.key)
      local pos = tonumber(p[7 + i]) - (d.n - len)
      if pos >= 0 and pos < len then
        redis.call('LSET', d.key, pos, p[2] .. '|' .. fmt(new))
        d.sum = d.sum - old + new
        changed = true
      end
    end
  end
  return changed
end

-- Adjusts the daily counters the permit was counted in, if they still exist.
local function set_days(dl, p, starts, newreq, newtok)
  for i = 1, #dl do
    local d = dl[i]
    local old = tonumber(d.unit == 't' and p[4] or p[3])
    local new = d.unit == 't' and newtok or newreq
    if old ~= new then
      for k = 1, #d.keys do
        if starts[k] == p[7] then
          local c = redis.call('GET', d.keys[k])
          if c then
            local v = tonumber(c) - old + new
            if v < 0 then v = 0 end
            redis.call('SET', d.keys[k], fmt(v), 'KEEPTTL')
          end
        end
      end
    end
  end
end
`

// acquireScript decides one permit for all dimensions of a scope, atomically.
//
// KEYS[1]              -> gemq:{<scope>}:meta
// KEYS[2..1+ns]        -> gemq:{<scope>}:w:<dim>, one per sliding dimension
// KEYS[2+ns..1+ns+4nd] -> gemq:{<scope>}:d:<dim>:<date>, four per daily dimension (days ARGV bounds[1..4])
// KEYS[#KEYS]          -> gemq:{<scope>}:p:<id>
// ARGV[1]  -> now in ms, or "" to use Redis TIME
// ARGV[2]  -> mode: "a" acquire, "c" claim the permit KEYS[#KEYS] (re-acquire if it cannot be used)
// ARGV[3]  -> horizon ms
// ARGV[4]  -> early tolerance ms (grant when t <= now + early; claim from t - early)
// ARGV[5]  -> claim lateness allowance ms (claim until t + allowance, else re-acquire)
// ARGV[6]  -> midnight blackout ms (no admission in [midnight - blackout, midnight + early))
// ARGV[7]  -> TTL slack ms
// ARGV[8]  -> permit TTL ms beyond its time
// ARGV[9]  -> dimensions fingerprint
// ARGV[10] -> requests cost, ARGV[11] -> input tokens cost
// ARGV[12] -> ns, ARGV[13] -> nd
// then ns × (name, unit "r"|"t", capacity, window ms), nd × (name, unit, capacity),
// then 5 Pacific day boundaries in ms (4 consecutive days).
// Output: {code (1 granted, 2 reserved, 3 denied), at_ms, reason, now_ms}
var acquireScript = redis.NewScript(acquireLua)

const acquireLua = luaCommon + `
local now = now_ms(ARGV[1])
local mode = ARGV[2]
local horizon, early, claimlate = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local blackout, slack, pbase, fp = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local creq, ctok = tonumber(ARGV[10]), tonumber(ARGV[11])
local ns, nd = tonumber(ARGV[12]), tonumber(ARGV[13])
local meta, pkey = KEYS[1], KEYS[#KEYS]

local a = 14
local sl, maxwin = {}, 0
for i = 1, ns do
  local d = {name = ARGV[a], unit = ARGV[a + 1], cap = tonumber(ARGV[a + 2]), win = tonumber(ARGV[a + 3]), key = KEYS[1 + i]}
  d.cost = d.unit == 't' and ctok or creq
  if d.win > maxwin then maxwin = d.win end
  sl[i] = d
  a = a + 4
end
local dl = {}
for i = 1, nd do
  local d = {name = ARGV[a], unit = ARGV[a + 1], cap = tonumber(ARGV[a + 2]), keys = {}, counts = {}}
  d.cost = d.unit == 't' and ctok or creq
  for k = 1, 4 do d.keys[k] = KEYS[1 + ns + (i - 1) * 4 + k] end
  dl[i] = d
  a = a + 3
end
local bounds, starts = {}, {}
for k = 1, 5 do bounds[k] = tonumber(ARGV[a + k - 1]) end
for k = 1, 4 do starts[k] = ARGV[a + k - 1] end
if now < bounds[1] or now >= bounds[5] then
  return redis.error_reply('gemq: Redis time ' .. fmt(now) .. ' is outside the Pacific days computed by the client (clock skew?)')
end

local fields = {'e', 'l', 'cd', 'cr', 'x'}
for i = 1, ns do
  fields[#fields + 1] = 's:' .. sl[i].name
  fields[#fields + 1] = 'n:' .. sl[i].name
end
local m = redis.call('HMGET', meta, unpack(fields))
local epoch = m[1]
if not epoch then
  -- Fresh state: lists without their meta have unknown indices; drop them.
  if ns > 0 then redis.call('DEL', unpack(KEYS, 2, 1 + ns)) end
  epoch = fmt(now)
end
local last, cd, cr, expiry = tonumber(m[2]) or 0, tonumber(m[3]) or 0, m[4] or '', tonumber(m[5]) or 0
if not m[1] then expiry = 0 end
for i = 1, ns do
  sl[i].sum = tonumber(m[4 + 2 * i]) or 0
  sl[i].n = tonumber(m[5 + 2 * i]) or 0
end

local function write_meta(t)
  local hs = {'e', epoch, 'l', fmt(t)}
  for i = 1, ns do
    hs[#hs + 1] = 's:' .. sl[i].name
    hs[#hs + 1] = fmt(sl[i].sum)
    hs[#hs + 1] = 'n:' .. sl[i].name
    hs[#hs + 1] = fmt(sl[i].n)
  end
  -- TTLs are refreshed only when the keys would expire too early, and then
  -- one window further, so most decisions skip the PEXPIREs.
  local need = math.max(t, cd, now) + maxwin + slack
  if need > expiry then
    expiry = need + maxwin
    hs[#hs + 1] = 'x'
    hs[#hs + 1] = fmt(expiry)
    redis.call('HSET', meta, unpack(hs))
    redis.call('PEXPIRE', meta, expiry - now)
    for i = 1, ns do redis.call('PEXPIRE', sl[i].key, expiry - now) end
  else
    redis.call('HSET', meta, unpack(hs))
    for i = 1, ns do
      if sl[i].created then redis.call('PEXPIRE', sl[i].key, expiry - now) end
    end
  end
end

local dirty = false
if mode == 'c' then
  local pv = redis.call('GET', pkey)
  if pv then
    local p = split(pv)
    if p[1] == 'r' and p[5] == fp then
      local pt = tonumber(p[2])
      if now < pt - early then return {2, pt, '', now} end
      if now <= pt + claimlate and cd <= now then
        redis.call('SET', pkey, 'g' .. string.sub(pv, 2), 'KEEPTTL')
        return {1, pt, '', now}
      end
      -- Late (or a cooldown began): give the slot back and queue again, so
      -- the late call never lands in a window planned without it.
      set_entries(sl, p, epoch, 0, 0)
      set_days(dl, p, starts, 0, 0)
      p[1], p[3], p[4] = 'x', '0', '0'
      redis.call('SET', pkey, table.concat(p, '|'), 'KEEPTTL')
      dirty = true
    end
  end
end

-- The k-th entry from the head (1-based), read in chunks.
local function entry(d, k)
  if k > d.blen then
    if d.eof then return nil end
    -- Chunks of 1, 2, 4 ... 64: usually only the head is needed.
    local size = math.min(64, d.blen + 1)
    local chunk = redis.call('LRANGE', d.key, d.blen, d.blen + size - 1)
    for _, s in ipairs(chunk) do
      local bar = string.find(s, '|', 1, true)
      d.bt[#d.bt + 1] = tonumber(string.sub(s, 1, bar - 1))
      d.ba[#d.ba + 1] = tonumber(string.sub(s, bar + 1))
    end
    d.blen = #d.bt
    if #chunk < size then d.eof = true end
    if k > d.blen then return nil end
  end
  return d.bt[k], d.ba[k]
end

-- Smallest t' >= t whose window (t' - win, t'] has room for d.cost. Entries
-- at or before t' - win are consumed; they can never matter again once an
-- entry at t' is appended, so they are popped then.
local function fit(d, t)
  while true do
    while true do
      local et, ea = entry(d, d.pos + 1)
      if et == nil then
        d.sum = d.rem -- every entry is out of the window: it is empty
        return t
      end
      if et > t - d.win then break end
      d.pos = d.pos + 1
      d.rem = d.rem + ea
    end
    if d.cost == 0 or d.sum - d.rem + d.cost <= d.cap then return t end
    t = entry(d, d.pos + 1) + d.win
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
      local c = d.counts[j]
      if c == nil then
        c = tonumber(redis.call('GET', d.keys[j])) or 0
        d.counts[j] = c
      end
      if c + d.cost <= d.cap then return t end
      t = bounds[j + 1] + early
    end
  end
end

for i = 1, ns do
  local d = sl[i]
  d.pos, d.rem, d.bt, d.ba, d.blen, d.eof = 0, 0, {}, {}, 0, false
end
local t, why = math.max(now, last), 'fifo'
if cd > t then t, why = cd, 'cooldown: ' .. cr end
local limit = now + horizon
local changed = true
while changed and t <= limit do
  changed = false
  for i = 1, ns do
    if t > limit then break end
    local t2 = fit(sl[i], t)
    if t2 > t then t, why, changed = t2, sl[i].name, true end
  end
  for i = 1, nd do
    if t > limit then break end
    local t2 = dayfit(dl[i], t)
    if t2 == nil then t2 = bounds[5] + early end
    if t2 > t then t, why, changed = t2, dl[i].name, true end
  end
end

if t > limit then
  if dirty then write_meta(last) end
  return {3, t - horizon, why, now}
end

local idx = {}
for i = 1, ns do
  local d = sl[i]
  if d.pos > 0 then
    redis.call('LTRIM', d.key, d.pos, -1)
    d.sum = d.sum - d.rem
  end
  -- A list emptied by LTRIM is gone: the new one needs its TTL.
  d.created = redis.call('RPUSH', d.key, fmt(t) .. '|' .. fmt(d.cost)) == 1
  idx[i] = fmt(d.n)
  d.n = d.n + 1
  d.sum = d.sum + d.cost
end
write_meta(t)

local dstart = '-1'
for k = 1, 4 do
  if bounds[k] <= t and t < bounds[k + 1] then
    dstart = starts[k]
    for i = 1, nd do
      local d = dl[i]
      if d.cost > 0 then
        -- A new counter lives until its day ends (INCRBY keeps the TTL).
        if redis.call('INCRBY', d.keys[k], d.cost) == d.cost then
          redis.call('PEXPIRE', d.keys[k], bounds[k + 1] - now + slack)
        end
      end
    end
  end
end

local code, state = 2, 'r'
if t <= now + early then code, state, why = 1, 'g', '' end
local pv = state .. '|' .. fmt(t) .. '|' .. fmt(creq) .. '|' .. fmt(ctok) .. '|' .. fp .. '|' .. epoch .. '|' .. dstart
if ns > 0 then pv = pv .. '|' .. table.concat(idx, '|') end
redis.call('SET', pkey, pv, 'PX', t - now + pbase)
return {code, t, why, now}
`

// adjustScript reconciles or releases a permit: it sets the amounts of the
// permit's entries in place (refund or extra charge) and in its day counter.
//
// KEYS[1]              -> gemq:{<scope>}:meta
// KEYS[2..1+ns]        -> gemq:{<scope>}:w:<dim>, one per sliding dimension
// KEYS[2+ns..1+ns+3nd] -> gemq:{<scope>}:d:<dim>:<date>, three per daily dimension (days ARGV starts[1..3])
// KEYS[#KEYS]          -> gemq:{<scope>}:p:<id>
// ARGV[1] -> mode: "r" reconcile input tokens to ARGV[3], "x" release (all amounts to 0)
// ARGV[2] -> dimensions fingerprint
// ARGV[3] -> actual input tokens
// ARGV[4] -> ns, ARGV[5] -> nd
// then ns × (name, unit "r"|"t"), nd × (unit), then 3 Pacific day starts in ms.
// Output: 1 when the permit changed, 0 when there was nothing to do
// (unknown or expired permit, already released, same amount).
var adjustScript = redis.NewScript(luaCommon + `
local mode, fp = ARGV[1], ARGV[2]
local ns, nd = tonumber(ARGV[4]), tonumber(ARGV[5])
local meta, pkey = KEYS[1], KEYS[#KEYS]
local pv = redis.call('GET', pkey)
if not pv then return 0 end
local p = split(pv)
if p[1] == 'x' or p[5] ~= fp then return 0 end
local newreq, newtok = tonumber(p[3]), tonumber(ARGV[3])
if mode == 'x' then newreq, newtok = 0, 0 end
if newreq == tonumber(p[3]) and newtok == tonumber(p[4]) and mode ~= 'x' then return 0 end

local a = 6
local sl, fields = {}, {'e'}
for i = 1, ns do
  sl[i] = {name = ARGV[a], unit = ARGV[a + 1], key = KEYS[1 + i]}
  fields[#fields + 1] = 's:' .. sl[i].name
  fields[#fields + 1] = 'n:' .. sl[i].name
  a = a + 2
end
local dl = {}
for i = 1, nd do
  dl[i] = {unit = ARGV[a], keys = {}}
  for k = 1, 3 do dl[i].keys[k] = KEYS[1 + ns + (i - 1) * 3 + k] end
  a = a + 1
end
local starts = {ARGV[a], ARGV[a + 1], ARGV[a + 2]}

local m = redis.call('HMGET', meta, unpack(fields))
if m[1] and ns > 0 then
  for i = 1, ns do
    sl[i].sum = tonumber(m[2 * i]) or 0
    sl[i].n = tonumber(m[1 + 2 * i]) or 0
  end
  if set_entries(sl, p, m[1], newreq, newtok) then
    local hs = {}
    for i = 1, ns do
      hs[#hs + 1] = 's:' .. sl[i].name
      hs[#hs + 1] = fmt(sl[i].sum)
    end
    redis.call('HSET', meta, unpack(hs))
  end
end
set_days(dl, p, starts, newreq, newtok)
if mode == 'x' then p[1] = 'x' end
p[3], p[4] = fmt(newreq), fmt(newtok)
redis.call('SET', pkey, table.concat(p, '|'), 'KEEPTTL')
return 1
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
redis.call('HSET', KEYS[1], 'cd', fmt(untilms), 'cr', reason)
local ttl = untilms - now + slack
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
-- The lists' TTL is not extended here: the next decision refreshes it
-- (the cooldown raises its need above the recorded expiry).

return 1
`)
