-- throughput: read the fleet's throughput ring at one instant.
-- uses: typecheck, clock
-- KEYS[1]: the fleet's throughput ring         <base>|fleet:rate
-- No ARGV.
-- Returns {now_ms, field, value, ...}: the server's time, then the ring's
-- fields ('<bucket mod slots>' -> '<bucket>:<grants>:<runs>', see
-- registry's throughput()); the caller keeps the buckets of its window.
-- Refuses with WRONGTYPE, naming the key, when the key holds another type.
local wrong = typecheck({'hash'})
if wrong then
  return wrong
end
local now = clock()
local out = {now}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do
  out[#out + 1] = v
end
return out
