-- record: record how a run of an item ended in the item's history, outside
-- a run's end (which records it in next.lua or finish.lua): a run whose
-- lease was lost, or one that ended as its pool shut down.
-- uses: clock, history
-- KEYS[1]: the item history HASH               <base>|hist:last
-- KEYS[2]: the item history expiry ZSET        <base>|hist:expiry
-- KEYS[3]: the item's stderr tail              <base>|hist:tail:<item>
-- ARGV[1]: the item                            <item>
-- ARGV[2]: the run's fencing token             <token>
-- ARGV[3]: the run's record (internal/history)
-- ARGV[4]: the run's stderr tail, or ''
-- ARGV[5]: how long the history is kept, ms    <ms>
-- Returns 1; the history keeps a record of a later run of the item (a
-- higher token) instead.
-- Refuses with WRONGTYPE, naming the key, when any key holds another type;
-- then nothing is written.
local now = clock()
local wrong, record = history({last = KEYS[1], expiry = KEYS[2], tail = KEYS[3]},
  {item = ARGV[1], token = ARGV[2], rec = ARGV[3], tail = ARGV[4], retain = ARGV[5], fenced = '1'}, now)
if wrong then
  return wrong
end
record()
return 1
