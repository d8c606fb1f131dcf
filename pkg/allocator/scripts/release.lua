-- release: end a lease if it is still current, make its item available at
-- once, and wake a bounded number of waiters.
-- uses: clock, epoch, wake
-- KEYS[1]: the item's lock key                <base>:<item>
-- KEYS[2]: the availability index ZSET        <base>|alloc:index
-- KEYS[3]: the waiter ZSET                    <base>|alloc:waiters
-- KEYS[4]: the hand-off HASH                  <base>|alloc:reserved
--          (waiter -> item released to it)
-- KEYS[5]: the epoch HASH                     <base>|epoch
-- KEYS[6]: the fencing counter STRING         <base>|alloc:fence
-- ARGV[1]: the lease's lock value             <owner>#<token>
-- ARGV[2]: the item                           <item>
-- ARGV[3]: wake channel prefix; a waiter      <base>|alloc:wake:
--          "<proc>:<id>" is told on the sharded channel
--          ARGV[3] .. <proc> with message <id>
-- ARGV[4]: how many live waiters to wake      <n>
-- ARGV[5]: the new availability time offset   <ms>
--          in ms (0 = free now; > 0 = quarantine: the item is
--          held by a marker lock that long)
-- ARGV[6]: the quarantine marker value
-- ARGV[7]: hand-off window in ms: the item    <ms>
--          is kept for the first woken waiter that long, so a
--          caller that loops straight back into acquire cannot
--          take it from under the waiter it just woke
-- ARGV[8]: what the caller saw last of the    <known>
--          dataset: '<gen>:<at>:<id>' or '' (see epoch)
-- ARGV[9]: the longest lease TTL the caller   <ms>
--          has used, in ms
-- Returns {1} when the lease was current (and is now ended). Otherwise
-- {0, gen, id, quiet_ms, at_ms, evicted} when the key holds another value
-- or {-1, gen, id, quiet_ms, at_ms, evicted} when it is gone: epoch's
-- answer (checked only then, so that the caller can say why) and the
-- server's evicted_keys.
local now, now_us = clock()
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then
  local gen, quiet, id, at = epoch(KEYS[5], KEYS[6], KEYS[2], now, now_us, 0, ARGV[8], tonumber(ARGV[9]))
  local evicted = tonumber(string.match(redis.call('INFO', 'stats'), 'evicted_keys:(%d+)')) or -1
  local code = 0
  if not cur then code = -1 end
  return {code, gen, id, quiet, at, evicted}
end
local hold = tonumber(ARGV[5])
if hold > 0 then
  redis.call('SET', KEYS[1], ARGV[6], 'PX', hold)
  redis.call('ZADD', KEYS[2], now + hold, ARGV[2])
  return {1}
end
redis.call('DEL', KEYS[1])
-- Wake waiters in arrival order (wake.lua), and keep the item for the
-- first for the hand-off window.
local score = now
local first = wake(KEYS[3], ARGV[3], tonumber(ARGV[4]))
if first then
  redis.call('HSET', KEYS[4], first, ARGV[2])
  score = now + tonumber(ARGV[7])
end
redis.call('ZADD', KEYS[2], score, ARGV[2])
return {1}
