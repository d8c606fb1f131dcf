-- assign: atomically replace a pool's member set with a staged set.
-- KEYS[1]: the pool's member SET              <base>|pool
-- KEYS[2]: the staging SET, filled by the     <base>|pool:assign:<id>
--          client beforehand (may be absent when the new pool is
--          empty)
-- Returns 1. Refuses (WRONGTYPE) when either key holds another type; then
-- nothing is changed and the staging key is left to expire.
for i = 1, 2 do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= 'set' then
    return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('RENAME', KEYS[2], KEYS[1])
  -- RENAME carries the staging key's safety TTL over; a pool never expires.
  redis.call('PERSIST', KEYS[1])
else
  redis.call('DEL', KEYS[1])
end
return 1
