"""Broker outage: Redis killed during a burst of submissions and started again (fault test).

A Redis of its own with ``appendonly yes`` and ``appendfsync always`` is broker and store; the
gateway keeps submitting while it is down. Every message answered 202 is processed exactly
once (the ledger); submissions while it was down got 503.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import redis
from flask import Flask

from integration.embedded_redis import EmbeddedRedis
from tests.conftest import WorkerProcess, wait_for
from tests.support.burst import Burst
from tests.support.fault_types import DUPLICATES, LEDGER

DURABLE = ("--appendfsync", "always")


def test_every_accepted_message_survives_a_broker_crash_once(
    make_app: Callable[..., Flask], auth: dict[str, str], tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", persistent=True, extra_args=DURABLE).start()
    port, url = server.port, server.url
    # Short visibility and lease, so messages taken but unacknowledged at the crash come back
    # within the test rather than after an hour.
    env = {"INTEGRATION_REDIS_URL": url, "INTEGRATION_VISIBILITY_TIMEOUT_SECONDS": "10",
           "INTEGRATION_UNACKED_RESTORE_INTERVAL_SECONDS": "1",
           "INTEGRATION_CLAIM_LEASE_SECONDS": "4"}
    worker = WorkerProcess(["test.flaky"], tmp_path / "worker.log", env=env)
    client = make_app(redis_url=url, publish_timeout_seconds=0.5).test_client()
    sender = Burst(client, auth, count=80, pause=0.04, source="outage")
    outcomes = sender.outcomes

    try:
        sender.start()
        wait_for(lambda: len(outcomes) >= 20, message="the burst under way")
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)  # a crash, not a clean shutdown
        server.process.wait()
        wait_for(lambda: list(outcomes.values())[-1] == 503, message="503 while down")
        time.sleep(0.5)
        server = EmbeddedRedis(tmp_path / "redis", port=port, persistent=True,
                               extra_args=DURABLE).start()
        time.sleep(1)
        if worker.process.poll() is not None or "Unrecoverable error" in \
                worker.log_path.read_text(errors="replace"):
            # Celery 5.7 sometimes gives up on a lost Redis connection ("Unrecoverable error",
            # celery #9250) and exits; a supervisor restarts it, as docker-compose's restart
            # policy does. Messages it held come back after the visibility timeout.
            worker.process.kill()
            worker.stop()
            worker = WorkerProcess(["test.flaky"], tmp_path / "worker-restarted.log", env=env)
        sender.join(60)

        accepted = [k for k, status in outcomes.items() if status == 202]
        refused = [k for k, status in outcomes.items() if status == 503]
        assert set(outcomes.values()) <= {202, 503}
        assert accepted and refused
        store = redis.Redis(port=port)
        wait_for(lambda: all(store.sismember(LEDGER, k) for k in accepted), timeout=90,
                 interval=0.5, message="every accepted message processed")
        assert store.llen(DUPLICATES) == 0, "no effect twice"
    finally:
        worker.stop()
        server.stop()
