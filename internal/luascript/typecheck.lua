-- typecheck: a piece (see internal/luascript).
--
-- typecheck(want) checks that each KEYS[i], i = 1..#want, holds a want[i]
-- ('string', 'set', 'hash', ...) or nothing, and returns a WRONGTYPE error
-- reply naming the first key that holds another type, or nil. A script
-- returns that reply before it writes anything:
--   local wrong = typecheck({'set', 'hash'})
--   if wrong then return wrong end
local function typecheck(want)
  for i = 1, #want do
    local t = redis.call('TYPE', KEYS[i])['ok']
    if t ~= 'none' and t ~= want[i] then
      return redis.error_reply('WRONGTYPE key ' .. KEYS[i] .. ' holds a ' .. t .. ', want a ' .. want[i])
    end
  end
  return nil
end
