-- clear: delete a pool's member set, refusing a key of another type.
-- KEYS[1]: the pool's member SET              <base>|pool
-- Returns 1 when a set was deleted, 0 when there was none.
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' and t ~= 'set' then
  return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
end
return redis.call('DEL', KEYS[1])
