"""The gateway's replica wait against a real master and replica: a 202 is on the replica when
it arrives; a wait that times out is a 503 whose message is recorded, and a retry with the
same Idempotency-Key gives the same message without a duplicate."""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.sync.client import connect
from werkzeug.serving import make_server

from integration.gateway import create_app
from integration.ops.embedded_redis import EmbeddedRedis, free_port
from integration.settings import Settings
from tests.conftest import TEST_SECRET, wait_for
from tests.functional.test_websocket import Gateway


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedRedis,
                                                                      EmbeddedRedis]]:
    """A master and its replica, owned by this module."""
    directory = tmp_path_factory.mktemp("replication")
    with EmbeddedRedis(directory / "master", persistent=False,
                       extra_args=("--repl-diskless-sync-delay", "0")) as master, \
            EmbeddedRedis(directory / "replica", persistent=False,
                          extra_args=("--replicaof", "127.0.0.1", str(master.port))) as replica:
        client = redis.Redis(port=replica.port)
        wait_for(lambda: client.info("replication")["master_link_status"] == "up",
                 timeout=10, message="the replica in sync")
        client.close()
        client = redis.Redis(port=master.port)
        client.set("replication-test", 1)  # streaming: the replica acknowledges writes
        assert client.execute_command("WAIT", 1, 10_000) == 1
        client.close()
        yield master, replica


