-- retry: put a batch's failed items back among its pending ones, so that
-- its runners (or the next run of the batch) try them again.
-- uses: typecheck
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
-- Returns how many items were put back (0 when the batch does not exist
-- or has none failed). The failed items' errors are forgotten; a finished
-- batch is running again (no finished_ms, and its keys no longer expire).
local wrong = typecheck({'set', 'set', 'set', 'set', 'hash', 'hash', 'hash', 'string', 'zset', 'hash'})
if wrong then
  return wrong
end
if redis.call('EXISTS', KEYS[6]) == 0 then
  return 0
end
local n = redis.call('SCARD', KEYS[4])
if n == 0 then
  return 0
end
redis.call('SUNIONSTORE', KEYS[2], KEYS[2], KEYS[4])
redis.call('DEL', KEYS[4], KEYS[10])
redis.call('HDEL', KEYS[6], 'finished_ms')
for _, i in ipairs({2, 3, 5, 6}) do
  redis.call('PERSIST', KEYS[i])
end
return n
