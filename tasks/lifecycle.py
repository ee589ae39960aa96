"""Worker lifecycle: the loops of a worker's main process (re-enqueueing retries when due and
delivering overdue events, the heartbeat, the reconciler) and configuration checks at start."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from integration import logs
from integration.app import (
    build_dispatcher,
    build_submitter,
    declared_targets,
    default_egress,
    get_settings,
)
from integration.broker.holdings import holdings_of
from integration.events.dispatch import OutboxRelay
from integration.settings import ConfigurationError
from integration.store.model import LedgerEntry
from integration.worker.heartbeats import Heartbeat, Heartbeats, instance_name
from integration.worker.reconciler import Reconciler
from integration.worker.recovery import heartbeat_ttl, leader_lease, recovery_bound
from integration.worker.requeue import RequeueLoop, Requeuer

_loops: dict[str, RequeueLoop] = {}
_leaving: list[Callable[[], None]] = []
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


def held_task_ids() -> list[str] | None:
    """The task ids this worker has received and not finished (waiting for a pool process,
    running, or waiting for an ETA), from Celery's worker state; None when a set changed
    while it was read three times in a row (the next beat reads again)."""
    from celery.worker import state

    for _ in range(3):
        try:
            return [request.id for group in (state.reserved_requests, state.active_requests,
                                             state.scheduled_requests)
                    for request in list(group)]
        except RuntimeError:  # "Set changed size during iteration"
            continue
    return None


def consumed_queues(consumer: Any) -> Callable[[], list[str]]:
    """The queues ``consumer`` (the worker's, sent with ``worker_ready``) consumes now: those
    of its task consumer, which ``celery control add_consumer``/``cancel_consumer`` change,
    else those the worker was started with (``-Q``)."""
    def names() -> list[str]:
        task_consumer = getattr(consumer, "task_consumer", None)
        if task_consumer is not None:
            return [queue.name for queue in list(task_consumer.queues)]
        app = getattr(consumer, "app", None)
        return list(app.amqp.queues.consume_from or ()) if app is not None else []

    return names


@worker_ready.connect
def start_loops(sender: Any = None, **_: Any) -> None:
    from tasks.observability import metrics

    settings = get_settings()
    submitter = build_submitter(settings, origin="worker")
    store = submitter.store
    instance = instance_name()

    # The heartbeat also names the queues this worker consumes (integration_queue_consumers,
    # `integration check`): announced at start and renewed with each beat.
    heartbeats = Heartbeats(store.client, settings.key_prefix)
    heartbeat = Heartbeat(heartbeats, instance, held_task_ids, ttl=heartbeat_ttl(settings),
                          queues=consumed_queues(sender))
    try:
        heartbeat.run_once()  # alive from the start, before the first interval
    except Exception as exc:  # noqa: BLE001 - the loop beats again
        log.warning("first heartbeat failed", error=str(exc))
    _leaving.append(heartbeat.stop)

    def redelivered(entry: LedgerEntry) -> None:
        metrics().reconciled.labels(entry.type or "unknown", entry.status).inc()

    reconciler = Reconciler(
        store, holdings_of(submitter.publisher), heartbeats, instance=instance,
        interval=settings.reconcile_interval_seconds,
        stale_after=settings.reconcile_after_seconds, heartbeat_ttl=heartbeat_ttl(settings),
        lease=leader_lease(settings), on_redelivered=redelivered)
    loops = {
        "requeue": RequeueLoop([Requeuer(store, submitter.publisher),
                                OutboxRelay(build_dispatcher(submitter))],
                               settings.retry_poll_interval_seconds),
        "heartbeat": RequeueLoop([heartbeat], settings.worker_heartbeat_seconds,
                                 name="integration-heartbeat"),
        "reconciler": RequeueLoop([reconciler], settings.reconcile_interval_seconds,
                                  name="integration-reconciler"),
    }
    for name, loop in loops.items():
        loop.start()
        _loops[name] = loop
    bound = recovery_bound(settings)
    log.info("worker loops started", instance=instance,
             recovery_bound_seconds=bound.seconds, recovery=bound.explain())


@worker_shutdown.connect
def stop_loops(sender: Any = None, **_: Any) -> None:
    """After the warm shutdown: let each loop finish its pass, so nothing it took is left
    half-done (published but still leased); then leave the heartbeats."""
    timeout = get_settings().graceful_timeout_seconds
    for name in list(_loops):
        loop = _loops.pop(name)
        if loop.stop(timeout):
            log.info("loop stopped", loop=name)
        else:
            log.warning("loop still busy at exit; what it took is due again after its lease",
                        loop=name, timeout_seconds=timeout)
    while _leaving:
        _leaving.pop()()
