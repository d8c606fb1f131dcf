-- refresh: extend many leases at once, each only if still current.
-- uses: clock, epoch, index
-- KEYS[1]: the availability index (heads)     <base>|alloc:idx
-- KEYS[2]: the epoch HASH                     <base>|epoch
-- KEYS[3]: the fencing counter STRING         <base>|alloc:fence
-- KEYS[4..n+3]: the leases' lock keys         <base>:<item>
-- ARGV[1]: TTL in ms                          <ms>
-- ARGV[2]: what the caller saw last of the    <known>
--          dataset: '<gen>:<at>:<id>' or '' (see epoch)
-- ARGV[3]: the longest lease TTL the caller   <ms>
--          has used, in ms
-- ARGV[4..n+3]: the leases' lock values, in   <owner>#<token>
--          KEYS order
-- ARGV[n+4..2n+3]: the leases' items, in      <item>
--          KEYS order
-- Returns {now_ms, gen, id, quiet_ms, at_ms, evicted, one flag per lease}:
-- epoch's answer (id '' when it equals ARGV[2]); evicted is the server's
-- evicted_keys when some lease's key is gone, else -1; a flag is 1 when
-- the lease was current (and is now extended), 0 when the key holds
-- another value, -1 when the key is gone.
-- A refresh is not a grant: a lease that survived a discontinuity stays
-- current and is extended, during the quiet period too.
local now, now_us = clock()
local ttl = tonumber(ARGV[1])
local gen, quiet, id, at = epoch(KEYS[2], KEYS[3], KEYS[1], now, now_us, ttl, ARGV[2], tonumber(ARGV[3]))
local n = #KEYS - 3
local out = {now, gen, id, quiet, at, -1}
local gone = false
local ix = index(KEYS[1])
for i = 1, n do
  local v = redis.call('GET', KEYS[i + 3])
  if v == ARGV[i + 3] then
    redis.call('PEXPIRE', KEYS[i + 3], ttl)
    ix.stage(ARGV[n + 3 + i], now + ttl)
    out[i + 6] = 1
  elseif v then
    out[i + 6] = 0
  else
    out[i + 6] = -1
    gone = true
  end
end
ix.flush()
if gone then
  out[6] = tonumber(string.match(redis.call('INFO', 'stats'), 'evicted_keys:(%d+)')) or -1
end
return out
