-- A delivery's last step, in one round trip: the final status (as transition.lua without a
-- precondition; ARGV[14] field/value items follow it), its result event in the event log and
-- the history, the event parked in the outbox when ARGV[11] (its due time) is given, and the
-- claim KEYS[5] released. ARGV[12], the delivery's holder, is its fence: nothing is written
-- unless that holder still holds the claim (a delivery whose claim lapsed may have been taken
-- over and finished by another); returns {-3, current status} then. With ARGV[13], nothing is
-- written unless KEYS[6] still holds that value ('-' for no value): the caller chose the
-- outbox from a cached subscription list of that version; returns {-2, current value} then.
-- A record deleted meanwhile is not written again (a partial hash without a TTL would stay
-- forever): the event still goes to the event log, but not to the outbox, which reads it
-- from the record. After the fields, the deliveries of the event that ran inline (see
-- ``StatusStore.finish``), each recorded succeeded unless it has a record already. Returns
-- {1, previous status or ''} when written. Joined after move_index.lua.
if ARGV[12] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[12] then
  return {-3, redis.call('HGET', KEYS[1], 'status') or ''}
end
if ARGV[13] ~= '' then
  local version = redis.call('GET', KEYS[6]) or '-'
  if version ~= ARGV[13] then return {-2, version} end
end
local fields = tonumber(ARGV[14])
local old = redis.call('HGET', KEYS[1], 'status')
if old then
  redis.call('HSET', KEYS[1], 'topic', ARGV[7], unpack(ARGV, 15, 14 + fields))
  redis.call('RPUSH', KEYS[2], ARGV[4], ARGV[10])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  if old ~= ARGV[2] then
    move_index(ARGV[5], ARGV[1], old, ARGV[2], redis.call('HGET', KEYS[1], 'accepted_ms'),
               ARGV[6])
  end
  if ARGV[11] ~= '' then
    redis.call('HSET', KEYS[1], 'event', ARGV[8])
    redis.call('ZADD', KEYS[4], ARGV[11], ARGV[1])
  end
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', 'topic', ARGV[7],
           'message_id', ARGV[1], 'event', ARGV[8])
if ARGV[12] ~= '' then redis.call('DEL', KEYS[5]) end
local a = 15 + fields
local count = tonumber(ARGV[a] or '0')
if count > 0 then
  local ttl, at, stamp, owner, records, histories = ARGV[3], ARGV[a + 1], ARGV[a + 2],
    ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local all, succeeded, by_type, by_owner, caused = ARGV[a + 6], ARGV[a + 7], ARGV[a + 8],
    ARGV[a + 9], ARGV[a + 10]
  a = a + 11
  for r = 1, count do
    local id, kind = ARGV[a], ARGV[a + 1]
    local record = records .. id
    if redis.call('EXISTS', record) == 0 then
      redis.call('HSET', record, 'id', id, 'type', kind, 'queue', ARGV[a + 2], 'owner',
                 owner, 'channel', 'event', 'status', 'succeeded', 'attempts', 1,
                 'generation', 1, 'accepted_ms', at, 'accepted_at', stamp, 'updated_at',
                 stamp, 'finished_at', stamp, 'envelope', ARGV[a + 3], 'result', ARGV[a + 4],
                 'topic', kind .. '.succeeded', 'inline', 1, 'request', '')
      redis.call('EXPIRE', record, ttl)
      redis.call('RPUSH', histories .. id, ARGV[a + 5])
      redis.call('EXPIRE', histories .. id, ttl)
      redis.call('ZADD', all, at, id)
      redis.call('ZADD', succeeded, at, id)
      redis.call('ZADD', by_type .. kind, at, id)
      redis.call('ZADD', by_owner, at, id)
      redis.call('SADD', caused, id)
    end
    a = a + 6
  end
  redis.call('EXPIRE', caused, ttl)
end
return {1, old or ''}
