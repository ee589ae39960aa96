"""Celery signals: structured logs with each message's ids bound, the workers' Prometheus
metrics (fed per task, served on each worker), and each worker process's tracer."""

from __future__ import annotations

import os
import socket
import time
import warnings
from functools import cache
from typing import Any

from celery.signals import (
    celeryd_after_setup,
    celeryd_init,
    setup_logging,
    task_postrun,
    task_prerun,
    task_rejected,
    task_revoked,
    task_unknown,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from integration import logs, tracing
from integration.app import build_guards, build_submitter, default_registry, get_settings
from integration.broker.publisher import CORRELATION_HEADER
from integration.messages.routing import PROCESS_TASK, queue_names
from integration.worker import metrics as worker_metrics
from integration.worker.heartbeats import Heartbeats
from integration.worker.processor import Delivery
from integration.worker.queues import queue_ages_of
from tasks.processing import ProcessingTask, outcome_of
from tasks.startup import quiet_retries

_started: dict[str, tuple[float, str]] = {}
_servers: list[Any] = []
log = logs.get_logger("integration.worker")


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    """Connected, so Celery leaves the root logger to us: one shape for every record."""
    settings = get_settings()
    logs.configure_logging(settings)
    quiet_retries(settings)


@celeryd_after_setup.connect
def _quiet_the_cancel_notice(**_: Any) -> None:
    """worker_cancel_long_running_tasks_on_connection_loss is chosen (celeryconfig), so
    Celery's notice that its default changes in 6.0 need not come with every outage; set
    after Celery's logging set-up, which turns its deprecation warnings to ``always``."""
    warnings.filterwarnings("ignore", message=r"\s*In Celery 5\.1 we introduced an optional")


@celeryd_init.connect
def _choose_metrics_directory(**_: Any) -> None:
    """A worker's metrics go to shared files (multiprocess mode), chosen before its pool
    starts; a process that only imports the tasks to send them keeps its own metrics."""
    worker_metrics.prepare_multiprocess(get_settings().worker_metrics_dir)


@cache
def metrics() -> worker_metrics.WorkerMetrics:
    return worker_metrics.WorkerMetrics()


def _type_of(args: Any) -> str:
    """The message type as a bounded label: a registered name, or "unknown"."""
    envelope = args[0] if args else None
    kind = envelope.get("type") if isinstance(envelope, dict) else None
    return kind if isinstance(kind, str) and kind in default_registry() else "unknown"


@task_prerun.connect
def _task_started(sender: Any = None, task_id: str = "", args: Any = None, **_: Any) -> None:
    if getattr(sender, "name", None) != PROCESS_TASK:
        return
    kind = _type_of(args)
    _started[task_id] = (time.perf_counter(), kind)
    metrics().in_progress.labels(kind).inc()
    envelope = args[0] if args and isinstance(args[0], dict) else {}
    request = getattr(sender, "request", None)
    header = request.get(CORRELATION_HEADER) if request is not None else None
    logs.clear()
    logs.bind(task_id=task_id, type=kind, message_id=str(envelope.get("id", task_id))[:128],
              correlation_id=str(envelope.get("correlationid") or header or envelope.get("id")
                                 or task_id)[:128])


@task_postrun.connect
def _task_finished(sender: Any = None, task_id: str = "", retval: Any = None,
                   **_: Any) -> None:
    started = _started.pop(task_id, None)
    if started is None:
        return
    began, kind = started
    seconds = time.perf_counter() - began
    metrics().in_progress.labels(kind).dec()
    carried = outcome_of(retval)
    if carried is not None:
        outcome = carried.to_json()
        metrics().observe(outcome, seconds)
        log.info("processed", status=outcome["status"], channel=outcome["channel"],
                 error=outcome["error"], attempt=outcome["attempt"],
                 duration_ms=round(seconds * 1000, 2), **(
                     {"inline": outcome["inline"]} if outcome["inline"] else {}), **(
                     {"fenced": True} if outcome["fenced"] else {}))
    logs.clear()


@task_unknown.connect
def _unknown_task(name: str = "", id: str = "", **_: Any) -> None:
    """A message for a task this worker does not have: Celery rejects it (nothing runs)."""
    metrics().refused.labels("unknown_task").inc()
    log.warning("task refused", reason="unknown_task", task=str(name)[:200], task_id=id)


@task_rejected.connect
def _rejected(message: Any = None, exc: Any = None, **_: Any) -> None:
    """A message that is not a task message at all (or in a refused serializer)."""
    metrics().refused.labels("malformed").inc()
    log.warning("task refused", reason="malformed", error=type(exc).__name__ if exc else None)


@task_revoked.connect
def _revoked(sender: Any = None, request: Any = None, terminated: bool = False,
             expired: bool = False, **_: Any) -> None:
    """A revoked (Flower, ``celery control revoke``), terminated or expired task: the
    message it carried ends ``dead``, replayable from the dead letters, never silently gone."""
    reason = "expired" if expired else "terminated" if terminated else "revoked"
    name = getattr(sender, "name", None)
    args = getattr(request, "args", None)
    kind = _type_of(args)
    metrics().revoked.labels(kind, reason).inc()
    if name != PROCESS_TASK:
        return
    task_id = str(getattr(request, "id", "") or "")
    envelope = args[0] if args and isinstance(args[0], dict) else {}
    message_id = str(envelope.get("id") or task_id)
    log.warning("task revoked", reason=reason, task_id=task_id, message_id=message_id,
                type=kind)
    info = getattr(request, "delivery_info", None) or {}
    revoked_processor().revoke(envelope, Delivery(task_id=task_id,
                                                  queue=info.get("routing_key")), reason)


@cache
def revoked_processor() -> Any:
    """The worker's main process records revocations (pool children run the tasks)."""
    return ProcessingTask().processor


@worker_process_init.connect
def _start_tracing(**_: Any) -> None:
    """Each pool process makes its own tracer: the span exporter's thread does not survive
    the fork."""
    tracing.configure(get_settings(), "integration-worker")


@worker_process_shutdown.connect
def _child_exit(pid: int | None = None, **_: Any) -> None:
    tracing.shutdown()
    from prometheus_client import multiprocess

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        multiprocess.mark_process_dead(pid or os.getpid(), directory)


@worker_ready.connect
def _serve_metrics(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    metrics().start_from_zero(default_registry().names())
    if settings.metrics_port and directory:
        submitter = build_submitter(settings, origin="metrics")
        guards = build_guards(settings, submitter.store.client)
        # Consumers as the workers' heartbeats name them: one hash read per scrape, where a
        # broadcast (``inspect().active_queues()``) waits its whole timeout for replies and
        # cannot tell a slow worker from none.
        cluster = worker_metrics.ClusterState(
            submitter.store.client, settings.key_prefix, f"{socket.gethostname()}:{os.getpid()}",
            submitter.publisher.queue_depths, guards.describe_breakers,
            queue_names(default_registry()),
            consumers=Heartbeats(submitter.store.client, settings.key_prefix).consumers,
            ages=queue_ages_of(submitter.publisher, submitter.store))
        server = worker_metrics.serve(directory, settings.metrics_port, settings.metrics_host,
                                      cluster)
        if server is not None:
            _servers.append(server)


@worker_shutdown.connect
def _stop_metrics(sender: Any = None, **_: Any) -> None:
    while _servers:
        worker_metrics.close(_servers.pop())
