"""The chunk enqueue script (``RecordAndEnqueue.create_queued_many``) against a Redis of its own:
what one call writes for each record, its index entries and its broker messages, at the
largest chunk the settings allow."""

from __future__ import annotations

import json

import pytest
import redis

from integration.broker.redis_enqueue import RecordAndEnqueue
from integration.ops.embedded_redis import EmbeddedRedis
from integration.store.model import EarlierAnswer, IdempotentAnswer, NewRecord
from integration.store.records import StatusStore


@pytest.fixture
def client(private_redis: EmbeddedRedis) -> redis.Redis:
    return redis.Redis(port=private_redis.port)


def record(n: int, owner: str) -> NewRecord:
    kind = ("metric", "event")[n % 2]
    return NewRecord(id=f"m{n:04d}", type=kind, queue=f"q-{kind}", owner=owner,
                     channel=("rest", "batch")[n % 2],
                     envelope={"id": f"m{n:04d}", "type": kind, "data": {"n": n}})


def test_a_chunk_of_a_thousand_writes_every_record_index_and_message(
        client: redis.Redis) -> None:
    """1,000 records of two types, owners and channels in one call (the largest
    ``publish_chunk_size``): each record, history and index entry is written, and each queue
    holds its messages in submission order, oldest at the consuming end."""
    enqueue = RecordAndEnqueue(StatusStore(client, "t", ttl=600, events_maxlen=100))
    records = [record(n, ("alice", "bob")[n // 500]) for n in range(1000)]
    messages = [f"message-{r.id}" for r in records]
    assert enqueue.create_queued_many(records, messages, "req-1") == [True] * 1000

    for kind in ("metric", "event"):
        oldest_first = [m.decode() for m in reversed(client.lrange(f"q-{kind}", 0, -1))]
        assert oldest_first == [m for r, m in zip(records, messages, strict=True) if r.type == kind]
    accepted_ms = int(client.hget("t:msg:m0000", "accepted_ms"))
    assert client.zrange("t:idx:all", 0, -1, withscores=True) == [
        (r.id.encode(), accepted_ms) for r in records]
    assert client.zcard("t:idx:status:queued") == 1000
    assert client.zcard("t:idx:type:metric") == client.zcard("t:idx:type:event") == 500
    assert client.zcard("t:idx:owner:alice") == client.zcard("t:idx:owner:bob") == 500

    sample = records[777]
    fields = {k.decode(): v.decode() for k, v in client.hgetall("t:msg:m0777").items()}
    stamp = fields["accepted_at"]
    assert fields == {
        "id": "m0777", "type": "event", "queue": "q-event", "owner": "bob", "channel": "batch",
        "status": "queued", "attempts": "0", "accepted_ms": str(accepted_ms),
        "accepted_at": stamp, "updated_at": stamp, "queued_at": stamp,
        "envelope": sample.envelope_json, "request": "req-1", "generation": "1"}
    history = [json.loads(e) for e in client.lrange("t:hist:m0777", 0, -1)]
    assert history == [{"status": "accepted", "at": stamp, "channel": "batch"},
                       {"status": "queued", "at": stamp}]
    assert 0 < client.ttl("t:msg:m0777") <= 600 and 0 < client.ttl("t:hist:m0777") <= 600


def test_existing_ids_and_taken_keys_push_nothing(client: redis.Redis) -> None:
    """A record whose id exists, or whose claiming idempotency key is taken, writes and
    pushes nothing; the others of the chunk go in, and a free key is completed."""
    enqueue = RecordAndEnqueue(StatusStore(client, "t", ttl=600, events_maxlen=100))
    first = [record(n, "alice") for n in range(3)]
    assert enqueue.create_queued_many(first, ["a0", "a1", "a2"]) == [True] * 3
    client.set("answer-taken", "earlier answer")

    again = [record(1, "alice"), record(3, "alice"), record(4, "alice")]
    answers = [None, IdempotentAnswer("answer-taken", "new", 60, claim=True),
               IdempotentAnswer("answer-free", "given", 60, claim=True)]
    replies = enqueue.create_queued_many(again, ["b1", "b3", "b4"], "req-2", answers)
    assert replies == [False, EarlierAnswer("earlier answer"), True]

    assert client.lrange("q-event", 0, -1) == [b"a1"]  # m0001 was not pushed again
    assert client.lrange("q-metric", 0, -1) == [b"b4", b"a2", b"a0"]
    assert not client.exists("t:msg:m0003", "t:hist:m0003")
    assert client.zscore("t:idx:all", "m0003") is None
    assert client.hget("t:msg:m0001", "request") != b"req-2"
    assert client.get("answer-taken") == b"earlier answer"
    assert client.get("answer-free") == b"given"


def test_a_key_claimed_twice_in_one_chunk_enqueues_once(client: redis.Redis) -> None:
    """Coalesced repeats of one request (same idempotency key) can share a chunk: the first
    takes the key, the second finds its answer and pushes nothing."""
    enqueue = RecordAndEnqueue(StatusStore(client, "t", ttl=600, events_maxlen=100))
    answers = [IdempotentAnswer("same-key", "first", 60, claim=True),
               IdempotentAnswer("same-key", "second", 60, claim=True)]
    replies = enqueue.create_queued_many([record(0, "alice"), record(2, "alice")],
                                       ["m0", "m2"], "req", answers)
    assert replies == [True, EarlierAnswer("first")]
    assert client.lrange("q-metric", 0, -1) == [b"m0"]
    assert client.get("same-key") == b"first"
    assert not client.exists("t:msg:m0002", "t:hist:m0002")
