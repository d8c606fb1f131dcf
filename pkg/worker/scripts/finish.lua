-- finish: record a batch item as done or failed, only while the lease that
-- ran it is still the item's current lease.
-- uses: typecheck, clock, epoch, rolled, batchend, history
-- KEYS[1]: the item's lock key                 <base>:<item>
-- KEYS[2]: the batch's pending SET             <base>|batch:<id>:todo
-- KEYS[3]: the batch's done SET                <base>|batch:<id>:done
-- KEYS[4]: the batch's failed SET              <base>|batch:<id>:failed
-- KEYS[5]: the batch's failure count HASH      <base>|batch:<id>:failures
-- KEYS[6]: the batch's meta HASH               <base>|batch:<id>:meta
-- KEYS[7]: the pool's epoch HASH               <base>|epoch
-- KEYS[8]: the allocator's fencing counter     <base>|alloc:fence
-- KEYS[9]: the allocator's index (heads ZSET)  <base>|alloc:idx
-- KEYS[10]: the batch's errors HASH            <base>|batch:<id>:errors
-- KEYS[11]: the item history HASH             <base>|hist:last
-- KEYS[12]: the item history expiry ZSET      <base>|hist:expiry
-- KEYS[13]: the item's stderr tail            <base>|hist:tail:<item>
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
-- ARGV[8]: the run's history record (internal/history), or '' to
--          record nothing
-- ARGV[9]: the lease's fencing token           <token>
-- ARGV[10]: the run's stderr tail, or ''
-- ARGV[11]: how long the history is kept, ms   <ms>
-- ARGV[12]: the error kept for a failed item in KEYS[10]
-- Returns {recorded, gen, id, quiet_ms, at_ms}: recorded is 1 when
-- recorded (with the item's history, in the same step); 0 when the lease
-- is not current or the item is not pending in the batch (finished
-- already, or no such batch), and then nothing is recorded.
-- Refuses with WRONGTYPE, naming the key, when any key holds another type;
-- then nothing is written.
local wrong = typecheck({'string', 'set', 'set', 'set', 'hash', 'hash', 'hash', 'string', 'zset', 'hash'})
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
if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 0 then
  return {0, gen, id, quiet, at}
end
if ARGV[8] ~= '' then
  local wrong, record = history({last = KEYS[11], expiry = KEYS[12], tail = KEYS[13]},
    {item = ARGV[2], token = ARGV[9], rec = ARGV[8], tail = ARGV[10], retain = ARGV[11], fenced = ''}, now)
  if wrong then
    return wrong
  end
  record()
end
if ARGV[3] == '1' then
  redis.call('SMOVE', KEYS[2], KEYS[3], ARGV[2])
  redis.call('HDEL', KEYS[10], ARGV[2])
else
  redis.call('SMOVE', KEYS[2], KEYS[4], ARGV[2])
  redis.call('HSET', KEYS[10], ARGV[2], ARGV[12])
end
redis.call('HDEL', KEYS[5], ARGV[2])
batchend(now, ARGV[4])
return {1, gen, id, quiet, at}
