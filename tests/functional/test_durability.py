"""The ledger holds: a message the broker lost is sent again by the reconciler, and workers
killed mid-call leave nothing unfinished past the recovery bound (real worker, real Redis).

The end states are the ones a broker outage leaves behind: a record ``queued`` or
``processing`` whose message is in no queue and in nobody's unacknowledged deliveries
(kombu's pop and its unacked write are two steps; a rejected retry publish), and the
unacknowledged delivery of a worker that died.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from integration.app import build_submitter
from integration.broker.holdings import RedisHoldings
from integration.broker.publisher import Outgoing
from integration.broker.submission import Submitter
from integration.messages.envelope import Envelope
from integration.messages.status import Status
from integration.ops.embedded_redis import EmbeddedRedis
from integration.settings import Settings
from integration.store.model import NewRecord
from integration.worker.heartbeats import Heartbeats
from tests.conftest import WorkerProcess, configured, wait_for, wait_status
from tests.functional.test_retries import _children
from tests.support.recovery import FAST_RECOVERY, CountingTarget, action, fast_bound

#: Recovery, then the handler's own time (a call to the counting target), with room for a
#: loaded machine.
SETTLE = fast_bound() + 4


@pytest.fixture(scope="module")
def target() -> Iterator[CountingTarget]:
    with CountingTarget(delay=0.05) as server:
        yield server


@pytest.fixture(scope="module")
def durable(tmp_path_factory: pytest.TempPathFactory,
            target: CountingTarget) -> Iterator[tuple[EmbeddedRedis, WorkerProcess]]:
    """A Redis of its own and a worker with fast recovery consuming ``action``."""
    directory = tmp_path_factory.mktemp("durability")
    with EmbeddedRedis(directory / "redis", persistent=False) as server:
        env = {**FAST_RECOVERY, "INTEGRATION_REDIS_URL": server.url,
               "INTEGRATION_RULES_FILE": str(target.rules_file(directory))}
        worker = WorkerProcess(["action"], directory / "worker.log", env=env)
        try:
            yield server, worker
        finally:
            worker.stop()


@pytest.fixture
def submitter(settings: Settings, durable: tuple[EmbeddedRedis, WorkerProcess]) -> Submitter:
    return build_submitter(configured(settings, redis_url=durable[0].url), origin="test")


@pytest.fixture
def api(make_app: Any, durable: tuple[EmbeddedRedis, WorkerProcess]) -> FlaskClient:
    app: Flask = make_app(redis_url=durable[0].url)
    return app.test_client()


def stranded(submitter: Submitter, status: Status = Status.QUEUED) -> Envelope:
    """A record that says ``status`` while its message is nowhere: what the gap between
    kombu's pop and its unacked write, or a rejected retry publish, leaves behind."""
    envelope = Envelope.model_validate({**action(0), "id": f"lost-{uuid.uuid4().hex[:10]}"})
    envelope.data["action"] = envelope.id  # its own action: no loop guard in the way
    [created] = submitter.store.create_many([NewRecord(
        id=envelope.id, type="action", queue="action", envelope=envelope.to_wire(),
        owner="tester", channel="api", status=Status.QUEUED)])
    assert created
    if status is Status.PROCESSING:
        submitter.store.transition(envelope.id, Status.PROCESSING, count_attempt=True)
    return envelope


