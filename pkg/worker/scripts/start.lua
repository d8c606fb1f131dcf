-- start: create a batch from the pool's members at this moment, unless it
-- exists, and return its progress.
-- KEYS[1]: the pool's member SET              <base>|pool
-- KEYS[2]: the batch's pending SET            <base>|batch:<id>:todo
-- KEYS[3]: the batch's done SET               <base>|batch:<id>:done
-- KEYS[4]: the batch's failed SET             <base>|batch:<id>:failed
-- KEYS[5]: the batch's failure count HASH     <base>|batch:<id>:failures
-- KEYS[6]: the batch's meta HASH              <base>|batch:<id>:meta
--          {total, started_ms, finished_ms, gen, rollbacks, rolled_ms}
-- KEYS[7]: the pool's epoch HASH              <base>|epoch
-- KEYS[8]: the allocator's fencing counter    <base>|alloc:fence
-- KEYS[9]: the allocator's availability index <base>|alloc:index
-- ARGV[1]: '<gen>:<at>:<id>' of the dataset the caller saw last, or '' (see epoch)
-- ARGV[2]: the longest lease TTL the caller has used, in ms
-- Returns {total, done, failed, started_ms, finished_ms, rollbacks,
-- rolled_ms, gen, id, quiet_ms, at_ms}, finished_ms 0 while running, then
-- epoch's answer. An empty pool makes no batch: it returns {0, 0, 0, now,
-- now, 0, 0, epoch...} and writes nothing, so a later run with the same id, once the pool
-- has items, starts a real batch. Times are the server's, in ms since the epoch.
-- Refuses with WRONGTYPE, naming the key, when any key holds another type;
-- then nothing is written.
-- One SUNIONSTORE copies the pool: O(pool size) in a single command, about
-- a second for a million members, and no loop in Lua.
local want = {'set', 'set', 'set', 'set', 'hash', 'hash'}
for i = 1, #want do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= want[i] then
    return redis.error_reply('WRONGTYPE key ' .. KEYS[i] .. ' holds a ' .. t .. ', want a ' .. want[i])
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gen, quiet, id, at = epoch(KEYS[7], KEYS[8], KEYS[9], now, tonumber(t[1]) * 1000000 + tonumber(t[2]), 0, ARGV[1], tonumber(ARGV[2]))
if redis.call('EXISTS', KEYS[6]) == 0 then
  -- Leftovers of an earlier batch of the same id whose meta is gone (it
  -- expired first, or a late failure was counted after it expired) must
  -- not count in this one.
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  local total = redis.call('SUNIONSTORE', KEYS[2], KEYS[1])
  if total == 0 then
    return {0, 0, 0, now, now, 0, 0, gen, id, quiet, at}
  end
  redis.call('HSET', KEYS[6], 'total', total, 'started_ms', now, 'gen', gen)
else
  rolled(KEYS[6], gen, now)
end
local m = redis.call('HMGET', KEYS[6], 'total', 'started_ms', 'finished_ms', 'rollbacks', 'rolled_ms')
return {
  tonumber(m[1]) or 0,
  redis.call('SCARD', KEYS[3]),
  redis.call('SCARD', KEYS[4]),
  tonumber(m[2]) or 0,
  tonumber(m[3]) or 0,
  tonumber(m[4]) or 0,
  tonumber(m[5]) or 0,
  gen, id, quiet, at,
}
