"""Broker crashes during a sustained burst of effectful messages (fault tests).

Redis, as broker and store with ``appendonly yes`` and ``appendfsync always``, is killed with
SIGKILL ten times while calls to a downstream are in flight, and started again on its AOF
each time; RabbitMQ (a node of the test's own) is killed and started again once. The ledger:
every message answered 202 reaches ``succeeded`` within the recovery bound after the last
repair, the downstream performs each exactly once by its ``Idempotency-Key``, no 202 is
given for a request made entirely while the broker was down, and the only other effects are
of messages answered with the 503 that says the broker stopped answering mid-enqueue (the
transaction may have run; the answer says so).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
import redis
from flask import Flask

from integration.ops.embedded_redis import EmbeddedRedis
from tests.conftest import wait_for
from tests.support import rabbitmq
from tests.support.burst import Burst, SupervisedWorker
from tests.support.recovery import FAST_RECOVERY, CountingTarget, action, fast_bound

DURABLE = ("--appendfsync", "always")
KILLS = 10


def assert_effects(target: CountingTarget, burst: Burst) -> None:
    """Each 202 performed once by its generation's key; anything else performed only for a
    503 that said it may have been enqueued."""
    accepted = {f"{i}:1" for i in burst.accepted()}
    doubtful = {f"{i}:1" for i in burst.in_doubt()}
    effects = target.effects
    assert accepted <= effects, f"not performed: {sorted(accepted - effects)[:10]}"
    assert effects - accepted <= doubtful, f"performed without a 202: {effects - accepted}"
    assert target.unkeyed == 0


def assert_no_202_while_down(burst: Burst, downs: list[tuple[float, float]]) -> None:
    for key, answer in list(burst.answers.items()):
        if answer.status == 202:
            inside = [d for d in downs if d[0] < answer.started and answer.ended < d[1]]
            assert not inside, f"{key} answered 202 while the broker was down"


def final_statuses(store: redis.Redis, ids: list[str]) -> dict[str, str | None]:
    pipe = store.pipeline(transaction=False)
    for message_id in ids:
        pipe.hget(f"integration:msg:{message_id}", "status")
    return {i: s.decode() if s else None
            for i, s in zip(ids, cast(list[bytes | None], pipe.execute()), strict=True)}


def reconciled(store: redis.Redis, ids: list[str]) -> int:
    """How many of ``ids`` the reconciler found that nothing held."""
    pipe = store.pipeline(transaction=False)
    for message_id in ids:
        pipe.lrange(f"integration:hist:{message_id}", 0, -1)
    return sum(any(b'"reconciled"' in entry for entry in history)
               for history in pipe.execute())


def wait_all_succeeded(store: redis.Redis, ids: list[str], timeout: float) -> float:
    """Seconds until every id succeeded; fails naming the ones that did not."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        statuses = final_statuses(store, ids)
        left = {i: s for i, s in statuses.items() if s != "succeeded"}
        if not left:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(left)} of {len(ids)} accepted messages unfinished "
                                 f"after {timeout:.0f} s: {dict(list(left.items())[:10])}")
        time.sleep(0.2)


