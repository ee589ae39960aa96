"""The status store: one Redis hash per message, its history, time indexes and the event log.

Keys (prefix ``INTEGRATION_KEY_PREFIX``): ``msg:<id>`` (hash), ``hist:<id>`` (list),
``idx:all`` / ``idx:type:<type>`` / ``idx:status:<status>`` / ``idx:owner:<owner>`` (sorted
sets scored by acceptance
time), ``events`` (stream). Transitions are Lua scripts so that the status, its history and
the indexes change together. Needs a single Redis (not Cluster): scripts name index keys.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from typing import Any, cast

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from integration.messages.status import Status
from integration.store.connections import OwnConnectionScript, execute_loading, own_connections

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[3])
for i = 3, 6 do
  redis.call('ZADD', KEYS[i], ARGV[2], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[5])
end
return 1
"""

# Create records already ``queued`` and push their broker messages, a whole chunk in one
# script call: a message is in the queue if and only if its record exists (same Redis for
# store and broker). What the chunk's records share is sent once: ARGV[1..14] are the number
# of records, the TTL, the time in ms and as ISO text, the ``queued`` history entry, the
# request, the status, the key prefixes of records and histories, the keys of the ``all`` and
# status indexes, the key prefixes of the type and owner indexes, and the number of channels;
# then, per channel, its name and its ``accepted`` history entry; then, per record, 11 ARGV:
# id, type, queue, owner, channel, envelope, broker message, idempotency key or '', answer,
# answer TTL, 'claim' or ''. Keys are named here from their prefixes: like the worker's
# scripts, this needs a single Redis. With an idempotency key, the request's answer is
# stored in the same step; a claiming record whose key is taken pushes nothing and returns
# what the key holds (also when an earlier record of the chunk took it). One reply per
# record: 1 created, 0 the id exists, or the earlier answer. The index entries, the broker
# messages and then the answers of the created records are written at the end, one command
# per index and per queue (a few hundred values each) rather than one per record: most of
# the script's cost was its number of calls. Index trimming is left to the caller, once
# per chunk.
_CREATE_QUEUED = """
local ttl, at, stamp, queued, request, status = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
  ARGV[7]
local records, histories, all, by_status = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local by_type, by_owner = ARGV[12], ARGV[13]
local accepted, a = {}, 15
for c = 1, tonumber(ARGV[14]) do accepted[ARGV[a]] = ARGV[a + 1]; a = a + 2 end
-- taken: the keys this chunk completes, and their answers (written after the messages).
local replies, scored, pushed, answers, taken = {}, {}, {}, {}, {}
local function append(groups, key, first, second)
  local group = groups[key]
  if not group then group = {}; groups[key] = group end
  group[#group + 1] = first
  if second then group[#group + 1] = second end
end
for r = 1, tonumber(ARGV[1]) do
  local id, answer_key = ARGV[a], ARGV[a + 7]
  local reply = 1
  if answer_key ~= '' and ARGV[a + 10] == 'claim' then
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
  a = a + 11
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
"""

_DISCARD = """
if redis.call('HGET', KEYS[1], 'request') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
for i = 3, #KEYS do redis.call('ZREM', KEYS[i], ARGV[2]) end
return 1
"""

# A message's entry moves from its old status's index to its new one (scored by acceptance
# time), and the new index is trimmed to the retention cutoff. Shared by the scripts below.
_MOVE_INDEX = """
local function move_index(prefix, id, old, new, score, cutoff)
  redis.call('ZREM', prefix .. old, id)
  redis.call('ZADD', prefix .. new, score, id)
  redis.call('ZREMRANGEBYSCORE', prefix .. new, '-inf', '(' .. cutoff)
end
"""

_TRANSITION = _MOVE_INDEX + """
local old = redis.call('HGET', KEYS[1], 'status')
if not old then return {-1, ''} end
if ARGV[5] ~= '' then
  local allowed = false
  for s in string.gmatch(ARGV[5], '[^,]+') do
    if s == old then allowed = true end
  end
  if not allowed then return {0, old} end
end
if #ARGV >= 10 then redis.call('HSET', KEYS[1], unpack(ARGV, 10)) end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if ARGV[7] == '1' then attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
redis.call('RPUSH', KEYS[2], ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if old ~= ARGV[2] then
  move_index(ARGV[8], ARGV[1], old, ARGV[2], redis.call('HGET', KEYS[1], 'accepted_ms'), ARGV[9])
end
return {1, old, attempts}
"""

# Replay a dead message: a new delivery generation with fresh attempts; the old outcome stays
# in the history. Returns the new generation, or 0 if the message is not dead (replayed once).
_REPLAY = """
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
"""

