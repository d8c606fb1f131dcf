-- history: a piece (see internal/luascript) of pkg/allocator's next.lua
-- and pkg/worker's finish.lua and record.lua.
--
-- history(k, a, now) checks the history's keys and returns a function that
-- records how a run of a.item ended as the item's last outcome, at server
-- time now, unless the history already holds a later run of the item (a
-- record with a higher fencing token: a late writer never hides a newer
-- outcome). A script checks first, before it writes anything, and records
-- once it knows the run's result stands.
--   k  last (HASH item -> '<at_ms>:<token>:<record>'), expiry (ZSET item
--      -> ms its record's retention ends), tail (the item's stderr tail
--      STRING)
--   a  item, token (the run's fencing token), rec (the record as
--      internal/history encodes it), tail (the failed run's stderr tail;
--      '' keeps the last one), retain (ms the history is kept, > 0),
--      fenced ('1': look for a later run first; a caller whose lease is
--      current knows there is none, and passes '')
-- The history stays bounded by the number of items recorded within the
-- retention: each call drops up to 8 entries whose retention ended, both
-- keys expire a retention after the last call (give or take an eighth:
-- their TTL is renewed, never shortened, when less than 7/8 of this call's
-- retention is left), and a tail expires a retention after it was
-- written.
-- It returns a WRONGTYPE error reply naming the first of its keys that
-- holds another type, having written nothing, or nil and the function:
--   local wrong, record = history(k, a, now)
--   if wrong then return wrong end
--   ... record()
local function history(k, a, now)
  local want = {{k.last, 'hash'}, {k.expiry, 'zset'}}
  if a.tail ~= '' then
    want[3] = {k.tail, 'string'}
  end
  for _, kw in ipairs(want) do
    local t = redis.call('TYPE', kw[1])['ok']
    if t ~= 'none' and t ~= kw[2] then
      return redis.error_reply('WRONGTYPE key ' .. kw[1] .. ' holds a ' .. t .. ', want a ' .. kw[2])
    end
  end
  return nil, function()
    if a.fenced == '1' then
      local old = redis.call('HGET', k.last, a.item)
      local tok = old and tonumber(string.match(old, '^%d+:(%d+):'))
      if tok and tok > tonumber(a.token) then
        return
      end
    end
    local retain = tonumber(a.retain)
    local head = string.format('%d:%s:', now, a.token)
    redis.call('HSET', k.last, a.item, head .. a.rec)
    redis.call('ZADD', k.expiry, now + retain, a.item)
    if a.tail ~= '' then
      redis.call('SET', k.tail, head .. a.tail, 'PX', retain)
    end
    local stale = redis.call('ZRANGE', k.expiry, '-inf', now, 'BYSCORE', 'LIMIT', 0, 8)
    if #stale > 0 then
      redis.call('HDEL', k.last, unpack(stale))
      redis.call('ZREM', k.expiry, unpack(stale))
    end
    if redis.call('PTTL', k.expiry) < retain - retain / 8 then
      redis.call('PEXPIRE', k.last, retain)
      redis.call('PEXPIRE', k.expiry, retain)
    end
  end
end
