"""Structured logs: one JSON object per line from gateway and workers alike (structlog).

Configured once per process. Every line is a standard library record: ours (``get_logger``:
the gateway's request line, the worker's ``processed`` line …) are made by structlog's
stdlib integration, so any other handler on the ``integration`` loggers or the root logger
(Sentry's, OpenTelemetry's ``LoggingHandler``, one named in ``INTEGRATION_LOG_HANDLERS``)
receives them, with the bound context (``correlation_id``, ``message_id``, ``type``,
``task_id``, ``trace_id`` …) and the line's own fields as attributes of the record.
The service's handler renders ours and the libraries' records (Celery's, gunicorn's) through
the same processors, so every line has the same shape. Development gets a readable console
rendering instead.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson
import structlog
from celery.app import trace

from integration.settings import Settings

#: Keys whose values never reach a log line, nor another handler.
SECRET_KEYS = frozenset({"authorization", "token", "password", "secret", "jwt"})

#: The attribute of a record that lists our line's keys, in order (libraries' records lack it).
FIELDS = "_structlog_fields"

#: Attributes every ``LogRecord`` has: a field of that name is carried as ``<name>_``.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


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


def _attribute(key: str) -> str:
    """The record attribute that carries field ``key``."""
    return f"{key}_" if key in _RECORD_ATTRIBUTES else key


def _to_record(logger: Any, method: str, event: MutableMapping[str, Any]
               ) -> MutableMapping[str, Any]:
    """The end of structlog's chain for our lines: structlog's ``render_to_log_kwargs`` (the
    event becomes the record's message, every other field an attribute), plus the list of
    the line's keys, so the service's handler renders the line from them, in their order."""
    keys = tuple(key for key in event if key not in structlog.stdlib.LOG_KWARG_NAMES)
    kwargs = structlog.stdlib.render_to_log_kwargs(logger, method, event)
    kwargs["extra"] = {_attribute(key): value for key, value in kwargs["extra"].items()}
    kwargs["extra"][FIELDS] = keys
    return kwargs


def _our_fields(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """First of the formatter's chain: a record of ours gets its fields back, in their order
    (a library's record keeps just its message)."""
    record = event["_record"]
    keys = getattr(record, FIELDS, None)
    if not keys:
        return event
    fields = record.__dict__
    restored: dict[str, Any] = {
        key: event["event"] if key == "event" else fields[_attribute(key)] for key in keys}
    for key in ("_record", "_from_structlog", "exc_info", "stack_info"):
        if key in event:
            restored[key] = event[key]
    return restored


def _safe(renderer: Callable[..., Any]) -> Callable[..., Any]:
    """``renderer`` that never fails the caller over a value it cannot render (its ``repr``
    raises, a container holds itself): the line keeps its plain values and says what
    failed, rather than the standard library printing a traceback in its place."""

    def render(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        try:
            return renderer(logger, method, event)
        except Exception as exc:  # noqa: BLE001 - a log line must not fail a request or a task
            kept: dict[str, Any] = {key: value for key, value in event.items()
                                    if isinstance(value, str | int | float | bool | None)}
            kept["log_error"] = f"{type(exc).__name__}: {exc}"
            return renderer(logger, method, kept)

    return render


#: What every line gets, ours and the standard library's records alike.
_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
    _redact,
]


def formatter(settings: Settings) -> logging.Formatter:
    """The service's formatter: JSON lines, or console lines in development."""
    json_lines = (settings.log_format or
                  ("console" if settings.env == "development" else "json")) == "json"
    renderer: Any = (structlog.processors.JSONRenderer(serializer=_json) if json_lines
                     else structlog.dev.ConsoleRenderer(colors=False))
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_our_fields, *_SHARED],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, _safe(renderer)],
    )


class _BoundContext(logging.Filter):
    """Gives a library's record (Celery's, gunicorn's) the bound context as attributes too,
    for the handler it is attached to; our records have it already, and nothing is
    overwritten."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        for key, value in structlog.contextvars.get_contextvars().items():
            fields.setdefault(_attribute(key), value)
        return True


def attach_handlers(logger: logging.Logger, paths: str) -> list[logging.Handler]:
    """Attach to ``logger`` the handler that each of ``paths`` (comma-separated
    ``module:factory``; a handler class will do) returns when called without arguments:
    how Sentry's, OpenTelemetry's or one's own handler receives every record."""
    attached = []
    for path in filter(None, (p.strip() for p in paths.split(","))):
        module, _, name = path.partition(":")
        handler = getattr(importlib.import_module(module), name)()
        if not isinstance(handler, logging.Handler):
            raise TypeError(f"{path} returned {type(handler).__name__}, not a logging.Handler")
        handler.addFilter(_BoundContext())
        logger.addHandler(handler)
        attached.append(handler)
    return attached


class _ServiceLines(logging.StreamHandler):
    """The service's own handler: its lines on standard error."""


def _installed(handler: logging.Handler) -> bool:
    """Whether ``configure_logging`` attached ``handler`` (the service's or a named one)."""
    return isinstance(handler, _ServiceLines) or any(
        isinstance(f, _BoundContext) for f in handler.filters)


def configure_logging(settings: Settings) -> None:
    """The root logger gets the service's handler and those of ``log_handlers``, in place of
    what an earlier call attached; handlers attached by others (OpenTelemetry's
    instrumentation, a test's) stay. Celery's, gunicorn's and kombu's loggers hand their
    records to the root."""
    handler = _ServiceLines(sys.stderr)
    handler.setFormatter(formatter(settings))
    root = logging.getLogger()
    root.handlers = [handler, *(h for h in root.handlers if not _installed(h))]
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
    attach_handlers(root, settings.log_handlers)


def configure_command_line() -> None:
    """A command's warnings and errors as console lines with their fields, on stderr, when
    nothing else configured logging (``serve`` and the workers configure it fully)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = _ServiceLines(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_our_fields, *_SHARED],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    _safe(structlog.dev.ConsoleRenderer(colors=False))]))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


structlog.configure(
    processors=[structlog.stdlib.filter_by_level, structlog.contextvars.merge_contextvars,
                _redact, _to_record],
    wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    logger_factory=structlog.stdlib.LoggerFactory(),
    cache_logger_on_first_use=True,
)

bind = structlog.contextvars.bind_contextvars
clear = structlog.contextvars.clear_contextvars
get_logger = structlog.get_logger
