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

from tests.conftest import wait_for, wait_status

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
    from integration.guards import GuardSettings, SharedBreaker
    from integration.registry import default_registry
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
        assert queues == set(default_registry().queues())
        states = {dict(ls)["state"]: v for (n, ls), v in exporters[0].items()
                  if n == "integration_breaker_state"
                  and dict(ls)["breaker"] == "test:metrics-target"}
        assert states == {"closed": 1.0, "open": 0.0, "half-open": 0.0}, "one series per state"
    finally:
        second_worker.stop()
