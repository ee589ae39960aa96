"""Which of Celery's per-task lines reach the log: its "received" and "succeeded" lines repeat
the worker's ``processed`` line and are dropped unless asked for; retries and failures stay."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery.app import trace

from integration import logs
from integration.logs import configure_logging
from integration.settings import Settings


def _emit_celery_task_lines() -> None:
    context = {"id": "m-1", "name": "integration.process", "args": "", "kwargs": "",
               "eta": None, "return_value": "{}", "runtime": 0.001, "exc": "boom",
               "description": "raised unexpected"}
    logging.getLogger("celery.worker.strategy").info(trace.LOG_RECEIVED, context)
    logging.getLogger("celery.app.trace").info(trace.LOG_SUCCESS, context)
    logging.getLogger("celery.app.trace").info(trace.LOG_RETRY, context)
    logging.getLogger("celery.app.trace").error(trace.LOG_FAILURE, context)


@pytest.mark.parametrize("celery_task_logs", [False, True])
def test_celery_routine_task_lines_only_when_asked(
    capsys: pytest.CaptureFixture[str], celery_task_logs: bool
) -> None:
    configure_logging(Settings(log_format="json", log_level="INFO",
                               celery_task_logs=celery_task_logs))
    try:
        _emit_celery_task_lines()
        lines = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    finally:
        configure_logging(Settings(log_format="json", log_level="INFO"))
    received = [line for line in lines if line.endswith("received")]
    succeeded = [line for line in lines if " succeeded in " in line]
    assert len(received) == len(succeeded) == (1 if celery_task_logs else 0), lines
    assert any(" retry: " in line for line in lines), "a retry is always logged"
    assert any(" raised unexpected: " in line for line in lines), "a failure too"


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_our_lines_and_library_records_share_one_shape_and_stream(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A line logged through structlog and a library's standard library record come
    out on the same stream with the same keys, the bound context on both, secrets masked."""
    configure_logging(Settings(log_format="json", log_level="INFO"))
    logs.bind(correlation_id="c-1")
    try:
        logs.get_logger("integration.test").info("ours", token="abc", status=202)
        logging.getLogger("integration.test").info("theirs %s", "formatted")
    finally:
        logs.clear()
    ours, theirs = _json_lines(capsys.readouterr().err)
    assert ours["event"] == "ours" and ours["status"] == 202 and ours["token"] == "[redacted]"
    assert theirs["event"] == "theirs formatted"
    for line in (ours, theirs):
        assert line["correlation_id"] == "c-1" and line["logger"] == "integration.test"
        assert line["level"] == "info" and line["time"].endswith("Z")


