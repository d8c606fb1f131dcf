-- epoch: a piece (see internal/luascript) of every script that grants a
-- lease or writes under one (allocator acquire, refresh, release's failure
-- path, sync; worker start, finish, drop). It notices a discontinuity of
-- the Redis dataset and starts the quiet period that follows one.
--
-- A discontinuity is anything after which the server may no longer hold
-- every grant, refresh and token it acknowledged: a restart (from an RDB
-- snapshot, an AOF that lost its last second, or nothing), the promotion of
-- a replica, an operator's restore, keys deleted or evicted. The dataset's
-- identity is the server's replication id (INFO replication's
-- master_replid): Redis draws a new one at every start and at every
-- promotion, and it is not part of the data, so a dataset that was rolled
-- back or taken over carries the id of the server that wrote it, which
-- differs from the id of the server now running the script.
--
-- The check costs one INFO replication (about 4 µs of server time); only
-- when the id changed does it also read INFO server's run_id, to tell a
-- discontinuity from the same process drawing a new id with no history
-- (when its first replica attaches, or its replication backlog is freed
-- after repl-backlog-ttl without replicas), which loses nothing.
--
-- epoch(ekey, fkey, ikey, now, now_us, ttl, known, longest)
--   ekey     the pool's epoch HASH             <base>|epoch
--            {id, run, gen, at, quiet, ttl:<ms> -> server ms last used}
--   fkey     the fencing counter STRING        <base>|alloc:fence
--   ikey     the availability index (heads)    <base>|alloc:idx
--   now      server time, ms; now_us the same in µs
--   ttl      the TTL in ms the caller grants or refreshes with (0: none)
--   known    '<gen>:<at>:<id>': the generation, its start and the dataset
--            id the caller's process saw last, or ''
--   longest  the longest lease TTL the caller's process has used, in ms
-- Returns gen, quiet, id, at: the dataset generation (1 for a new pool,
-- bumped at every discontinuity), the server ms until which no item may be
-- granted (0 or in the past: none), the dataset id ('' when it is the one
-- in known), and when the current generation began.
--
-- A stored id that differs means a discontinuity. A missing one means a
-- new pool, unless something shows the pool was used before: the fencing
-- counter or the index exists (keys lost one by one: deleted, evicted), or
-- the caller saw an id before (everything lost, or FLUSHALL). A record of
-- no newer generation than the caller saw, but begun at another time (a
-- process new to the pool wrote it afresh after everything was lost)
-- counts too, late. After a discontinuity:
--   * nothing is granted until every lease that may have been granted
--     before it has expired: quiet = now + the longest TTL known, from the
--     ttl:<ms> fields used within a day and the caller's own; every caller
--     during the quiet period lengthens it to at + its own longest TTL;
--   * the fencing counter is lifted to max(counter + 1e6, now in µs), above
--     every token issued before: those that survived (at most the counter),
--     and those lost, assuming fewer than a million were lost or tokens are
--     issued at under a million a second on average since the counter was
--     seeded from the clock (seeds and lifts use server time in µs).
-- Holders whose lease survived keep refreshing it: a refresh is not a
-- grant.
local function epoch(ekey, fkey, ikey, now, now_us, ttl, known, longest)
  local repl = redis.call('INFO', 'replication')
  -- A plain find, then an anchored match: an unanchored pattern would be
  -- tried at every character of the reply (~3 µs of server time a call).
  local id = string.match(repl, '^%w+', (string.find(repl, 'master_replid:', 1, true) or -14) + 14)
  local tfield = 'ttl:' .. ttl
  local e = redis.call('HMGET', ekey, 'id', 'gen', 'quiet', 'at', tfield, 'run')
  local gen, quiet, at = tonumber(e[2]) or 0, tonumber(e[3]) or 0, tonumber(e[4]) or now
  longest = math.max(ttl, longest)
  local kgen, kat, kid = string.match(known, '^(%d+):(%d+):(.*)$')
  kgen, kat = tonumber(kgen) or 0, tonumber(kat) or 0
  -- The record is not the one the caller saw, yet no newer: it was written
  -- afresh, as a new pool, by a process that never saw the old one, after
  -- every key was lost (on this server or with a restart).
  local recreated = e[1] and kgen > 0 and gen <= kgen and tonumber(e[4]) ~= kat
  if e[1] ~= id or recreated then
    local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
    -- The same server process drawing a new id with no history behind it
    -- (replid2 all zeros) only created or freed its replication backlog
    -- (a first replica attached; none for repl-backlog-ttl): no data lost.
    local id2 = string.match(repl, 'master_replid2:(%w+)')
    if e[1] and not recreated and e[6] == run and not string.find(id2, '[^0]') then
      redis.call('HSET', ekey, 'id', id)
    else
      local lost = e[1] ~= false or known ~= '' or redis.call('EXISTS', fkey, ikey) > 0
      -- Generations never go back, even when the record was lost with the
      -- data: the caller remembers the last one it saw.
      gen, at, quiet = math.max(gen, kgen) + 1, now, 0
      if lost then
        local all = redis.call('HGETALL', ekey)
        for i = 1, #all, 2 do
          local t = string.match(all[i], '^ttl:(%d+)$')
          if t then
            if now - (tonumber(all[i + 1]) or 0) > 86400000 then
              redis.call('HDEL', ekey, all[i]) -- unused for a day
            else
              longest = math.max(longest, tonumber(t))
            end
          end
        end
        if longest <= 0 then
          longest = 30000 -- no TTL known at all: the allocator's default
        end
        quiet = now + longest
        local f = tonumber(redis.call('GET', fkey) or '0') or 0
        redis.call('SET', fkey, string.format('%d', math.max(f + 1000000, now_us)))
      end
      redis.call('HSET', ekey, 'id', id, 'run', run, 'gen', gen, 'at', at, 'quiet', quiet)
    end
    known = ''
  elseif quiet > now and at + longest > quiet then
    quiet = at + longest
    redis.call('HSET', ekey, 'quiet', quiet)
  end
  if ttl > 0 and (not e[5] or now - (tonumber(e[5]) or 0) > 60000) then
    redis.call('HSET', ekey, tfield, now)
  end
  if known ~= '' and kid == id then
    id = ''
  end
  return gen, quiet, id, at
end
