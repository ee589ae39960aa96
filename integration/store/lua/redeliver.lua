-- The reconciler sends a message nobody holds back through the due set (the loop that
-- re-enqueues retries publishes it): due now unless a wait is already parked, noted in the
-- history, ``updated_at`` moved so the next pass sees a fresh record. Nothing happens when
-- the record changed since the reconciler read it (ARGV[5], its ``updated_at``).
local current = redis.call('HMGET', KEYS[1], 'status', 'updated_at')
if current[1] ~= ARGV[4] or current[2] ~= ARGV[5] then return 0 end
redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[6])
return 1
