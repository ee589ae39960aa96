"""Worker lifecycle: each worker runs the loop that re-enqueues retries when they are due and
delivers overdue events from the outbox."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready, worker_shutdown

from integration.dispatch import OutboxRelay
from integration.requeue import RequeueLoop, Requeuer
from integration.services import build_dispatcher, build_submitter
from integration.settings import get_settings

_loops: dict[str, RequeueLoop] = {}


@worker_ready.connect
def start_requeue_loop(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    submitter = build_submitter(settings, origin="worker")
    loop = RequeueLoop([Requeuer(submitter.store, submitter.publisher),
                        OutboxRelay(build_dispatcher(submitter))],
                       settings.retry_poll_interval_seconds)
    loop.start()
    _loops["requeue"] = loop


@worker_shutdown.connect
def stop_requeue_loop(sender: Any = None, **_: Any) -> None:
    loop = _loops.pop("requeue", None)
    if loop is not None:
        loop.stop()
