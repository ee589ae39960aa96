"""Fenced claims: a worker cut off mid-call (paused, not killed) finishes after another
worker took its messages over; its late finishes are refused (real workers, real Redis).

Worker A takes three ``action`` messages and is stopped (SIGSTOP, the whole process tree, as
a partitioned host or a paused VM) while its calls to the target are in flight. Its claims
lapse, the reconciler sends the messages again, worker B runs and finishes them. A is then
continued: its handlers return, two with the target's answer (a late success) and one with
a timeout (a late failure, which would park a retry), and every one of those writes meets a
claim A no longer holds.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import redis

from integration.ops.embedded_redis import EmbeddedRedis
from tests.conftest import WorkerProcess, wait_for, wait_status
from tests.functional.test_durability import SETTLE, metric
from tests.functional.test_retries import _children
from tests.support.recovery import FAST_RECOVERY, CountingTarget, action

MESSAGES = 3
#: The target under two names: calls to ``patient`` outlast the pause and succeed late;
#: calls to ``counting`` time out and fail late.
TARGETS = ("patient", "counting", "patient")


def rules_file(directory: Path, target: CountingTarget) -> Path:
    path = directory / "fencing-rules.yaml"
    url = f"http://127.0.0.1:{target.port}/effect"
    path.write_text(json.dumps({"targets": {
        "patient": {"executor": "http", "url": url, "method": "POST", "timeout_seconds": 60},
        "counting": {"executor": "http", "url": url, "method": "POST", "timeout_seconds": 2},
    }}))
    return path


def pause(worker: WorkerProcess, sig: signal.Signals) -> None:
    """Send ``sig`` to the worker's main process and its pool processes."""
    for pid in [worker.process.pid, *_children(worker.process.pid)]:
        os.kill(pid, sig)


def fenced_lines(worker: WorkerProcess) -> list[dict[str, Any]]:
    """The worker's log records of refused (fenced) finishes."""
    records = [json.loads(line) for line in
               worker.log_path.read_text(errors="replace").splitlines()
               if line.startswith("{") and "fenced" in line]
    return [r for r in records if "refused (fenced)" in r["event"]]


def test_a_paused_workers_late_finishes_are_fenced(make_app: Any, auth: dict[str, str],
                                                   tmp_path: Path) -> None:
    """Three messages whose worker was paused mid-call and taken over: each ends with one
    finish in its history, one result event and one effect at the target (both calls carried
    the same key); the paused worker's late finishes are refused, logged and counted."""
    # Each call takes a second: all three are still in flight when worker A is stopped.
    with CountingTarget(delay=1.0) as target, \
            EmbeddedRedis(tmp_path / "redis", persistent=False) as server:
        env = {**FAST_RECOVERY, "INTEGRATION_REDIS_URL": server.url,
               "INTEGRATION_RULES_FILE": str(rules_file(tmp_path, target))}
        client = make_app(redis_url=server.url).test_client()
        first = WorkerProcess(["action"], tmp_path / "a.log", concurrency=MESSAGES, env=env)
        second: WorkerProcess | None = None
        try:
            ids = []
            for index, name in enumerate(TARGETS):
                message = action(index, "fencing")
                message["data"]["target"] = name
                response = client.post("/api/v1/messages", headers=auth, json=message)
                assert response.status_code == 202
                ids.append(response.get_json()["id"])
            wait_for(lambda: target.received >= MESSAGES, timeout=20,
                     message="every call in flight in worker A")
            pause(first, signal.SIGSTOP)
            paused_at = time.monotonic()
            second = WorkerProcess(["action"], tmp_path / "b.log", concurrency=MESSAGES,
                                   env=env)
            records = [wait_status(client, auth, i, timeout=SETTLE + 20) for i in ids]
            assert {r["status"] for r in records} == {"succeeded"}
            assert time.monotonic() - paused_at <= SETTLE + 10

            pause(first, signal.SIGCONT)
            wait_for(lambda: len(fenced_lines(first)) >= MESSAGES, timeout=20,
                     message="worker A's late finishes refused")

            broker = redis.Redis(port=server.port)
            events = broker.xrange("integration:events")
            for message_id in ids:
                record = client.get(f"/api/v1/messages/{message_id}", headers=auth).get_json()
                statuses = [h["status"] for h in record["history"]]
                assert record["status"] == "succeeded"
                assert statuses.count("succeeded") == 1, statuses
                assert statuses.count("published") == 1, statuses
                assert len([e for e in events if e[1][b"message_id"] == message_id.encode()]
                           ) == 1, "one result event"
                assert broker.zscore("integration:outbox", message_id) is None
                assert broker.zscore("integration:due", message_id) is None, "no retry parked"
                key = f"{message_id}:1"
                assert target.calls[key] == 2, "both workers called, under one key"
            assert target.effects == {f"{i}:1" for i in ids}, "each effect performed once"
            lines = {line["message_id"]: line["event"] for line in fenced_lines(first)}
            assert set(lines) == set(ids)
            assert [lines[i].split()[1] for i in ids] == ["succeeded", "retrying", "succeeded"]
            assert not fenced_lines(second)
            assert metric(first, "integration_deliveries_fenced_total{") == MESSAGES
        finally:
            for worker in (first, second):
                if worker is not None:  # what they did is checked: no warm shutdown to wait
                    pause(worker, signal.SIGKILL)
                    worker.process.wait()
                    worker.stop()
