-- pttl: remaining TTL of a lock key, refusing keys that are not strings.
-- KEYS[1]: the lock key                       <base>:<key>
-- Returns PTTL's answer: milliseconds left, -1 for no expiry, -2 when absent.
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' and t ~= 'string' then
  return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
end
return redis.call('PTTL', KEYS[1])
