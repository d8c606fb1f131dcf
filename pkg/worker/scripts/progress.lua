-- progress: read a batch's counts at one instant.
-- KEYS[1]: the batch's done SET               <base>|batch:<id>:done
-- KEYS[2]: the batch's failed SET             <base>|batch:<id>:failed
-- KEYS[3]: the batch's meta HASH              <base>|batch:<id>:meta
-- No ARGV.
-- Returns {} when the batch does not exist, else {total, done, failed,
-- started_ms, finished_ms, rollbacks, rolled_ms}, finished_ms 0 while
-- running; rollbacks counts the dataset discontinuities the batch's state
-- went through, the last at rolled_ms.
-- Refuses with WRONGTYPE, naming the key, when any key holds another type.
local want = {'set', 'set', 'hash'}
for i = 1, #want do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= want[i] then
    return redis.error_reply('WRONGTYPE key ' .. KEYS[i] .. ' holds a ' .. t .. ', want a ' .. want[i])
  end
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  return {}
end
local m = redis.call('HMGET', KEYS[3], 'total', 'started_ms', 'finished_ms', 'rollbacks', 'rolled_ms')
return {
  tonumber(m[1]) or 0,
  redis.call('SCARD', KEYS[1]),
  redis.call('SCARD', KEYS[2]),
  tonumber(m[2]) or 0,
  tonumber(m[3]) or 0,
  tonumber(m[4]) or 0,
  tonumber(m[5]) or 0,
}
