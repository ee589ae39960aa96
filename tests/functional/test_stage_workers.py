"""`celery -A tasks worker -Q diagnosis` runs one stage: it takes only its type's messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from integration.client import Client
from integration.embedded_redis import EmbeddedRedis
from integration.settings import Settings
from tests.conftest import TEST_SECRET, WorkerProcess, wait_for


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis no other worker of the session consumes from."""
    with EmbeddedRedis(tmp_path / "redis", persistent=False) as server:
        yield server


def test_a_stage_worker_consumes_only_its_queue(own_redis: EmbeddedRedis,
                                                tmp_path: Path) -> None:
    client = Client(Settings(redis_url=own_redis.url, jwt_secret=TEST_SECRET))
    diagnosis = client.submit("diagnosis", {"alert": "HighCPU", "probable_cause": "leak",
                                            "confidence": 0.8}, source="tests")
    alert = client.submit("alert", {"name": "HighCPU"}, source="tests")

    stage = WorkerProcess(["diagnosis"], tmp_path / "worker.log", concurrency=1,
                          env={"INTEGRATION_REDIS_URL": own_redis.url})
    try:
        record = wait_for(lambda: (r := client.status(diagnosis)) and r["status"] ==
                          "succeeded" and r, message="diagnosis processed")
        assert record["delivered_queue"] == "diagnosis"
        # The alert waits in its own queue for an alert worker.
        assert client.status(alert)["status"] == "queued"
        assert redis.Redis(port=own_redis.port).llen("alert") == 1
    finally:
        stage.stop()
