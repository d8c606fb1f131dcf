-- free: a piece (see internal/luascript) of release.lua and next.lua.
--
-- free(k, a, now, now_us) ends a lease if it is still current: the item
-- is available at once, a bounded number of waiters woken, or it is held
-- back. now and now_us are the server's time (clock()).
--   k  lock (the item's lock key), index (the availability index's heads
--      ZSET, see index.lua), waiters
--      (waiter ZSET), reserved (hand-off HASH: waiter -> item released to
--      it), epoch (the epoch HASH), fence (the fencing counter)
--   a  value (the lease's lock value), item, wake (wake channel prefix: a
--      waiter "<proc>:<id>" is told on the sharded channel wake .. <proc>
--      with message <id>), wakeN (how many live waiters to wake), hold
--      (ms; 0 = free now, > 0 = held by a marker lock that long), marker
--      (the hold's lock value), handoff (ms the item is kept for the first
--      woken waiter, so a caller that loops straight back into acquire
--      cannot take it from under the waiter it just woke), known and
--      longest (epoch's arguments), and optionally tally (a HASH of
--      per-item counts) with count 'add' (one more for the item) or
--      'clear' (forget the item's count)
-- It returns {1} when the lease was current (and is now ended). Otherwise
-- {0, gen, id, quiet_ms, at_ms, evicted} when the key holds another value
-- or {-1, gen, id, quiet_ms, at_ms, evicted} when it is gone: epoch's
-- answer (checked only then, so that the caller can say why) and the
-- server's evicted_keys.
-- uses: epoch, index, wake
local function free(k, a, now, now_us)
  local cur = redis.call('GET', k.lock)
  if cur ~= a.value then
    local gen, quiet, id, at = epoch(k.epoch, k.fence, k.index, now, now_us, 0, a.known, a.longest)
    local evicted = tonumber(string.match(redis.call('INFO', 'stats'), 'evicted_keys:(%d+)')) or -1
    local code = 0
    if not cur then code = -1 end
    return {code, gen, id, quiet, at, evicted}
  end
  if a.count == 'add' then
    redis.call('HINCRBY', a.tally, a.item, 1)
  elseif a.count == 'clear' then
    redis.call('HDEL', a.tally, a.item)
  end
  local hold = a.hold
  if hold > 0 then
    redis.call('SET', k.lock, a.marker, 'PX', hold)
    index(k.index).set(a.item, now + hold)
    return {1}
  end
  redis.call('DEL', k.lock)
  -- Wake waiters in arrival order (wake.lua), and keep the item for the
  -- first for the hand-off window.
  local score = now
  local first = wake(k.waiters, a.wake, a.wakeN)
  if first then
    redis.call('HSET', k.reserved, first, a.item)
    score = now + a.handoff
  end
  index(k.index).set(a.item, score)
  return {1}
end
