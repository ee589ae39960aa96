-- Replay a dead message: a new delivery generation with fresh attempts; the old outcome stays
-- in the history. Returns the new generation, or 0 if the message is not dead (replayed once).
if redis.call('HGET', KEYS[1], 'status') ~= 'dead' then return 0 end
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HDEL', KEYS[1], 'error', 'result', 'topic', 'finished_at', 'last_error',
           'next_attempt_at')
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', 0, 'queued_at', ARGV[2],
           'updated_at', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local score = redis.call('HGET', KEYS[1], 'accepted_ms')
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], score, ARGV[1])
return generation
