"""RabbitMQ as the broker: the same message path through a kombu producer with confirms."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from integration.app import default_registry
from integration.messages.routing import DEFAULT_QUEUE
from tests.conftest import WorkerProcess, mine, wait_status

RABBITMQ = ("127.0.0.1", 5672)


def rabbitmq_reachable() -> bool:
    try:
        socket.create_connection(RABBITMQ, timeout=1).close()
    except OSError:
        return False
    return True


def rabbitmqctl(*args: str) -> None:
    subprocess.run([shutil.which("rabbitmqctl") or "rabbitmqctl", *args], check=True,
                   capture_output=True, timeout=60)


@contextlib.contextmanager
def own_vhost() -> Iterator[tuple[str, str]]:
    """A virtual host of its own on the local RabbitMQ (its name and URL), deleted afterwards."""
    if not rabbitmq_reachable() or shutil.which("rabbitmqctl") is None:
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672 (CI starts it)")
    vhost = f"integration-test-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield vhost, f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    with own_vhost() as (_, url):
        yield url


@pytest.fixture
def quiet_vhost() -> Iterator[tuple[str, str]]:
    """A virtual host no worker consumes from: what the gateway published stays queued."""
    with own_vhost() as vhost:
        yield vhost


def queued_messages(url: str, queue: str) -> list[Any]:
    """Every message waiting in ``queue``, oldest first (taken off the queue)."""
    from kombu import Connection

    messages = []
    with Connection(url) as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            messages.append(message)
    return messages


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

    try:
        sender.start()
        wait_for(lambda: len(sender.answers) >= 15, message="burst under way")
        proxy.cut()
        wait_for(lambda: list(sender.outcomes.values())[-1] == 503, timeout=30,
                 message="503 while cut")
        time.sleep(0.5)
        proxy.restore()
        sender.join(120)
        outcomes = sender.outcomes
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


def test_every_202_item_of_a_batch_on_rabbitmq_is_in_its_queue_once_as_send_task_sends_it(
    make_app: Callable[..., Flask], auth: dict[str, str], quiet_vhost: tuple[str, str]
) -> None:
    """A batch spanning several chunks whose confirms are awaited together: every item is
    202, its message is in its type's queue exactly once, in order, and it is the Celery
    protocol-2 message ``send_task`` publishes (same body, headers and properties)."""
    from integration.broker.celery_app import create_celery
    from integration.broker.publisher import (
        CORRELATION_HEADER,
        args_summary,
        correlation_of,
        shadow_of,
    )
    from integration.messages.routing import PROCESS_TASK

    _, url = quiet_vhost
    client = make_app(broker_url=url, publish_chunk_size=40).test_client()
    types = ("metric", "event")
    batch = [{"type": types[i % 2], "source": "rabbit-batch",
              "data": {"name": f"m{i}", "value": i} if i % 2 == 0 else {"n": i}}
             for i in range(300)]
    response = client.post("/api/v1/messages", headers=auth, json=batch)
    assert response.status_code == 202
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == [202] * len(batch)
    expected = {t: [r["id"] for r, item in zip(results, batch, strict=True) if item["type"] == t]
                for t in types}
    queued = {t: queued_messages(url, t) for t in types}
    for t in types:
        assert [m.headers["id"] for m in queued[t]] == expected[t], f"{t}: each 202 once, in order"
    record = client.get(f"/api/v1/messages/{expected['metric'][-1]}", headers=auth).get_json()
    assert record["status"] == "queued"

    # The message send_task would publish for the first item, on the same vhost.
    ours = queued["metric"][0]
    envelope = json.loads(ours.body)[0][0]
    app = create_celery("integration.gateway")
    app.conf.broker_url = url
    with app.producer_or_acquire() as producer:
        app.send_task(PROCESS_TASK, args=(envelope,), task_id=envelope["id"], queue="metric",
                      producer=producer, ignore_result=True, argsrepr=args_summary(envelope),
                      shadow=shadow_of(envelope),
                      headers={CORRELATION_HEADER: correlation_of(envelope)})
    (theirs,) = queued_messages(url, "metric")
    assert ours.body == theirs.body
    assert ours.delivery_info["exchange"] == theirs.delivery_info["exchange"] == ""
    assert ours.delivery_info["routing_key"] == theirs.delivery_info["routing_key"] == "metric"
    # send_task names the host process as origin and a reply queue it never reads (results
    # are ignored); the gateway names itself and no reply queue.
    assert ours.headers.pop("origin") == "gateway" and theirs.headers.pop("origin")
    assert {**ours.headers} == {**theirs.headers}
    assert ours.headers["root_id"] == ours.headers["id"] == envelope["id"]
    ours_properties = {k: v for k, v in ours.properties.items() if k != "application_headers"}
    theirs_properties = {k: v for k, v in theirs.properties.items() if k != "application_headers"}
    assert ours_properties.pop("reply_to") == "" and theirs_properties.pop("reply_to")
    assert ours_properties == theirs_properties


def test_items_rabbitmq_nacks_mid_batch_are_503_without_a_record(
    make_app: Callable[..., Flask], auth: dict[str, str], quiet_vhost: tuple[str, str]
) -> None:
    """The queue takes 15 messages and then RabbitMQ nacks every publish (a length limit with
    reject-publish overflow), in the middle of the second chunk: the 15 acked items are 202
    and queued once; the nacked ones and the chunk never published are 503 and leave no
    record."""
    vhost, url = quiet_vhost
    rabbitmqctl("set_policy", "-p", vhost, "--apply-to", "queues", "full", "^metric$",
                json.dumps({"max-length": 15, "overflow": "reject-publish"}))
    client = make_app(broker_url=url, publish_chunk_size=10).test_client()
    run = uuid.uuid4().hex[:8]
    batch = [{"id": f"full-{run}-{i}", "type": "metric", "source": "rabbit-full",
              "data": {"name": f"m{i}", "value": i}} for i in range(30)]
    response = client.post("/api/v1/messages", headers=auth, json=batch)
    assert response.status_code == 202
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == [202] * 15 + [503] * 15
    accepted = [r["id"] for r in results[:15]]
    assert accepted == [mine(item["id"]) for item in batch[:15]]
    assert [m.headers["id"] for m in queued_messages(url, "metric")] == accepted
    for message_id in accepted:
        record = client.get(f"/api/v1/messages/{message_id}", headers=auth)
        assert record.status_code == 200 and record.get_json()["status"] == "queued"
    for item in batch[15:]:
        assert client.get(f"/api/v1/messages/{item['id']}", headers=auth).status_code == 404

    # The connection stays usable: once there is room, the same gateway publishes again
    # (the refused items themselves, whose ids are free).
    again = client.post("/api/v1/messages", headers=auth, json=batch[15:18])
    assert again.status_code == 202
    assert [r["status"] for r in again.get_json()["results"]] == [202] * 3


def test_a_broker_that_stops_confirming_gets_503_within_the_publish_timeout(
    make_app: Callable[..., Flask], auth: dict[str, str], quiet_vhost: tuple[str, str]
) -> None:
    """RabbitMQ receives the batch but its confirms never come back (held by a proxy): the
    answer comes within the publish timeout, every item is a 503 saying it may have been
    enqueued, with its record kept as queued (the broker holds the message: it must find
    its record); once the broker answers again the next batch is accepted on a new
    connection."""
    import time

    from tests.support.tcp_proxy import TcpProxy

    vhost, _ = quiet_vhost
    proxy = TcpProxy(*RABBITMQ)
    via_proxy = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}"
    client = make_app(broker_url=via_proxy, publish_timeout_seconds=1).test_client()
    run = uuid.uuid4().hex[:8]
    batch = [{"id": f"silent-{run}-{i}", "type": "metric", "source": "rabbit-silent",
              "data": {"name": f"m{i}", "value": i}} for i in range(20)]
    try:
        warm = client.post("/api/v1/messages", headers=auth, json=batch[0])
        assert warm.status_code == 202  # connection, channel and queue in place
        proxy.silence()
        started = time.monotonic()
        response = client.post("/api/v1/messages", headers=auth, json=batch[1:11])
        assert time.monotonic() - started < 4
        assert response.status_code == 503
        problem = response.get_json()
        assert problem["enqueued"] == "unknown"
        assert {r["problem"]["enqueued"] for r in problem["results"]} == {"unknown"}
        for item in batch[1:11]:
            status = client.get(f"/api/v1/messages/{item['id']}", headers=auth)
            assert status.status_code == 200 and status.get_json()["status"] == "queued"
        proxy.answer()
        again = client.post("/api/v1/messages", headers=auth, json=batch[11:])
        assert again.status_code == 202
        assert [r["status"] for r in again.get_json()["results"]] == [202] * 9
    finally:
        proxy.close()


def test_a_pooled_connection_the_broker_closed_is_replaced_before_the_batch_is_sent(
    make_app: Callable[..., Flask], auth: dict[str, str], quiet_vhost: tuple[str, str]
) -> None:
    """RabbitMQ closes the gateway's idle pooled connection (as on a broker restart): the
    next batch notices before writing anything and goes out once on a new connection, all
    202, each message queued once."""
    import time

    vhost, url = quiet_vhost
    client = make_app(broker_url=url).test_client()
    batch = [{"type": "metric", "source": "rabbit-closed", "data": {"name": f"m{i}", "value": i}}
             for i in range(12)]
    assert client.post("/api/v1/messages", headers=auth, json=batch[:2]).status_code == 202
    closing = subprocess.run([shutil.which("rabbitmqctl") or "rabbitmqctl",
                              "close_all_connections", "--vhost", vhost, "closed by the test"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    assert "Closed 0 connections" not in closing
    time.sleep(0.2)  # the broker's Connection.Close has reached the gateway's socket
    response = client.post("/api/v1/messages", headers=auth, json=batch[2:])
    assert response.status_code == 202
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == [202] * 10
    queued = [m.headers["id"] for m in queued_messages(url, "metric")]
    assert queued[2:] == [r["id"] for r in results] and len(queued) == 12


def test_depth_lookups_of_undeclared_queues_leave_no_channel_open(
    make_app: Callable[..., Flask], quiet_vhost: tuple[str, str]
) -> None:
    """Reading the depth of a queue nobody declared closes the channel the broker refused,
    on the pooled connection that stays open between lookups (metrics scrapes, the
    reconciler and back-pressure read depths all the time)."""
    _, url = quiet_vhost
    app = make_app(broker_url=url)
    publisher = app.extensions["integration"].submitter.publisher
    missing = [f"nobody-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for _ in range(40):
        assert publisher.queue_depths(missing) == dict.fromkeys(missing, 0)
    with publisher.app.pool.acquire(block=True) as connection:
        open_channels = [c for c in connection.connection.channels.values()
                         if c is not connection.connection and c.is_open]
    assert len(open_channels) <= 2, len(open_channels)
