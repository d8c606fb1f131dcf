-- pause: pause or resume a pool, for every allocator of it at once.
-- uses: clock, wake
-- KEYS[1]: the fleet-wide controls HASH       <base>|alloc:control
-- KEYS[2]: the waiter ZSET                    <base>|alloc:waiters
-- ARGV[1]: '1' to pause, '' to resume         <flag>
-- ARGV[2]: wake channel prefix (as in         <base>|alloc:wake:
--          release.lua)
-- ARGV[3]: how many waiters a resume wakes    <n>
-- While paused no grant is made (grant.lua reads the field paused), so
-- waiters pile up; a resume wakes up to ARGV[3] of them at once, oldest
-- first, and the rest within their allocator's MaxWait.
-- Returns the server ms since when the pool is paused (the first pause's
-- time when paused twice), or 0 after a resume.
local now = clock()
if ARGV[1] == '1' then
  local since = redis.call('HGET', KEYS[1], 'paused')
  if since then return tonumber(since) end
  redis.call('HSET', KEYS[1], 'paused', now)
  return now
end
if redis.call('HDEL', KEYS[1], 'paused') == 1 then
  wake(KEYS[2], ARGV[2], tonumber(ARGV[3]))
end
return 0
