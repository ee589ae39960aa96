-- Take up to ARGV[2] messages that are due, pushing each one's due time ARGV[3] ms ahead as a
-- lease: if the taker dies before re-enqueueing, the message becomes due again.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local lease = tonumber(ARGV[1]) + tonumber(ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], lease, id) end
return {lease, ids}
