-- itemlocks: one bounded step of listing a pool's members with lock status.
-- KEYS[1]: the pool's member SET              <base>|pool
-- ARGV[1]: SSCAN cursor ('0' to start)        <n>
-- ARGV[2]: SSCAN COUNT hint (the client       <n>
--          sends at most 1000)
-- ARGV[3]: the lock key prefix                <base>:
-- Returns {next cursor, {member...}, {1 if locked else 0 ...}}.
-- Reads lock keys built from ARGV[3], for the reason given in healthcheck.lua.
local res = redis.call('SSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local members = res[2]
local flags = {}
for i = 1, #members do
  flags[i] = redis.call('EXISTS', ARGV[3] .. members[i])
end
return {res[1], members, flags}
