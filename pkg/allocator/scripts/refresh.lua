-- refresh: extend many leases at once, each only if still current.
-- KEYS[1]: the availability index ZSET        <base>|alloc:index
-- KEYS[2..n+1]: the leases' lock keys
-- ARGV[1]: TTL in ms
-- ARGV[2..n+1]: the leases' lock values, in KEYS order
-- ARGV[n+2..2n+1]: the leases' items, in KEYS order
-- Returns {now_ms, 1 or 0 per lease}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local n = #KEYS - 1
local out = {now}
for i = 1, n do
  if redis.call('GET', KEYS[i + 1]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i + 1], ttl)
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[n + 1 + i])
    out[i + 1] = 1
  else
    out[i + 1] = 0
  end
end
return out
