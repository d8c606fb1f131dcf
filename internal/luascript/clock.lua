-- clock: a piece (see internal/luascript).
--
-- clock() returns the server's time (TIME) twice: in ms and in µs since
-- the Unix epoch. Scripts take time from the server, never from the
-- client, so that hosts with skewed clocks agree.
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), tonumber(t[1]) * 1000000 + tonumber(t[2])
end
