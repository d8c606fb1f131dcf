-- batchend: a piece (see internal/luascript) of finish.lua and drop.lua.
--
-- batchend(now, retain) ends the batch once an item left its pending SET
-- and none is left: it records finished_ms = now in the batch's meta HASH
-- and, when retain (ms, as the script got it) is above 0, lets the batch's
-- five keys expire that long after. KEYS[2..6] are the batch's pending,
-- done and failed SETs, failure count and meta HASHes, as every batch
-- script takes them.
local function batchend(now, retain)
  if redis.call('SCARD', KEYS[2]) ~= 0 then
    return
  end
  redis.call('HSET', KEYS[6], 'finished_ms', now)
  retain = tonumber(retain)
  if retain > 0 then
    for i = 2, 6 do
      redis.call('PEXPIRE', KEYS[i], retain)
    end
  end
end
