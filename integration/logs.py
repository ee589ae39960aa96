"""Structured logs: one JSON object per line from gateway and workers alike (structlog).

Configured once per process. The standard library's records (Celery's, gunicorn's, ours)
pass through the same processors, so every line has the same shape, and whatever is bound
in the context (``correlation_id``, ``message_id``, ``type``, ``task_id`` …) appears on every
line of that request or task. Development gets a readable console rendering instead.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from celery.app import trace

from integration.settings import Settings

#: Keys whose values never reach a log line.
SECRET_KEYS = frozenset({"authorization", "token", "password", "secret", "jwt"})


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in SECRET_KEYS:
            event[key] = "[redacted]"
    return event


#: The loggers of Celery's "Task ... received" and "Task ... succeeded in ..." lines.
CELERY_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


class _RoutineTaskLines(logging.Filter):
    """Drops Celery's "received" and "succeeded" line of every task: the worker's structured
    ``processed`` line says the same, and rendering two more JSON lines per message costs the
    process that fetches every message. Retries, failures and the rest still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg is not trace.LOG_RECEIVED and record.msg is not trace.LOG_SUCCESS


def configure_logging(settings: Settings) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        _redact,
    ]
    json_lines = (settings.log_format or
                  ("console" if settings.env == "development" else "json")) == "json"
    renderer: Any = (structlog.processors.JSONRenderer() if json_lines
                     else structlog.dev.ConsoleRenderer(colors=False))
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.log_level)
    for name in ("gunicorn.error", "gunicorn.access", "celery", "kombu"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    for name in CELERY_TASK_LOGGERS:
        logger = logging.getLogger(name)
        logger.filters = [f for f in logger.filters if not isinstance(f, _RoutineTaskLines)]
        if not settings.celery_task_logs:
            logger.addFilter(_RoutineTaskLines())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


bind = structlog.contextvars.bind_contextvars
clear = structlog.contextvars.clear_contextvars
get_logger = structlog.stdlib.get_logger
