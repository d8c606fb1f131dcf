-- healthcheck: one bounded step of counting a pool's locked members.
-- KEYS[1]: the pool's member SET              <base>|pool
-- ARGV[1]: SSCAN cursor ('0' to start)        <n>
-- ARGV[2]: SSCAN COUNT hint (the client       <n>
--          sends at most 1000)
-- ARGV[3]: the lock key prefix                <base>:
-- Returns {next cursor, members seen, members locked}.
-- This script reads lock keys it builds from ARGV[3] instead of taking them
-- in KEYS: a pool-wide count cannot name its keys up front, and shipping
-- every member's key name to the client and back costs more than the count.
-- Like the Python package's pool, it needs a non-cluster Redis.
local res = redis.call('SSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local members = res[2]
local locked = 0
-- EXISTS with many keys counts them natively; slices stay well under Lua's
-- unpack limit (about 8000 values).
local batch = {}
for i = 1, #members do
  batch[#batch + 1] = ARGV[3] .. members[i]
  if #batch == 1000 or i == #members then
    locked = locked + redis.call('EXISTS', unpack(batch))
    batch = {}
  end
end
return {res[1], #members, locked}
