-- rlock: re-entrant lock. Sets the key when it is free or already holds the
-- caller's value, (re)setting its TTL either way.
-- uses: setttl
-- KEYS[1]: the lock key                       <base>:<key>
-- ARGV[1]: the owner value
-- ARGV[2]: TTL in milliseconds, or -1 for no  <ms>
--          expiry
-- Returns 1 when the caller holds the lock, 0 when another value holds it.
-- A key of another type raises WRONGTYPE from GET before anything is written.
local cur = redis.call('GET', KEYS[1])
if cur ~= false and cur ~= ARGV[1] then
  return 0
end
setttl(KEYS[1], ARGV[1], tonumber(ARGV[2]))
return 1
