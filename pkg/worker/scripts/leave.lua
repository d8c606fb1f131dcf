-- leave: take a process out of the fleet's registry, unless another
-- process has registered under its id since.
-- uses: typecheck, clock, registry
-- KEYS[1]: the registry's expiry ZSET          <base>|fleet:runners
-- KEYS[2]: the registry's report HASH          <base>|fleet:info
-- ARGV[1]: the process id
-- ARGV[2]: its instance
-- Returns 1 when it was registered, else 0.
-- Refuses with WRONGTYPE, naming the key, when any key holds another type.
local wrong = typecheck({'zset', 'hash'})
if wrong then
  return wrong
end
local old = redis.call('HGET', KEYS[2], ARGV[1]) or ''
if string.match(old, '^%d+:([^:]*):') ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
registry(KEYS[1], KEYS[2], clock())
return 1
