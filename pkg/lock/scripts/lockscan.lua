-- lockscan: one bounded step of walking the keyspace for a pool's lock keys,
-- the cheaper way to count locked members when the database holds fewer keys
-- than the pool has members.
-- KEYS[1]: the pool's member SET              <base>|pool
-- ARGV[1]: SCAN cursor ('0' to start)         <n>
-- ARGV[2]: SCAN COUNT hint (the client sends  <n>
--          at most 1000)
-- ARGV[3]: SCAN MATCH pattern: the lock key prefix, glob-escaped, then '*'
-- ARGV[4]: length of the lock key prefix,     <n>
--          '<prefix>|<suffix>:'
-- Returns {next cursor, {member whose lock key exists...}}; SCAN may return
-- a key twice, so the client deduplicates.
local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[3], 'COUNT', ARGV[2])
local keys = res[2]
local cut = tonumber(ARGV[4]) + 1
local items = {}
for i = 1, #keys do
  items[i] = string.sub(keys[i], cut)
end
local locked = {}
if #items > 0 then
  -- SCAN returns about COUNT keys, well under Lua's unpack limit.
  local member = redis.call('SMISMEMBER', KEYS[1], unpack(items))
  for i = 1, #items do
    if member[i] == 1 then
      locked[#locked + 1] = items[i]
    end
  end
end
return {res[1], locked}
