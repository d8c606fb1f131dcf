-- cond: conditional set or delete, comparing a number with the key's number
-- with the redis_allocator package's epsilon semantics.
-- uses: setttl
-- KEYS[1]: the lock key                       <base>:<key>
-- ARGV[1]: operator: >, <, >=, <=, == or !=
-- ARGV[2]: the number to compare (decimal,    <number>
--          validated by the client)
-- ARGV[3]: the number to set (ignored when deleting)
-- ARGV[4]: TTL in milliseconds for the set,   <ms>
--          or -1 for no expiry
-- ARGV[5]: '1' to delete, '0' to set          <flag>
-- ARGV[6]: epsilon                            <number>
-- Returns 1 when it set or deleted (the key was absent or the comparison
-- held), 0 when the comparison failed, -1 when the key holds a non-number
-- (nothing written).
local raw = redis.call('GET', KEYS[1])
local cur = nil
if raw ~= false then
  -- Only plain decimals count as numbers, so both backends agree on what
  -- parses: no spaces, hex, inf or nan, all of which tonumber would accept.
  if not (string.find(raw, '^[%+%-]?%d+%.?%d*$') or string.find(raw, '^[%+%-]?%.%d+$')
      or string.find(raw, '^[%+%-]?%d+%.?%d*[eE][%+%-]?%d+$') or string.find(raw, '^[%+%-]?%.%d+[eE][%+%-]?%d+$')) then
    return -1
  end
  cur = tonumber(raw)
end
local op = ARGV[1]
local cmp = tonumber(ARGV[2])
local eps = tonumber(ARGV[6])
local ok
if cur == nil then
  ok = true
elseif op == '>' then
  ok = cmp > cur
elseif op == '<' then
  ok = cmp < cur
elseif op == '>=' then
  ok = cmp >= cur - eps
elseif op == '<=' then
  ok = cmp <= cur + eps
elseif op == '==' then
  ok = math.abs(cmp - cur) < eps
elseif op == '!=' then
  ok = math.abs(cmp - cur) > eps
else
  return redis.error_reply('ERR cond.lua: unknown operator ' .. op)
end
if not ok then
  return 0
end
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[1])
else
  setttl(KEYS[1], ARGV[3], tonumber(ARGV[4]))
end
return 1
