-- replace: compare-and-set. Sets a lock to a new value only while it still
-- holds the caller's value.
-- KEYS[1]: the lock key
-- ARGV[1]: the value the key must hold
-- ARGV[2]: the new value
-- ARGV[3]: TTL in milliseconds, or -1 for no expiry
-- Returns 1 when replaced, 0 when the lock is gone or held by another value.
-- A key of another type raises WRONGTYPE from GET before anything is written.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
