"""Structured logs: one JSON object per line from gateway and workers alike (structlog).

Configured once per process. The standard library's records (Celery's, gunicorn's, ours)
pass through the same processors, so every line has the same shape, and whatever is bound
in the context (``correlation_id``, ``message_id``, ``type``, ``task_id`` …) appears on every
line of that request or task. Development gets a readable console rendering instead.

Lines logged through structlog (``get_logger``: the gateway's request line, the worker's
``processed`` line and the rest of ours) skip the standard library: each is rendered by the
same processors and written to the same handler's stream, under its lock, without a
``LogRecord`` (built twice on that route: once by the logger, once more by the formatter).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
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


def _json(value: Any, **_: Any) -> str:
    """orjson, much faster than the standard library. What it cannot
    write (keys that are not strings, integers past 64 bits), and any line with characters
    beyond ASCII, goes to the standard one, which escapes them: a line stays valid JSON on
    a stream of any encoding."""
    try:
        line = orjson.dumps(value, default=repr).decode()
        if line.isascii():
            return line
    except TypeError:
        pass
    return json.dumps(value, default=repr)


class _Output:
    """What ``configure_logging`` chose last: the level, the renderer and the handler that
    every line goes through. One object read at each line, so reconfiguring takes effect
    for loggers already in use."""

    def __init__(self) -> None:
        self.level = logging.INFO
        self.renderer: Any = structlog.dev.ConsoleRenderer(colors=False)
        self.handler: logging.StreamHandler[Any] | None = None


_output = _Output()


#: The level of each of structlog's method names.
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "warn": logging.WARNING, "error": logging.ERROR, "exception": logging.ERROR,
           "critical": logging.CRITICAL, "fatal": logging.CRITICAL}


def _at_level(_: Any, method: str, event: MutableMapping[str, Any]
              ) -> MutableMapping[str, Any]:
    """Drops a line under the level ``configure_logging`` set last."""
    if _LEVELS.get(method, logging.INFO) < _output.level:
        raise structlog.DropEvent
    return event


def _render(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
    """JSON or console, as ``configure_logging`` chose last. A value that cannot be
    rendered (its ``repr`` raises, a container holds itself) never fails the caller, as a
    standard library handler would not: the line keeps its plain values and says what
    failed."""
    try:
        return _output.renderer(logger, method, event)
    except Exception as exc:  # noqa: BLE001 - a log line must not fail a request or a task
        kept: dict[str, Any] = {key: value for key, value in event.items()
                                if isinstance(value, str | int | float | bool | None)}
        kept["log_error"] = f"{type(exc).__name__}: {exc}"
        return _output.renderer(logger, method, kept)


class LineWriter:
    """The end of structlog's chain for our own lines: the rendered line is written to the
    stream of the handler the standard library's records use, under that handler's lock, so
    the two never interleave. Before ``configure_logging``, to standard error."""

    def __init__(self, name: str = "") -> None:
        self.name = name

    def write(self, line: str) -> None:
        handler = _output.handler
        if handler is None:
            print(line, file=sys.stderr)
            return
        handler.acquire()
        try:
            stream = handler.stream
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed stream, as the standard library's handler
            pass
        finally:
            handler.release()

    debug = info = warning = warn = error = exception = critical = fatal = msg = write


#: What every line gets, ours and the standard library's records alike.
_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
    _redact,
]


def configure_logging(settings: Settings) -> None:
    json_lines = (settings.log_format or
                  ("console" if settings.env == "development" else "json")) == "json"
    renderer: Any = (structlog.processors.JSONRenderer(serializer=_json) if json_lines
                     else structlog.dev.ConsoleRenderer(colors=False))
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
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
    _output.level = root.level
    _output.renderer = renderer
    _output.handler = handler


structlog.configure(
    processors=[_at_level, *_SHARED, structlog.processors.format_exc_info, _render],
    wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    logger_factory=LineWriter,
    cache_logger_on_first_use=True,
)

bind = structlog.contextvars.bind_contextvars
clear = structlog.contextvars.clear_contextvars
get_logger = structlog.get_logger
