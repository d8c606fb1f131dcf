-- setttl: a piece (see internal/luascript) of rlock.lua, replace.lua and
-- cond.lua.
--
-- setttl(key, value, ttl) sets key to value, to expire in ttl ms, or never
-- when ttl is not above 0 (callers send -1 for no expiry).
local function setttl(key, value, ttl)
  if ttl > 0 then
    redis.call('SET', key, value, 'PX', ttl)
  else
    redis.call('SET', key, value)
  end
end