def serve(settings: Settings) -> Iterator[str]:
    server = make_server("127.0.0.1", free_port(), create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def timeout_ms() -> int:
    """The wait's timeout: generous for a healthy replica on a busy machine."""
    return 2000


@pytest.fixture(params=["fused", "separate-broker"])
def gateway(request: pytest.FixtureRequest, pair: tuple[EmbeddedRedis, EmbeddedRedis],
            timeout_ms: int) -> Iterator[str]:
    """The gateway with the wait on: the broker on the store's database (one transaction),
    or on another database of the same Redis (the store's writes, then the publish)."""
    master, _ = pair
    broker = None if request.param == "fused" else f"redis://127.0.0.1:{master.port}/1"
    yield from serve(Settings(redis_url=master.url, broker_url=broker, jwt_secret=TEST_SECRET,
                              publish_timeout_seconds=3, redis_replica_wait=1,
                              redis_replica_wait_timeout_ms=timeout_ms))


def post(url: str, body: Any, auth: dict[str, str], key: str | None = None,
         path: str = "/api/v1/messages") -> tuple[int, Any, dict[str, str]]:
    headers = {"Content-Type": "application/json", **auth}
    if key is not None:
        headers["Idempotency-Key"] = key
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def alert(name: str) -> dict[str, Any]:
    return {"type": "alert", "source": "replica-test", "data": {"name": name}}


def record(port: int, message_id: str) -> dict[bytes, bytes]:
    client = redis.Redis(port=port)
    try:
        return client.hgetall(f"integration:msg:{message_id}")  # type: ignore[return-value]
    finally:
        client.close()


def records(port: int) -> int:
    client = redis.Redis(port=port)
    try:
        return int(client.zcard("integration:idx:all"))
    finally:
        client.close()


def wait_calls(server: EmbeddedRedis) -> int:
    client = redis.Redis(port=server.port)
    try:
        return int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
    finally:
        client.close()


def test_every_202_is_on_the_replica_when_it_arrives(
        gateway: str, pair: tuple[EmbeddedRedis, EmbeddedRedis],
        auth: dict[str, str]) -> None:
    master, replica = pair
    for number in range(25):
        status, body, _ = post(gateway, alert(f"single-{number}"), auth,
                               key=f"single-{number}" if number % 2 else None)
        assert status == 202, body
        assert record(replica.port, body["id"]), f"message {number} not on the replica"
    waits = wait_calls(master)
    status, body, _ = post(gateway, [alert(f"batch-{n}") for n in range(50)], auth)
    assert status == 202, body
    assert body["accepted"] == 50
    assert wait_calls(master) == waits + 1  # one wait for the batch's flush
    for item in body["results"]:
        assert record(replica.port, item["id"])


@pytest.fixture
def paused(pair: tuple[EmbeddedRedis, EmbeddedRedis]) -> Iterator[Any]:
    """Pauses the replica (SIGSTOP) while the test asks; resumed whatever happens."""
    _, replica = pair
    assert replica.process is not None
    pid = replica.process.pid

    class Pause:
        def __enter__(self) -> None:
            os.kill(pid, signal.SIGSTOP)

        def __exit__(self, *_: object) -> None:
            os.kill(pid, signal.SIGCONT)

    try:
        yield Pause()
    finally:
        os.kill(pid, signal.SIGCONT)


def caught_up(master: EmbeddedRedis, replica: EmbeddedRedis) -> bool:
    return records(master.port) == records(replica.port)


@pytest.mark.parametrize("timeout_ms", [300])
def test_a_wait_that_times_out_is_a_503_and_a_retry_with_the_key_is_safe(
        gateway: str, pair: tuple[EmbeddedRedis, EmbeddedRedis], paused: Any,
        auth: dict[str, str], tmp_path: Path) -> None:
    master, replica = pair
    key = f"unreplicated-{tmp_path.name}"
    with paused:
        status, problem, headers = post(gateway, alert("unreplicated"), auth, key=key)
        assert status == 503, problem
        assert headers["Content-Type"] == "application/problem+json"
        assert headers["Retry-After"]
        assert problem["enqueued"] == "yes"
        assert problem["replicated"] == "unknown"
        assert "not known to be replicated" in problem["detail"]
        assert "may still run" in problem["detail"]
        assert record(master.port, problem["id"])[b"status"] == b"queued"
        before = records(master.port)
    wait_for(lambda: caught_up(master, replica), timeout=10)
    assert record(replica.port, problem["id"])

    status, body, headers = post(gateway, alert("unreplicated"), auth, key=key)
    assert status == 202, body
    assert body["id"] == problem["id"]
    assert headers.get("Idempotent-Replayed") == "true"
    assert records(master.port) == before  # nothing enqueued again


@pytest.mark.parametrize("timeout_ms", [300])
def test_a_batch_waits_once_and_its_retry_gives_the_same_ids(
        gateway: str, pair: tuple[EmbeddedRedis, EmbeddedRedis], paused: Any,
        auth: dict[str, str], tmp_path: Path) -> None:
    master, replica = pair
    key = f"unreplicated-batch-{tmp_path.name}"
    batch = [alert(f"unreplicated-{n}") for n in range(10)]
    with paused:
        status, problem, _ = post(gateway, batch, auth, key=key)
        assert status == 503, problem
        assert problem["enqueued"] == "yes"
        ids = [item["problem"]["id"] for item in problem["results"]]
        assert all(item["status"] == 503 for item in problem["results"])
        assert all(record(master.port, i) for i in ids)
        before = records(master.port)
    wait_for(lambda: caught_up(master, replica), timeout=10)
    status, body, _ = post(gateway, batch, auth, key=key)
    assert status == 202, body
    assert [item["id"] for item in body["results"]] == ids
    assert records(master.port) == before


@pytest.mark.parametrize("timeout_ms", [300])
@pytest.mark.parametrize("gateway", ["fused"], indirect=True)
def test_an_alertmanager_retry_of_the_503_counts_the_enqueued_alerts_as_duplicates(
        gateway: str, pair: tuple[EmbeddedRedis, EmbeddedRedis], paused: Any,
        auth: dict[str, str], tmp_path: Path) -> None:
    master, replica = pair
    alerts = [{"status": "firing", "labels": {"alertname": "Replica", "instance": f"i-{n}"},
               "annotations": {}, "startsAt": "2026-01-31T12:00:00Z",
               "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
               "fingerprint": f"{tmp_path.name[-8:]}{n:08d}"} for n in range(3)]
    notification = {"receiver": "bus", "status": "firing", "alerts": alerts,
                    "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
                    "externalURL": "http://alertmanager.example.org", "version": "4",
                    "groupKey": "{}:{}", "truncatedAlerts": 0}
    with paused:
        status, problem, _ = post(gateway, notification, auth, path="/api/v1/alertmanager")
        assert status == 503, problem
        before = records(master.port)
    wait_for(lambda: caught_up(master, replica), timeout=10)
    status, body, _ = post(gateway, notification, auth, path="/api/v1/alertmanager")
    assert status == 202, body
    assert (body["accepted"], body["duplicates"]) == (0, 3)
    assert records(master.port) == before


def test_a_websocket_submission_waits_the_same_way(
        pair: tuple[EmbeddedRedis, EmbeddedRedis], paused: Any, token: str,
        tmp_path: Path) -> None:
    """Through ``integration serve`` (gunicorn, gevent), whose sockets WebSockets need."""
    master, replica = pair
    gateway = Gateway(master.url, tmp_path, workers=1, INTEGRATION_REDIS_REPLICA_WAIT="1",
                      INTEGRATION_REDIS_REPLICA_WAIT_TIMEOUT_MS="300")
    try:
        with connect(gateway.ws_url, additional_headers={"Authorization": f"Bearer {token}"},
                     open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "authenticated"
            ws.send(json.dumps({"type": "submit", "id": "on", "message": alert("socket")}))
            ack = json.loads(ws.recv(timeout=10))
            assert ack["type"] == "ack", ack
            assert record(replica.port, ack["id"])
            with paused:
                ws.send(json.dumps({"type": "submit", "id": "off", "message": alert("socket")}))
                error = json.loads(ws.recv(timeout=10))
    finally:
        gateway.stop()
    assert error["ref"] == "off", error
    assert error["problem"]["status"] == 503
    assert error["problem"]["replicated"] == "unknown"
    assert record(master.port, error["problem"]["id"])
