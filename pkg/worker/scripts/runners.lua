-- runners: read the fleet's live registrations at one instant.
-- uses: typecheck, clock, registry
-- KEYS[1]: the registry's expiry ZSET          <base>|fleet:runners
-- KEYS[2]: the registry's report HASH          <base>|fleet:info
-- No ARGV.
-- Returns {now_ms, id, expires_ms, report, ...}: the server's time, then
-- up to 1,000 live registrations (expiring after now), soonest to expire
-- first, each with its stored report ('<beat_ms>:<instance>:<json>').
-- Expired ones are dropped on the way (registry).
-- Refuses with WRONGTYPE, naming the key, when any key holds another type.
local wrong = typecheck({'zset', 'hash'})
if wrong then
  return wrong
end
local now = clock()
registry(KEYS[1], KEYS[2], now)
local live = redis.call('ZRANGE', KEYS[1], '(' .. now, '+inf', 'BYSCORE', 'LIMIT', 0, 1000, 'WITHSCORES')
local out = {now}
for i = 1, #live, 2 do
  out[#out + 1] = live[i]
  out[#out + 1] = tonumber(live[i + 1])
  out[#out + 1] = redis.call('HGET', KEYS[2], live[i]) or ''
end
return out
