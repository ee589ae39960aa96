-- Move a message to ARGV[2] if its status is one of ARGV[5] (any when empty), with the
-- field/value items from ARGV[12] on and one more attempt when ARGV[7] is '1'. With ARGV[10],
-- a delivery's holder, nothing is written unless that holder still holds the claim KEYS[3]
-- (the fence, as in finish.lua), which the move releases; with ARGV[11], the message is parked
-- in the due set KEYS[4] until that time. Returns {-1, ''} without a record, {-3, old status}
-- when fenced off, {0, old status} when it is not allowed, {1, old status, attempts} when
-- done. Joined after move_index.lua.
local old = redis.call('HGET', KEYS[1], 'status')
if not old then return {-1, ''} end
if ARGV[10] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[10] then return {-3, old} end
if ARGV[5] ~= '' then
  local allowed = false
  for s in string.gmatch(ARGV[5], '[^,]+') do
    if s == old then allowed = true end
  end
  if not allowed then return {0, old} end
end
if #ARGV >= 12 then redis.call('HSET', KEYS[1], unpack(ARGV, 12)) end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if ARGV[7] == '1' then attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
redis.call('RPUSH', KEYS[2], ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if old ~= ARGV[2] then
  move_index(ARGV[8], ARGV[1], old, ARGV[2], redis.call('HGET', KEYS[1], 'accepted_ms'), ARGV[9])
end
if ARGV[10] ~= '' then redis.call('DEL', KEYS[3]) end
if ARGV[11] ~= '' then redis.call('ZADD', KEYS[4], ARGV[11], ARGV[1]) end
return {1, old, attempts}
