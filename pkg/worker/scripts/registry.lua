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

-- throughput(key, now, grants, runs, bucket, slots) adds a process's
-- grants and finished runs since its last heartbeat to the fleet's
-- throughput ring: the HASH key, with one field per bucket (ms) of the
-- last slots buckets (the bucket's number modulo slots), each
-- '<bucket>:<grants>:<runs>'. A field of a bucket a whole ring old is
-- overwritten, not added to, so the HASH holds slots fields at most; the
-- key expires a ring's span (plus a bucket) after the last heartbeat that
-- counted something. pkg/worker's ThroughputBucket and ThroughputWindow
-- give bucket and slots.
local function throughput(key, now, grants, runs, bucket, slots)
  if grants <= 0 and runs <= 0 then
    return
  end
  local b = math.floor(now / bucket)
  local f = tostring(b % slots)
  local ob, og, orun = string.match(redis.call('HGET', key, f) or '', '^(%d+):(%d+):(%d+)$')
  if tonumber(ob) ~= b then
    og, orun = 0, 0
  end
  redis.call('HSET', key, f, string.format('%d:%d:%d', b, tonumber(og) + math.max(0, grants), tonumber(orun) + math.max(0, runs)))
  redis.call('PEXPIRE', key, (slots + 1) * bucket)
end
