-- batchend: a piece (see internal/luascript) of finish.lua and drop.lua.
--
-- batchend(now, retain) ends the batch once an item left its pending SET
-- and none is left: it records finished_ms = now in the batch's meta HASH
-- and, when retain (ms, as the script got it) is above 0, lets the batch's
-- six keys expire that long after. KEYS[2..6] are the batch's pending,
-- done and failed SETs, failure count and meta HASHes, and KEYS[10] its
-- errors HASH, as every batch script that writes takes them.
local function batchend(now, retain)
  if redis.call('SCARD', KEYS[2]) ~= 0 then
    return
  end
  redis.call('HSET', KEYS[6], 'finished_ms', now)
  retain = tonumber(retain)
  if retain > 0 then
    for _, i in ipairs({2, 3, 4, 5, 6, 10}) do
      redis.call('PEXPIRE', KEYS[i], retain)
    end
  end
end
