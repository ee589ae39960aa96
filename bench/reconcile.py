"""The reconciler's cost: one survey of the ledger with the batch figure's messages still
queued, as a worker's reconciler makes it every ``INTEGRATION_RECONCILE_INTERVAL_SECONDS``.

The survey runs in the benchmark's own process against the run's Redis, with its clock set
past ``INTEGRATION_RECONCILE_AFTER_SECONDS`` so that every unfinished record is old enough
to be checked (up to the reconciler's limit per status). Its CPU is this process's (the
reconciler's side) and redis-server's, per pass and per record checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.stack import CpuMeter
from integration.app import build_submitter
from integration.broker.holdings import holdings_of
from integration.settings import Settings
from integration.worker.heartbeats import Heartbeats
from integration.worker.reconciler import Reconciler
from integration.worker.recovery import heartbeat_ttl, leader_lease


def survey_cost(settings: Settings, redis_pids: Callable[[], list[int]]) -> dict[str, float]:
    """Records checked by one survey, and its CPU: ms per pass, µs per record checked."""
    submitter = build_submitter(settings, origin="bench")
    store = submitter.store
    reconciler = Reconciler(
        store, holdings_of(submitter.publisher), Heartbeats(store.client, settings.key_prefix),
        instance="bench", interval=settings.reconcile_interval_seconds,
        stale_after=settings.reconcile_after_seconds, heartbeat_ttl=heartbeat_ttl(settings),
        lease=leader_lease(settings))
    meter = CpuMeter({"redis": redis_pids})
    meter.start()
    started = time.process_time()
    survey = reconciler.survey(now=time.time() + settings.reconcile_after_seconds + 1)
    ours = time.process_time() - started
    redis = meter.stop()["redis"]
    checked = max(survey.checked, 1)
    return {"reconciler_records": survey.checked,
            "reconciler_pass_cpu_ms": (ours + redis) * 1e3,
            "reconciler_cpu_us_per_record": ours * 1e6 / checked,
            "reconciler_redis_us_per_record": redis * 1e6 / checked}
