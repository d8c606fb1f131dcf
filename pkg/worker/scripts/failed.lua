-- failed: page through a batch's failed items with their last errors.
-- uses: typecheck
-- KEYS[1]: the batch's failed SET              <base>|batch:<id>:failed
-- KEYS[2]: the batch's errors HASH             <base>|batch:<id>:errors
-- ARGV[1]: the SSCAN cursor, '0' to start      <n>
-- ARGV[2]: about how many items to return      <n>
--          (SSCAN's COUNT; the caller sends at most 1,000)
-- Returns {cursor, item, error, item, error, ...}: the next cursor ('0'
-- at the end), then each item of this page with its error ('' when none
-- was kept). As SSCAN, every item failed for the whole scan is returned at
-- least once.
-- Refuses with WRONGTYPE, naming the key, when any key holds another type.
local wrong = typecheck({'set', 'hash'})
if wrong then
  return wrong
end
local page = redis.call('SSCAN', KEYS[1], ARGV[1], 'COUNT', tonumber(ARGV[2]))
local out = {page[1]}
for _, item in ipairs(page[2]) do
  out[#out + 1] = item
  out[#out + 1] = redis.call('HGET', KEYS[2], item) or ''
end
return out
