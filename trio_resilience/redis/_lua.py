"""The Lua scripts, run atomically on the server's clock (``TIME``, to the microsecond).

Every script first replaces keys of a wrong type and fields it cannot parse (counting
them in the reply's ``bad``), so garbage written under a key never blocks sharing.
Numbers go out as integers (microseconds): Lua numbers become Redis integers.

A count bucket ``width`` microseconds wide holds at most ``width`` events (a million
a second under one name, cluster-wide): a stored count beyond that is foreign and is
dropped, so a planted huge count never lifts a budget's cap or masks a failure rate.
"""

from __future__ import annotations

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local bad = 0
local function fmt(n) return string.format('%.0f', n) end
-- A command on a key of the wrong type (garbage) deletes the key and runs again.
local function safe(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'WRONGTYPE', 1, true) then
      redis.call('DEL', key)
      bad = bad + 1
      return redis.call(cmd, key, ...)
    end
    return redis.error_reply(r.err)
  end
  return r
end
local function capped(key, limit)
  if safe('HLEN', key) > limit then
    redis.call('DEL', key)
    bad = bad + 1
  end
end
-- Only what Redis itself writes for an integer: no '5.0', '0x10', ' 7', '+7', '07', '1e3'
-- (Lua's tonumber takes them all, HINCRBY on them fails and would abort the script).
local function integer(v, low, high)
  if type(v) ~= 'string' or #v > 16 then return nil end
  if v ~= '0' and not string.match(v, '^%-?[1-9]%d*$') then return nil end
  local n = tonumber(v)
  if n == nil or n < low or n > high then return nil end
  return n
end
-- HINCRBY that never fails on a value it cannot add to: the field is replaced.
local function incr(key, field, by)
  local r = redis.pcall('HINCRBY', key, field, fmt(by))
  if type(r) == 'table' and r.err then
    redis.call('HDEL', key, field)
    bad = bad + 1
    return redis.call('HINCRBY', key, field, fmt(by))
  end
  return r
end
"""

# Per breaker, KEYS: state, trips, sharers, probes, counts, origins.
# ARGV: 1 origin, 2 seen version, 3 half_open_max_calls, 4 heartbeat alive us ('0': no
# heartbeat this sync), 5 event ('', 'trip', 'close'), 6 event age us, 7 open for us,
# 8 channel, 9 message, 10 share counts ('0'/'1'), 11 window us, 12 width us, 13 new
# failures, 14 new calls, 15 number of leases to release, 16.. the lease ids.
# Reply: now, version, bad, closed_us, failures, calls, failing origins, changed,
# then (when the version changed) origin, trip_us, until_us triples.
# In the steady state it runs one HMGET per breaker (and a heartbeat now and then).
#
# Many breakers go in one call (one TIME): KEYS in groups of six; ARGV[1] is the number
# of breakers, then for each breaker the count of its arguments and the arguments.
# Reply: for each breaker, the length of its reply, then that reply.
SYNC_BREAKERS = (
    _PRELUDE
    + """
local function sync_one(K, A)
  bad = 0
  local day = 86400000000
  local origin = A[1]
  local fields = safe('HMGET', K[1], 'ver', 'closed_us')
  local ver, closed = 0, 0
  if fields[1] then
    ver = integer(fields[1], 0, 2^52)
    if ver == nil then redis.call('HDEL', K[1], 'ver'); ver = 0; bad = bad + 1 end
  end
  if fields[2] then
    closed = integer(fields[2], 0, now + 1000000)
    if closed == nil then redis.call('HDEL', K[1], 'closed_us'); closed = 0; bad = bad + 1 end
  end
  local nrel = tonumber(A[15]) or 0
  for i = 1, nrel do safe('ZREM', K[4], A[15 + i]) end
  local alive = tonumber(A[4])
  if alive > 0 then
    safe('ZADD', K[3], fmt(now + alive), A[3] .. '|' .. origin)
    redis.call('ZREMRANGEBYSCORE', K[3], '-inf', fmt(now))
    redis.call('PEXPIRE', K[3], 201000)
  end
  local event = A[5]
  if event ~= '' then
    local at = now - tonumber(A[6])
    capped(K[2], 10000)
    if event == 'trip' then
      safe('HSET', K[2], origin, fmt(at) .. ':' .. fmt(at + tonumber(A[7])))
    else
      local all = safe('HGETALL', K[2])
      for i = 1, #all, 2 do
        local tr = tonumber(string.match(all[i + 1], '^(%d+):'))
        if tr == nil or tr <= at then redis.call('HDEL', K[2], all[i]) end
      end
      redis.call('DEL', K[4])
      if at > closed then
        closed = at
        redis.call('HSET', K[1], 'closed_us', fmt(at))
      end
    end
    ver = ver + 1
    redis.call('HSET', K[1], 'ver', fmt(ver))
    redis.call('PEXPIRE', K[1], day / 1000)
    redis.call('PEXPIRE', K[2], day / 1000)
    redis.call('PUBLISH', A[8], A[9])
  end
  local cf, cc, co = 0, 0, 0
  if A[10] == '1' then
    capped(K[5], 10000)
    local window = tonumber(A[11])
    local width = tonumber(A[12])
    local current = math.floor(now / width)
    local oldest = current - math.floor(window / width) + 1
    local cleared = math.floor(closed / width)
    if oldest <= cleared then oldest = cleared + 1 end
    local all = safe('HGETALL', K[5])
    for i = 1, #all, 2 do
      local kind, b = string.match(all[i], '^([fc]):(%d+)$')
      b = tonumber(b)
      local v = integer(all[i + 1], 0, width)
      if kind == nil or b == nil or v == nil or b > current then
        redis.call('HDEL', K[5], all[i])
        bad = bad + 1
      elseif b < oldest then
        redis.call('HDEL', K[5], all[i])
      elseif kind == 'f' then
        cf = cf + v
      else
        cc = cc + v
      end
    end
    local df = tonumber(A[13])
    local dc = tonumber(A[14])
    if df > 0 then
      incr(K[5], 'f:' .. fmt(current), df)
      safe('ZADD', K[6], fmt(now), origin)
    end
    if dc > 0 then incr(K[5], 'c:' .. fmt(current), dc) end
    if df > 0 or dc > 0 then
      redis.call('PEXPIRE', K[5], math.floor(window / 500) + 1000)
      redis.call('PEXPIRE', K[6], math.floor(window / 500) + 1000)
    end
    if current >= oldest then
      cf = cf + df
      cc = cc + dc
    end
    if cf > 0 then
      local since = now - window
      if closed > since then since = closed end
      safe('ZREMRANGEBYSCORE', K[6], '-inf', fmt(now - window))
      if redis.call('ZCARD', K[6]) > 10000 then
        redis.call('DEL', K[6])
        bad = bad + 1
      end
      -- Every sharer scores its origin with this server's clock: a member scored in
      -- the future, or not shaped like an origin id, is foreign and never counts.
      bad = bad + redis.call('ZREMRANGEBYSCORE', K[6], '(' .. fmt(now), '+inf')
      local members = redis.call('ZRANGEBYSCORE', K[6], '(' .. fmt(since), fmt(now),
        'LIMIT', 0, 1000)
      for _, m in ipairs(members) do
        if #m <= 200 and string.match(m, '^%d+%-%x+$') then
          co = co + 1
        else
          redis.call('ZREM', K[6], m)
          bad = bad + 1
        end
      end
    end
  end
  local changed = 0
  if fmt(ver) ~= A[2] then changed = 1 end
  local out = {now, ver, bad, closed, cf, cc, co, changed}
  if changed == 1 then
    capped(K[2], 10000)
    local all = safe('HGETALL', K[2])
    for i = 1, #all, 2 do
      local tr, un = string.match(all[i + 1], '^(%d+):(%d+)$')
      tr = tonumber(tr)
      un = tonumber(un)
      if tr == nil or un == nil or tr > now + 1000000 or un < tr or un > 2^53 then
        redis.call('HDEL', K[2], all[i])
        bad = bad + 1
      elseif tr + day < now then
        redis.call('HDEL', K[2], all[i])
      else
        table.insert(out, all[i])
        table.insert(out, tr)
        table.insert(out, un)
      end
    end
    out[3] = bad
  end
  return out
end
local result = {}
local ki, ai = 1, 2
for g = 1, tonumber(ARGV[1]) do
  local K = {KEYS[ki], KEYS[ki + 1], KEYS[ki + 2], KEYS[ki + 3], KEYS[ki + 4], KEYS[ki + 5]}
  local n = tonumber(ARGV[ai])
  local A = {}
  for j = 1, n do A[j] = ARGV[ai + j] end
  -- One breaker's failure (a script error) never aborts the others' syncs.
  local ok, out = pcall(sync_one, K, A)
  if not ok then
    if type(out) == 'table' then out = out.err end
    out = {'error: ' .. tostring(out)}
  end
  table.insert(result, #out)
  for _, v in ipairs(out) do table.insert(result, v) end
  ki = ki + 6
  ai = ai + n + 1
end
return result
"""
)

# KEYS: probes, sharers. ARGV: 1 half_open_max_calls, 2 lease us, 3 lease id,
# 4 longest liveness us, 5.. this process's finished leases, released first.
# Reply: granted (1/0), the cluster's limit, bad.
ACQUIRE = (
    _PRELUDE
    + """
for i = 5, #ARGV do safe('ZREM', KEYS[1], ARGV[i]) end
safe('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
local limit = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local members = safe('ZRANGEBYSCORE', KEYS[2], '(' .. fmt(now),
  fmt(now + tonumber(ARGV[4])), 'LIMIT', 0, 1000)
for _, m in ipairs(members) do
  local h = tonumber(string.match(m, '^(%d+)|'))
  if h ~= nil and h >= 1 and h < limit then limit = h end
end
-- A lease never blocks longer than this sharer's own permit_lease.
local held = redis.call('ZCOUNT', KEYS[1], '(' .. fmt(now), fmt(now + lease))
if held < limit then
  redis.call('ZADD', KEYS[1], fmt(now + lease), ARGV[3])
  if redis.call('PTTL', KEYS[1]) < lease / 1000 + 1000 then
    redis.call('PEXPIRE', KEYS[1], math.floor(lease / 1000) + 1000)
  end
  return {1, limit, bad}
end
return {0, limit, bad}
"""
)

# KEYS: bucket hash. ARGV: 1 width us, 2 window us, 3 new first attempts, 4 new retries.
# Reply: now, first attempts, retries over the window, bad.
SYNC_BUDGET = (
    _PRELUDE
    + """
capped(KEYS[1], 10000)
local width = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local current = math.floor(now / width)
local oldest = current - math.floor(window / width) + 1
local dep, wd = 0, 0
local all = safe('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local kind, b = string.match(all[i], '^([dw]):(%d+)$')
  b = tonumber(b)
  local v = integer(all[i + 1], -width, width)
  if kind == nil or b == nil or v == nil or b > current then
    redis.call('HDEL', KEYS[1], all[i])
    bad = bad + 1
  elseif b < oldest then
    redis.call('HDEL', KEYS[1], all[i])
  elseif kind == 'd' then
    dep = dep + v
  else
    wd = wd + v
  end
end
local dd = tonumber(ARGV[3])
local dw = tonumber(ARGV[4])
if dd ~= 0 then incr(KEYS[1], 'd:' .. fmt(current), dd) end
if dw ~= 0 then incr(KEYS[1], 'w:' .. fmt(current), dw) end
if dd ~= 0 or dw ~= 0 then redis.call('PEXPIRE', KEYS[1], math.floor(window / 500) + 1000) end
return {now, dep + dd, wd + dw, bad}
"""
)

# GCRA on the server clock. KEYS: tat. ARGV: 1 emission us per unit, 2 tau us, 3 cost.
# Reply: 0 (admitted) or the wait in us, and bad.
GCRA = (
    _PRELUDE
    + """
local tau = tonumber(ARGV[2])
local tat = safe('GET', KEYS[1])
if tat then
  tat = integer(tat, 0, 2^53)
  if tat == nil then bad = bad + 1 end
else
  tat = nil
end
if tat == nil or tat < now then tat = now end
-- A stored time beyond a full bucket of this sharer's own burst is clamped to it.
if tat > now + tau then tat = now + tau end
local new = tat + tonumber(ARGV[1]) * tonumber(ARGV[3])
if new - now <= tau then
  redis.call('SET', KEYS[1], fmt(new), 'PX', math.floor((new - now) / 1000) + 1000)
  return {0, bad}
end
return {new - now - tau, bad}
"""
)
