-- index: a piece (see internal/luascript) of every allocator script that
-- reads or writes the availability index.
--
-- The index maps every item of the pool to the server ms from which it is
-- available: free since, lease deadline, or quarantine end. One ZSET of a
-- large pool is a skiplist, ~100 B an item; the index is kept instead in
-- buckets small enough for Redis's listpack encoding (~15-25 B an item,
-- zset-max-listpack-entries 128 by default):
--   <heads>:<b>     ZSET bucket b: item -> ms, for b in 0 .. N-1
--   <heads>         ZSET bucket number -> the earliest ms in the bucket
--                   ('inf' when empty); it has exactly N members, so N is
--                   its ZCARD
--   <heads>:count   HASH   items -> the number of items in all buckets
--                   (HINCRBY: the runner's least-privilege ACL rule in
--                   the README grants no DECR)
-- An item lives in bucket addr(h), h the first 32 bits of its SHA-1, by
-- linear hashing: with L the largest power of two <= N, b = h mod 2L, or
-- h mod L when that is >= N. When the count passes LOAD items a bucket,
-- bucket N - L splits: its items with h mod 2L = N move to a new bucket
-- N. A bucket not yet split in a round holds about twice the average, so
-- LOAD (40) keeps buckets well under 128 items. Buckets never merge: a
-- pool that shrinks keeps its bucket count.
-- Every write keeps each head exact, so the earliest item of the earliest
-- bucket is the one available longest, as with one ZSET.
--
-- index(heads) returns an object whose methods act on the index whose
-- heads ZSET is the key heads:
--   set(item, ms[, nx])  score item ms (only if absent when nx); returns 1
--                        when the item was added, else 0
--   lower(item, ms)      set, for an item whose score does not rise
--   stage(item, ms[, nx]) set, leaving the bucket's head to flush(): for a
--                        script that scores many items; every stage must
--                        be followed by a flush before the script reads
--                        the index or ends
--   flush()              fix the heads of the buckets staged into
--   rem(item)            drop item; returns 1 when it was there
--   score(item)          item's ms, or nil
--   due(now, max)        up to max items available at now (ms <= now),
--                        the one available longest first
--   first()              the earliest ms in the index, or -1 when empty
--   count()              how many items the index holds
--   buckets()            N
--   bucket(b)            bucket b's items and ms, flat (ZRANGE WITHSCORES)
local function index(heads)
  local LOAD = 40
  local countKey = heads .. ':count'
  local ix = {}
  local n = redis.call('ZCARD', heads)

  local function hash(item)
    return tonumber(string.sub(redis.sha1hex(item), 1, 8), 16)
  end
  local function span(nb)
    local l = 1
    while l * 2 <= nb do l = l * 2 end
    return l
  end
  local spanOf, spanL = -1, 1 -- span(spanOf) is spanL
  local function addr(item)
    if n == 0 then
      redis.call('ZADD', heads, 'inf', 0)
      n = 1
    end
    if spanOf ~= n then spanOf, spanL = n, span(n) end
    local l = spanL
    local h = hash(item)
    local b = h % (2 * l)
    if b >= n then b = h % l end
    return b
  end
  -- head sets bucket b's head to its earliest ms (ZADD of an unchanged
  -- score writes nothing).
  local function head(b)
    local f = redis.call('ZRANGE', heads .. ':' .. b, 0, 0, 'WITHSCORES')
    redis.call('ZADD', heads, f[2] or 'inf', b)
  end
  -- grow splits one bucket when the average load passed LOAD.
  local function grow(count)
    if count <= n * LOAD then return end
    local l = span(n)
    local src, dst = n - l, n
    local all = redis.call('ZRANGE', heads .. ':' .. src, 0, -1, 'WITHSCORES')
    local moved, gone = {}, {}
    for i = 1, #all, 2 do
      if hash(all[i]) % (2 * l) == dst then
        moved[#moved + 1] = all[i + 1]
        moved[#moved + 1] = all[i]
        gone[#gone + 1] = all[i]
      end
    end
    if #gone > 0 then
      redis.call('ZREM', heads .. ':' .. src, unpack(gone))
      redis.call('ZADD', heads .. ':' .. dst, unpack(moved))
    end
    n = n + 1
    head(src)
    head(dst)
  end

  -- counted counts an item ZADD added (added is its reply) and grows the
  -- index when the count calls for it.
  local function counted(added)
    if added == 1 then
      grow(redis.call('HINCRBY', countKey, 'items', 1))
    end
    return added
  end
  local dirty = {}
  local function put(item, ms, nx, staged)
    local b = addr(item)
    local added
    if nx then
      added = redis.call('ZADD', heads .. ':' .. b, 'NX', ms, item)
    else
      added = redis.call('ZADD', heads .. ':' .. b, ms, item)
    end
    if staged then
      dirty[b] = true
    else
      head(b)
    end
    return counted(added)
  end
  function ix.set(item, ms, nx)
    return put(item, ms, nx, false)
  end
  -- lower is set for an item whose score does not rise (ms is at most its
  -- score, or it is not in the index): the head can only fall, so one
  -- ZADD LT keeps it exact without reading the bucket.
  function ix.lower(item, ms)
    local b = addr(item)
    local added = redis.call('ZADD', heads .. ':' .. b, ms, item)
    redis.call('ZADD', heads, 'LT', ms, b)
    return counted(added)
  end
  function ix.stage(item, ms, nx)
    return put(item, ms, nx, true)
  end
  function ix.flush()
    for b in pairs(dirty) do head(b) end
    dirty = {}
  end
  function ix.rem(item)
    if n == 0 then return 0 end
    local b = addr(item)
    local removed = redis.call('ZREM', heads .. ':' .. b, item)
    if removed == 1 then
      head(b)
      redis.call('HINCRBY', countKey, 'items', -1)
    end
    return removed
  end
  function ix.score(item)
    if n == 0 then return nil end
    local s = redis.call('ZSCORE', heads .. ':' .. addr(item), item)
    return s and tonumber(s)
  end
  function ix.due(now, max)
    local h = redis.call('ZRANGE', heads, '-inf', now, 'BYSCORE', 'LIMIT', 0, 1)
    if #h == 0 then return {} end
    return redis.call('ZRANGE', heads .. ':' .. h[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, max)
  end
  function ix.first()
    local h = redis.call('ZRANGE', heads, 0, 0, 'WITHSCORES')
    if #h == 0 or h[2] == 'inf' then return -1 end
    return tonumber(h[2])
  end
  function ix.count()
    return math.max(0, tonumber(redis.call('HGET', countKey, 'items') or '0') or 0)
  end
  function ix.buckets()
    return n
  end
  function ix.bucket(b)
    return redis.call('ZRANGE', heads .. ':' .. b, 0, -1, 'WITHSCORES')
  end
  return ix
end
