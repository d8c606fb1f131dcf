-- intervene: an operator's action on one item, whoever holds it.
-- uses: clock, index, wake
-- KEYS[1]: the item's lock key                <base>:<item>
-- KEYS[2]: the availability index (heads)     <base>|alloc:idx
-- KEYS[3]: the waiter ZSET                    <base>|alloc:waiters
-- ARGV[1]: 'unquarantine' or 'cancel'
-- ARGV[2]: the item                           <item>
-- ARGV[3]: a quarantine's marker value (the
--          lock value a cancelled lease is left with)
-- ARGV[4]: wake channel prefix (as in         <base>|alloc:wake:
--          release.lua)
-- ARGV[5]: how many waiters to wake           <n>
-- ARGV[6]: the cancel channel                 <base>|alloc:wake:cancel
-- ARGV[7]: a cooldown's marker value (another
--          hold's lock value)
-- unquarantine ends a quarantine or cooldown now: the marker lock is
-- deleted, the item available at once and waiters woken. Returns {1}, or
-- {0} when the item is not held back (free, or never held), or {-1} when
-- it is held by a lease or another lock.
-- cancel takes a lease away from its holder: the lock keeps its expiry
-- but holds the marker instead of the lease's value, so the holder's
-- refreshes and release find it taken and nobody is granted the item
-- before the lease would have ended (its holder may still be stopping);
-- the holder's process is told on the cancel channel ("<item> <token>")
-- and stops at once. Returns {1, token, ms left}, or {0} when no lease
-- holds the item (free or held back), or {-1} when another lock does.
local op, item = ARGV[1], ARGV[2]
local v = redis.call('GET', KEYS[1]) -- WRONGTYPE for a key of another type
local held = v == ARGV[3] or v == ARGV[7]
if op == 'unquarantine' then
  if held then
    local now = clock()
    redis.call('DEL', KEYS[1])
    index(KEYS[2]).set(item, now)
    wake(KEYS[3], ARGV[4], tonumber(ARGV[5]))
    return {1}
  end
  if not v then return {0} end
  return {-1}
end
if not v or held then return {0} end
local token = string.match(v, '#(%d+)$')
if not token then return {-1} end
local left = redis.call('PTTL', KEYS[1])
if left <= 0 then return {0} end
redis.call('SET', KEYS[1], ARGV[3], 'PX', left)
redis.call('SPUBLISH', ARGV[6], item .. ' ' .. token)
return {1, token, left}
