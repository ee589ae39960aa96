"""Worker metrics from Celery signals, summed over the prefork pool (two processes)."""

from __future__ import annotations

import os
import re
import signal
import urllib.request
import uuid
from typing import Any

import redis
from flask.testing import FlaskClient

from tests.conftest import mine, wait_for, wait_status

SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$", re.MULTILINE)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    samples = {}
    for match in SAMPLE.finditer(text):
        labels = frozenset(tuple(pair.split("=", 1)) for pair in
                           re.findall(r'[a-z_]+="[^"]*"', match["labels"] or ""))
        samples[(match["name"], frozenset((k, v.strip('"')) for k, v in labels))] = \
            float(match["value"])
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def test_counters_and_histograms_move_by_the_right_amounts(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    before = scrape(worker.metrics_port)
    ids = []
    for _ in range(3):
        response = client.post("/api/v1/messages", headers=auth, json={
            "type": "test.flaky", "source": "metrics",
            "data": {"key": uuid.uuid4().hex, "fail_times": 1}})
        ids.append(response.get_json()["id"])
    for message_id in ids:
        assert wait_status(client, auth, message_id)["status"] == "succeeded"

    def delta(name: str, **labels: str) -> float:
        return value(scrape(worker.metrics_port), name, **labels) - value(before, name, **labels)

    wait_for(lambda: delta("integration_messages_processed_total", type="test.flaky",
                           status="succeeded") == 3, message="three successes counted")
    assert delta("integration_messages_processed_total", type="test.flaky", channel="rest",
                 status="retrying") == 3
    assert delta("integration_message_retries_total", type="test.flaky",
                 error="TransientError") == 3
    assert delta("integration_message_processing_seconds_count", type="test.flaky") == 6
    assert delta("integration_message_end_to_end_seconds_count", type="test.flaky") == 3
    assert delta("integration_message_queue_wait_seconds_count", type="test.flaky") == 6
    assert value(scrape(worker.metrics_port), "integration_messages_in_progress") == 0
    assert "message_id" not in str(scrape(worker.metrics_port))


def test_a_child_killed_mid_task_leaves_no_gauge_up_and_counters_stay(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_client: redis.Redis
) -> None:
    before = scrape(worker.metrics_port)
    processed_before = value(before, "integration_messages_processed_total")
    key = uuid.uuid4().hex[:10]
    message_id = client.post("/api/v1/messages", headers=auth, json={
        "type": "test.slow", "source": "metrics", "data": {"key": key, "seconds": 3}},
    ).get_json()["id"]
    started = wait_for(lambda: redis_client.lrange(f"tests:started:{key}", 0, -1),
                       message="slow task started")
    assert value(scrape(worker.metrics_port), "integration_messages_in_progress",
                 type="test.slow") == 1
    os.kill(int(started[0].split()[1]), signal.SIGKILL)
    wait_for(lambda: value(scrape(worker.metrics_port), "integration_messages_in_progress",
                           type="test.slow") == 0, message="gauge down after the SIGKILL")
    assert wait_status(client, auth, message_id, timeout=40)["status"] == "succeeded"
    after = scrape(worker.metrics_port)
    # The replaced child's counts were kept: nothing reset, nothing doubled.
    assert value(after, "integration_messages_processed_total") >= processed_before + 1


def test_queue_depth_and_breaker_state_come_from_one_worker_only(
    worker: Any, tmp_path: Any, redis_client: redis.Redis
) -> None:
    """Cluster-wide values are exported by the lease holder alone, so a sum over workers is
    the true value; breaker state is one series per state."""
    from integration.app import default_registry
    from integration.messages.routing import queue_names
    from integration.worker.guards import GuardSettings, SharedBreaker
    from tests.conftest import WorkerProcess

    SharedBreaker("test:metrics-target", redis_client, "integration", GuardSettings())
    first = scrape(worker.metrics_port)
    second_worker = WorkerProcess(["test.patient-unused"], tmp_path / "second.log")
    try:
        second = scrape(second_worker.metrics_port)
        exporters = [s for s in (first, second)
                     if any(n == "integration_queue_depth" for n, _ in s)]
        assert len(exporters) == 1, "exactly one worker exports the queue depth"
        queues = {dict(ls)["queue"] for n, ls in exporters[0] if n == "integration_queue_depth"}
        assert queues == set(queue_names(default_registry()))
        states = {dict(ls)["state"]: v for (n, ls), v in exporters[0].items()
                  if n == "integration_breaker_state"
                  and dict(ls)["breaker"] == "test:metrics-target"}
        assert states == {"closed": 1.0, "open": 0.0, "half-open": 0.0}, "one series per state"
    finally:
        second_worker.stop()


def _delta_since(port: int, before: dict[Any, float]) -> Any:
    def delta(name: str, **labels: str) -> float:
        return value(scrape(port), name, **labels) - value(before, name, **labels)

    return delta


def test_dead_and_deferred_outcomes_are_counted(
    client: FlaskClient, auth: dict[str, str], worker: Any
) -> None:
    """A permanent failure counts one dead letter; a rate-limited action counts each deferral."""
    before = scrape(worker.metrics_port)
    delta = _delta_since(worker.metrics_port, before)
    dead_id = client.post("/api/v1/messages", headers=auth, json={
        "type": "test.flaky", "source": "metrics",
        "data": {"key": uuid.uuid4().hex, "fail_times": 1, "kind": "permanent"}},
    ).get_json()["id"]
    target = uuid.uuid4().hex[:8]
    action_ids = [client.post("/api/v1/messages", headers=auth, json={
        "type": "test.action", "source": "metrics",
        "data": {"action": f"step-{i}", "target": target, "key": uuid.uuid4().hex}},
    ).get_json()["id"] for i in range(6)]
    assert wait_status(client, auth, dead_id)["status"] == "dead"
    records = [wait_status(client, auth, i, timeout=30) for i in action_ids]
    deferrals = sum(1 for r in records for h in r["history"] if h["status"] == "deferred")
    assert deferrals >= 2, "4 actions per 3 s per target: some of the 6 waited"

    wait_for(lambda: delta("integration_messages_processed_total", type="test.action",
                           status="succeeded") == 6, message="six actions counted")
    assert delta("integration_dead_letters_total", type="test.flaky",
                 error="PermanentError") == 1
    assert delta("integration_messages_processed_total", type="test.flaky", channel="rest",
                 status="dead") == 1
    assert delta("integration_messages_deferred_total", type="test.action") == deferrals
    assert delta("integration_messages_processed_total", type="test.action",
                 status="deferred") == deferrals
    assert delta("integration_message_end_to_end_seconds_count", type="test.flaky") == 1


def test_revoked_and_unknown_tasks_are_counted_and_nothing_stays_queued(
    client: FlaskClient, auth: dict[str, str], worker: Any, redis_url: str
) -> None:
    """A task revoked through Celery (Flower, ``celery control revoke``) ends its message dead
    with a Revoked error; a message for an unknown task is counted as refused."""
    from celery import Celery

    other = Celery("operator", broker=redis_url, set_as_current=False,
                   config_source={"task_serializer": "json", "accept_content": ["json"]})
    before = scrape(worker.metrics_port)
    delta = _delta_since(worker.metrics_port, before)
    message_id = f"revoked-{uuid.uuid4().hex[:12]}"
    # The Celery task id is the message id: the given id in its sender's namespace.
    replies = other.control.revoke(mine(message_id), reply=True, timeout=5, limit=1)
    assert replies, "the worker acknowledged the revocation"
    response = client.post("/api/v1/messages", headers=auth, json={
        "id": message_id, "type": "test.flaky", "source": "metrics",
        "data": {"key": uuid.uuid4().hex}})
    assert response.status_code == 202
    record = wait_status(client, auth, message_id)
    assert record["status"] == "dead"
    assert record["error"]["type"] == "Revoked"
    wait_for(lambda: delta("integration_tasks_revoked_total", type="test.flaky",
                           reason="revoked") == 1, message="revocation counted")

    other.send_task("no.such.task", args=[], queue="event")
    wait_for(lambda: delta("integration_tasks_refused_total", reason="unknown_task") == 1,
             message="unknown task counted")


def test_every_type_starts_from_zero(worker: Any) -> None:
    """Before any message, each registered type's outcomes are exported at 0, so the first
    messages after a start count in rate() and increase()."""
    from integration.app import default_registry

    samples = wait_for(lambda: scrape(worker.metrics_port), message="a scrape")
    for kind in default_registry().names():
        for status in ("succeeded", "dead"):
            key = ("integration_messages_processed_total",
                   frozenset({("type", kind), ("channel", "rest"), ("status", status)}))
            assert key in samples, key
