-- acquire: hand out the item that has been available longest, as a fenced
-- lease, in one atomic step.
-- uses: clock, grant
-- KEYS[1]: the pool's member SET             <base>|pool
-- KEYS[2]: the availability index (heads)    <base>|alloc:idx
--          (item -> ms since epoch, server time, when it is/was available:
--          free since, lease deadline, or quarantine end)
-- KEYS[3]: the fencing counter STRING        <base>|alloc:fence
-- KEYS[4]: the binding HASH                  <base>|alloc:bindings
-- KEYS[5]: the waiter ZSET                   <base>|alloc:waiters
-- KEYS[6]: the foreign-lock ZSET             <base>|alloc:foreign
--          (items found held by a lock the allocator did not grant -> ms
--          when last looked at; such locks send no wake-up when removed)
-- KEYS[7]: the hand-off HASH                 <base>|alloc:reserved
-- KEYS[8]: the epoch HASH                    <base>|epoch
-- ARGV[1]: the lock key prefix               <base>:
--          (lock keys are ARGV[1] .. item)
-- ARGV[2]: owner
-- ARGV[3]: lease TTL in ms                   <ms>
-- ARGV[4]: preferred item, or ''
-- ARGV[5]: binding name, or ''
-- ARGV[6]: waiter id to register on failure, or '' (TryAcquire)
-- ARGV[7]: most candidates to examine        <n>
--          (bounded; the client sends <= 64)
-- ARGV[8]: '1' to lease only the preferred   <flag>
--          item (ARGV[4]), else ''
-- ARGV[9]: what the caller saw last of the   <known>
--          dataset: '<gen>:<at>:<id>' or '' (see epoch)
-- ARGV[10]: the longest lease TTL the        <ms>
--           caller has used, in ms
-- Returns grant's reply (grant.lua).
-- Lock keys are built from ARGV[1]: "any free item" cannot name its key up
-- front. On a Redis Cluster the pool's prefix carries a hash tag, so they
-- hash to the slot of KEYS[1] (see pkg/keyspace).
local now, now_us = clock()
return grant(
  {members = KEYS[1], index = KEYS[2], fence = KEYS[3], bindings = KEYS[4],
   waiters = KEYS[5], foreign = KEYS[6], reserved = KEYS[7], epoch = KEYS[8]},
  {prefix = ARGV[1], owner = ARGV[2], ttl = tonumber(ARGV[3]), prefer = ARGV[4],
   binding = ARGV[5], waiter = ARGV[6], budget = tonumber(ARGV[7]), only = ARGV[8],
   known = ARGV[9], longest = tonumber(ARGV[10])},
  now, now_us)
