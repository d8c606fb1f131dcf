-- lastrun: read an item's history at one instant.
-- uses: typecheck, clock
-- KEYS[1]: the item history HASH               <base>|hist:last
-- KEYS[2]: the item's stderr tail              <base>|hist:tail:<item>
-- ARGV[1]: the item                            <item>
-- Returns {now_ms, record, tail}: the server's time, the item's record
-- and the tail of its last failure ('' for none), as internal/history
-- encodes them.
-- Refuses with WRONGTYPE, naming the key, when any key holds another type.
local wrong = typecheck({'hash', 'string'})
if wrong then
  return wrong
end
local now = clock()
return {now, redis.call('HGET', KEYS[1], ARGV[1]) or '', redis.call('GET', KEYS[2]) or ''}
