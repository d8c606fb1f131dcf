-- rolled: a piece (see internal/luascript) of the batch scripts that
-- write (start, finish, drop).
--
-- rolled(meta, gen, now) records in a batch's meta HASH {gen, rollbacks,
-- rolled_ms} that its state went through a discontinuity of the dataset:
-- the batch was last written in generation meta.gen and the dataset is now
-- in gen. After a rollback (a restart from a snapshot, a failover that
-- lost the last writes) items recorded done just before may be pending
-- again and will run again, and the counts may have gone back; the count
-- of rollbacks is how the batch says so.
local function rolled(meta, gen, now)
  local was = tonumber(redis.call('HGET', meta, 'gen') or '0') or 0
  if was == gen then
    return
  end
  if was > 0 and gen > was then
    redis.call('HINCRBY', meta, 'rollbacks', 1)
    redis.call('HSET', meta, 'rolled_ms', now)
  end
  redis.call('HSET', meta, 'gen', gen)
end
