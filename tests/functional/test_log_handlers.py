"""A handler named in ``INTEGRATION_LOG_HANDLERS`` (as Sentry's or OpenTelemetry's would be)
receives the service's own lines, with their correlation id, in a real gateway and worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from integration.ops.embedded_redis import EmbeddedRedis, free_port
from integration.security.tokens import issue_token
from tests.conftest import ROOT, TEST_SECRET, WorkerProcess, wait_for
from tests.functional.test_gateway_server import fetch


def _records(path: Path) -> list[dict[str, Any]]:
    return ([json.loads(line) for line in path.read_text().splitlines()]
            if path.exists() else [])


def test_an_attached_handler_receives_every_line_with_the_correlation_id(
    private_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    records = tmp_path / "records.jsonl"
    env = {"INTEGRATION_REDIS_URL": private_redis.url, "TEST_LOG_RECORDS": str(records),
           "INTEGRATION_LOG_HANDLERS": "tests.support.log_records:RecordFile"}
    port = free_port()
    with (tmp_path / "gateway.log").open("wb") as gateway_log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "integration", "serve", "--port", str(port)], cwd=ROOT,
            env={**os.environ, **env, "INTEGRATION_GATEWAY_WORKERS": "1",
                 "INTEGRATION_GATEWAY_METRICS_PORT": str(free_port()),
                 "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")},
            stdout=gateway_log, stderr=subprocess.STDOUT)
    worker = WorkerProcess(["alert"], tmp_path / "worker.log", concurrency=1, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: fetch(base + "/healthz")[0] == 200, timeout=30, message="gateway")
        correlation = f"handlers-{uuid.uuid4().hex[:10]}"
        request = urllib.request.Request(
            base + "/api/v1/messages", method="POST",
            data=json.dumps({"type": "alert", "source": "logs", "data": {"name": "x"}}).encode(),
            headers={"Authorization": f"Bearer {issue_token(TEST_SECRET, 'h', ['admin'], 60)}",
                     "Content-Type": "application/json", "X-Correlation-ID": correlation})
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            message_id = json.loads(response.read())["id"]

        def ours(event: str) -> list[dict[str, Any]]:
            # The worker's correlation id is the client's, scoped to its owner.
            return [r for r in _records(records) if r["message"] == event
                    and str(r.get("correlation_id", "")).startswith(correlation)]

        (processed,) = wait_for(lambda: ours("processed"), message="the worker's record")
        assert processed["name"] == "integration.worker" and processed["levelname"] == "INFO"
        assert processed["message_id"] == message_id and processed["type"] == "alert"
        assert processed["task_id"] and processed["status"] == "succeeded"
        assert processed["pathname"].endswith("observability.py")
        (request_record,) = wait_for(lambda: ours("request"), message="the gateway's record")
        assert request_record["name"] == "integration.gateway"
        assert request_record["path"] == "/api/v1/messages" and request_record["status"] == 202
        # The service's own lines are still there, as before.
        line = next(json.loads(text) for text in worker.log_path.read_text().splitlines()
                    if correlation in text and '"processed"' in text)
        assert line["event"] == "processed" and line["message_id"] == message_id
    finally:
        worker.stop()
        gateway.terminate()
        gateway.wait(timeout=30)
