"""Consumers that run inline, in the worker that finished the message they consume (the real
session worker): a fraction of a message each, with every guarantee of a delivery message."""

from __future__ import annotations

import os
import signal
import uuid

import redis
from flask.testing import FlaskClient

from tests.conftest import WorkerProcess, delivery_of, mine, wait_for, wait_status
from tests.support.consumers import CONSUMED


def produce(client: FlaskClient, auth: dict[str, str]) -> tuple[str, str]:
    key = uuid.uuid4().hex
    response = client.post("/api/v1/messages", headers=auth, json={
        "type": "test.inline", "source": "inline", "data": {"key": key}})
    assert response.status_code == 202
    return str(response.get_json()["id"]), key


def test_an_inline_delivery_runs_in_the_finishing_worker_and_shows_in_the_trace(
        client: FlaskClient, auth: dict[str, str], worker: WorkerProcess,
        redis_client: redis.Redis) -> None:
    """No delivery message: the consumer ran in the same worker, its delivery is recorded
    succeeded with the message's outcome, and its effect carries the delivery's key."""
    message_id, _ = produce(client, auth)
    assert wait_status(client, auth, message_id)["status"] == "succeeded"
    delivery = delivery_of(client, auth, message_id, "consumer.inline-ok")
    record = client.get(f"/api/v1/messages/{delivery}", headers=auth).get_json()
    assert record["status"] == "succeeded" and record["inline"] == 1
    assert [h["status"] for h in record["history"]] == ["succeeded"]
    assert record["envelope"]["causationid"] == message_id
    assert redis_client.hgetall(f"{CONSUMED}:inline-effects:{message_id}") == {
        f"{delivery}:1".encode(): b"1"}
    assert redis_client.llen("consumer.inline-ok") == 0, "never a message of its own"
    emitted = record["result"]["emitted"]
    assert wait_status(client, auth, emitted)["envelope"]["causationid"] == delivery


def test_a_failing_inline_delivery_goes_out_as_a_message_and_is_retried(
        client: FlaskClient, auth: dict[str, str], worker: WorkerProcess,
        redis_client: redis.Redis) -> None:
    """A consumer that fails inline is delivered as a message of its own, with its retry
    policy, under the same delivery id; the other inline consumer is not held up."""
    redis_client.set("tests:inline-down", 1, ex=30)
    try:
        message_id, _ = produce(client, auth)
        assert wait_status(client, auth, message_id)["status"] == "succeeded"
        delivery = delivery_of(client, auth, message_id, "consumer.inline-flaky")
        first = wait_for(lambda: (r := client.get(f"/api/v1/messages/{delivery}",
                                                  headers=auth).get_json())
                         .get("status") == "retrying" and r, message="retrying")
        assert "inline" not in first and first["queue"] == "consumer.inline-flaky"
        ok = delivery_of(client, auth, message_id, "consumer.inline-ok")
        assert wait_status(client, auth, ok)["inline"] == 1
    finally:
        redis_client.delete("tests:inline-down")
    record = wait_status(client, auth, delivery)
    assert record["status"] == "succeeded" and record["attempts"] >= 2
    runs = redis_client.lrange(f"{CONSUMED}:inline-flaky:{message_id}", 0, -1)
    assert set(runs) == {delivery.encode()}, "one delivery id, inline and as a message"


def test_a_worker_killed_during_an_inline_delivery_runs_it_again_as_the_same_delivery(
        client: FlaskClient, auth: dict[str, str], worker: WorkerProcess,
        redis_client: redis.Redis) -> None:
    """The pool process dies while the consumer runs (before the outcome is written): the
    redelivered message makes the same event, so the consumer runs again under the same
    delivery id and effect key, and one delivery is recorded."""
    key = uuid.uuid4().hex
    given = f"inline-crash-{key[:8]}"
    message_id = mine(given)
    redis_client.set(f"tests:inline-slow:{message_id}", 30)
    response = client.post("/api/v1/messages", headers=auth, json={
        "id": given, "type": "test.inline", "source": "inline", "data": {"key": key}})
    assert response.status_code == 202
    pids = f"{CONSUMED}:inline-pids:{message_id}"
    pid = int(wait_for(lambda: redis_client.lindex(pids, 0), message="the consumer runs"))
    os.kill(pid, signal.SIGKILL)
    assert wait_status(client, auth, message_id, timeout=40)["status"] == "succeeded"
    assert redis_client.llen(pids) == 2, "run again after the kill"
    effects: dict[bytes, bytes] = redis_client.hgetall(f"{CONSUMED}:inline-effects:{message_id}")
    [(effect_key, count)] = effects.items()
    assert count == b"2", "the same key both times: a downstream deduplicates it"
    delivery = delivery_of(client, auth, message_id, "consumer.inline-ok")
    assert effect_key == f"{delivery}:1".encode()
    trace = client.get(f"/api/v1/messages/{message_id}/trace", headers=auth).get_json()
    assert [c["type"] for c in trace["caused"]].count("consumer.inline-ok") == 1