def test_the_configured_level_applies_to_loggers_already_in_use(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = logs.get_logger("integration.test.levels")
    configure_logging(Settings(log_format="json", log_level="INFO"))
    log.info("first")
    configure_logging(Settings(log_format="json", log_level="WARNING"))
    try:
        log.info("dropped")
        log.warning("kept")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    finally:
        configure_logging(Settings(log_format="json", log_level="INFO"))
    lines = _json_lines(capsys.readouterr().err)
    assert [line["event"] for line in lines] == ["first", "kept", "failed"]
    assert lines[2]["level"] == "error" and "RuntimeError: boom" in lines[2]["exception"]


def test_lines_from_many_threads_never_interleave(capsys: pytest.CaptureFixture[str]) -> None:
    """Our lines and the standard library's records take the same handler's lock."""
    configure_logging(Settings(log_format="json", log_level="INFO"))
    ours, theirs = logs.get_logger("integration.test"), logging.getLogger("integration.test")

    def write(n: int) -> None:
        for i in range(200):
            ours.info("ours", n=n, i=i, padding="x" * 2000)
            theirs.info("theirs %d %d %s", n, i, "y" * 2000)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = _json_lines(capsys.readouterr().err)
    assert len(lines) == 8 * 200 * 2
    assert sum(1 for line in lines if line["event"] == "ours") == 8 * 200


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_value_that_cannot_be_rendered_never_fails_the_caller(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As a standard library handler would not: the request or task goes on, and the line
    keeps its plain values and says what failed."""
    configure_logging(Settings(log_format="json", log_level="INFO"))
    looped: dict[str, Any] = {}
    looped["self"] = looped
    log = logs.get_logger("integration.test")
    log.info("unprintable", status=202, value=_Unprintable())
    log.info("looped", status=202, value=looped)
    lines = _json_lines(capsys.readouterr().err)
    assert [line["event"] for line in lines] == ["unprintable", "looped"]
    for line in lines:
        assert line["status"] == 202 and "value" not in line and line["log_error"]


def test_lines_stay_ascii_with_characters_beyond_it(capsys: pytest.CaptureFixture[str]) -> None:
    """Escaped as the standard library writes them, so a line is valid JSON whatever the
    stream's encoding."""
    configure_logging(Settings(log_format="json", log_level="INFO"))
    logs.get_logger("integration.test").info("ours", host="café-☃")
    logging.getLogger("integration.test").info("theirs %s", "naïve")
    text = capsys.readouterr().err
    assert text.isascii()
    ours, theirs = _json_lines(text)
    assert ours["host"] == "café-☃" and theirs["event"] == "theirs naïve"


class _Collector(logging.Handler):
    """A plain handler, as Sentry's or OpenTelemetry's would be: it keeps what it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


#: The collector ``log_handlers`` names below attaches (one per configuration).
COLLECTORS: list[_Collector] = []


def collector() -> _Collector:
    """A ``module:factory`` for ``log_handlers``."""
    COLLECTORS.append(_Collector())
    return COLLECTORS[-1]


@contextlib.contextmanager
def collecting() -> Iterator[_Collector]:
    """A collector attached as ``INTEGRATION_LOG_HANDLERS`` attaches one."""
    COLLECTORS.clear()
    configure_logging(Settings(log_format="json", log_level="INFO",
                               log_handlers=f"{__name__}:collector"))
    try:
        yield COLLECTORS[-1]
    finally:
        logs.clear()
        configure_logging(Settings(log_format="json", log_level="INFO"))


def test_other_handlers_receive_our_lines_with_the_bound_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each of our lines is a record, its fields and the bound context its attributes
    (a trace id too), secrets masked, at its level; the service's line is unchanged."""
    with collecting() as collected:
        logs.bind(correlation_id="c-1", task_id="t-1", message_id="m-1", type="alert",
                  trace_id="0af7651916cd43dd8448eb211c80319c")
        logs.get_logger("integration.worker").info("processed", status="succeeded",
                                                    token="abc", attempt=1)
        logs.get_logger("integration.worker").debug("under the level")
    (record,) = collected.records
    assert record.getMessage() == "processed" and record.levelno == logging.INFO
    assert record.name == "integration.worker" and record.pathname == __file__
    fields = vars(record)
    assert {key: fields[key] for key in ("correlation_id", "task_id", "message_id", "type",
                                         "trace_id", "status", "attempt", "token")} == {
        "correlation_id": "c-1", "task_id": "t-1", "message_id": "m-1", "type": "alert",
        "trace_id": "0af7651916cd43dd8448eb211c80319c", "status": "succeeded",
        "attempt": 1, "token": "[redacted]"}
    (line,) = _json_lines(capsys.readouterr().err)
    assert list(line)[:4] == ["status", "token", "attempt", "event"]
    assert line["event"] == "processed" and line["correlation_id"] == "c-1"
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and "_structlog_fields" \
        not in line


def test_a_handler_on_the_integration_logger_receives_them_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Not only the root logger's handlers: records go through the standard library."""
    configure_logging(Settings(log_format="json", log_level="INFO"))
    handler = _Collector()
    logging.getLogger("integration").addHandler(handler)
    logs.bind(correlation_id="c-2")
    try:
        logs.get_logger("integration.gateway").info("request", status=202)
    finally:
        logs.clear()
        logging.getLogger("integration").removeHandler(handler)
    (record,) = handler.records
    assert record.getMessage() == "request" and vars(record)["correlation_id"] == "c-2"
    assert _json_lines(capsys.readouterr().err)[0]["status"] == 202


def test_library_records_get_the_context_for_attached_handlers_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A library's record (Celery's) gets the bound context as attributes for the handlers
    named in ``log_handlers``; its line keeps its shape."""
    with collecting() as collected:
        logs.bind(correlation_id="c-3", task_id="t-3")
        logging.getLogger("celery.app.trace").warning("Task %s retry", "x")
    (record,) = collected.records
    assert vars(record)["correlation_id"] == "c-3" and vars(record)["task_id"] == "t-3"
    (line,) = _json_lines(capsys.readouterr().err)
    assert set(line) == {"event", "correlation_id", "task_id", "level", "logger", "time"}


def test_fields_named_like_record_attributes_and_exceptions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A field named like a ``LogRecord`` attribute is carried as ``<name>_`` and rendered
    under its own name; an exception reaches the record as ``exc_info``."""
    with collecting() as collected:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logs.get_logger("integration.test").exception("failed", name="n", module="m")
    (record,) = collected.records
    assert record.name == "integration.test" and vars(record)["name_"] == "n"
    assert record.exc_info is not None and record.levelno == logging.ERROR
    (line,) = _json_lines(capsys.readouterr().err)
    assert line["name"] == "n" and line["module"] == "m" and line["level"] == "error"
    assert "RuntimeError: boom" in line["exception"]


def test_a_factory_that_returns_no_handler_is_refused() -> None:
    with pytest.raises(TypeError, match="not a logging.Handler"):
        logs.attach_handlers(logging.getLogger("integration.test.refused"),
                             "integration.logs:Settings")


def test_configuring_again_keeps_handlers_attached_by_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """OpenTelemetry's instrumentation attaches its handler before the worker configures its
    logs: it stays, while what an earlier configuration attached is replaced, not doubled."""
    theirs = _Collector()
    logging.getLogger().addHandler(theirs)
    try:
        with collecting():
            configure_logging(Settings(log_format="json", log_level="INFO",
                                       log_handlers=f"{__name__}:collector"))
            logs.get_logger("integration.test").info("once")
            assert [len(c.records) for c in COLLECTORS] == [0, 1]
    finally:
        logging.getLogger().removeHandler(theirs)
    assert [r.getMessage() for r in theirs.records] == ["once"]
    assert [line["event"] for line in _json_lines(capsys.readouterr().err)] == ["once"]
