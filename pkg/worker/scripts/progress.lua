-- progress: read a batch's counts at one instant.
-- uses: typecheck, counts
-- KEYS[1]: the batch's done SET                <base>|batch:<id>:done
-- KEYS[2]: the batch's failed SET              <base>|batch:<id>:failed
-- KEYS[3]: the batch's meta HASH               <base>|batch:<id>:meta
-- No ARGV.
-- Returns {} when the batch does not exist, else {total, done, failed,
-- started_ms, finished_ms, rollbacks, rolled_ms}, finished_ms 0 while
-- running; rollbacks counts the dataset discontinuities the batch's state
-- went through, the last at rolled_ms.
-- Refuses with WRONGTYPE, naming the key, when any key holds another type.
local wrong = typecheck({'set', 'set', 'hash'})
if wrong then
  return wrong
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  return {}
end
return counts(KEYS[1], KEYS[2], KEYS[3])
