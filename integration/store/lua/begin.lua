-- A delivery's first step, in one round trip: read what it needs of the record, claim the
-- message's current generation and, with ARGV[6] = '1', move it to ``processing`` (one more
-- attempt). Returns {-1} without a record, {0, state} when the status is not startable,
-- {2, state, claim ttl ms} when another delivery holds the claim, {1, state, attempts} when
-- claimed (attempts 0 when not started). ARGV[9] is the history entry without its closing
-- brace, which the generation completes. The claim key is named here from its prefix
-- ARGV[2]: like the index keys, it needs a single Redis. Joined after move_index.lua.
local state = redis.call('HMGET', KEYS[1], 'status', 'generation', 'released_by', 'channel',
                         'accepted_ms', 'queued_at', 'owner')
local old = state[1]
if not old then return {-1} end
local startable = false
for s in string.gmatch(ARGV[5], '[^,]+') do
  if s == old then startable = true end
end
if not startable then return {0, state} end
local generation = state[2] or '1'
local claim = ARGV[2] .. generation
if not redis.call('SET', claim, ARGV[3], 'NX', 'EX', ARGV[4]) then
  return {2, state, redis.call('PTTL', claim)}
end
if ARGV[6] ~= '1' then return {1, state, 0} end
redis.call('HSET', KEYS[1], unpack(ARGV, 12))
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('RPUSH', KEYS[2], ARGV[9] .. generation .. '}')
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('EXPIRE', KEYS[2], ARGV[8])
if old ~= ARGV[7] then move_index(ARGV[10], ARGV[1], old, ARGV[7], state[5], ARGV[11]) end
return {1, state, attempts}
