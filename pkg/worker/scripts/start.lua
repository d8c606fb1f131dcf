-- start: create a batch from the pool's members at this moment, unless it
-- exists, and return its progress.
-- uses: typecheck, clock, epoch, rolled, counts
-- KEYS[1]: the pool's member SET               <base>|pool
-- KEYS[2]: the batch's pending SET             <base>|batch:<id>:todo
-- KEYS[3]: the batch's done SET                <base>|batch:<id>:done
-- KEYS[4]: the batch's failed SET              <base>|batch:<id>:failed
-- KEYS[5]: the batch's failure count HASH      <base>|batch:<id>:failures
-- KEYS[6]: the batch's meta HASH               <base>|batch:<id>:meta
--          {total, started_ms, finished_ms, gen, rollbacks, rolled_ms}
-- KEYS[7]: the pool's epoch HASH               <base>|epoch
-- KEYS[8]: the allocator's fencing counter     <base>|alloc:fence
-- KEYS[9]: the allocator's index (heads ZSET)  <base>|alloc:idx
-- KEYS[10]: the batch's errors HASH            <base>|batch:<id>:errors
-- ARGV[1]: what the caller saw last of the     <known>
--          dataset: '<gen>:<at>:<id>' or '' (see epoch)
-- ARGV[2]: the longest lease TTL the caller    <ms>
--          has used, in ms
-- Returns {total, done, failed, started_ms, finished_ms, rollbacks,
-- rolled_ms, gen, id, quiet_ms, at_ms}, finished_ms 0 while running, then
-- epoch's answer. An empty pool makes no batch: it returns {0, 0, 0, now,
-- now, 0, 0, epoch...} and writes nothing, so a later run with the same
-- id, once the pool has items, starts a real batch. Times are the
-- server's, in ms since the epoch.
-- Refuses with WRONGTYPE, naming the key, when any key holds another type;
-- then nothing is written.
-- One SUNIONSTORE copies the pool: O(pool size) in a single command, about
-- a second for a million members, and no loop in Lua.
local wrong = typecheck({'set', 'set', 'set', 'set', 'hash', 'hash', 'hash', 'string', 'zset', 'hash'})
if wrong then
  return wrong
end
local now, now_us = clock()
local gen, quiet, id, at = epoch(KEYS[7], KEYS[8], KEYS[9], now, now_us, 0, ARGV[1], tonumber(ARGV[2]))
if redis.call('EXISTS', KEYS[6]) == 0 then
  -- Leftovers of an earlier batch of the same id whose meta is gone (it
  -- expired first, or a late failure was counted after it expired) must
  -- not count in this one.
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[10])
  local total = redis.call('SUNIONSTORE', KEYS[2], KEYS[1])
  if total == 0 then
    return {0, 0, 0, now, now, 0, 0, gen, id, quiet, at}
  end
  redis.call('HSET', KEYS[6], 'total', total, 'started_ms', now, 'gen', gen)
else
  rolled(KEYS[6], gen, now)
end
local res = counts(KEYS[3], KEYS[4], KEYS[6])
res[8], res[9], res[10], res[11] = gen, id, quiet, at
return res
