"""Consumers: each subscription is delivered as its own message, on its own queue, with its
own retries and dead letters, through a real worker."""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis
from flask.testing import FlaskClient

from tests.conftest import delivery_of, wait_for, wait_status
from tests.support.consumers import CONSUMED


def produce(client: FlaskClient, auth: dict[str, str], **data: Any) -> str:
    response = client.post("/api/v1/messages", headers=auth, json={
        "type": "test.produce", "source": "consumers",
        "data": {"key": uuid.uuid4().hex, **data}})
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["id"])


def consumed(redis_client: redis.Redis, consumer: str, message_id: str) -> list[str]:
    return [e.decode() for e in redis_client.lrange(f"{CONSUMED}:{consumer}", 0, -1)
            if e.decode().startswith(message_id)]


def test_a_failing_consumer_does_not_delay_another_and_recovers(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: redis.Redis
) -> None:
    """While one consumer of a topic backs off, the other has already consumed the event; the
    failing one consumes it once after recovery."""
    redis_client.set("tests:consumer-down", 1)
    try:
        message_id = produce(client, auth)
        assert wait_status(client, auth, message_id)["status"] == "succeeded"
        wait_for(lambda: consumed(redis_client, "healthy", message_id), timeout=10,
                 message="the healthy consumer got the event")
        fragile_id = delivery_of(client, auth, message_id, "consumer.fragile")
        record = wait_status(client, auth, fragile_id, statuses=("retrying",), timeout=10)
        assert record["type"] == "consumer.fragile" and record["queue"] == "consumer.fragile"
        assert consumed(redis_client, "fragile", message_id) == []
    finally:
        redis_client.delete("tests:consumer-down")
    assert wait_status(client, auth, fragile_id)["status"] == "succeeded"
    assert len(consumed(redis_client, "fragile", message_id)) == 1
    assert len(consumed(redis_client, "healthy", message_id)) == 1
    healthy = client.get(
        f"/api/v1/messages/{delivery_of(client, auth, message_id, 'consumer.healthy')}",
        headers=auth).get_json()
    assert healthy["attempts"] == 1 and healthy["status"] == "succeeded"
    # The trace of the message shows its deliveries as the messages it caused.
    trace = client.get(f"/api/v1/messages/{message_id}/trace", headers=auth).get_json()
    caused = {c["type"] for c in trace["caused"]}
    assert caused == {"consumer.healthy", "consumer.fragile", "consumer.ledger"}


def test_a_consumer_that_keeps_failing_ends_dead_and_can_be_replayed(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: redis.Redis
) -> None:
    """Exhausted deliveries go to the dead letters like any message; a replay delivers again."""
    redis_client.set("tests:consumer-down", 1)
    try:
        message_id = produce(client, auth)
        fragile_id = delivery_of(client, auth, message_id, "consumer.fragile")
        record = wait_status(client, auth, fragile_id, statuses=("dead",), timeout=20)
        assert record["attempts"] == 4
        assert record["error"]["type"] == "TransientError"
    finally:
        redis_client.delete("tests:consumer-down")
    replay = client.post(f"/api/v1/dead-letters/{fragile_id}/replay", headers=auth)
    assert replay.status_code == 202, replay.get_json()
    assert wait_status(client, auth, fragile_id)["status"] == "succeeded"
    assert len(consumed(redis_client, "fragile", message_id)) == 1


def test_a_consumer_emits_a_caused_message_once(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """``emit`` links the new message to the delivery (owner, correlation, causation), and
    emitting it again (as a retry would) enqueues it once."""
    message_id = produce(client, auth, fail_times=1, kind="permanent")
    assert wait_status(client, auth, message_id)["status"] == "dead"
    delivery_id = delivery_of(client, auth, message_id, "consumer.emitter")
    delivery = wait_status(client, auth, delivery_id)
    assert delivery["status"] == "succeeded", delivery
    assert delivery["result"]["same"] is True
    emitted = wait_status(client, auth, delivery["result"]["emitted"])
    assert emitted["status"] == "succeeded" and emitted["type"] == "event"
    assert emitted["owner"] == "tester" and emitted["channel"] == "event"
    original = client.get(f"/api/v1/messages/{message_id}", headers=auth).get_json()
    assert emitted["envelope"]["correlationid"] == original["envelope"]["correlationid"]
    assert emitted["envelope"]["causationid"] == delivery_id
    trace = client.get(f"/api/v1/messages/{message_id}/trace", headers=auth).get_json()
    [emitter] = [c for c in trace["caused"] if c["type"] == "consumer.emitter"]
    assert [c["id"] for c in emitter["caused"]] == [emitted["id"]]


def test_the_outbox_delivers_events_whose_deliveries_were_never_enqueued(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: redis.Redis
) -> None:
    """A message that finished without its deliveries being enqueued (its worker died right
    after recording the outcome) still reaches its consumers, once, from the outbox."""
    from integration.app import get_settings
    from integration.events.results import finish
    from integration.messages.status import Status
    from integration.store.model import NewRecord
    from integration.store.records import store_from_settings

    store = store_from_settings(get_settings())
    message_id = uuid.uuid4().hex
    store.create_many([NewRecord(
        id=message_id, type="test.produce", queue="test.produce", owner="tester",
        channel="rest", status=Status.QUEUED,
        envelope={"id": message_id, "type": "test.produce", "source": "t", "data": {}})])
    began = time.time()
    finish(store, message_id, "test.produce", Status.SUCCEEDED, message_id, "result",
           {"attempt": 1}, outbox_in=1.0)
    wait_for(lambda: consumed(redis_client, "healthy", message_id), timeout=15,
             message="the outbox delivered the event")
    assert time.time() - began >= 1.0, "not before the grace period"
    assert wait_status(client, auth, delivery_of(client, auth, message_id,
                                                 "consumer.healthy"))["status"] == "succeeded"
    time.sleep(1.5)
    assert len(consumed(redis_client, "healthy", message_id)) == 1
    assert redis_client.zscore(store.outbox_key, message_id) is None


def test_each_outcome_of_a_replayed_message_is_delivered(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: redis.Redis
) -> None:
    """A message that ends dead, is replayed and then succeeds delivers both events to a
    consumer of both topics: its second event is a new delivery, not a repeat."""
    message_id = produce(client, auth, fail_times=1, kind="permanent")
    assert wait_status(client, auth, message_id)["status"] == "dead"
    key = f"{CONSUMED}:ledger:{message_id}"
    wait_for(lambda: redis_client.llen(key) == 1, message="the dead event consumed")
    assert client.post(f"/api/v1/dead-letters/{message_id}/replay",
                       headers=auth).status_code == 202
    assert wait_status(client, auth, message_id, statuses=("succeeded",))["generation"] == 2
    wait_for(lambda: redis_client.llen(key) == 2, message="the success consumed too")
    assert [e.decode() for e in redis_client.lrange(key, 0, -1)] == \
        ["test.produce.dead", "test.produce.succeeded"]
