-- grant: a piece (see internal/luascript) of acquire.lua and next.lua.
--
-- grant(k, a, now, now_us) hands out the item that has been available
-- longest, as a fenced lease, or reports when one may be. now and now_us
-- are the server's time (clock()).
--   k  the pool's keys: members (the member SET), index (the availability
--      index's heads ZSET, see index.lua: item -> server ms from which it
--      is available: free since, lease deadline, or quarantine end), fence
--      (the fencing counter),
--      bindings (binding HASH), waiters (waiter ZSET), foreign (ZSET of
--      items found held by a lock the allocator did not grant -> ms when
--      last looked at; such locks send no wake-up when removed), reserved
--      (hand-off HASH), epoch (the epoch HASH), and from (a SET of
--      candidates, read only when a.from is '1')
--   a  prefix (lock keys are prefix .. item), owner, ttl (ms), prefer
--      (item or ''), binding (name or ''), waiter (id to register on a
--      miss, or ''), budget (most candidates to examine), only ('1': lease
--      only prefer), known and longest (epoch's arguments), from ('1':
--      after prefer and binding, the only candidates are up to 16 members
--      of k.from drawn at random; a miss then says nothing of when an
--      item may be available: next_ms -1, behind 0)
-- It returns {ok, gen, id, quiet_ms, at_ms} (epoch's answer, id '' when it
-- equals a.known), then
--   on success (ok 1): item, token, deadline_ms, now_ms;
--   otherwise (ok 0):  next_ms, now_ms, behind, where next_ms is the
--         earliest time an item may become available (-1 when the index is
--         empty) and behind is 1 when the pool has more members than the
--         index (a sync step is due before waiting). While foreign locks
--         are known, next_ms is at most a second away: their removal wakes
--         nobody. During the quiet period after a discontinuity nothing is
--         granted and next_ms is its end.
-- uses: epoch, index
local function grant(k, a, now, now_us)
  local prefix, owner, ttl, budget = a.prefix, a.owner, a.ttl, a.budget
  local gen, quiet, id, at = epoch(k.epoch, k.fence, k.index, now, now_us, ttl, a.known, a.longest)
  if quiet > now then
    return {0, gen, id, quiet, at, quiet, now, 0}
  end
  local ix = index(k.index)

  -- try takes item if it can be handed out now and returns the grant, or nil.
  -- On the way it drops items that left the pool from the index and re-scores
  -- items someone locked directly (a pkg/lock or Python user) to when their
  -- lock expires. SET NX both checks and takes, so a free item costs no read.
  local function try(item)
    if redis.call('SISMEMBER', k.members, item) == 0 then
      ix.rem(item)
      redis.call('ZREM', k.foreign, item)
      return nil
    end
    -- A token is spent even if the item turns out to be held: tokens need
    -- only increase, not be dense. INCR answers 1 when the counter is new or
    -- Redis lost it; restarting from server time in microseconds keeps every
    -- token above the earlier ones as long as fewer than a million were
    -- issued per second on average.
    local token = redis.call('INCR', k.fence)
    if token == 1 then
      token = now_us
      redis.call('SET', k.fence, string.format('%d', token))
    end
    local tok = string.format('%d', token)
    if redis.call('SET', prefix .. item, owner .. '#' .. tok, 'NX', 'PX', ttl) then
      ix.set(item, now + ttl)
      if a.binding ~= '' then
        redis.call('HSET', k.bindings, a.binding, item)
      end
      if a.waiter ~= '' then
        redis.call('ZREM', k.waiters, a.waiter)
      end
      return {1, gen, id, quiet, at, item, tok, now + ttl, now}
    end
    local pttl = redis.call('PTTL', prefix .. item)
    if pttl == -1 then
      pttl = 3600000 -- held forever: look again in an hour
    elseif pttl < 0 then
      pttl = 0 -- gone since the SET: available now
    end
    ix.set(item, now + pttl)
    redis.call('ZADD', k.foreign, now, item)
    return nil
  end

  -- An item a release handed to this waiter first, then affinity: the named
  -- item, then the binding's previous item.
  local wanted = {}
  if a.waiter ~= '' then
    local handed = redis.call('HGET', k.reserved, a.waiter)
    if handed then
      redis.call('HDEL', k.reserved, a.waiter)
      wanted[#wanted + 1] = handed
    end
  end
  if a.prefer ~= '' then wanted[#wanted + 1] = a.prefer end
  if a.binding ~= '' then
    local bound = redis.call('HGET', k.bindings, a.binding)
    if bound then wanted[#wanted + 1] = bound end
  end
  for _, item in ipairs(wanted) do
    local g = try(item)
    if g then return g end
  end
  if a.only == '1' then
    -- Only the preferred item would do: report when it may be available.
    return {0, gen, id, quiet, at, ix.score(a.prefer) or -1, now, 0}
  end

  if a.from == '1' then
    -- Only members of the From SET will do: a random few, so workers
    -- drawing from one SET rarely try the same items. try checks each is
    -- still in the pool and free; the index plays no part.
    for _, item in ipairs(redis.call('SRANDMEMBER', k.from, 16)) do
      local g = try(item)
      if g then return g end
    end
    return {0, gen, id, quiet, at, -1, now, 0}
  end

  -- Then the longest-available items, oldest score first.
  local seen = 0
  while seen < budget do
    local batch = ix.due(now, math.min(16, budget - seen))
    if #batch == 0 then
      break
    end
    for _, item in ipairs(batch) do
      seen = seen + 1
      local g = try(item)
      if g then return g end
    end
  end

  -- Items held by foreign locks may have been unlocked early, which the
  -- index cannot see: look at a few, least recently looked at first. One
  -- held by a lease of ours ("<owner>#<token>") is forgotten: its release
  -- will update the index and wake a waiter.
  for _, item in ipairs(redis.call('ZRANGE', k.foreign, 0, 7)) do
    local g = try(item)
    if g then
      redis.call('ZREM', k.foreign, item)
      return g
    end
    -- pcall: a key of another type is foreign too, not an error here.
    local v = redis.pcall('GET', prefix .. item)
    if type(v) == 'string' and string.find(v, '#%d+$') then
      redis.call('ZREM', k.foreign, item)
    end
  end

  if a.waiter ~= '' then
    redis.call('ZADD', k.waiters, 'NX', now, a.waiter)
  end
  local behind = 0
  if redis.call('SCARD', k.members) > ix.count() then
    behind = 1
  end
  local next = ix.first()
  if redis.call('ZCARD', k.foreign) > 0 and (next < 0 or next > now + 1000) then
    next = now + 1000
  end
  return {0, gen, id, quiet, at, next, now, behind}
end
