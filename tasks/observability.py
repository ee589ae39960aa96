"""Celery signals that feed the workers' Prometheus metrics and serve them on each worker."""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any

from celery.signals import (
    task_postrun,
    task_prerun,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from integration import worker_metrics
from integration.registry import default_registry
from integration.routing import PROCESS_TASK
from integration.settings import get_settings

_started: dict[str, tuple[float, str]] = {}
_servers: list[Any] = []


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


@task_postrun.connect
def _task_finished(sender: Any = None, task_id: str = "", retval: Any = None,
                   **_: Any) -> None:
    started = _started.pop(task_id, None)
    if started is None:
        return
    began, kind = started
    metrics().in_progress.labels(kind).dec()
    if isinstance(retval, dict) and "status" in retval:
        metrics().observe(retval, time.perf_counter() - began)


@worker_process_shutdown.connect
def _child_exit(pid: int | None = None, **_: Any) -> None:
    from prometheus_client import multiprocess

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        multiprocess.mark_process_dead(pid or os.getpid(), directory)


@worker_ready.connect
def _serve_metrics(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if settings.metrics_port and directory:
        server = worker_metrics.serve(directory, settings.metrics_port, settings.metrics_host)
        if server is not None:
            _servers.append(server)


@worker_shutdown.connect
def _stop_metrics(sender: Any = None, **_: Any) -> None:
    while _servers:
        worker_metrics.close(_servers.pop())
