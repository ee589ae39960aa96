"""Worker lifecycle: the loop that re-enqueues retries when due and delivers overdue events
from the outbox; configuration checks at start."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready, worker_shutdown

from integration import logs
from integration.dispatch import OutboxRelay
from integration.egress import default_egress
from integration.executors import declared_targets
from integration.requeue import RequeueLoop, Requeuer
from integration.services import build_dispatcher, build_submitter
from integration.settings import ConfigurationError, get_settings

_loops: dict[str, RequeueLoop] = {}
log = logs.get_logger(__name__)


@worker_ready.connect
def check_action_targets(sender: Any = None, **_: Any) -> None:
    """Say at start, not at the first action, that the rules file or the allowlist is wrong.

    Celery only logs what a signal handler raises, so the worker still starts: actions on
    ``http`` targets then end dead with the same reason until the file is fixed.
    """
    try:
        default_egress()
        targets = declared_targets()
    except ConfigurationError as exc:
        log.error("action targets unusable; http actions will end dead", error=str(exc))
        return
    log.info("action targets declared", targets=sorted(targets.targets))


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
    """After the warm shutdown: let the loop finish its pass, so nothing it took is left
    half-done (published but still leased)."""
    loop = _loops.pop("requeue", None)
    if loop is None:
        return
    timeout = get_settings().graceful_timeout_seconds
    if loop.stop(timeout):
        log.info("requeue loop stopped")
    else:
        log.warning("requeue loop still busy at exit; what it took is due again after its "
                    "lease", timeout_seconds=timeout)
