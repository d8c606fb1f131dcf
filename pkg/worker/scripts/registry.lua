-- registry: a piece (see internal/luascript) of heartbeat.lua, leave.lua
-- and runners.lua.
--
-- registry(runners, info, now) keeps the fleet's registry bounded: it
-- drops up to 16 registrations that expired by now (server ms) from the
-- expiry ZSET runners and the report HASH info, and lets both keys expire
-- when the latest registration does, so a registry whose every process
-- died disappears whole. (It uses only commands of the runner's
-- least-privilege ACL in README.md: ZRANGE BYSCORE, PEXPIRE.) Each heartbeat of each live process runs it, so
-- dead processes are dropped far faster than they can accumulate.
local function registry(runners, info, now)
  local dead = redis.call('ZRANGE', runners, '-inf', now, 'BYSCORE', 'LIMIT', 0, 16)
  if #dead > 0 then
    redis.call('HDEL', info, unpack(dead))
    redis.call('ZREM', runners, unpack(dead))
  end
  local last = redis.call('ZRANGE', runners, -1, -1, 'WITHSCORES')
  if #last == 0 then
    redis.call('DEL', info)
    return
  end
  local ttl = math.max(1, tonumber(last[2]) - now)
  redis.call('PEXPIRE', runners, ttl)
  redis.call('PEXPIRE', info, ttl)
end
