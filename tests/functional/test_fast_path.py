"""The gateway's fast path keeps every guarantee: coalesced submissions under a real gunicorn,
a gateway worker killed mid-burst, a paused broker, a broker that fills up mid-batch, and the
hand-built messages run by a stock worker with headers, retries and events."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
import requests
from celery import Celery
from flask import Flask

from integration.messages.routing import PROCESS_TASK
from integration.ops.embedded_redis import EmbeddedRedis, free_port
from tests.conftest import ROOT, TEST_SECRET, WorkerProcess, mine, wait_for

TYPES = ("metric", "event")


def payload(message_type: str, n: int) -> dict[str, Any]:
    if message_type == "metric":
        return {"name": "cpu_usage_percent", "value": float(n % 100)}
    return {"n": n}


def broker_messages(broker: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The Celery messages waiting in a Redis queue, oldest first, body decoded."""
    messages = []
    for raw in reversed(broker.lrange(queue, 0, -1)):
        message = json.loads(raw)
        message["decoded_body"] = json.loads(base64.b64decode(message["body"]))
        messages.append(message)
    return messages


def ids_by_queue(broker: redis.Redis) -> dict[str, list[str]]:
    return {queue: [m["headers"]["id"] for m in broker_messages(broker, queue)]
            for queue in TYPES}


