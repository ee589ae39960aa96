"""Which of Celery's per-task lines reach the log: its "received" and "succeeded" lines repeat
the worker's ``processed`` line and are dropped unless asked for; retries and failures stay."""

from __future__ import annotations

import json
import logging
import threading
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
    """A line logged through structlog (no ``LogRecord``) and a standard library record come
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
