"""Which queues live workers consume and how long each queue's oldest message has waited: the
cluster metrics a worker exports, and `integration check`'s warning, on a Redis of their own."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from flask import Flask

from integration.ops.embedded_redis import EmbeddedRedis
from tests.conftest import WorkerProcess, wait_for, wait_status
from tests.functional.test_check import findings, run_check
from tests.functional.test_worker_metrics import scrape, value


@pytest.fixture
def lone_worker(private_redis: EmbeddedRedis, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A worker consuming only ``test.flaky``, beating every half second."""
    env = {"INTEGRATION_REDIS_URL": private_redis.url,
           "INTEGRATION_WORKER_HEARTBEAT_SECONDS": "0.5"}
    process = WorkerProcess(["test.flaky"], tmp_path / "worker.log", concurrency=1, env=env)
    yield process
    process.stop()


def queue_samples(port: int, name: str) -> dict[str, float]:
    return {dict(labels)["queue"]: sample for (metric, labels), sample in scrape(port).items()
            if metric == name}


def test_a_queue_nobody_consumes_is_exported_and_reported(
    lone_worker: WorkerProcess, private_redis: EmbeddedRedis, make_app: Callable[..., Flask],
    auth: dict[str, str], test_environment: dict[str, str]
) -> None:
    """A message waits in a queue no worker consumes: its age grows, its consumers are 0, and
    `integration check` warns with the queue and count, Celery's own default queue too; once
    a worker consumes it, it drains and the warning is gone."""
    client = make_app(redis_url=private_redis.url).test_client()
    response = client.post("/api/v1/messages", headers=auth, json={
        "type": "test.slow", "source": "consumers", "data": {"key": "waits", "seconds": 0}})
    assert response.status_code == 202
    message_id = response.get_json()["id"]
    celery = Celery("operator", broker=private_redis.url, set_as_current=False,
                    config_source={"task_serializer": "json", "accept_content": ["json"]})
    celery.send_task("no.such.task", args=[], queue="celery")
    time.sleep(1.0)

    port = lone_worker.metrics_port
    consumers = queue_samples(port, "integration_queue_consumers")
    assert consumers["test.flaky"] == 1
    assert consumers["test.slow"] == consumers["celery"] == consumers["metric"] == 0
    ages = queue_samples(port, "integration_queue_oldest_age_seconds")
    assert 1.0 <= ages["test.slow"] < 30
    assert ages["test.flaky"] == 0, "an empty queue"
    assert "celery" not in ages, "a message without a status record has no known age"
    assert value(scrape(port), "integration_queue_depth", queue="test.slow") == 1

    env: dict[str, str | None] = {**test_environment, "INTEGRATION_REDIS_URL": private_redis.url}
    warned = findings(run_check(env, "--json", "--only", "queues"), "warning")
    assert sorted(warned) == [
        ("queues", "1 message(s) wait in queue celery, which no live worker consumes (Celery's "
                   "default queue: a producer without this configuration sends there, and a "
                   "worker consuming it passes each message on): start a worker with -Q celery"),
        ("queues", "1 message(s) wait in queue test.slow, which no live worker consumes: "
                   "start a worker with -Q test.slow")]

    # Told to consume the queue while it runs, the worker announces it at its next beat.
    name = lone_worker.name.replace("%h", socket.gethostname())
    assert celery.control.add_consumer("test.slow", destination=[name], reply=True, timeout=5)
    assert wait_status(client, auth, message_id)["status"] == "succeeded"
    wait_for(lambda: queue_samples(port, "integration_queue_consumers")["test.slow"] == 1,
             message="the added queue counted")
    assert queue_samples(port, "integration_queue_oldest_age_seconds")["test.slow"] == 0
    remaining: Any = findings(run_check(env, "--json", "--only", "queues"), "warning")
    assert [message for _, message in remaining if "test.slow" in message] == []
