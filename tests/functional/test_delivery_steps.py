"""A delivery's two store steps (begin: state, claim, attempt; finish: outcome, event, outbox,
claim release) against a Redis of their own: round trips, script reloads, claims, and the
webhook subscriptions' version checked when the outcome is recorded."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import BaseModel

from integration.app import build_submitter
from integration.events.dispatch import Dispatcher
from integration.events.webhooks import WebhookRequest, Webhooks
from integration.messages.registry import MessageType, Registry
from integration.messages.retry import PermanentError, TransientError
from integration.messages.status import STARTABLE, Status
from integration.ops.embedded_redis import EmbeddedRedis
from integration.settings import Settings
from integration.store.model import NewRecord
from integration.store.records import StatusStore, store_from_settings
from integration.worker.processor import Delivery, Processor
from tests.conftest import configured


class Count(BaseModel):
    n: int


@pytest.fixture
def private_settings(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings on a Redis of this test's own (it flushes scripts; no worker consumes it)."""
    server = EmbeddedRedis(tmp_path / "redis", persistent=False).start()
    try:
        yield configured(settings, redis_url=server.url)
    finally:
        server.stop()


@pytest.fixture
def store(private_settings: Settings) -> StatusStore:
    return store_from_settings(private_settings)


def counting_processor(store: StatusStore, dispatcher: Dispatcher | None = None
                       ) -> tuple[Processor, list[int]]:
    calls: list[int] = []

    def count(payload: Count, envelope: Any) -> dict[str, int]:
        calls.append(payload.n)
        return {"n": payload.n}

    return Processor(Registry([MessageType("count", Count, count)]), store,
                     dispatcher=dispatcher), calls


def envelope(message_id: str, n: int = 1) -> dict[str, Any]:
    return {"id": message_id, "type": "count", "source": "t", "data": {"n": n}}


def queued(message_id: str, n: int = 1) -> NewRecord:
    return NewRecord(id=message_id, type="count", queue="count", envelope=envelope(message_id, n),
                     owner="o", channel="rest", status=Status.QUEUED)


def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every request written to any Redis connection of this process from now on."""
    sent: list[str] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(repr(command)[:80])
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", send)
    return sent


def test_a_message_takes_two_round_trips(store: StatusStore,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Begin and finish, once the record exists and the scripts are loaded."""
    processor, calls = counting_processor(store)
    assert processor.process(envelope("warm"), Delivery("t0", "count")).status \
        is Status.SUCCEEDED  # loads the scripts
    assert processor.process(envelope("rt-1"), Delivery("t1", "count")).status \
        is Status.SUCCEEDED  # created by the delivery (a direct caller)
    sent = round_trips(monkeypatch)
    processor.process(envelope("rt-1"), Delivery("t1b", "count"))  # finished: skipped
    assert len(sent) == 1, sent
    store.create_many([queued("rt-2", 2)])  # as the gateway does
    sent.clear()
    assert processor.process(envelope("rt-2", 2), Delivery("t2", "count")).status \
        is Status.SUCCEEDED
    assert len(sent) == 2, sent
    assert calls == [1, 1, 2]


def test_the_steps_work_after_a_script_flush(store: StatusStore) -> None:
    """A restarted or flushed Redis forgot the scripts: they are loaded again, and each
    message is still processed once, with its full history."""
    processor, calls = counting_processor(store)
    assert processor.process(envelope("flush-1"), Delivery("t1", "count")).status \
        is Status.SUCCEEDED
    store.client.script_flush()
    assert processor.process(envelope("flush-2", 2), Delivery("t2", "count")).status \
        is Status.SUCCEEDED
    store.client.script_flush()
    assert processor.process(envelope("flush-2", 2), Delivery("t3", "count",
                                                            redelivered=True)).status \
        is Status.SUCCEEDED
    assert calls == [1, 2]
    record = store.get("flush-2")
    assert record is not None
    assert record["attempts"] == 1 and record["task_id"] == "t2"
    assert record["delivered_queue"] == "count" and record["started_at"]
    assert [h["status"] for h in record["history"]] == \
        ["queued", "processing", "succeeded", "published"]
    started = record["history"][1]
    assert started["generation"] == 1 and started["queue"] == "count"
    assert started["redelivered"] is False
    client = store.client
    assert client.zscore("integration:idx:status:succeeded", "flush-2") is not None
    assert client.zscore("integration:idx:status:processing", "flush-2") is None
    assert client.zscore("integration:idx:status:queued", "flush-2") is None
    assert not client.exists("integration:claim:flush-2:1"), "the claim is released"


