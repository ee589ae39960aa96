"""Redis Sentinel: a gateway and a worker configured only with the sentinels follow two
failovers mid-burst, the master killed with SIGKILL and then its link cut (packets dropped,
no connection closed); every message answered 202 reaches ``succeeded`` and its effect runs
once, and a plain Celery producer's publishes outlast both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from integration.ops.checks.connections import check_broker, check_store
from integration.ops.checks.findings import Context
from integration.settings import Settings
from integration.store.redis_client import redis_client
from tests.conftest import NO_REDIS, ROOT, configured, wait_for
from tests.functional.test_broker_faults import assert_effects, wait_all_succeeded
from tests.support.burst import Burst, SupervisedWorker
from tests.support.recovery import FAST_RECOVERY, CountingTarget, action, fast_bound
from tests.support.sentinels import MASTER_NAME, SentinelGroup

FAILOVERS = 2
#: A queue no worker consumes: what a plain Celery producer publishes to.
PROBE_QUEUE = "sentinel-probe"


@pytest.fixture(scope="module")
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """One group for the module: the check reads it first, the failovers come last."""
    group = SentinelGroup(tmp_path_factory.mktemp("sentinels"))
    yield group
    group.stop()


def test_check_reports_the_sentinels_and_their_master(settings: Settings,
                                                     sentinel_group: SentinelGroup) -> None:
    """``integration check`` names the master the sentinels agree on, and its replica."""
    through = configured(settings, redis_sentinels=sentinel_group.addresses,
                         redis_sentinel_master=MASTER_NAME, env="development")
    ctx = Context(through, timeout=2.0, groups=frozenset({"store", "broker"}))
    findings = [*check_store(ctx), *check_broker(ctx)]
    text = "\n".join(f"{f.level}: {f.message}" for f in findings)
    assert f"3 of 3 sentinels answer; master {MASTER_NAME!r} is 127.0.0.1:" in text, text
    assert "with 1 replica(s)" in text and "error" not in text, text
    assert "the store's master through the sentinels" in text, text


def test_two_failovers_lose_no_accepted_message(
        make_app: Callable[..., Flask], auth: dict[str, str], tmp_path: Path,
        settings: Settings, sentinel_group: SentinelGroup) -> None:
    """The master killed, then the new one cut off, mid-burst: new messages are accepted
    after each failover, and every 202 succeeds, its effect once. Meanwhile every publish of
    a plain Celery producer outlasts the failovers and lands."""
    group = sentinel_group
    # The URL names a port nothing listens on (whatever ignored the sentinels would fail),
    # and one database for every process: with sentinels, the URL gives the database.
    sentinel = {"INTEGRATION_REDIS_SENTINELS": group.addresses,
                "INTEGRATION_REDIS_SENTINEL_MASTER": MASTER_NAME,
                "INTEGRATION_REDIS_URL": NO_REDIS}
    with CountingTarget(delay=0.01) as target:
        env = {**FAST_RECOVERY, **sentinel,
               "INTEGRATION_RULES_FILE": str(target.rules_file(tmp_path))}
        worker = SupervisedWorker(["action"], tmp_path, env)
        app = make_app(redis_url=NO_REDIS, redis_sentinels=group.addresses,
                       redis_sentinel_master=MASTER_NAME, publish_timeout_seconds=0.5)
        burst = Burst(app.test_client(), auth, count=None, pause=0.02, source="failover",
                      make=action)
        stop, report = tmp_path / "stop", tmp_path / "published.json"
        producer = subprocess.Popen(
            [sys.executable, "-m", "tests.support.celery_publish", PROBE_QUEUE, str(stop),
             str(report)], cwd=ROOT, env={**os.environ, **sentinel},
            stderr=(tmp_path / "producer.log").open("wb"))
        store = redis_client(configured(settings, redis_url=NO_REDIS,
                                        redis_sentinels=group.addresses,
                                        redis_sentinel_master=MASTER_NAME))
        took = []
        try:
            wait_for(lambda: store.llen(PROBE_QUEUE) >= 3, timeout=30,
                     message="the Celery producer publishing")
            burst.start()
            for n in range(FAILOVERS):
                seen = target.received
                wait_for(lambda: target.received >= seen + 5,  # noqa: B023 - called here
                         timeout=30, message="calls in flight")
                # The last: the master's link cut, not the master (nothing closes a connection).
                took.append(group.failover(cut=n == FAILOVERS - 1))
                after = time.monotonic()
                wait_for(lambda: sum(a.status == 202 and a.started > after  # noqa: B023
                                     for a in list(burst.answers.values())) >= 5,
                         timeout=30, message="accepted again after the failover")
            burst.stop()
            stop.touch()
            assert producer.wait(timeout=60) == 0

            published = json.loads(report.read_text())
            assert published["failed"] == 0, (tmp_path / "producer.log").read_text()[-2000:]
            accepted = burst.accepted()
            assert set(burst.outcomes.values()) <= {202, 503}
            assert store.llen(PROBE_QUEUE) == published["sent"] > 0
            settled = wait_all_succeeded(store, accepted, timeout=fast_bound() + 20)
            print(f"\n{len(accepted)} accepted, {list(burst.outcomes.values()).count(503)} "
                  f"refused, failovers took {', '.join(f'{t:.1f}' for t in took)} s, "
                  f"{worker.restarts} worker restarts; all succeeded {settled:.1f} s after "
                  f"the burst; Celery published {published['sent']}, the longest send took "
                  f"{published['longest']:.1f} s")
            assert_effects(target, burst)
        finally:
            burst.stop()
            stop.touch()
            producer.wait(timeout=60)
            worker.stop()
