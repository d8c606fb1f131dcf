-- refresh: extend a lock only while it still holds the caller's value.
-- KEYS[1]: the lock key                       <base>:<key>
-- ARGV[1]: the owner value
-- ARGV[2]: new TTL in milliseconds, or -1     <ms>
--          for no expiry
-- Returns 1 when extended, 0 when the lock is gone or held by another value.
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then
  return 0
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  redis.call('PERSIST', KEYS[1])
end
return 1
