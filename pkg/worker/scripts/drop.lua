-- drop: take items that have left the pool out of a batch, so a batch
-- never waits for an item nobody can lease.
-- uses: typecheck, clock, epoch, rolled, batchend
-- KEYS[1]: the pool's member SET               <base>|pool
-- KEYS[2]: the batch's pending SET             <base>|batch:<id>:todo
-- KEYS[3]: the batch's done SET                <base>|batch:<id>:done
-- KEYS[4]: the batch's failed SET              <base>|batch:<id>:failed
-- KEYS[5]: the batch's failure count HASH      <base>|batch:<id>:failures
-- KEYS[6]: the batch's meta HASH               <base>|batch:<id>:meta
-- KEYS[7]: the pool's epoch HASH               <base>|epoch
-- KEYS[8]: the allocator's fencing counter     <base>|alloc:fence
-- KEYS[9]: the allocator's index (heads ZSET)  <base>|alloc:idx
-- KEYS[10]: the batch's errors HASH            <base>|batch:<id>:errors
-- ARGV[1]: how long the batch's keys are kept  <ms>
--          once the last item finished, in ms; 0 keeps them
--          forever
-- ARGV[2]: what the caller saw last of the     <known>
--          dataset: '<gen>:<at>:<id>' or '' (see epoch)
-- ARGV[3]: the longest lease TTL the caller    <ms>
--          has used, in ms
-- ARGV[4..]: items to look at (the caller      <item>
--          sends at most 1,000)
-- Returns {dropped, gen, id, quiet_ms, at_ms}: how many items were
-- dropped (pending in the batch and no longer members of the pool; a
-- dropped item leaves the batch's total), then epoch's answer.
local wrong = typecheck({'set', 'set', 'set', 'set', 'hash', 'hash', 'hash', 'string', 'zset', 'hash'})
if wrong then
  return wrong
end
local now, now_us = clock()
local gen, quiet, id, at = epoch(KEYS[7], KEYS[8], KEYS[9], now, now_us, 0, ARGV[2], tonumber(ARGV[3]))
if redis.call('EXISTS', KEYS[6]) == 0 then
  return {0, gen, id, quiet, at}
end
rolled(KEYS[6], gen, now)
local dropped = 0
for i = 4, #ARGV do
  local item = ARGV[i]
  if redis.call('SISMEMBER', KEYS[1], item) == 0 and redis.call('SREM', KEYS[2], item) == 1 then
    redis.call('HDEL', KEYS[5], item)
    redis.call('HINCRBY', KEYS[6], 'total', -1)
    dropped = dropped + 1
  end
end
if dropped > 0 then
  batchend(now, ARGV[1])
end
return {dropped, gen, id, quiet, at}
