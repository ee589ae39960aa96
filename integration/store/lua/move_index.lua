-- A message's entry moves from its old status's index to its new one (scored by acceptance
-- time), and the new index is trimmed to the retention cutoff. The first part of the transition,
-- begin and finish scripts.
local function move_index(prefix, id, old, new, score, cutoff)
  redis.call('ZREM', prefix .. old, id)
  redis.call('ZADD', prefix .. new, score, id)
  redis.call('ZREMRANGEBYSCORE', prefix .. new, '-inf', '(' .. cutoff)
end