class Gateway:
    """``integration serve`` (gunicorn, gevent, two workers) on a Redis of the test's own."""

    def __init__(self, redis_url: str, tmp_path: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # The bursts measure what a killed process loses, not the rate limit: on a fast
        # machine 16 senders pass the admin role's 500/s, and a 429 is not what is tested.
        policy = tmp_path / "policy.yaml"
        policy.write_text('roles:\n  admin:\n    submit: ["*"]\n    read: any\n'
                          '    rate_limit: "1000000/second"\n')
        environment = {**os.environ, "INTEGRATION_REDIS_URL": redis_url,
                       "INTEGRATION_POLICY_FILE": str(policy),
                       "INTEGRATION_JWT_SECRET": TEST_SECRET,
                       "INTEGRATION_GATEWAY_WORKERS": "2",
                       "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), **env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "integration", "serve", "--port", str(self.port)],
            cwd=ROOT, env=environment, stdout=(tmp_path / "gateway.log").open("wb"),
            stderr=subprocess.STDOUT)
        wait_for(self._up, timeout=30, message="the gateway")
        wait_for(lambda: len(self.workers()) == 2, message="two gunicorn workers")

    def _up(self) -> bool:
        try:
            return requests.get(self.base + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def workers(self) -> list[int]:
        return [child.pid for child in psutil.Process(self.process.pid).children()]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Sender(threading.Thread):
    """Submits single messages of alternating types, as fast as answered, until stopped;
    records (type, status, answer body, time answered) by message id."""

    def __init__(self, base: str, auth: dict[str, str], name: str,
                 outcomes: dict[str, tuple[str, int, Any, float]]) -> None:
        super().__init__(daemon=True)
        self.base, self.auth, self.prefix, self.outcomes = base, auth, name, outcomes
        self.halt = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        n = 0
        while not self.halt.is_set():
            message_type, message_id = TYPES[n % 2], f"{self.prefix}-{n}"
            n += 1
            try:
                response = session.post(self.base + "/api/v1/messages", headers=self.auth,
                                        json={"id": message_id, "type": message_type,
                                              "source": "fast-path",
                                              "data": payload(message_type, n)}, timeout=10)
                body = response.json() if response.content else None
                self.outcomes[mine(message_id)] = (message_type, response.status_code, body,
                                                   time.monotonic())
            except requests.RequestException:  # the worker serving it was killed
                self.outcomes[mine(message_id)] = (message_type, 0, None, time.monotonic())
                session = requests.Session()


def burst(gateway: Gateway, auth: dict[str, str], senders: int
          ) -> tuple[list[Sender], dict[str, tuple[str, int, Any, float]]]:
    outcomes: dict[str, tuple[str, int, Any, float]] = {}
    threads = [Sender(gateway.base, auth, f"s{i}", outcomes) for i in range(senders)]
    for thread in threads:
        thread.start()
    return threads, outcomes


def finish(threads: list[Sender]) -> None:
    for thread in threads:
        thread.halt.set()
    for thread in threads:
        thread.join(30)


def assert_every_202_enqueued_once_in_its_types_queue(
        outcomes: dict[str, tuple[str, int, Any, float]], broker: redis.Redis) -> None:
    queues = ids_by_queue(broker)
    where: dict[str, list[str]] = {}
    for queue, ids in queues.items():
        for message_id in ids:
            where.setdefault(message_id, []).append(queue)
    accepted = {k: v for k, v in outcomes.items() if v[1] == 202}
    assert accepted
    for message_id, (message_type, _, body, _) in accepted.items():
        assert body["id"] == message_id and body["type"] == message_type, "its own answer"
        assert where.get(message_id) == [message_type], f"{message_id} in {where.get(message_id)}"
    # Nothing refused or failed is in the broker (only a lost answer may be: status 0).
    for message_id in where:
        assert outcomes[message_id][1] in (202, 0)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", persistent=False).start()
    yield server
    server.stop()


def test_every_202_is_in_the_broker_after_a_gateway_worker_is_killed_mid_burst(
    own_redis: EmbeddedRedis, auth: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL of a gunicorn worker while coalesced submissions are in flight loses no 202."""
    gateway = Gateway(own_redis.url, tmp_path)
    broker = redis.Redis(port=own_redis.port)
    try:
        threads, outcomes = burst(gateway, auth, senders=16)
        wait_for(lambda: sum(v[1] == 202 for v in list(outcomes.values())) >= 150,
                 message="the burst under way")
        victim = gateway.workers()[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: len(gateway.workers()) == 2 and victim not in gateway.workers(),
                 message="gunicorn replacing the killed worker")
        wait_for(lambda: sum(v[1] == 202 and v[3] > killed_at + 1
                             for v in list(outcomes.values())) >= 50,
                 message="202s after the restart")
        finish(threads)
        assert {v[1] for v in outcomes.values()} <= {202, 0}
        assert_every_202_enqueued_once_in_its_types_queue(outcomes, broker)
        record = broker.hgetall(f"integration:msg:{next(iter(outcomes))}")
        assert record[b"status"] == b"queued"
    finally:
        broker.close()
        gateway.stop()


def test_no_202_while_the_broker_is_paused_and_every_202_is_enqueued(
    own_redis: EmbeddedRedis, auth: dict[str, str], tmp_path: Path
) -> None:
    """Writes paused mid-burst (CLIENT PAUSE WRITE): coalesced requests waiting on that flush
    are answered 503 after the publish timeout, never 202 before their EXEC returned."""
    gateway = Gateway(own_redis.url, tmp_path, INTEGRATION_PUBLISH_TIMEOUT_SECONDS="0.5")
    broker = redis.Redis(port=own_redis.port)
    pause = 2.0
    try:
        threads, outcomes = burst(gateway, auth, senders=16)
        wait_for(lambda: sum(v[1] == 202 for v in list(outcomes.values())) >= 100,
                 message="the burst under way")
        broker.execute_command("CLIENT", "PAUSE", int(pause * 1000), "WRITE")
        # Taken once the pause is certainly in effect: a flush that started later cannot
        # have had its EXEC run before the pause ends.
        paused_wall = time.time()
        paused_at = time.monotonic()
        wait_for(lambda: sum(v[1] == 202 and v[3] > paused_at + pause
                             for v in list(outcomes.values())) >= 50,
                 message="202s after the pause")
        finish(threads)
        # A 202 that arrives during the pause must come from a flush whose EXEC ran before
        # it (a loaded machine can be slow to deliver the answer); its record says when.
        during = [k for k, v in outcomes.items()
                  if v[1] == 202 and paused_at < v[3] < paused_at + pause - 0.1]
        flushed = {k: int(broker.hget(f"integration:msg:{k}", "accepted_ms") or 0) / 1000
                   for k in during}
        late = {k: at - paused_wall for k, at in flushed.items() if at > paused_wall}
        assert not late, f"answered 202 for flushes that started in the pause: {late}"
        assert any(v[1] == 503 for v in outcomes.values()), "the pause refused some"
        assert {v[1] for v in outcomes.values()} <= {202, 503}
        accepted = {k: v for k, v in outcomes.items() if v[1] == 202}
        queues = ids_by_queue(broker)
        for message_id, (message_type, _, body, _) in accepted.items():
            assert body["id"] == message_id
            assert message_id in queues[message_type]
        for queue, ids in queues.items():
            assert len(ids) == len(set(ids)), f"a message twice in {queue}"
    finally:
        broker.close()
        gateway.stop()


def test_a_batch_on_a_filling_broker_and_store_reports_exactly_what_was_enqueued(
    make_app: Callable[..., Flask], auth: dict[str, str], own_redis: EmbeddedRedis
) -> None:
    """Store and broker on one small Redis (the one-transaction path): the accepted items are
    exactly the queued ones, in order; refused items leave no record."""
    control = redis.Redis(port=own_redis.port)
    client = make_app(redis_url=own_redis.url, publish_chunk_size=20).test_client()
    # One message first, so what a first request writes (scripts, limiter and index keys) is
    # in place before the memory budget is set: the batch alone must fill it.
    warm = client.post("/api/v1/messages", headers=auth,
                       json={"type": "metric", "source": "fill", "data": {"name": "c", "value": 1}})
    assert warm.status_code == 202
    control.delete("metric")  # the warm-up message is not part of the batch's ledger
    control.config_set("maxmemory", int(control.info("memory")["used_memory"]) + 512 * 1024)
    batch = [{"id": f"fill-{i}", "type": "metric", "source": "fill",
              "data": {"name": "cpu", "value": 1.0, "labels": {"pad": "p" * 900}}}
             for i in range(500)]
    response = client.post("/api/v1/messages", json=batch, headers=auth)
    assert response.status_code == 202
    results = response.get_json()["results"]
    accepted = [r["id"] for r in results if r["status"] == 202]
    refused = [f"fill-{r['index']}" for r in results if r["status"] == 503]
    assert accepted and refused, "the Redis should fill up midway through the batch"
    assert [r["status"] for r in results] == [202] * len(accepted) + [503] * len(refused)
    assert [m["headers"]["id"] for m in broker_messages(control, "metric")] == accepted
    for message_id in refused[:3] + refused[-3:]:
        assert not control.exists(f"integration:msg:{message_id}")
    assert control.hget(f"integration:msg:{accepted[-1]}", "status") == b"queued"
    control.close()


def test_hand_built_messages_run_on_a_stock_worker_with_headers_retries_and_events(
    make_app: Callable[..., Flask], auth: dict[str, str], own_redis: EmbeddedRedis,
    tmp_path: Path
) -> None:
    """The one-transaction path's Celery protocol-2 messages: headers as send_task writes
    them, a transient failure retried to success, and the worker's task events sent."""
    client = make_app(redis_url=own_redis.url).test_client()
    response = client.post("/api/v1/messages", headers={**auth, "X-Correlation-ID": "chain-7"},
                           json={"id": "stock-1", "type": "test.flaky", "source": "fast-path",
                                 "data": {"key": "stock-1", "fail_times": 1}})
    assert response.status_code == 202
    broker = redis.Redis(port=own_redis.port)
    [message] = broker_messages(broker, "test.flaky")
    headers = message["headers"]
    stock = mine("stock-1")  # the id given, in the sender's namespace
    assert headers["task"] == PROCESS_TASK and headers["id"] == stock
    assert headers["root_id"] == stock and headers["retries"] == 0
    assert headers["correlationid"] == mine("chain-7") and headers["lang"] == "py"
    assert stock in headers["argsrepr"] and "fail_times" not in headers["argsrepr"]
    assert message["properties"]["correlation_id"] == stock
    assert message["properties"]["delivery_info"]["routing_key"] == "test.flaky"
    assert message["decoded_body"][0][0]["data"] == {"key": "stock-1", "fail_times": 1}

    events: list[dict[str, Any]] = []
    monitor = Celery(broker=own_redis.url)
    receivers: list[Any] = []

    def capture() -> None:
        with monitor.connection() as connection:
            receiver = monitor.events.Receiver(connection, handlers={"*": events.append})
            receivers.append(receiver)
            with contextlib.suppress(TimeoutError):
                receiver.capture(limit=None, timeout=60, wakeup=False)

    listener = threading.Thread(target=capture, daemon=True)
    listener.start()
    time.sleep(0.5)  # the receiver's queue is bound before the worker sends anything
    worker = WorkerProcess(["test.flaky"], tmp_path / "worker.log",
                           env={"INTEGRATION_REDIS_URL": own_redis.url,
                                "INTEGRATION_TASK_EVENTS": "true"})
    try:
        def finished() -> bool:
            return broker.hget(f"integration:msg:{stock}", "status") == b"succeeded"

        wait_for(finished, timeout=30, message="the message succeeded")
        assert int(broker.hget(f"integration:msg:{stock}", "attempts") or 0) == 2
        wait_for(lambda: sum(e.get("type") == "task-succeeded" and e.get("uuid") == stock
                             for e in events) >= 1, timeout=15, message="task events")
        kinds = {e["type"] for e in events if e.get("uuid") == stock}
        assert {"task-received", "task-started", "task-succeeded"} <= kinds
    finally:
        for receiver in receivers:
            receiver.should_stop = True
        listener.join(10)
        worker.stop()
        broker.close()
