-- Remove a due entry only if it is still the lease we took: a new wait scheduled meanwhile
-- (the message failed again) must survive.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
