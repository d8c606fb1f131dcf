-- lastruns: read the history records of many items at one instant (a page
-- of an item table).
-- uses: typecheck, clock
-- KEYS[1]: the item history HASH               <base>|hist:last
-- ARGV[1..]: the items (the caller sends at    <item>
--          most 1,000)
-- Returns {now_ms, record, ...}: the server's time, then each item's
-- record as internal/history encodes it, '' for none.
-- Refuses with WRONGTYPE, naming the key, when the key holds another type.
local wrong = typecheck({'hash'})
if wrong then
  return wrong
end
local out = {clock()}
local recs = redis.call('HMGET', KEYS[1], unpack(ARGV))
for i = 1, #ARGV do
  out[i + 1] = recs[i] or ''
end
return out
