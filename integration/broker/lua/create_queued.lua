-- Create records already ``queued`` and push their broker messages, a whole chunk in one
-- script call: a message is in the queue if and only if its record exists (same Redis for
-- store and broker). What the chunk's records share is sent once: ARGV[1..15] are the number
-- of records, the TTL, the time in ms and as ISO text, the ``queued`` history entry, the
-- request, the status, the key prefixes of records and histories, the keys of the ``all`` and
-- status indexes, the key prefixes of the type and owner indexes, the time in seconds (for a
-- moving window) and the number of channels; then, per channel, its name and its ``accepted``
-- history entry; then, per record, 18 ARGV: id, type, queue, owner, channel, envelope, broker
-- message, idempotency key or '', answer, answer TTL, 'claim' or '', the request's
-- rate-limit hit: strategy or '', its two keys (the second '' but for a sliding window), the
-- limit, the window in seconds and the cost; and the key of the set of what its cause
-- caused, or '' (the link is noted only for a record created here). Keys are named here from their prefixes: like
-- the worker's scripts, this needs a single Redis.
--
-- A record's rate-limit hit is counted first, by the ``limits`` library's own algorithm for
-- the strategy (``rate_limit``, defined before this part from the library's scripts), on
-- the keys Flask-Limiter counts the same budget in: a hit over the limit records, enqueues
-- and claims nothing. With an idempotency key, the request's answer is stored in the same
-- step; a claiming record whose key is taken pushes nothing and returns what the key holds
-- (also when an earlier record of the chunk took it). One reply per record: 1 created, 0 the
-- id exists, -1 over the rate limit, or the earlier answer. The index entries, the broker
-- messages and then the answers of the created records are written at the end, one command
-- per index and per queue (a few hundred values each) rather than one per record: most of
-- the script's cost was its number of calls. Index trimming is left to the caller, once
-- per chunk. The record's fields are the store's: ``Lifecycle.create_many`` writes the same
-- record with integration/store/lua/create.lua.
local ttl, at, stamp, queued, request, status = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
  ARGV[7]
local records, histories, all, by_status = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local by_type, by_owner, seconds = ARGV[12], ARGV[13], ARGV[14]
local accepted, a = {}, 16
for c = 1, tonumber(ARGV[15]) do accepted[ARGV[a]] = ARGV[a + 1]; a = a + 2 end
-- taken: the keys this chunk completes, and their answers (written after the messages).
local replies, scored, pushed, answers, taken = {}, {}, {}, {}, {}
local function append(groups, key, first, second)
  local group = groups[key]
  if not group then group = {}; groups[key] = group end
  group[#group + 1] = first
  if second then group[#group + 1] = second end
end
for r = 1, tonumber(ARGV[1]) do
  local id, answer_key, strategy = ARGV[a], ARGV[a + 7], ARGV[a + 11]
  local reply = 1
  if strategy ~= '' and not within_limit(strategy, ARGV[a + 12], ARGV[a + 13], ARGV[a + 14],
                                          ARGV[a + 15], ARGV[a + 16], seconds) then
    reply = -1
  end
  if reply == 1 and answer_key ~= '' and ARGV[a + 10] == 'claim' then
    local earlier = taken[answer_key] or redis.call('GET', answer_key)
    if earlier then reply = earlier end
  end
  local record = records .. id
  if reply == 1 and redis.call('EXISTS', record) == 1 then reply = 0 end
  if reply == 1 then
    local kind, owner, channel = ARGV[a + 1], ARGV[a + 3], ARGV[a + 4]
    redis.call('HSET', record, 'id', id, 'type', kind, 'queue', ARGV[a + 2], 'owner', owner,
               'channel', channel, 'status', status, 'attempts', 0, 'accepted_ms', at,
               'accepted_at', stamp, 'updated_at', stamp, 'envelope', ARGV[a + 5],
               'request', request, 'generation', 1, 'queued_at', stamp)
    redis.call('EXPIRE', record, ttl)
    local history = histories .. id
    redis.call('RPUSH', history, accepted[channel], queued)
    redis.call('EXPIRE', history, ttl)
    local caused = ARGV[a + 17]
    if caused ~= '' then
      redis.call('SADD', caused, id)
      redis.call('EXPIRE', caused, ttl)
    end
    append(scored, all, at, id)
    append(scored, by_status, at, id)
    append(scored, by_type .. kind, at, id)
    append(scored, by_owner .. owner, at, id)
    append(pushed, ARGV[a + 2], ARGV[a + 6])
    if answer_key ~= '' then
      taken[answer_key] = ARGV[a + 8]
      answers[#answers + 1] = a
    end
  end
  replies[r] = reply
  a = a + 18
end
-- unpack() is bounded by Lua's C stack (8000 values): at most 1000 per command, an even
-- number, so that a score stays with its member.
local function in_slices(command, groups)
  for key, values in pairs(groups) do
    for first = 1, #values, 1000 do
      redis.call(command, key, unpack(values, first, math.min(first + 999, #values)))
    end
  end
end
in_slices('ZADD', scored)
in_slices('LPUSH', pushed)
-- An idempotency key holds its answer only once the answer's message is in the queue.
for _, at_arg in ipairs(answers) do
  redis.call('SET', ARGV[at_arg + 7], ARGV[at_arg + 8], 'EX', ARGV[at_arg + 9])
end
return replies
