-- heartbeat: register a process of the fleet, or renew its registration,
-- until ttl from now.
-- uses: typecheck, clock, registry
-- KEYS[1]: the registry's expiry ZSET          <base>|fleet:runners
-- KEYS[2]: the registry's report HASH          <base>|fleet:info
-- KEYS[3]: the fleet's throughput ring         <base>|fleet:rate
-- ARGV[1]: the process id
-- ARGV[2]: its instance (random per process start)
-- ARGV[3]: its report (JSON, pkg/worker's Runner)
-- ARGV[4]: how long the registration lasts     <ms>
-- ARGV[5]: the leases it was granted so far
-- ARGV[6]: the runs it finished so far
-- ARGV[7]: '1' on the process's first heartbeat, else '0'
-- ARGV[8]: the throughput ring's bucket        <ms>
-- ARGV[9]: the throughput ring's buckets
-- Returns {now_ms, other}: the server's time, and the instance of another
-- live process that was registered under the same id ('' for none).
-- What the process was granted and finished since its previous heartbeat
-- (its counts less those of its stored report, when that is the same
-- instance's) is added to the throughput ring; a first heartbeat (ARGV[7])
-- adds its counts whole, and one that finds no report of its instance (its
-- registration expired) adds nothing.
-- Refuses with WRONGTYPE, naming the key, when any key holds another type.
local wrong = typecheck({'zset', 'hash', 'hash'})
if wrong then
  return wrong
end
local now = clock()
local other = ''
local exp = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
local old = redis.call('HGET', KEYS[2], ARGV[1]) or ''
local inst, report = string.match(old, '^%d+:([^:]*):(.*)$')
if exp > now and inst ~= ARGV[2] then
  other = inst or ''
end
local bucket, slots = tonumber(ARGV[8]), tonumber(ARGV[9])
if ARGV[7] == '1' then
  throughput(KEYS[3], now, tonumber(ARGV[5]), tonumber(ARGV[6]), bucket, slots)
elseif inst == ARGV[2] then
  local ok, was = pcall(cjson.decode, report)
  if ok and type(was) == 'table' then
    throughput(KEYS[3], now, tonumber(ARGV[5]) - (tonumber(was.grants) or 0), tonumber(ARGV[6]) - (tonumber(was.runs) or 0), bucket, slots)
  end
end
redis.call('HSET', KEYS[2], ARGV[1], string.format('%d:%s:%s', now, ARGV[2], ARGV[3]))
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
registry(KEYS[1], KEYS[2], now)
return {now, other}
