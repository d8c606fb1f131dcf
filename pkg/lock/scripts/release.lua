-- release: delete a lock only if it holds the caller's value.
-- KEYS[1]: the lock key                       <base>:<key>
-- ARGV[1]: the owner value
-- Returns 1 when deleted, 0 when the lock is gone or held by another value.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
