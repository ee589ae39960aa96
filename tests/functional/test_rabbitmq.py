"""RabbitMQ as the broker: the same message path through a kombu producer with confirms."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from integration.registry import default_registry
from integration.routing import DEFAULT_QUEUE
from tests.conftest import WorkerProcess, wait_status

RABBITMQ = ("127.0.0.1", 5672)


def rabbitmq_reachable() -> bool:
    try:
        socket.create_connection(RABBITMQ, timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    """A virtual host of its own on the local RabbitMQ, deleted afterwards."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if not rabbitmq_reachable() or rabbitmqctl is None:
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672 (CI starts it)")
    vhost = f"integration-test-{uuid.uuid4().hex[:8]}"
    run = lambda *args: subprocess.run([rabbitmqctl, *args], check=True,  # noqa: E731
                                       capture_output=True, timeout=60)
    run("add_vhost", vhost)
    run("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{vhost}"
    run("delete_vhost", vhost)


@pytest.fixture(scope="module")
def amqp_worker(amqp_url: str, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[WorkerProcess]:
    queues = [*default_registry().queues(), DEFAULT_QUEUE]
    worker = WorkerProcess(queues, tmp_path_factory.mktemp("amqp") / "worker.log",
                           env={"INTEGRATION_BROKER_URL": amqp_url})
    yield worker
    worker.stop()


def test_single_and_batch_messages_flow_through_rabbitmq(
    make_app: Callable[..., Flask], auth: dict[str, str], amqp_url: str,
    amqp_worker: WorkerProcess, tmp_path: Path
) -> None:
    """Messages published with confirms to RabbitMQ are routed by type and succeed."""
    client = make_app(broker_url=amqp_url).test_client()
    assert client.get("/readyz").status_code == 200
    single = client.post("/api/v1/messages", headers=auth, json={
        "type": "alert", "source": "rabbit", "data": {"name": "HighCPU"}})
    assert single.status_code == 202
    batch = [{"type": "metric", "source": "rabbit", "data": {"name": f"m{i}", "value": i}}
             for i in range(25)]
    response = client.post("/api/v1/messages", headers=auth, json=batch)
    assert response.status_code == 202
    ids = [single.get_json()["id"], *(r["id"] for r in response.get_json()["results"])]
    records: list[dict[str, Any]] = [wait_status(client, auth, i) for i in ids]
    assert {r["status"] for r in records} == {"succeeded"}
    assert records[0]["delivered_queue"] == "alert"
    assert {r["delivered_queue"] for r in records[1:]} == {"metric"}


def test_retries_and_a_killed_pool_process_on_rabbitmq(
    make_app: Callable[..., Flask], auth: dict[str, str], amqp_url: str,
    amqp_worker: WorkerProcess, redis_client: Any
) -> None:
    """The fault tests' core on RabbitMQ: transient failures retried to one effect, and a
    pool process killed mid-task redelivered to one effect."""
    import os
    import signal

    from tests.conftest import wait_for
    from tests.support.fault_types import DUPLICATES, LEDGER

    client = make_app(broker_url=amqp_url).test_client()
    flaky_key, slow_key = uuid.uuid4().hex[:10], uuid.uuid4().hex[:10]
    flaky = client.post("/api/v1/messages", headers=auth, json={
        "type": "test.flaky", "source": "rabbit", "data": {"key": flaky_key, "fail_times": 2}})
    slow = client.post("/api/v1/messages", headers=auth, json={
        "type": "test.slow", "source": "rabbit", "data": {"key": slow_key, "seconds": 3}})
    started = wait_for(lambda: redis_client.lrange(f"tests:started:{slow_key}", 0, -1),
                       message="slow handler started")
    os.kill(int(started[0].split()[1]), signal.SIGKILL)

    flaky_record = wait_status(client, auth, flaky.get_json()["id"], timeout=40)
    slow_record = wait_status(client, auth, slow.get_json()["id"], timeout=40)
    assert flaky_record["status"] == "succeeded" and flaky_record["attempts"] == 3
    assert slow_record["status"] == "succeeded" and slow_record["attempts"] == 2
    for key in (flaky_key, slow_key):
        assert redis_client.sismember(LEDGER, key)
        assert key.encode() not in redis_client.lrange(DUPLICATES, 0, -1)


def test_every_accepted_message_survives_a_cut_connection_once(
    make_app: Callable[..., Flask], auth: dict[str, str], amqp_url: str, redis_client: Any,
    tmp_path: Path
) -> None:
    """The connection to RabbitMQ is cut during a burst (a TCP proxy in between) and comes
    back: every 202 message is processed once, and submissions while cut got 503."""
    import time
    from urllib.parse import urlsplit

    from tests.conftest import wait_for
    from tests.support.burst import Burst
    from tests.support.fault_types import DUPLICATES, LEDGER
    from tests.support.tcp_proxy import TcpProxy

    proxy = TcpProxy(*RABBITMQ)
    vhost = urlsplit(amqp_url).path.lstrip("/")
    via_proxy = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}"
    worker = WorkerProcess(["test.flaky"], tmp_path / "worker.log",
                           env={"INTEGRATION_BROKER_URL": via_proxy})
    client = make_app(broker_url=via_proxy, publish_timeout_seconds=1).test_client()
    sender = Burst(client, auth, count=60, pause=0.05, source="cut")
    outcomes = sender.outcomes

    try:
        sender.start()
        wait_for(lambda: len(outcomes) >= 15, message="burst under way")
        proxy.cut()
        wait_for(lambda: list(outcomes.values())[-1] == 503, timeout=30, message="503 while cut")
        time.sleep(0.5)
        proxy.restore()
        sender.join(120)
        accepted = [k for k, code in outcomes.items() if code == 202]
        refused = [k for k, code in outcomes.items() if code == 503]
        assert set(outcomes.values()) <= {202, 503}
        assert accepted and refused
        wait_for(lambda: all(redis_client.sismember(LEDGER, k) for k in accepted), timeout=90,
                 interval=0.5, message="every accepted message processed")
        duplicates = {d.decode() for d in redis_client.lrange(DUPLICATES, 0, -1)}
        assert not duplicates & set(accepted), "no effect twice"
    finally:
        worker.stop()
        proxy.close()
