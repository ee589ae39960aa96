"""Which of Celery's per-task lines reach the log: its "received" and "succeeded" lines repeat
the worker's ``processed`` line and are dropped unless asked for; retries and failures stay."""

from __future__ import annotations

import json
import logging

import pytest
from celery.app import trace

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
