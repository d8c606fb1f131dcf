-- acquire: hand out the item that has been available longest, as a fenced
-- lease, in one atomic step.
-- uses: clock, epoch
-- KEYS[1]: the pool's member SET             <base>|pool
-- KEYS[2]: the availability index ZSET       <base>|alloc:index
--          (item -> ms since epoch, server time, when it is/was available:
--          free since, lease deadline, or quarantine end)
-- KEYS[3]: the fencing counter STRING        <base>|alloc:fence
-- KEYS[4]: the binding HASH                  <base>|alloc:bindings
-- KEYS[5]: the waiter ZSET                   <base>|alloc:waiters
-- KEYS[6]: the foreign-lock ZSET             <base>|alloc:foreign
--          (items found held by a lock the allocator did not grant -> ms
--          when last looked at; such locks send no wake-up when removed)
-- KEYS[7]: the hand-off HASH                 <base>|alloc:reserved
-- KEYS[8]: the epoch HASH                    <base>|epoch
-- ARGV[1]: the lock key prefix               <base>:
--          (lock keys are ARGV[1] .. item)
-- ARGV[2]: owner
-- ARGV[3]: lease TTL in ms                   <ms>
-- ARGV[4]: preferred item, or ''
-- ARGV[5]: binding name, or ''
-- ARGV[6]: waiter id to register on failure, or '' (TryAcquire)
-- ARGV[7]: most candidates to examine        <n>
--          (bounded; the client sends <= 64)
-- ARGV[8]: '1' to lease only the preferred   <flag>
--          item (ARGV[4]), else ''
-- ARGV[9]: what the caller saw last of the   <known>
--          dataset: '<gen>:<at>:<id>' or '' (see epoch)
-- ARGV[10]: the longest lease TTL the        <ms>
--           caller has used, in ms
-- Every reply starts {ok, gen, id, quiet_ms, at_ms} (epoch's answer, id ''
-- when it equals ARGV[9]), then
--   on success (ok 1): item, token, deadline_ms, now_ms;
--   otherwise (ok 0):  next_ms, now_ms, behind, where next_ms is the
--         earliest time an item may become available (-1 when the index is
--         empty) and behind is 1 when the pool has more members than the
--         index (a sync step is due before waiting). While foreign locks
--         are known, next_ms is at most a second away: their removal wakes
--         nobody. During the quiet period after a discontinuity nothing is
--         granted and next_ms is its end.
-- Lock keys are built from ARGV[1]: "any free item" cannot name its key up
-- front. On a Redis Cluster the pool's prefix carries a hash tag, so they
-- hash to the slot of KEYS[1] (see pkg/keyspace).
local now, now_us = clock()
local prefix, owner, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local budget = tonumber(ARGV[7])
local gen, quiet, id, at = epoch(KEYS[8], KEYS[3], KEYS[2], now, now_us, ttl, ARGV[9], tonumber(ARGV[10]))
if quiet > now then
  return {0, gen, id, quiet, at, quiet, now, 0}
end

-- try takes item if it can be handed out now and returns the grant, or nil.
-- On the way it drops items that left the pool from the index and re-scores
-- items someone locked directly (a pkg/lock or Python user) to when their
-- lock expires. SET NX both checks and takes, so a free item costs no read.
local function try(item)
  if redis.call('SISMEMBER', KEYS[1], item) == 0 then
    redis.call('ZREM', KEYS[2], item)
    redis.call('ZREM', KEYS[6], item)
    return nil
  end
  -- A token is spent even if the item turns out to be held: tokens need
  -- only increase, not be dense. INCR answers 1 when the counter is new or
  -- Redis lost it; restarting from server time in microseconds keeps every
  -- token above the earlier ones as long as fewer than a million were
  -- issued per second on average.
  local token = redis.call('INCR', KEYS[3])
  if token == 1 then
    token = now_us
    redis.call('SET', KEYS[3], string.format('%d', token))
  end
  local tok = string.format('%d', token)
  if redis.call('SET', prefix .. item, owner .. '#' .. tok, 'NX', 'PX', ttl) then
    redis.call('ZADD', KEYS[2], now + ttl, item)
    if ARGV[5] ~= '' then
      redis.call('HSET', KEYS[4], ARGV[5], item)
    end
    if ARGV[6] ~= '' then
      redis.call('ZREM', KEYS[5], ARGV[6])
    end
    return {1, gen, id, quiet, at, item, tok, now + ttl, now}
  end
  local pttl = redis.call('PTTL', prefix .. item)
  if pttl == -1 then
    pttl = 3600000 -- held forever: look again in an hour
  elseif pttl < 0 then
    pttl = 0 -- gone since the SET: available now
  end
  redis.call('ZADD', KEYS[2], now + pttl, item)
  redis.call('ZADD', KEYS[6], now, item)
  return nil
end

-- An item a release handed to this waiter first, then affinity: the named
-- item, then the binding's previous item.
local wanted = {}
if ARGV[6] ~= '' then
  local handed = redis.call('HGET', KEYS[7], ARGV[6])
  if handed then
    redis.call('HDEL', KEYS[7], ARGV[6])
    wanted[#wanted + 1] = handed
  end
end
if ARGV[4] ~= '' then wanted[#wanted + 1] = ARGV[4] end
if ARGV[5] ~= '' then
  local bound = redis.call('HGET', KEYS[4], ARGV[5])
  if bound then wanted[#wanted + 1] = bound end
end
for _, item in ipairs(wanted) do
  local g = try(item)
  if g then return g end
end
if ARGV[8] == '1' then
  -- Only the preferred item would do: report when it may be available.
  local when = redis.call('ZSCORE', KEYS[2], ARGV[4])
  return {0, gen, id, quiet, at, when and tonumber(when) or -1, now, 0}
end

-- Then the longest-available items, oldest score first.
local seen = 0
while seen < budget do
  local batch = redis.call('ZRANGE', KEYS[2], '-inf', now, 'BYSCORE', 'LIMIT', 0, math.min(16, budget - seen))
  if #batch == 0 then
    break
  end
  for _, item in ipairs(batch) do
    seen = seen + 1
    local g = try(item)
    if g then return g end
  end
end

-- Items held by foreign locks may have been unlocked early, which the
-- index cannot see: look at a few, least recently looked at first. One
-- held by a lease of ours ("<owner>#<token>") is forgotten: its release
-- will update the index and wake a waiter.
for _, item in ipairs(redis.call('ZRANGE', KEYS[6], 0, 7)) do
  local g = try(item)
  if g then
    redis.call('ZREM', KEYS[6], item)
    return g
  end
  -- pcall: a key of another type is foreign too, not an error here.
  local v = redis.pcall('GET', prefix .. item)
  if type(v) == 'string' and string.find(v, '#%d+$') then
    redis.call('ZREM', KEYS[6], item)
  end
end

if ARGV[6] ~= '' then
  redis.call('ZADD', KEYS[5], 'NX', now, ARGV[6])
end
local behind = 0
if redis.call('SCARD', KEYS[1]) > redis.call('ZCARD', KEYS[2]) then
  behind = 1
end
local next = -1
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #first > 0 then
  next = tonumber(first[2])
end
if redis.call('ZCARD', KEYS[6]) > 0 and (next < 0 or next > now + 1000) then
  next = now + 1000
end
return {0, gen, id, quiet, at, next, now, behind}