def reconciled(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [h for h in record["history"] if h["status"] == "reconciled"]


def metric(worker: WorkerProcess, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics",
                                  timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


def test_what_a_live_worker_holds_is_seen_where_the_reconciler_looks(
        api: FlaskClient, auth: dict[str, str], target: CountingTarget,
        durable: tuple[EmbeddedRedis, WorkerProcess]) -> None:
    """A real worker mid-call: its delivery is in kombu's unacknowledged entries as read
    here, and in its heartbeat (what breaks if kombu's layout or Celery's state moves)."""
    target.delay = 2.0
    try:
        seen = target.received
        response = api.post("/api/v1/messages", headers=auth, json=action(99))
        message_id = response.get_json()["id"]
        wait_for(lambda: target.received > seen, message="the call under way")
        broker = redis.Redis(port=durable[0].port)
        assert message_id in {d.task_id for d in RedisHoldings(broker).unacked()}
        beats = Heartbeats(broker, "integration")
        wait_for(lambda: message_id in beats.alive().held, timeout=5,
                 message="the message in the worker's heartbeat")
    finally:
        target.delay = 0.05
    assert wait_status(api, auth, message_id)["status"] == "succeeded"


@pytest.mark.parametrize("status", [Status.QUEUED, Status.PROCESSING])
def test_a_record_whose_message_is_nowhere_is_sent_again_with_one_effect(
        status: Status, submitter: Submitter, api: FlaskClient, auth: dict[str, str],
        target: CountingTarget, durable: tuple[EmbeddedRedis, WorkerProcess]) -> None:
    """Queued or processing, in no queue and no unacknowledged delivery: the reconciler sends
    it again within the bound, it succeeds, and the downstream performs it once."""
    envelope = stranded(submitter, status)
    key = f"{envelope.id}:1"
    if status is Status.PROCESSING:
        # The lost delivery's call went out before its record could say so.
        request = urllib.request.Request(f"http://127.0.0.1:{target.port}/effect", b"{}",
                                         {"Idempotency-Key": key})
        urllib.request.urlopen(request, timeout=5).read()
    started = time.monotonic()
    record = wait_status(api, auth, envelope.id, timeout=SETTLE + 10)
    assert record["status"] == "succeeded", record
    assert time.monotonic() - started <= SETTLE
    [note] = reconciled(record)
    assert note["was"] == str(status) and "no live worker" in note["reason"]
    assert key in target.effects, "performed, once, under its generation's key"
    assert target.calls[key] == (2 if status is Status.PROCESSING else 1)
    assert metric(durable[1], "integration_messages_reconciled_total{") >= 1


def test_a_dead_workers_unacknowledged_delivery_is_sent_again_and_forgotten(
        submitter: Submitter, api: FlaskClient, auth: dict[str, str],
        target: CountingTarget, durable: tuple[EmbeddedRedis, WorkerProcess]) -> None:
    """kombu's record of a delivery taken by a worker that has no heartbeat: the message is
    sent again, and the stale entry is removed so the broker never restores a copy."""
    envelope = stranded(submitter)
    broker = redis.Redis(port=durable[0].port)
    tag = str(uuid.uuid4())
    message = json.loads(submitter.publisher.redis_message(
        Outgoing(envelope.id, envelope.to_wire(), "action")))
    broker.hset("unacked", tag, json.dumps([message, "", "action"]))
    broker.zadd("unacked_index", {tag: time.time() - 60})

    record = wait_status(api, auth, envelope.id, timeout=SETTLE + 10)
    assert record["status"] == "succeeded"
    assert "taken by a worker that is gone" in reconciled(record)[0]["reason"]
    assert target.calls[f"{envelope.id}:1"] == 1
    assert not broker.hexists("unacked", tag) and broker.zscore("unacked_index", tag) is None


def test_a_delivery_held_by_a_live_worker_is_left_until_its_heartbeat_stops(
        submitter: Submitter, api: FlaskClient, auth: dict[str, str],
        durable: tuple[EmbeddedRedis, WorkerProcess]) -> None:
    """While another worker's heartbeat lists the message, nothing is sent again; once the
    heartbeat lapses (the worker died), it is."""
    envelope = stranded(submitter)
    beats = Heartbeats(submitter.store.client, "integration")
    holder_lives = fast_bound() + 1.5
    beats.beat("other-worker:1:x", [envelope.id], ttl=holder_lives)
    time.sleep(holder_lives - 0.5)
    record = api.get(f"/api/v1/messages/{envelope.id}", headers=auth).get_json()
    assert record["status"] == "queued" and not reconciled(record)
    record = wait_status(api, auth, envelope.id, timeout=SETTLE + 10)
    assert record["status"] == "succeeded" and len(reconciled(record)) == 1


def test_a_message_waiting_in_its_queue_is_never_sent_twice(
        api: FlaskClient, auth: dict[str, str],
        durable: tuple[EmbeddedRedis, WorkerProcess]) -> None:
    """A message in a queue nobody consumes yet is held by that queue: passes go by and it
    stays one message."""
    response = api.post("/api/v1/messages", headers=auth, json={
        "type": "test.slow", "source": "durability", "data": {"key": "idle", "seconds": 0}})
    assert response.status_code == 202
    message_id = response.get_json()["id"]
    time.sleep(fast_bound() * 1.5)
    broker = redis.Redis(port=durable[0].port)
    assert broker.llen("test.slow") == 1
    record = api.get(f"/api/v1/messages/{message_id}", headers=auth).get_json()
    assert record["status"] == "queued" and not reconciled(record)
    broker.delete("test.slow")


def test_check_lists_a_stranded_record(settings: Settings, private_redis: EmbeddedRedis) -> None:
    """``integration check`` names a record that nothing holds, and why."""
    from tests.functional.test_check import findings, run_check

    lonely = build_submitter(configured(settings, redis_url=private_redis.url), origin="test")
    envelope = stranded(lonely)
    time.sleep(0.3)
    env = {"INTEGRATION_REDIS_URL": private_redis.url,
           "INTEGRATION_RECONCILE_AFTER_SECONDS": "0.1"}
    result = run_check(env, "--json", "--only", "ledger")
    [(_, message)] = findings(result, "warning")
    assert envelope.id in message and "in no queue, with no live worker" in message


def test_killed_pool_processes_and_a_killed_worker_leave_nothing_unfinished(
        make_app: Any, auth: dict[str, str], tmp_path: Path) -> None:
    """kill -9 of the pool processes, then of a whole worker, while calls are in flight:
    every message is final within the bound (plus the calls' own time), each performed once
    by its key. The visibility timeout stays at its default (an hour): the reconciler and
    the claims, not the broker's timer, bring the messages back."""
    with CountingTarget(delay=1.0) as target, \
            EmbeddedRedis(tmp_path / "redis", persistent=False) as server:
        env = {**FAST_RECOVERY, "INTEGRATION_REDIS_URL": server.url,
               "INTEGRATION_RULES_FILE": str(target.rules_file(tmp_path))}
        client = make_app(redis_url=server.url).test_client()
        first = WorkerProcess(["action"], tmp_path / "first.log", env=env)
        ids: list[str] = []

        def burst(count: int) -> None:
            for _ in range(count):
                response = client.post("/api/v1/messages", headers=auth,
                                       json=action(len(ids)))
                assert response.status_code == 202
                ids.append(response.get_json()["id"])

        def in_flight(count: int) -> None:
            wait_for(lambda: target.received >= count, timeout=20, message="calls in flight")

        def settled(since: float, extra: float) -> None:
            records = [wait_status(client, auth, i, timeout=SETTLE + extra + 20)
                       for i in ids]
            assert {r["status"] for r in records} == {"succeeded"}
            elapsed = time.monotonic() - since
            assert elapsed <= SETTLE + extra, f"final after {elapsed:.1f} s"
            assert target.effects == {f"{i}:1" for i in ids}

        try:
            burst(6)
            in_flight(1)
            for child in _children(first.process.pid):
                os.kill(child, signal.SIGKILL)
            settled(time.monotonic(), extra=6 * target.delay)

            burst(6)
            in_flight(target.received + 1)
            for pid in [first.process.pid, *_children(first.process.pid)]:
                os.kill(pid, signal.SIGKILL)
            first.process.wait()
            second = WorkerProcess(["action"], tmp_path / "second.log", env=env)
            try:
                settled(time.monotonic(), extra=6 * target.delay)
            finally:
                second.stop()
        finally:
            first.stop()
