-- counts: a piece (see internal/luascript) of progress.lua and start.lua.
--
-- counts(done, failed, meta) returns a batch's progress as the Go side
-- reads it: {total, done, failed, started_ms, finished_ms, rollbacks,
-- rolled_ms}, from its done and failed SETs and its meta HASH; a field the
-- meta lacks counts 0 (finished_ms while running, rollbacks before any).
local function counts(done, failed, meta)
  local m = redis.call('HMGET', meta, 'total', 'started_ms', 'finished_ms', 'rollbacks', 'rolled_ms')
  return {
    tonumber(m[1]) or 0,
    redis.call('SCARD', done),
    redis.call('SCARD', failed),
    tonumber(m[2]) or 0,
    tonumber(m[3]) or 0,
    tonumber(m[4]) or 0,
    tonumber(m[5]) or 0,
  }
end
