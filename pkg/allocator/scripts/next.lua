-- next: end a lease as release.lua does (or hold its item back), then hand
-- out the next item as acquire.lua does, in one step: a worker that goes
-- from one item to the next makes one round trip instead of two.
-- uses: clock, free, grant, history
-- KEYS[1]: the ended lease's lock key          <base>:<item>
-- KEYS[2]: the pool's member SET               <base>|pool
-- KEYS[3]: the availability index (heads)      <base>|alloc:idx
-- KEYS[4]: the fencing counter STRING          <base>|alloc:fence
-- KEYS[5]: the binding HASH                    <base>|alloc:bindings
-- KEYS[6]: the waiter ZSET                     <base>|alloc:waiters
-- KEYS[7]: the foreign-lock ZSET               <base>|alloc:foreign
-- KEYS[8]: the hand-off HASH                   <base>|alloc:reserved
-- KEYS[9]: the epoch HASH                      <base>|epoch
-- KEYS[10]: the per-item count HASH (the       <base>|run:failures or <base>|batch:<id>:failures
--           worker's consecutive failures: loop mode's, or a batch's)
-- KEYS[11]: the SET candidates are drawn from  <base>|pool or <base>|batch:<id>:todo
--           when ARGV[18] is '1' (a batch's pending items); the pool's
--           member SET, unread, otherwise
-- KEYS[12]: the item history HASH              <base>|hist:last
-- KEYS[13]: the item history expiry ZSET       <base>|hist:expiry
-- KEYS[14]: the ended item's stderr tail       <base>|hist:tail:<item>
-- KEYS[15]: the fleet-wide controls HASH     <base>|alloc:control
-- ARGV[1]: the ended lease's lock value        <owner>#<token>
-- ARGV[2]: the ended lease's item              <item>
-- ARGV[3]: wake channel prefix (release.lua)   <base>|alloc:wake:
-- ARGV[4]: how many live waiters to wake       <n>
-- ARGV[5]: hold the item back that many ms     <ms>
--          (0: free it at once)
-- ARGV[6]: the hold's marker value
-- ARGV[7]: hand-off window in ms (release.lua) <ms>
-- ARGV[8]: what the caller saw last of the     <known>
--          dataset: '<gen>:<at>:<id>' or '' (see epoch)
-- ARGV[9]: the longest lease TTL the caller    <ms>
--          has used, in ms
-- ARGV[10]: the ended item's count in KEYS[10]:
--           'add' one more, 'clear' it, or '' keep it
-- ARGV[11]: the lock key prefix                <base>:
-- ARGV[12]: the next lease's owner
-- ARGV[13]: the next lease's TTL in ms         <ms>
-- ARGV[14]: preferred item, or ''
-- ARGV[15]: binding name, or ''
-- ARGV[16]: most candidates to examine         <n>
-- ARGV[17]: '1' to lease only the preferred    <flag>
--           item (ARGV[14]), else ''
-- ARGV[18]: '1' to draw candidates only from   <flag>
--           KEYS[11], else ''
-- ARGV[19]: the ended run's history record (internal/history), or '' to
--           record nothing
-- ARGV[20]: the ended lease's fencing token    <token>
-- ARGV[21]: the ended run's stderr tail, or ''
-- ARGV[22]: how long the history is kept, ms   <ms>
-- Returns {ended, granted, count, empty}: free's reply (the count is
-- changed only when the lease was current), grant's reply (acquire.lua),
-- the granted item's count in KEYS[10] (0 when none or no grant), and 1
-- when nothing was granted and KEYS[11] was drawn from and is empty (else
-- 0).
-- Refuses with WRONGTYPE, naming the key, when a history key holds
-- another type; then nothing is written.
local now, now_us = clock()
local wrong, record = nil, nil
if ARGV[19] ~= '' then
  wrong, record = history({last = KEYS[12], expiry = KEYS[13], tail = KEYS[14]},
    {item = ARGV[2], token = ARGV[20], rec = ARGV[19], tail = ARGV[21], retain = ARGV[22], fenced = ''}, now)
  if wrong then
    return wrong
  end
end
local ended = free(
  {lock = KEYS[1], index = KEYS[3], waiters = KEYS[6], reserved = KEYS[8],
   epoch = KEYS[9], fence = KEYS[4]},
  {value = ARGV[1], item = ARGV[2], wake = ARGV[3], wakeN = tonumber(ARGV[4]),
   hold = tonumber(ARGV[5]), marker = ARGV[6], handoff = tonumber(ARGV[7]),
   known = ARGV[8], longest = tonumber(ARGV[9]), tally = KEYS[10], count = ARGV[10]},
  now, now_us)
if record and ended[1] == 1 then
  record() -- the lease was current: the run's result stands
end
local granted = grant(
  {members = KEYS[2], index = KEYS[3], fence = KEYS[4], bindings = KEYS[5],
   waiters = KEYS[6], foreign = KEYS[7], reserved = KEYS[8], epoch = KEYS[9], from = KEYS[11],
   control = KEYS[15]},
  {prefix = ARGV[11], owner = ARGV[12], ttl = tonumber(ARGV[13]), prefer = ARGV[14],
   binding = ARGV[15], waiter = '', budget = tonumber(ARGV[16]), only = ARGV[17],
   known = ARGV[8], longest = tonumber(ARGV[9]), from = ARGV[18]},
  now, now_us)
local count, empty = 0, 0
if granted[1] == 1 then
  count = tonumber(redis.call('HGET', KEYS[10], granted[6]) or '0') or 0
elseif ARGV[18] == '1' and redis.call('SCARD', KEYS[11]) == 0 then
  empty = 1
end
return {ended, granted, count, empty}
