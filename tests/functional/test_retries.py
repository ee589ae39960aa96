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


def test_a_duplicate_delivery_has_one_effect(worker: Any, redis_client: redis.Redis,
                                             client: FlaskClient, auth: dict[str, str]) -> None:
    """The same message delivered twice at once (two copies in the queue): one effect."""
    from celery import Celery

    from integration.messages.routing import PROCESS_TASK

    effect = key()
    envelope = {"id": f"dup-{effect}", "type": "test.slow", "source": "dup",
                "data": {"key": effect, "seconds": 0.5}}
    app = Celery("duplicates", broker=worker_url(redis_client), set_as_current=False)
    for _ in range(2):
        app.send_task(PROCESS_TASK, args=[envelope], queue="test.slow")
    record = wait_status(client, auth, envelope["id"])
    assert record["status"] == "succeeded"
    # The second copy either waited for the first's claim and came back, or came after it.
    wait_for(lambda: redis_client.zscore("integration:due", envelope["id"]) is None
             and redis_client.llen("test.slow") == 0, timeout=20, message="both copies done")
    assert redis_client.sismember(LEDGER, effect)
    assert effect.encode() not in redis_client.lrange(DUPLICATES, 0, -1)
    assert redis_client.llen(f"tests:started:{effect}") == 1, "the handler ran once"


def worker_url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


def test_a_wait_longer_than_the_visibility_timeout_runs_the_effect_once(
    make_app: Any, auth: dict[str, str], tmp_path: Any
) -> None:
    """A 12 s retry wait with a 10 s visibility timeout: the wait is parked outside the
    broker, so no copy is redelivered meanwhile, and the effect happens once."""
    from integration.ops.embedded_redis import EmbeddedRedis
    from tests.conftest import WorkerProcess

    with EmbeddedRedis(tmp_path / "redis", persistent=False) as server:
        env = {"INTEGRATION_REDIS_URL": server.url,
               "INTEGRATION_VISIBILITY_TIMEOUT_SECONDS": "10",
               "INTEGRATION_CLAIM_LEASE_SECONDS": "4"}
        worker = WorkerProcess(["test.patient"], tmp_path / "worker.log", env=env)
        try:
            client = make_app(redis_url=server.url).test_client()
            effect = key()
            message_id = submit(client, auth, "test.patient", key=effect, fail_times=1)
            store = redis.Redis(port=server.port)
            wait_for(lambda: client.get(f"/api/v1/messages/{message_id}", headers=auth)
                     .get_json()["status"] == "retrying", message="first attempt failed")
            # Once the failed attempt is acknowledged, the wait is in the due set only.
            wait_for(lambda: store.llen("test.patient") == 0 and store.hlen("unacked") == 0,
                     message="nothing in the broker during the wait")
            assert store.zscore("integration:due", message_id) is not None
            record = wait_status(client, auth, message_id, timeout=40)
            assert record["status"] == "succeeded" and record["attempts"] == 2
            assert store.sismember(LEDGER, effect)
            assert store.llen(DUPLICATES) == 0
            assert int(store.get(f"tests:attempts:{effect}")) == 2, "the handler ran twice only"
        finally:
            worker.stop()


def test_a_message_that_keeps_killing_workers_ends_dead(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: redis.Redis
) -> None:
    """Each attempt kills its pool process; after the attempt limit (3) it is dead, not looping."""
    effect = key()
    message_id = submit(client, auth, "test.crash", key=effect)
    record = wait_status(client, auth, message_id, timeout=60)
    assert record["status"] == "dead"
    assert record["error"]["type"] == "AttemptsExhausted"
    assert int(redis_client.get(f"tests:crashes:{effect}")) == 3


def _children(pid: int) -> list[int]:
    from pathlib import Path

    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found