# Take up to ARGV[2] messages that are due, pushing each one's due time ARGV[3] ms ahead as a
# lease: if the taker dies before re-enqueueing, the message becomes due again.
_TAKE_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local lease = tonumber(ARGV[1]) + tonumber(ARGV[3])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], lease, id) end
return {lease, ids}
"""

# Remove a due entry only if it is still the lease we took: a new wait scheduled meanwhile
# (the message failed again) must survive.
_RELEASE_DUE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""

# A delivery's first step, in one round trip: read what it needs of the record, claim the
# message's current generation and, with ARGV[6] = '1', move it to ``processing`` (one more
# attempt). Returns {-1} without a record, {0, state} when the status is not startable,
# {2, state, claim ttl ms} when another delivery holds the claim, {1, state, attempts} when
# claimed (attempts 0 when not started). ARGV[9] is the history entry without its closing
# brace, which the generation completes. The claim key is named here from its prefix
# ARGV[2]: like the index keys, it needs a single Redis.
_BEGIN = _MOVE_INDEX + """
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
"""

# A delivery's last step, in one round trip: the final status (as _TRANSITION without a
# precondition; ARGV[14] field/value items follow it), its result event in the event log and
# the history, the event parked in the outbox when ARGV[11] (its due time) is given, and the
# claim released when ARGV[12] (its holder) still holds it. With ARGV[13], nothing is
# written unless KEYS[6] still holds that value ('-' for no value): the caller chose the
# outbox from a cached subscription list of that version. A record deleted meanwhile is not
# written again (a partial hash without a TTL would stay forever): the event still goes to
# the event log, but not to the outbox, which reads it from the record. After the fields,
# the deliveries of the event that ran inline (see ``finish``), each recorded succeeded
# unless it has a record already. Returns {-2, current value} then, else {1, previous
# status or ''}.
_FINISH = _MOVE_INDEX + """
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
if ARGV[12] ~= '' and redis.call('GET', KEYS[5]) == ARGV[12] then
  redis.call('DEL', KEYS[5])
end
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
"""

# A claim's lease renewed by its holder while the handler runs; 0 when the claim lapsed or
# another delivery holds it.
_RENEW_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# The reconciler sends a message nobody holds back through the due set (the loop that
# re-enqueues retries publishes it): due now unless a wait is already parked, noted in the
# history, ``updated_at`` moved so the next pass sees a fresh record. Nothing happens when
# the record changed since the reconciler read it (ARGV[5], its ``updated_at``).
_REDELIVER = """
local current = redis.call('HMGET', KEYS[1], 'status', 'updated_at')
if current[1] ~= ARGV[4] or current[2] ~= ARGV[5] then return 0 end
redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[6])
return 1
"""

#: Fields holding JSON documents rather than plain strings.
_JSON_FIELDS = ("envelope", "result", "error", "last_error", "hold", "event")
_INT_FIELDS = ("attempts", "accepted_ms", "generation", "inline")
#: Which timestamp field each status sets (the rest set ``<status>_at``).
_TIMESTAMP_FIELD = {
    Status.PROCESSING: "started_at",
    Status.SUCCEEDED: "finished_at",
    Status.DEAD: "finished_at",
}
#: How many index entries one list request examines before it returns a cursor.
_SCAN_BUDGET = 2000


def now_ms() -> int:
    return int(time.time() * 1000)


@lru_cache(maxsize=256)  # a batch's records share their timestamps
def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class NewRecord:
    """What the store needs to create a message's status record."""

    id: str
    type: str
    queue: str
    envelope: Mapping[str, Any]
    owner: str
    channel: str
    status: Status = Status.ACCEPTED

    @cached_property
    def envelope_json(self) -> str:
        """The envelope as stored and as sent in the broker message (encoded once)."""
        return orjson.dumps(self.envelope).decode()


@dataclass(frozen=True)
class IdempotentAnswer:
    """An idempotency key to complete with ``value`` (kept ``ttl`` seconds) once the
    request's message is enqueued."""

    key: str
    value: str
    ttl: int
    #: The key was not reserved beforehand: the transaction takes it only if it is free, and
    #: otherwise enqueues nothing and reports what the key holds (``EarlierAnswer``).
    claim: bool = False


@dataclass(frozen=True)
class EarlierAnswer:
    """What an idempotency key held when a claiming transaction found it taken."""

    value: str


@dataclass(frozen=True)
class DeliveryState:
    status: str | None
    generation: int
    released: bool
    channel: str
    accepted: float | None  # epoch seconds
    queued: float | None
    owner: str = "direct"


@dataclass(frozen=True)
class InlineDelivery:
    """A delivery that ran in the worker that finished its cause: what its record keeps
    (its envelope names the event by id rather than carrying it)."""

    id: str
    type: str
    queue: str
    envelope: Mapping[str, Any]
    result: Mapping[str, Any]


@dataclass(frozen=True)
class LedgerEntry:
    """What the reconciler reads of a record that is not final."""

    id: str
    type: str
    status: str
    generation: int
    queue: str
    updated_at: str
    updated_ms: int
    task_id: str  # the Celery task id of the last delivery that started ('' before one)


