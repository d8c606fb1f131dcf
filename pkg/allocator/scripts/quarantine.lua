-- quarantine: make an item unavailable for a while, whoever holds it.
-- uses: clock, index
-- KEYS[1]: the item's lock key                <base>:<item>
-- KEYS[2]: the availability index (heads)     <base>|alloc:idx
-- ARGV[1]: the item                           <item>
-- ARGV[2]: how long, in ms                    <ms>
-- ARGV[3]: the quarantine marker value
-- The marker is an ordinary lock, so pkg/lock and Python users see the item
-- as held (Unavailable for timeouts shorter than the quarantine) too.
-- Returns 1.
redis.call('GET', KEYS[1]) -- refuses a non-string key with WRONGTYPE
local now = clock()
local hold = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[3], 'PX', hold)
index(KEYS[2]).set(ARGV[1], now + hold)
return 1
