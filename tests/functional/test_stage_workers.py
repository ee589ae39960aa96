"""`celery -A tasks worker -Q diagnosis` runs one stage: it takes only its type's messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from integration.ops.client import Client
from integration.ops.embedded_redis import EmbeddedRedis
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


def test_sigterm_returns_unstarted_messages_to_the_queue(own_redis: EmbeddedRedis,
                                                         tmp_path: Path) -> None:
    """Warm shutdown mid-backlog: every message is either finished or back in its queue, and
    the requeue/outbox loop stops before the worker exits 0."""
    import base64
    import json

    client = Client(Settings(redis_url=own_redis.url, jwt_secret=TEST_SECRET))
    results = client.submit_many([{"type": "event", "source": "t", "data": {"n": i}}
                                  for i in range(400)])
    ids = {r.id for r in results}  # type: ignore[union-attr]
    broker = redis.Redis(port=own_redis.port)

    stage = WorkerProcess(["event"], tmp_path / "worker.log", concurrency=2,
                          env={"INTEGRATION_REDIS_URL": own_redis.url})
    try:
        wait_for(lambda: broker.llen("event") < 380, message="the worker under way")
        stage.process.terminate()
        assert stage.process.wait(timeout=60) == 0, "a warm shutdown exits 0"
    finally:
        stage.stop()
    assert '"loop":"requeue","event":"loop stopped"' in \
        stage.log_path.read_text(errors="replace"), \
        "the background loop finished its pass before the worker exited"

    waiting = {json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0]["id"]
               for raw in broker.lrange("event", 0, -1)}
    finished = {i for i in ids if client.status(i)["status"] == "succeeded"}
    assert finished and waiting, "stopped midway"
    assert finished | waiting == ids, "no message lost"
    assert broker.hlen("unacked") == 0, "nothing left unacknowledged"
