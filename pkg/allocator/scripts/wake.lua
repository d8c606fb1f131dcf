-- wake: a piece (see internal/luascript) of release.lua and sync.lua.
--
-- wake(wkey, prefix, want) wakes up to want live waiters of the waiter
-- ZSET wkey ("<proc>:<id>" -> ms registered), oldest first: each is told
-- on the sharded channel prefix .. <proc> with message <id>. SPUBLISH
-- counts receivers, so a waiter whose process died is popped and skipped;
-- the loop is bounded (want + 8 pops). Returns the first waiter woken, or
-- nil.
local function wake(wkey, prefix, want)
  local first, woken = nil, 0
  for _ = 1, want + 8 do
    local w = redis.call('ZPOPMIN', wkey)
    if #w == 0 then break end
    local proc, wid = string.match(w[1], '^([^:]*):(.*)$')
    if proc and redis.call('SPUBLISH', prefix .. proc, wid) > 0 then
      woken = woken + 1
      first = first or w[1]
      if woken >= want then break end
    end
  end
  return first
end