def test_ten_redis_crashes_lose_nothing_and_run_each_effect_once(
        make_app: Callable[..., Flask], auth: dict[str, str], tmp_path: Path) -> None:
    """Ten SIGKILLs of Redis, each with calls in flight: every 202 succeeds, once each."""
    with CountingTarget(delay=0.02) as target:
        server = EmbeddedRedis(tmp_path / "redis", persistent=True, extra_args=DURABLE).start()
        port, url = server.port, server.url
        env = {**FAST_RECOVERY, "INTEGRATION_REDIS_URL": url,
               "INTEGRATION_RULES_FILE": str(target.rules_file(tmp_path))}
        worker = SupervisedWorker(["action"], tmp_path, env)
        client = make_app(redis_url=url, publish_timeout_seconds=0.5).test_client()
        burst = Burst(client, auth, count=None, pause=0.03, source="outage", make=action)
        downs: list[tuple[float, float]] = []
        rng = random.Random(18)
        try:
            burst.start()
            for _ in range(KILLS):
                seen = target.received
                wait_for(lambda: target.received >= seen + 3,  # noqa: B023 - called here
                         timeout=60, message="calls in flight")
                assert server.process is not None
                down = time.monotonic()
                os.kill(server.process.pid, signal.SIGKILL)  # a crash, not a shutdown
                server.process.wait()
                time.sleep(rng.uniform(0.2, 1.0))
                downs.append((down, time.monotonic()))  # certainly down until here
                server = EmbeddedRedis(tmp_path / "redis", port=port, persistent=True,
                                       extra_args=DURABLE).start()
            time.sleep(1)
            burst.stop()

            accepted = burst.accepted()
            assert set(burst.outcomes.values()) <= {202, 503}
            assert len(accepted) >= 50 and 503 in burst.outcomes.values()
            assert_no_202_while_down(burst, downs)
            settle = fast_bound() + len(accepted) * target.delay + 20
            store = redis.Redis(port=port)
            took = wait_all_succeeded(store, accepted, timeout=settle)
            print(f"\n{len(accepted)} accepted, {list(burst.outcomes.values()).count(503)} "
                  f"refused ({len(burst.in_doubt())} of them in doubt), {KILLS} crashes, "
                  f"{worker.restarts} worker restarts, "
                  f"{reconciled(store, accepted)} sent again by the reconciler; all succeeded "
                  f"{took:.1f} s after the burst; {sum(target.calls.values())} calls for "
                  f"{len(target.effects)} effects")
            assert_effects(target, burst)
        finally:
            burst.stop()
            worker.stop()
            server.stop()


@pytest.mark.skipif(not rabbitmq.available(), reason="rabbitmq-server is not installed")
def test_a_rabbitmq_crash_loses_nothing_and_runs_each_effect_once(
        make_app: Callable[..., Flask], auth: dict[str, str], tmp_path: Path,
        private_redis: EmbeddedRedis) -> None:
    """RabbitMQ killed and started again mid-burst: every 202 succeeds, once each."""
    with CountingTarget(delay=0.05) as target, \
            rabbitmq.RabbitNode(tmp_path / "rabbit") as node:
        env = {**FAST_RECOVERY, "INTEGRATION_REDIS_URL": private_redis.url,
               "INTEGRATION_BROKER_URL": node.url,
               "INTEGRATION_RULES_FILE": str(target.rules_file(tmp_path))}
        worker = SupervisedWorker(["action"], tmp_path, env)
        client = make_app(redis_url=private_redis.url, broker_url=node.url,
                          publish_timeout_seconds=1).test_client()
        burst = Burst(client, auth, count=None, pause=0.02, source="rabbit-outage",
                      make=action)
        try:
            burst.start()
            wait_for(lambda: target.received >= 10, timeout=60, message="calls in flight")
            down = time.monotonic()
            node.kill()
            downs = [(down, time.monotonic())]
            node.start()
            restarted = time.monotonic()
            wait_for(lambda: sum(a.status == 202 and a.started > restarted
                                 for a in list(burst.answers.values())) >= 20,
                     timeout=60, message="accepted again after the restart")
            burst.stop()

            accepted = burst.accepted()
            assert set(burst.outcomes.values()) <= {202, 503}
            assert 503 in burst.outcomes.values()
            assert_no_202_while_down(burst, downs)
            settle = fast_bound() + len(accepted) * target.delay + 30
            took = wait_all_succeeded(redis.Redis(port=private_redis.port), accepted,
                                      timeout=settle)
            print(f"\n{len(accepted)} accepted, {list(burst.outcomes.values()).count(503)} "
                  f"refused, {worker.restarts} worker restarts; all succeeded {took:.1f} s "
                  "after the burst")
            assert_effects(target, burst)
        finally:
            burst.stop()
            worker.stop()
