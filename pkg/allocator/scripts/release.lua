-- release: end a lease if it is still current, make its item available at
-- once, and wake a bounded number of waiters.
-- uses: clock, free
-- KEYS[1]: the item's lock key                <base>:<item>
-- KEYS[2]: the availability index (heads)     <base>|alloc:idx
-- KEYS[3]: the waiter ZSET                    <base>|alloc:waiters
-- KEYS[4]: the hand-off HASH                  <base>|alloc:reserved
--          (waiter -> item released to it)
-- KEYS[5]: the epoch HASH                     <base>|epoch
-- KEYS[6]: the fencing counter STRING         <base>|alloc:fence
-- ARGV[1]: the lease's lock value             <owner>#<token>
-- ARGV[2]: the item                           <item>
-- ARGV[3]: wake channel prefix; a waiter      <base>|alloc:wake:
--          "<proc>:<id>" is told on the sharded channel
--          ARGV[3] .. <proc> with message <id>
-- ARGV[4]: how many live waiters to wake      <n>
-- ARGV[5]: the new availability time offset   <ms>
--          in ms (0 = free now; > 0 = quarantine: the item is
--          held by a marker lock that long)
-- ARGV[6]: the quarantine marker value
-- ARGV[7]: hand-off window in ms: the item    <ms>
--          is kept for the first woken waiter that long, so a
--          caller that loops straight back into acquire cannot
--          take it from under the waiter it just woke
-- ARGV[8]: what the caller saw last of the    <known>
--          dataset: '<gen>:<at>:<id>' or '' (see epoch)
-- ARGV[9]: the longest lease TTL the caller   <ms>
--          has used, in ms
-- Returns free's reply (free.lua).
local now, now_us = clock()
return free(
  {lock = KEYS[1], index = KEYS[2], waiters = KEYS[3], reserved = KEYS[4],
   epoch = KEYS[5], fence = KEYS[6]},
  {value = ARGV[1], item = ARGV[2], wake = ARGV[3], wakeN = tonumber(ARGV[4]),
   hold = tonumber(ARGV[5]), marker = ARGV[6], handoff = tonumber(ARGV[7]),
   known = ARGV[8], longest = tonumber(ARGV[9])},
  now, now_us)