@dataclass(frozen=True)
class Transition:
    """The outcome of a transition: whether it applied, the status it found, the attempts."""

    applied: bool
    previous: str | None
    attempts: int = 0


@dataclass(frozen=True)
class Begun:
    """What a delivery's first step found and did (``StatusStore.begin``)."""

    state: DeliveryState | None  # None: the message has no record
    claimed: bool = False
    claim_remaining: float = 0.0  # seconds, when another delivery holds the claim
    started: Transition | None = None  # the move to processing, when asked for and claimed


class StatusStore:
    """Status, history and listing of messages, kept for ``ttl`` seconds after the last change."""

    def __init__(self, client: redis.Redis, prefix: str, ttl: int, events_maxlen: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.events_maxlen = events_maxlen
        self._create = client.register_script(_CREATE)
        # The scripts a worker's delivery runs on their own (not in a pipeline) use their
        # own connections: half the client-side CPU of a call through the client.
        self._transition = OwnConnectionScript(client.register_script(_TRANSITION))
        self._discard = client.register_script(_DISCARD)
        self._take_due = OwnConnectionScript(client.register_script(_TAKE_DUE))
        self._release_due = OwnConnectionScript(client.register_script(_RELEASE_DUE))
        # For the outbox clearing of each consumed event, and the gateway's enqueue.
        self._own = own_connections(client)
        self._replay = client.register_script(_REPLAY)
        self._create_queued = client.register_script(_CREATE_QUEUED)
        self._begin = OwnConnectionScript(client.register_script(_BEGIN))
        self._renew_claim = OwnConnectionScript(client.register_script(_RENEW_CLAIM))
        self._redeliver = client.register_script(_REDELIVER)
        self._finish = OwnConnectionScript(client.register_script(_FINISH))

    # -- keys ---------------------------------------------------------------------------
    def _record_key(self, message_id: str) -> str:
        return f"{self.prefix}:msg:{message_id}"

    def _history_key(self, message_id: str) -> str:
        # Its own namespace: ids may contain ':', so "msg:<id>:history" could be another id.
        return f"{self.prefix}:hist:{message_id}"

    def _caused_key(self, message_id: str) -> str:
        return f"{self.prefix}:caused:{message_id}"

    def caused_by(self, message_id: str) -> list[str]:
        return sorted(m.decode() for m in cast(set[bytes],
                                               self.client.smembers(self._caused_key(message_id))))

    def _index_key(self, kind: str, value: str = "") -> str:
        return f"{self.prefix}:idx:{kind}" + (f":{value}" if value else "")

    @property
    def events_key(self) -> str:
        return f"{self.prefix}:events"

    def _cutoff(self, at_ms: int) -> int:
        return at_ms - self.ttl * 1000

    # -- writes -------------------------------------------------------------------------
    def create_many(self, records: Sequence[NewRecord], request: str = "") -> list[bool]:
        """Create records in one transaction; False where a record with that id exists.

        ``request`` marks the records as this call's, so that ``discard_many`` removes only
        them (never a record another request created under the same id).
        """
        if not records:
            return []
        at = now_ms()
        pipe = self.client.pipeline(transaction=True)
        positions: list[int] = []
        for record in records:
            fields = self._fields(record, record.status, at, request)
            flat: list[Any] = [item for pair in fields.items() for item in pair]
            entry = _history_entry(record.status, at, {"channel": record.channel})
            for command in self._cause_links(record):
                pipe.execute_command(*command)
            positions.append(len(pipe.command_stack))
            self._create(
                keys=self._new_record_keys(record, record.status),
                args=[record.id, at, self.ttl, entry, self._cutoff(at), *flat],
                client=pipe,
            )
        replies = pipe.execute()
        return [bool(replies[i]) for i in positions]

    def create_queued_many(self, records: Sequence[NewRecord], messages: Sequence[str],
                           request: str = "",
                           answers: Sequence[IdempotentAnswer | None] = ()
                           ) -> list[bool | EarlierAnswer]:
        """Create ``queued`` records and push each one's broker message (``messages[i]`` to
        ``records[i].queue``) in one transaction: one round trip for the whole chunk, and no
        message without its record. False where a record with that id exists (its message is
        not pushed). ``answers[i]``, when given, completes an idempotency key with the answer
        to the request of ``records[i]``, only if its message was pushed; a claiming answer
        whose key is already taken pushes nothing and gives ``EarlierAnswer`` in its place.
        Only for a broker on this store's Redis database."""
        if not records:
            return []
        at = now_ms()
        answers = answers or [None] * len(records)
        channels = {r.channel for r in records}
        every, queued = self._index_key("all"), self._index_key("status", str(Status.QUEUED))
        args: list[Any] = [
            len(records), self.ttl, at, iso(at), _history_entry(Status.QUEUED, at, None),
            request, str(Status.QUEUED), self._record_key(""), self._history_key(""),
            every, queued, self._index_key("type") + ":", self._index_key("owner") + ":",
            len(channels)]
        for channel in channels:
            args += [channel, _history_entry(Status.ACCEPTED, at, {"channel": channel})]
        # The indexes this chunk adds to, trimmed once each below.
        indexes = {every, queued,
                   *(self._index_key("type", kind) for kind in {r.type for r in records}),
                   *(self._index_key("owner", owner) for owner in {r.owner for r in records})}
        for record, message, answer in zip(records, messages, answers, strict=True):
            args += [record.id, record.type, record.queue, record.owner, record.channel,
                     record.envelope_json, message]
            args += ([answer.key, answer.value, answer.ttl, "claim" if answer.claim else ""]
                     if answer is not None else ["", "", 0, ""])

        commands = [link for record in records for link in self._cause_links(record)]
        position = len(commands)
        commands.append(("EVALSHA", self._create_queued.sha, 0, *args))
        cutoff = f"({self._cutoff(at)}"
        commands += [("ZREMRANGEBYSCORE", index, "-inf", cutoff) for index in sorted(indexes)]

        def execute() -> list[Any]:
            """The script's replies; run again after NOSCRIPT, when only idempotent cause
            links and trims ran. On the client's own connections: this transaction is the
            one round trip of every submission."""
            return list(self._own.pipeline(commands, transaction=True)[position])

        replies = execute_loading(self.client, [_CREATE_QUEUED], execute)
        return [_created_or_earlier(reply) for reply in replies]

    def _fields(self, record: NewRecord, status: Status, at: int,
                request: str) -> dict[str, Any]:
        return {
            "id": record.id,
            "type": record.type,
            "queue": record.queue,
            "owner": record.owner,
            "channel": record.channel,
            "status": str(status),
            "attempts": 0,
            "accepted_ms": at,
            "accepted_at": iso(at),
            "updated_at": iso(at),
            "envelope": record.envelope_json,
            "request": request,
            "generation": 1,
        }

    def _new_record_keys(self, record: NewRecord, status: str) -> list[str]:
        """A new record's keys: the record, its history, then its four index entries' sets
        (all, type, status, owner)."""
        return [self._record_key(record.id), self._history_key(record.id),
                self._index_key("all"), self._index_key("type", record.type),
                self._index_key("status", str(status)), self._index_key("owner", record.owner)]

    def _cause_links(self, record: NewRecord) -> list[tuple[Any, ...]]:
        """Who caused whom, for traces that follow a chain (metric -> alert -> ...)."""
        cause = record.envelope.get("causationid")
        if not isinstance(cause, str) or cause == record.id:
            return []
        return [("SADD", self._caused_key(cause), record.id),
                ("EXPIRE", self._caused_key(cause), self.ttl)]

    def transition(
        self,
        message_id: str,
        status: Status,
        *,
        allowed_from: Iterable[Status] = (),
        fields: Mapping[str, Any] | None = None,
        detail: Mapping[str, Any] | None = None,
        count_attempt: bool = False,
        pipe: redis.client.Pipeline | None = None,
    ) -> Transition | None:
        """Move a message to ``status`` if it is in one of ``allowed_from`` (any when empty)."""
        at = now_ms()
        flat = _changed_fields(status, at, fields)
        reply = self._transition(
            keys=[self._record_key(message_id), self._history_key(message_id)],
            args=[
                message_id, str(status), at, self.ttl, ",".join(map(str, allowed_from)),
                _history_entry(status, at, detail), "1" if count_attempt else "0",
                self._index_key("status") + ":", self._cutoff(at), *flat,
            ],
            client=pipe,
        )
        if pipe is not None:
            return None
        return _transition_of(reply)

    def mark_queued_many(self, message_ids: Sequence[str]) -> None:
        """Record that these messages are in the broker, unless a worker got there first."""
        if not message_ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            self.transition(message_id, Status.QUEUED, allowed_from=(Status.ACCEPTED,), pipe=pipe)
        pipe.execute()

    def discard_many(self, records: Sequence[NewRecord], request: str,
                     status: Status | None = None) -> None:
        """Remove this request's records of messages that did not reach the broker (the client
        got a 503), so that the same ids can be submitted again; ``status`` is the one they
        were created with (their record's)."""
        if not records:
            return
        pipe = self.client.pipeline(transaction=False)
        for record in records:
            self._discard(
                keys=self._new_record_keys(record, status or record.status),
                args=[request, record.id], client=pipe,
            )
        pipe.execute()

    def finish(self, message_id: str, status: Status, *, fields: Mapping[str, Any],
               topic: str, event: Mapping[str, Any], detail: Mapping[str, Any] | None = None,
               outbox_in: float | None = None, claim: tuple[int, str] | None = None,
               only_if: tuple[str, bytes | None] | None = None,
               inline: Sequence[InlineDelivery] = (), owner: str = "direct") -> bool:
        """Record the final status and its result event together (one script, one round
        trip), so no reader sees a finished message without its event.

        With ``outbox_in``, the event is also parked in the outbox: its deliveries to
        subscribers are made right after, and the outbox makes them again after
        ``outbox_in`` seconds if the process died or the broker failed in between.
        ``claim`` (generation, holder) is released if that holder still has it. With
        ``only_if`` (key, value), nothing is written unless the key still holds the value
        (None: no value); returns False then, True otherwise. ``inline``: deliveries of the
        event that already ran in this worker, recorded succeeded in the same step (they
        belong to ``owner``, and the message's trace shows them).
        """
        at = now_ms()
        flat = ["status", str(status), *_changed_fields(status, at, fields)]
        generation, holder = claim if claim is not None else (1, "")
        check = "" if only_if is None else (only_if[1] or b"-")
        reply = self._finish(
            keys=[self._record_key(message_id), self._history_key(message_id),
                  self.events_key, self.outbox_key, self._claim_key(message_id, generation),
                  only_if[0] if only_if is not None else self.events_key],
            args=[message_id, str(status), self.ttl, _history_entry(status, at, detail),
                  self._index_key("status") + ":", self._cutoff(at), topic,
                  json.dumps(event, separators=(",", ":")), self.events_maxlen,
                  _history_entry("published", now_ms(), {"topic": topic}),
                  "" if outbox_in is None else now_ms() + int(outbox_in * 1000),
                  holder, check, len(flat), *flat, *self._inline_args(message_id, owner, at,
                                                                       inline)])
        return int(reply[0]) != -2

    def _inline_args(self, cause: str, owner: str, at: int,
                     deliveries: Sequence[InlineDelivery]) -> list[Any]:
        """The finish script's arguments for the deliveries that ran inline."""
        if not deliveries:
            return []
        args: list[Any] = [
            len(deliveries), at, iso(at), owner, self._record_key(""), self._history_key(""),
            self._index_key("all"), self._index_key("status", str(Status.SUCCEEDED)),
            self._index_key("type") + ":", self._index_key("owner", owner),
            self._caused_key(cause)]
        entry = _history_entry(Status.SUCCEEDED, at, {"inline": True})
        for delivery in deliveries:
            args += [delivery.id, delivery.type, delivery.queue,
                     orjson.dumps(delivery.envelope).decode(),
                     orjson.dumps(delivery.result, default=str).decode(), entry]
        return args

    # -- the outbox of result events still to deliver --------------------------------------
    @property
    def outbox_key(self) -> str:
        return f"{self.prefix}:outbox"

    def take_outbox(self, limit: int, lease_seconds: float) -> tuple[int, list[str]]:
        """Messages whose event deliveries are overdue, leased to the caller."""
        lease, ids = self._take_due(keys=[self.outbox_key],
                                    args=[now_ms(), limit, int(lease_seconds * 1000)])
        return int(lease), [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def clear_outbox(self, message_id: str) -> None:
        self._own.execute("ZREM", self.outbox_key, message_id)

    # -- dead letters -----------------------------------------------------------------------
    def replay_many(self, message_ids: Sequence[str], by: str) -> list[int]:
        """Move dead messages back to queued as a new generation; 0 where one was not dead."""
        at = now_ms()
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            self._replay(
                keys=[self._record_key(message_id), self._history_key(message_id),
                      self._index_key("status", str(Status.DEAD)),
                      self._index_key("status", str(Status.QUEUED))],
                args=[message_id, iso(at), _history_entry("queued", at, {"replayed_by": by}),
                      self.ttl],
                client=pipe,
            )
        return [int(generation) for generation in pipe.execute()]

    def delete(self, message_id: str) -> bool:
        """Remove a message's record, history and index entries for good."""
        record = self.client.hmget(self._record_key(message_id), ["type", "status", "owner"])
        message_type, status, owner = (v.decode() if v else "" for v in cast(list, record))
        if not status:
            return False
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self._record_key(message_id), self._history_key(message_id))
        pipe.zrem(self._index_key("all"), message_id)
        pipe.zrem(self._index_key("type", message_type), message_id)
        pipe.zrem(self._index_key("status", status), message_id)
        pipe.zrem(self._index_key("owner", owner), message_id)
        pipe.zrem(self.due_key, message_id)
        pipe.execute()
        return True

    # -- retries parked outside the broker ---------------------------------------------------
    @property
    def due_key(self) -> str:
        return f"{self.prefix}:due"

    def schedule(self, message_id: str, status: Status, due_in: float, *,
                 fields: Mapping[str, Any], detail: Mapping[str, Any] | None = None) -> None:
        """Move a message to ``status`` (retrying, deferred) and park it until it is due.

        Long waits never sit in the broker, where a countdown past the visibility timeout
        would run the task twice (celery #2599).
        """
        pipe = self.client.pipeline(transaction=True)
        self.transition(message_id, status, fields=fields, detail=detail, pipe=pipe)
        pipe.zadd(self.due_key, {message_id: now_ms() + int(due_in * 1000)})
        pipe.execute()

    def hold_back(self, message_id: str, due_in: float, detail: Mapping[str, Any]) -> None:
        """Park a delivery without changing its status (its claim is held elsewhere)."""
        at = now_ms()
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(self._history_key(message_id), _history_entry("held back", at, detail))
        pipe.zadd(self.due_key, {message_id: at + int(due_in * 1000)})
        pipe.execute()

    def take_due(self, limit: int, lease_seconds: float) -> tuple[int, list[str]]:
        """Ids whose wait is over, leased to the caller until the returned score."""
        lease, ids = self._take_due(keys=[self.due_key],
                                    args=[now_ms(), limit, int(lease_seconds * 1000)])
        return int(lease), [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def release_due(self, message_id: str, lease: int) -> None:
        self._release_due(keys=[self.due_key], args=[message_id, lease])

    # -- delivery claims ---------------------------------------------------------------------
    def _claim_prefix(self, message_id: str) -> str:
        """A message's claim keys without the generation (the begin script completes it)."""
        return f"{self.prefix}:claim:{message_id}:"

    def _claim_key(self, message_id: str, generation: int) -> str:
        return f"{self._claim_prefix(message_id)}{generation}"

    def release_claim(self, message_id: str, generation: int, holder: str) -> None:
        key = self._claim_key(message_id, generation)
        if self.client.get(key) == holder.encode():
            self.client.delete(key)

    def renew_claim(self, message_id: str, generation: int, holder: str,
                    lease_seconds: float) -> bool:
        """Extend ``holder``'s claim by ``lease_seconds``; False when it no longer holds it."""
        return bool(self._renew_claim(keys=[self._claim_key(message_id, generation)],
                                      args=[holder, int(lease_seconds * 1000)]))

    # -- the ledger, as the reconciler reads it -----------------------------------------------
    def unfinished(self, statuses: Iterable[Status], accepted_before_ms: int,
                   limit: int) -> list[str]:
        """Ids of records in ``statuses`` accepted before the given time, oldest first, at
        most ``limit`` per status."""
        pipe = self.client.pipeline(transaction=False)
        for status in statuses:
            pipe.zrangebyscore(self._index_key("status", str(status)), "-inf",
                               accepted_before_ms, start=0, num=limit)
        return [member.decode() for members in pipe.execute() for member in members]

    def ledger_entries(self, message_ids: Sequence[str]) -> list[LedgerEntry]:
        """The records of ``message_ids`` that still exist."""
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.hmget(self._record_key(message_id), ["type", "status", "generation", "queue",
                                                      "updated_at", "task_id"])
        entries = []
        for message_id, values in zip(message_ids, pipe.execute(), strict=True):
            kind, status, generation, queue, updated, task_id = (
                v.decode() if v else "" for v in values)
            if not status:
                continue
            entries.append(LedgerEntry(
                id=message_id, type=kind, status=status, generation=int(generation or 1),
                queue=queue, updated_at=updated, task_id=task_id,
                updated_ms=int(datetime.fromisoformat(updated).timestamp() * 1000)
                if updated else 0))
        return entries

    def held_in_store(self, entries: Sequence[LedgerEntry]) -> tuple[set[str], set[str]]:
        """Which of ``entries`` hold a live claim on their generation, and which wait in
        the due set."""
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            pipe.exists(self._claim_key(entry.id, entry.generation))
            pipe.zscore(self.due_key, entry.id)
        replies = pipe.execute()
        claimed = {e.id for e, reply in zip(entries, replies[0::2], strict=True) if reply}
        due = {e.id for e, reply in zip(entries, replies[1::2], strict=True)
               if reply is not None}
        return claimed, due

    def statuses(self, message_ids: Sequence[str]) -> dict[str, str | None]:
        """Each message's status (None when it has no record), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.hget(self._record_key(message_id), "status")
        return {message_id: status.decode() if status else None
                for message_id, status in zip(message_ids, pipe.execute(), strict=True)}

    def redeliver(self, entry: LedgerEntry, detail: Mapping[str, Any]) -> bool:
        """Send a message that nothing holds back through the due set; False when its record
        changed since ``entry`` was read (something holds it after all)."""
        at = now_ms()
        return bool(self._redeliver(
            keys=[self._record_key(entry.id), self._history_key(entry.id), self.due_key],
            args=[entry.id, at, iso(at), entry.status, entry.updated_at,
                  _history_entry("reconciled", at, detail)]))

    def delivery_state(self, message_id: str) -> DeliveryState:
        """What a delivery needs to know about its message, in one round trip."""
        return _delivery_state(cast(list[bytes | None], self.client.hmget(
            self._record_key(message_id),
            ["status", "generation", "released_by", "channel", "accepted_ms", "queued_at",
             "owner"])))

    def begin(self, message_id: str, holder: str, lease_seconds: int, *,
              startable: Iterable[Status], start: bool = False,
              fields: Mapping[str, Any] | None = None,
              detail: Mapping[str, Any] | None = None) -> Begun:
        """A delivery's first step, in one round trip: the delivery state, the claim of the
        message's current generation for ``lease_seconds`` if its status is in
        ``startable``, and with ``start`` the move to ``processing`` (one more attempt;
        ``fields`` set, ``detail`` and the generation in the history entry)."""
        at = now_ms()
        flat = ["status", str(Status.PROCESSING), *_changed_fields(Status.PROCESSING, at, fields)]
        entry = _history_entry(Status.PROCESSING, at, detail)
        reply = self._begin(
            keys=[self._record_key(message_id), self._history_key(message_id)],
            args=[message_id, self._claim_prefix(message_id), holder, lease_seconds,
                  ",".join(map(str, startable)), "1" if start else "0",
                  str(Status.PROCESSING), self.ttl, entry[:-1] + ',"generation":',
                  self._index_key("status") + ":", self._cutoff(at), *flat])
        code = int(reply[0])
        if code == -1:
            return Begun(None)
        state = _delivery_state(reply[1])
        if code == 0:
            return Begun(state)
        if code == 2:
            return Begun(state, claim_remaining=max(int(reply[2]), 0) / 1000)
        attempts = int(reply[2])
        return Begun(state, claimed=True,
                     started=Transition(True, state.status, attempts) if start else None)

    def recorded_envelope(self, message_id: str) -> tuple[str | None, dict[str, Any] | None]:
        """The channel and the envelope recorded for a message (None, None without one)."""
        channel, envelope = cast(list[bytes | None], self.client.hmget(
            self._record_key(message_id), ["channel", "envelope"]))
        return (channel.decode() if channel else None,
                orjson.loads(envelope) if envelope else None)

    def status_of(self, message_id: str) -> str | None:
        value = cast(bytes | None, self.client.hget(self._record_key(message_id), "status"))
        return value.decode() if value is not None else None

    def link_targets(self, message_ids: Sequence[str]) -> dict[str, tuple[str, str] | None]:
        """Each message's (owner, type), None where it has no record (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.hmget(self._record_key(message_id), ["owner", "type"])
        return {message_id: (owner.decode(), kind.decode() if kind else "") if owner else None
                for message_id, (owner, kind) in zip(message_ids, pipe.execute(), strict=True)}

    def owners(self, message_ids: Sequence[str]) -> dict[str, str | None]:
        """Who submitted each message (None once its record has expired), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.hget(self._record_key(message_id), "owner")
        return {message_id: owner.decode() if owner else None
                for message_id, owner in zip(message_ids, pipe.execute(), strict=True)}

    def get(self, message_id: str) -> dict[str, Any] | None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self._record_key(message_id))
        pipe.lrange(self._history_key(message_id), 0, -1)
        raw, history = pipe.execute()
        if not raw:
            return None
        record = _decode_record(raw)
        record["history"] = [json.loads(entry) for entry in history]
        return record

    def list(
        self,
        *,
        type: str | None = None,
        status: str | None = None,
        owner: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Most recent first, paged by an opaque cursor ``<score>:<id>``.

        Walks the index of the first filter given (owner, status, type) and checks the others
        on each record.
        """
        filters = {k: v for k, v in (("owner", owner), ("status", status), ("type", type))
                   if v is not None}
        kind = next(iter(filters), "all")
        index = self._index_key(kind, filters[kind]) if filters else self._index_key("all")
        max_score, after_id = _parse_cursor(cursor)
        if until_ms is not None and (max_score == "+inf" or until_ms < max_score):
            max_score, after_id = until_ms, None
        min_score: Any = since_ms if since_ms is not None else "-inf"
        found: list[dict[str, Any]] = []
        scanned = 0
        offset = 0
        stale: list[str] = []
        seen: set[str] = set()
        last: tuple[int, str] | None = None
        while len(found) < limit and scanned < _SCAN_BUDGET:
            # Walk down from the cursor; a batch's messages share one score, so members with
            # the cursor's score are ordered by id (descending) and skipped up to the cursor.
            batch = cast(list[tuple[bytes, float]], self.client.zrevrangebyscore(
                index, max_score, min_score, start=offset, num=limit + 50, withscores=True
            ))
            if not batch:
                last = None
                break
            if max_score == "+inf":
                # Later pages are read by offset: messages accepted meanwhile (higher scores)
                # would shift it and show a member twice. The walk stays below this page's top.
                max_score = int(batch[0][1])
            offset += len(batch)
            candidates = []
            for member, score in batch:
                member_id = member.decode()
                if after_id is not None and int(score) == max_score and member_id >= after_id:
                    continue
                if member_id in seen:  # one accepted within the top page's millisecond
                    continue
                seen.add(member_id)
                candidates.append((member_id, int(score)))
            pipe = self.client.pipeline(transaction=False)
            for member_id, _ in candidates:
                pipe.hgetall(self._record_key(member_id))
            for (member_id, score), raw in zip(candidates, pipe.execute(), strict=True):
                scanned += 1
                last = (score, member_id)
                if not raw:
                    stale.append(member_id)  # expired record: drop its index entry
                    continue
                record = _decode_record(raw)
                if all(record.get(k) == v for k, v in filters.items()):
                    found.append(record)
                    if len(found) == limit:
                        break
        if stale:
            self.client.zrem(index, *stale)
        return found, (f"{last[0]}:{last[1]}" if last else None)

    def count(self, *, status: str | None = None, type: str | None = None) -> tuple[int, bool]:
        """How many messages an index holds (exact when only one filter is given)."""
        if status and type:
            return cast(int, self.client.zcard(self._index_key("status", status))), False
        key = (self._index_key("status", status) if status else
               self._index_key("type", type) if type else self._index_key("all"))
        return cast(int, self.client.zcard(key)), True

    def ping(self) -> bool:
        return bool(self.client.ping())


#: Fields a record keeps for the store's own use, never shown.
INTERNAL_FIELDS = ("accepted_ms", "request", "event")


#: Kept in the errors of records written before tracebacks went to the worker's log only.
_LOG_ONLY = "traceback"


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The record as the API and CLI show it: no internal fields, and no error traceback
    (a record written by an earlier version may hold one)."""
    shown = {k: v for k, v in record.items() if k not in INTERNAL_FIELDS}
    for name in ("error", "last_error"):
        if isinstance(shown.get(name), dict):
            shown[name] = _without_traceback(shown[name])
    for name in ("history", "attempt_errors"):
        if isinstance(shown.get(name), list):
            shown[name] = [_without_traceback(entry) for entry in shown[name]]
    return shown


def _without_traceback(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    cleaned = {k: v for k, v in value.items() if k != _LOG_ONLY}
    if isinstance(cleaned.get("error"), dict):
        cleaned["error"] = _without_traceback(cleaned["error"])
    return cleaned


def _created_or_earlier(reply: Any) -> bool | EarlierAnswer:
    if isinstance(reply, bytes | str):
        return EarlierAnswer(reply.decode() if isinstance(reply, bytes) else reply)
    return bool(reply)


_AS_STDLIB = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def _changed_fields(status: Status, at_ms: int, fields: Mapping[str, Any] | None) -> list[Any]:
    """The field/value pairs a move to ``status`` writes: its timestamp, ``updated_at`` and
    ``fields`` (JSON documents encoded), flattened for HSET."""
    flat: list[Any] = [_TIMESTAMP_FIELD.get(status, f"{status}_at"), iso(at_ms),
                       "updated_at", iso(at_ms)]
    for name, value in (fields or {}).items():
        flat += [name, json.dumps(value) if name in _JSON_FIELDS else value]
    return flat


def _history_entry(status: str, at_ms: int, detail: Mapping[str, Any] | None) -> str:
    entry: dict[str, Any] = {"status": str(status), "at": iso(at_ms)}
    if detail:
        entry.update(detail)
    # As json.dumps(..., default=str) writes it (datetimes through str too), several times
    # faster: every message writes two or more of these.
    return orjson.dumps(entry, default=str, option=_AS_STDLIB).decode()


def _delivery_state(values: Sequence[bytes | None]) -> DeliveryState:
    status, generation, released, channel, accepted_ms, queued_at, owner = (
        v.decode() if v else None for v in values)
    return DeliveryState(
        status=status, generation=int(generation) if generation else 1,
        released=bool(released), channel=channel or "direct",
        accepted=int(accepted_ms) / 1000 if accepted_ms else None,
        queued=datetime.fromisoformat(queued_at).timestamp() if queued_at else None,
        owner=owner or "direct")


def _transition_of(reply: Any) -> Transition | None:
    code, previous, *rest = reply
    if code == -1:
        return None
    previous_text = previous.decode() if isinstance(previous, bytes) else previous
    return Transition(applied=code == 1, previous=previous_text or None,
                      attempts=int(rest[0]) if rest else 0)


def _decode_record(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in raw.items():
        name, text = key.decode(), value.decode()
        if name in _JSON_FIELDS:
            record[name] = json.loads(text)
        elif name in _INT_FIELDS:
            record[name] = int(text)
        else:
            record[name] = text
    return record


def _parse_cursor(cursor: str | None) -> tuple[Any, str | None]:
    if not cursor:
        return "+inf", None
    score, _, member = cursor.partition(":")
    try:
        return int(score), member or None
    except ValueError:
        raise ValueError("invalid cursor") from None


def store_from_settings(settings: Any) -> StatusStore:
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.publish_timeout_seconds,
        socket_connect_timeout=settings.publish_timeout_seconds,
        health_check_interval=30,
        # No silent retries: a write either lands once or fails to the caller, whose own
        # policy (503 at the gateway, a task retry in the worker) decides what happens next.
        retry=Retry(NoBackoff(), 0),
    )
    return StatusStore(client, settings.key_prefix, settings.status_ttl_seconds,
                       settings.events_stream_maxlen)
