-- finish: record a batch item as done or failed, only while the lease that
-- ran it is still the item's current lease.
-- uses: typecheck, clock, epoch, rolled, batchend
-- KEYS[1]: the item's lock key                 <base>:<item>
-- KEYS[2]: the batch's pending SET             <base>|batch:<id>:todo
-- KEYS[3]: the batch's done SET                <base>|batch:<id>:done
-- KEYS[4]: the batch's failed SET              <base>|batch:<id>:failed
-- KEYS[5]: the batch's failure count HASH      <base>|batch:<id>:failures
-- KEYS[6]: the batch's meta HASH               <base>|batch:<id>:meta
-- KEYS[7]: the pool's epoch HASH               <base>|epoch
-- KEYS[8]: the allocator's fencing counter     <base>|alloc:fence
-- KEYS[9]: the allocator's index (heads ZSET)  <base>|alloc:idx
-- ARGV[1]: the lease's lock value              <owner>#<token>
-- ARGV[2]: the item                            <item>
-- ARGV[3]: '1' to record it done, '0' failed   <flag>
-- ARGV[4]: how long the batch's keys are kept  <ms>
--          once the last item finished, in ms; 0 keeps them
--          forever
-- ARGV[5]: the lease's TTL in ms               <ms>
-- ARGV[6]: what the caller saw last of the     <known>
--          dataset: '<gen>:<at>:<id>' or '' (see epoch)
-- ARGV[7]: the longest lease TTL the caller    <ms>
--          has used, in ms
-- Returns {recorded, gen, id, quiet_ms, at_ms}: recorded is 1 when
-- recorded; 0 when the lease is not current or the item is not pending in
-- the batch (finished already, or no such batch).
-- Refuses with WRONGTYPE, naming the key, when any key holds another type;
-- then nothing is written.
local wrong = typecheck({'string', 'set', 'set', 'set', 'hash', 'hash'})
if wrong then
  return wrong
end
local now, now_us = clock()
local gen, quiet, id, at = epoch(KEYS[7], KEYS[8], KEYS[9], now, now_us, tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]))
if redis.call('EXISTS', KEYS[6]) == 1 then
  rolled(KEYS[6], gen, now)
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0, gen, id, quiet, at}
end
local dest = KEYS[4]
if ARGV[3] == '1' then
  dest = KEYS[3]
end
if redis.call('SMOVE', KEYS[2], dest, ARGV[2]) == 0 then
  return {0, gen, id, quiet, at}
end
redis.call('HDEL', KEYS[5], ARGV[2])
batchend(now, ARGV[4])
return {1, gen, id, quiet, at}