def test_a_claim_held_elsewhere_holds_the_delivery_back(store: StatusStore) -> None:
    """Another delivery runs the message: this one runs nothing, starts no attempt and comes
    back when the claim's lease ends."""
    processor, calls = counting_processor(store)
    store.create_many([queued("held-1")])
    assert store.begin("held-1", "other-delivery", 30, startable=STARTABLE).claimed
    assert processor.process(envelope("held-1"), Delivery("t1", "count")).status \
        is Status.PROCESSING
    record = store.get("held-1")
    assert record is not None and record["status"] == "queued" and record["attempts"] == 0
    assert calls == []
    due = store.client.zscore(store.due_key, "held-1")
    assert due is not None, "parked until the claim's lease ends"
    assert record["history"][-1]["status"] == "held back"

    store.release_claim("held-1", 1, "other-delivery")
    assert processor.process(envelope("held-1"), Delivery("t2", "count")).status \
        is Status.SUCCEEDED
    assert calls == [1]


def test_a_webhook_made_after_the_subscriptions_were_read_gets_the_event(
    private_settings: Settings, store: StatusStore
) -> None:
    """The worker decides whether an event has subscribers from the subscriptions it read
    last, and the finish checks that they did not change: a new subscription is seen."""
    submitter = build_submitter(private_settings, origin="worker")
    webhooks = Webhooks(store.client, private_settings.key_prefix, disable_after=5)
    dispatcher = Dispatcher(submitter, [], webhooks, source="/tests")
    processor, calls = counting_processor(store, dispatcher)

    assert processor.process(envelope("before"), Delivery("t1", "count")).status \
        is Status.SUCCEEDED
    assert store.caused_by("before") == []
    webhooks.create(WebhookRequest(url="http://127.0.0.1:9/hook", topics=["count.*"]),
                    owner="direct")
    assert processor.process(envelope("after"), Delivery("t2", "count")).status \
        is Status.SUCCEEDED
    caused = store.caused_by("after")
    assert len(caused) == 1
    delivery = store.get(caused[0])
    assert delivery is not None and delivery["type"] == "webhook"
    assert not store.client.zscore(store.outbox_key, "after"), "delivered, so not parked"
    assert calls == [1, 1]


def test_a_record_deleted_during_its_delivery_is_not_written_again(store: StatusStore) -> None:
    """The record expired or was deleted while its handler ran: finishing writes no partial
    record or history without a TTL (they would stay forever); the result event still goes
    to the event log, and the claim is released."""
    client = store.client

    def vanish(payload: Count, envelope: Any) -> dict[str, int]:
        client.delete("integration:msg:gone-1", "integration:hist:gone-1")
        return {"n": payload.n}

    processor = Processor(Registry([MessageType("count", Count, vanish)]), store)
    store.create_many([queued("gone-1")])
    assert processor.process(envelope("gone-1"), Delivery("t1", "count")).status \
        is Status.SUCCEEDED
    leftovers = [key.decode() for key in client.scan_iter(match="*gone-1*")
                 if client.ttl(key) == -1]
    assert leftovers == [], f"keys without a TTL: {leftovers}"
    assert not client.exists("integration:msg:gone-1")
    events = client.xrange(store.events_key)
    assert any(fields[b"message_id"] == b"gone-1" for _, fields in events)
    assert not client.exists("integration:claim:gone-1:1"), "the claim is released"



def test_a_delivery_whose_claim_was_taken_over_writes_nothing(settings: Settings) -> None:
    """The claim lapses while the handler runs and another delivery takes it: this
    delivery's finish, retry or dead end is refused; the record, its history, the event log,
    the due set and the other delivery's claim stay as they were."""
    store = store_from_settings(settings)  # the test Redis: nothing consumes ``count``
    for ending in ("succeeded", "retrying", "dead"):
        message_id = f"late-{ending}-{uuid.uuid4().hex[:8]}"
        claim = f"integration:claim:{message_id}:1"

        def overtaken(payload: Count, envelope: Any, ending: str = ending,
                      claim: str = claim) -> dict[str, int]:
            store.client.set(claim, "the-other-delivery")  # lapsed, and taken over
            if ending == "retrying":
                raise TransientError("the late call timed out")
            if ending == "dead":
                raise PermanentError("refused")
            return {"n": payload.n}

        processor = Processor(Registry([MessageType("count", Count, overtaken)]), store)
        store.create_many([queued(message_id)])
        outcome = processor.process(envelope(message_id), Delivery("t1", "count"))
        assert outcome.fenced and outcome.status is Status.PROCESSING, ending
        record = store.get(message_id)
        assert record is not None and record["status"] == "processing"
        assert [h["status"] for h in record["history"]] == ["queued", "processing"]
        events = store.client.xrange(store.events_key)
        assert not [e for e in events if e[1][b"message_id"] == message_id.encode()]
        assert store.client.zscore(store.due_key, message_id) is None, "no retry parked"
        assert store.client.get(claim) == b"the-other-delivery"
