"""Retries, dead letters and delivery claims with a real worker (fault tests).

The handlers of ``tests/support/fault_types.py`` fail on demand, sleep, and write each
effect to a ledger under a unique constraint, so a duplicate effect is caught.
"""

from __future__ import annotations

import os
import signal
import uuid
from typing import Any

import redis
from flask.testing import FlaskClient

from tests.conftest import wait_for, wait_status
from tests.support.fault_types import DUPLICATES, LEDGER


def submit(client: FlaskClient, auth: dict[str, str], type_: str, **data: Any) -> str:
    response = client.post("/api/v1/messages", headers=auth,
                           json={"type": type_, "source": "faults", "data": data})
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["id"])


def key() -> str:
    return uuid.uuid4().hex[:10]


def test_transient_failures_are_retried_until_success_with_one_effect(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: redis.Redis
) -> None:
    effect = key()
    message_id = submit(client, auth, "test.flaky", key=effect, fail_times=2)
    record = wait_status(client, auth, message_id)
    assert record["status"] == "succeeded"
    assert record["attempts"] == 3
    steps = [h["status"] for h in record["history"]]
    assert steps.count("retrying") == 2
    retries = [h for h in record["history"] if h["status"] == "retrying"]
    assert all(h["error"]["kind"] == "transient" and h["retry_in"] > 0 for h in retries)
    assert redis_client.sismember(LEDGER, effect)
    assert effect.encode() not in redis_client.lrange(DUPLICATES, 0, -1)


def test_a_permanent_failure_is_dead_after_one_attempt(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: redis.Redis
) -> None:
    effect = key()
    message_id = submit(client, auth, "test.flaky", key=effect, fail_times=1, kind="permanent")
    record = wait_status(client, auth, message_id)
    assert record["status"] == "dead"
    assert record["attempts"] == 1
    assert record["error"]["kind"] == "permanent"
    assert record["topic"] == "test.flaky.dead"
    assert not redis_client.sismember(LEDGER, effect)


def test_a_poison_message_is_dead_after_the_attempt_limit(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: redis.Redis
) -> None:
    effect = key()
    message_id = submit(client, auth, "test.flaky", key=effect, fail_times=99)
    record = wait_status(client, auth, message_id)
    assert record["status"] == "dead"
    assert record["attempts"] == 3  # the type's policy
    assert record["error"]["exhausted"] == "3 of 3 attempts failed"
    assert not redis_client.sismember(LEDGER, effect)


def test_a_child_killed_mid_task_is_redelivered_and_the_effect_happens_once(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: redis.Redis
) -> None:
    """kill -9 of the pool process running the handler: the message is redelivered, waits for
    the dead delivery's claim to lapse, and completes; the effect is in the ledger once."""
    effect = key()
    message_id = submit(client, auth, "test.slow", key=effect, seconds=3)
    started = wait_for(lambda: redis_client.lrange(f"tests:started:{effect}", 0, -1),
                       message="the slow handler started")
    child = int(started[0].split()[1])
    assert child != worker.process.pid
    os.kill(child, signal.SIGKILL)

    record = wait_status(client, auth, message_id, timeout=40)
    assert record["status"] == "succeeded"
    assert record["attempts"] == 2
    assert redis_client.sismember(LEDGER, effect)
    assert effect.encode() not in redis_client.lrange(DUPLICATES, 0, -1)
