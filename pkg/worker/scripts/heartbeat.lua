-- heartbeat: register a process of the fleet, or renew its registration,
-- until ttl from now.
-- uses: typecheck, clock, registry
-- KEYS[1]: the registry's expiry ZSET          <base>|fleet:runners
-- KEYS[2]: the registry's report HASH          <base>|fleet:info
-- ARGV[1]: the process id
-- ARGV[2]: its instance (random per process start)
-- ARGV[3]: its report (JSON, pkg/worker's Runner)
-- ARGV[4]: how long the registration lasts     <ms>
-- Returns {now_ms, other}: the server's time, and the instance of another
-- live process that was registered under the same id ('' for none).
-- Refuses with WRONGTYPE, naming the key, when any key holds another type.
local wrong = typecheck({'zset', 'hash'})
if wrong then
  return wrong
end
local now = clock()
local other = ''
local exp = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
if exp > now then
  local old = redis.call('HGET', KEYS[2], ARGV[1]) or ''
  local inst = string.match(old, '^%d+:([^:]*):') or ''
  if inst ~= ARGV[2] then
    other = inst
  end
end
redis.call('HSET', KEYS[2], ARGV[1], string.format('%d:%s:%s', now, ARGV[2], ARGV[3]))
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
registry(KEYS[1], KEYS[2], now)
return {now, other}
