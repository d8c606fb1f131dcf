-- sync: one bounded step of reconciling the availability index with the
-- pool's member SET, which any client (a Python service's SADD/SREM, too)
-- may change.
-- uses: clock, epoch, index, wake
-- KEYS[1]: the pool's member SET              <base>|pool
-- KEYS[2]: the availability index (heads)     <base>|alloc:idx
-- KEYS[3]: the sweep state HASH               <base>|alloc:sync
--          (add = SSCAN cursor of the member walk, drop = 'b:<n>', the
--          next bucket of the index walk; absent or '0' when no walk is
--          running)
-- KEYS[4]: the waiter ZSET                    <base>|alloc:waiters
-- KEYS[5]: the hand-off HASH                  <base>|alloc:reserved
-- KEYS[6]: the epoch HASH                     <base>|epoch
-- KEYS[7]: the fencing counter STRING         <base>|alloc:fence
-- KEYS[8]: the index's key before it was      <base>|alloc:index
--          bucketed (one ZSET): emptied, 1000 entries a step
-- ARGV[1]: COUNT per step (the client sends   <n>
--          <= 1000)
-- ARGV[2]: '1' to start a full sweep even     <flag>
--          when the counts agree
-- ARGV[3]: wake channel prefix (as in         <base>|alloc:wake:
--          release.lua)
-- ARGV[4]: how many waiters a release wakes;  <n>
--          when items were added, each added item wakes that
--          many, at most 64 in all
-- ARGV[5]: rolling step interval in ms        <ms>
-- ARGV[6]: what the caller saw last of the    <known>
--          dataset: '<gen>:<at>:<id>' or '' (see epoch)
-- ARGV[7]: the longest lease TTL the caller   <ms>
--          has used, in ms
-- Returns {added, dropped, 1 if a walk is still running else 0, gen, id,
-- quiet_ms, at_ms} (epoch's answer, id '' when it equals ARGV[6]): every
-- allocator runs a step per SyncInterval, so a discontinuity is noticed,
-- and its quiet period started, within one even when nobody acquires.
-- Each step also forgets a few entries of processes that died while
-- waiting (their wake channel has no subscriber): waiters, and items a
-- release handed to them; so neither grows with the processes that ever
-- ran.
-- Counts only reveal additions that outnumber removals, so besides the
-- walks started by a count mismatch, one rolling SSCAN step (shared by every
-- allocator on the pool: at most one per interval fleet-wide) adds members
-- the index lacks, covering about 1000 members per interval.
-- Members missing from the index are added as available since the epoch
-- (score 0), so new items are handed out first; index entries that are no
-- longer members are dropped.
-- The counts come first: a pool or index key of another type fails the
-- script (WRONGTYPE) before it writes anything.
local members = redis.call('SCARD', KEYS[1])
local ix = index(KEYS[2])
local indexed = ix.count()
local now, now_us = clock()
-- The old index: the member walk re-indexes every member, and held items
-- are recognised by their locks. Emptied in bounded steps, with a command
-- the runner's least-privilege ACL rule (README) already grants.
redis.call('ZPOPMIN', KEYS[8], 1000)
local gen, quiet, id, at = epoch(KEYS[6], KEYS[7], KEYS[2], now, now_us, 0, ARGV[6], tonumber(ARGV[7]))

-- live reports whether the process of waiter w ("<proc>:<id>") listens.
local function live(w)
  local proc = string.match(w, '^([^:]*):')
  if not proc then return false end
  return redis.call('PUBSUB', 'SHARDNUMSUB', ARGV[3] .. proc)[2] > 0
end
for _, w in ipairs(redis.call('ZRANDMEMBER', KEYS[4], 4)) do
  if not live(w) then redis.call('ZREM', KEYS[4], w) end
end
for _, w in ipairs(redis.call('HRANDFIELD', KEYS[5], 4)) do
  if not live(w) then redis.call('HDEL', KEYS[5], w) end
end

local count = tonumber(ARGV[1])
local add = redis.call('HGET', KEYS[3], 'add') or '0'
local drop = redis.call('HGET', KEYS[3], 'drop') or '0'
if add == '0' and (members > indexed or ARGV[2] == '1') then add = 'start' end
if drop == '0' and (indexed > members or ARGV[2] == '1') then drop = 'start' end

local added, dropped = 0, 0
if add == '0' and drop == '0' then
  local last = tonumber(redis.call('HGET', KEYS[3], 'last') or '0')
  if now - last >= tonumber(ARGV[5]) then
    local res = redis.call('SSCAN', KEYS[1], redis.call('HGET', KEYS[3], 'roll') or '0', 'COUNT', count)
    for _, m in ipairs(res[2]) do
      added = added + ix.stage(m, 0, true)
    end
    redis.call('HSET', KEYS[3], 'roll', res[1], 'last', now)
  end
end
if add ~= '0' then
  local res = redis.call('SSCAN', KEYS[1], add == 'start' and '0' or add, 'COUNT', count)
  for _, m in ipairs(res[2]) do
    added = added + ix.stage(m, 0, true)
  end
  add = res[1]
end
ix.flush()
if drop ~= '0' then
  -- Whole buckets, about count items in all.
  local b = tonumber(string.match(drop, '^b:(%d+)$')) or 0
  local seen = 0
  while seen < count and b < ix.buckets() do
    local flat = ix.bucket(b)
    local items = {}
    for i = 1, #flat, 2 do items[#items + 1] = flat[i] end
    if #items > 0 then
      local member = redis.call('SMISMEMBER', KEYS[1], unpack(items))
      for i = 1, #items do
        if member[i] == 0 then
          dropped = dropped + ix.rem(items[i])
        end
      end
    end
    seen = seen + #items
    b = b + 1
  end
  drop = '0'
  if b < ix.buckets() then drop = 'b:' .. b end
end
redis.call('HSET', KEYS[3], 'add', add, 'drop', drop)

if added > 0 then
  wake(KEYS[4], ARGV[3], math.min(added * tonumber(ARGV[4]), 64))
end
local running = 0
if add ~= '0' or drop ~= '0' then running = 1 end
return {added, dropped, running, gen, id, quiet, at}
