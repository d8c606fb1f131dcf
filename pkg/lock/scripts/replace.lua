-- replace: compare-and-set. Sets a lock to a new value only while it still
-- holds the caller's value.
-- uses: setttl
-- KEYS[1]: the lock key                       <base>:<key>
-- ARGV[1]: the value the key must hold
-- ARGV[2]: the new value
-- ARGV[3]: TTL in milliseconds, or -1 for no  <ms>
--          expiry
-- Returns 1 when replaced, 0 when the lock is gone or held by another value.
-- A key of another type raises WRONGTYPE from GET before anything is written.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
setttl(KEYS[1], ARGV[2], tonumber(ARGV[3]))
return 1
