"""RabbitMQ quorum queues (``INTEGRATION_AMQP_QUEUE_TYPE=quorum``): every queue the service
declares is one, a message that keeps killing workers still ends dead by the service's own
count, and one over the broker's delivery limit is recorded dead from the dead-letter queue."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from integration.messages.routing import DEAD_LETTER_QUEUE
from tests.conftest import WorkerProcess, wait_status
from tests.functional.test_rabbitmq import own_vhost

#: The worker's queues: two built-in types, a consumer's, a crashing type, the dead letters.
CONSUMED = ["alert", "metric", "consumer.loop-recording", "test.crash-once", DEAD_LETTER_QUEUE]
QUORUM = {"INTEGRATION_AMQP_QUEUE_TYPE": "quorum"}


@pytest.fixture(scope="module")
def quorum_vhost() -> Iterator[tuple[str, str]]:
    with own_vhost() as vhost:
        yield vhost


@pytest.fixture(scope="module")
def quorum_worker(quorum_vhost: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[WorkerProcess]:
    _, url = quorum_vhost
    worker = WorkerProcess(CONSUMED, tmp_path_factory.mktemp("quorum") / "worker.log",
                           env={"INTEGRATION_BROKER_URL": url, **QUORUM})
    yield worker
    worker.stop()


@pytest.fixture
def quorum_client(make_app: Callable[..., Flask], quorum_vhost: tuple[str, str]) -> Any:
    return make_app(broker_url=quorum_vhost[1], amqp_queue_type="quorum").test_client()


@pytest.fixture(scope="module")
def crashing(redis_url: str, quorum_worker: WorkerProcess, quorum_vhost: tuple[str, str]
             ) -> tuple[str, str]:
    """A message whose handler kills its pool process (its effect key and id), sent when the
    module starts: the wait for the killed delivery's claim overlaps the other tests."""
    from integration.gateway import create_app
    from integration.security.tokens import issue_token
    from integration.settings import Settings
    from tests.conftest import TEST_SECRET

    effect = uuid.uuid4().hex[:10]
    client = create_app(Settings(redis_url=redis_url, jwt_secret=TEST_SECRET,
                                 broker_url=quorum_vhost[1], amqp_queue_type="quorum")
                        ).test_client()
    token = issue_token(TEST_SECRET, "tester", ["admin"], 600)
    response = client.post("/api/v1/messages", headers={"Authorization": f"Bearer {token}"},
                           json={"type": "test.crash-once", "source": "quorum",
                                 "data": {"key": effect}})
    assert response.status_code == 202
    return effect, response.get_json()["id"]


def queue_types(vhost: str) -> dict[str, str]:
    listed = subprocess.run([shutil.which("rabbitmqctl") or "rabbitmqctl", "list_queues", "-q",
                             "-p", vhost, "name", "type"], capture_output=True, text=True,
                            timeout=60, check=True).stdout
    return dict(line.split("\t")[:2] for line in listed.splitlines()
                if line.strip() and not line.startswith("name"))


def test_messages_flow_through_quorum_queues_and_every_declared_queue_is_one(
    crashing: tuple[str, str], quorum_client: Any, auth: dict[str, str],
    quorum_vhost: tuple[str, str], settings: Any
) -> None:
    """An alert and metrics succeed; every queue of the vhost (a consumer's and the dead
    letters included) is a quorum queue, a classic redeclare is refused, and ``integration
    check`` says so, or names the queue when the settings ask for classic queues."""
    from kombu import Connection, Queue

    from integration.ops.checks.connections import check_broker
    from integration.ops.checks.findings import Context
    from tests.conftest import configured

    vhost, url = quorum_vhost
    batch = [{"type": "alert", "source": "quorum", "data": {"name": "HighCPU"}},
             *({"type": "metric", "source": "quorum", "data": {"name": f"m{i}", "value": i}}
               for i in range(3))]
    response = quorum_client.post("/api/v1/messages", headers=auth, json=batch)
    assert response.status_code == 202
    records = [wait_status(quorum_client, auth, r["id"])
               for r in response.get_json()["results"]]
    assert [r["status"] for r in records] == ["succeeded"] * 4

    # Celery's own per-worker remote-control queue (``<worker>.celery.pidbox``, auto-deleted)
    # stays classic; its native delayed delivery (``celery_delayed_*``) is left out.
    types = {name: kind for name, kind in queue_types(vhost).items()
             if not name.endswith(".pidbox")}
    assert set(CONSUMED) <= set(types)
    assert set(types.values()) == {"quorum"}, types
    assert not [name for name in types if name.startswith("celery_delayed_")], types
    with Connection(url) as connection, pytest.raises(connection.channel_errors,
                                                      match="PRECONDITION_FAILED"):
        Queue("consumer.loop-recording", durable=True)(connection.channel()).declare()

    def findings(queue_type: str) -> list[Any]:
        ctx = Context(settings=configured(settings, broker_url=url, amqp_queue_type=queue_type),
                      timeout=5, groups=frozenset({"broker"}))
        return [f for f in check_broker(ctx) if f.level != "ok" or "queues" in f.message]

    assert [f.level for f in findings("quorum")] == ["ok"], findings("quorum")
    mismatched = [f.message for f in findings("classic") if f.level == "error"]
    assert any(m.startswith("queue alert (") and "inequivalent arg" in m for m in mismatched)


def test_a_message_over_the_delivery_limit_is_recorded_dead_from_the_dead_letter_queue(
    crashing: tuple[str, str], quorum_client: Any, auth: dict[str, str],
    quorum_vhost: tuple[str, str]
) -> None:
    """A message handed back without an answer more often than the delivery limit (here by a
    consumer that rejects it, standing for workers that die before the attempt is counted)
    goes to the dead-letter queue, and the worker consuming it records the message dead
    without running it."""
    from kombu import Connection

    _, url = quorum_vhost
    response = quorum_client.post("/api/v1/messages", headers=auth, json={
        "type": "event", "source": "quorum", "data": {"n": 1}})
    assert response.status_code == 202
    message_id = response.get_json()["id"]
    returned = 0
    with Connection(url) as connection:
        channel = connection.channel()
        deadline, last = time.monotonic() + 20, time.monotonic()
        while time.monotonic() < deadline:
            message = channel.basic_get("event")
            if message is None:
                if returned and time.monotonic() - last > 0.5:
                    break  # not back: over the limit, dead-lettered
                time.sleep(0.02)
                continue
            assert message.headers["id"] == message_id
            channel.basic_reject(message.delivery_tag, requeue=True)
            returned, last = returned + 1, time.monotonic()
    assert returned == 21  # the default delivery limit (20), then one more return
    record = wait_status(quorum_client, auth, message_id)
    assert record["status"] == "dead"
    assert record["error"]["type"] == "DeliveryLimitExceeded"
    assert record["error"]["limit"] == 20
    assert not record.get("attempts")  # recorded, never run


def test_a_message_that_keeps_killing_workers_ends_dead_on_quorum_queues(
    crashing: tuple[str, str], quorum_client: Any, auth: dict[str, str], redis_client: Any
) -> None:
    """Its attempt kills the pool process; the service's attempt limit (1) ends it dead on
    the next delivery, long before the broker's delivery limit (20)."""
    effect, message_id = crashing
    record = wait_status(quorum_client, auth, message_id, timeout=60)
    assert record["status"] == "dead"
    assert record["error"]["type"] == "AttemptsExhausted"
    assert int(redis_client.get(f"tests:crashes:{effect}")) == 1
