-- A claim's lease renewed by its holder while the handler runs; 0 when the claim lapsed or
-- another delivery holds it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
