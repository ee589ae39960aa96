"""A delivery whose record was created but whose message never reached the broker (its
process died in between; only possible with a broker outside the store's Redis) is sent
when the same delivery is dispatched again, and only then."""

from __future__ import annotations

import base64
import json

import pytest
import redis

from integration.app import build_submitter
from integration.broker.submission import Submitter
from integration.events.dispatch import Dispatcher
from integration.messages.envelope import Envelope
from integration.messages.retry import PermanentError
from integration.ops.embedded_redis import EmbeddedRedis
from integration.settings import Settings
from integration.store.model import NewRecord
from tests.conftest import configured


@pytest.fixture
def broker(private_redis: EmbeddedRedis) -> EmbeddedRedis:
    """A broker of its own (no worker consumes it), apart from the store's Redis."""
    return private_redis


@pytest.fixture
def submitter(settings: Settings, broker: EmbeddedRedis) -> Submitter:
    return build_submitter(configured(settings, broker_url=broker.url), origin="test")


def delivery(cause: str) -> Envelope:
    return Envelope.model_validate({"id": "stranded-delivery", "type": "event",
                                    "source": "test", "data": {"n": 1}, "causationid": cause})


def queued_ids(broker: EmbeddedRedis, queue: str) -> list[str]:
    client = redis.Redis(port=broker.port)
    try:
        return [json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]["id"]
                for raw in client.lrange(queue, 0, -1)]
    finally:
        client.close()


def test_a_stranded_delivery_is_sent_once_when_dispatched_again(
        submitter: Submitter, broker: EmbeddedRedis) -> None:
    assert not submitter.fused
    envelope = delivery("cause-1")
    queue = submitter.registry.get("event").queue
    # What a process that died after creating the record and before publishing left.
    record = NewRecord(id=envelope.id, type=envelope.type, queue=queue,
                       envelope=envelope.to_wire(), owner="tester", channel="event")
    assert submitter.store.create_many([record], "died") == [True]
    assert submitter.store.get(envelope.id)["status"] == "accepted"
    assert queued_ids(broker, queue) == []

    dispatcher = Dispatcher(submitter, [], source="test")
    assert dispatcher.submit_once([envelope], "tester") == [envelope.id]
    assert queued_ids(broker, queue) == [envelope.id]
    assert submitter.store.get(envelope.id)["status"] == "queued"

    # Dispatched once more (the outbox tries again): it is in the broker, nothing is sent.
    assert dispatcher.submit_once([delivery("cause-1")], "tester") == [envelope.id]
    assert queued_ids(broker, queue) == [envelope.id]

    # Another message under the same id must not pass for this one.
    with pytest.raises(PermanentError, match="taken by another message"):
        dispatcher.submit_once([delivery("cause-2")], "tester")
    assert queued_ids(broker, queue) == [envelope.id]
