-- Remove a record, its history and its index entries, only if this request (ARGV[1])
-- created it; 0 otherwise.
if redis.call('HGET', KEYS[1], 'request') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
for i = 3, #KEYS do redis.call('ZREM', KEYS[i], ARGV[2]) end
return 1
