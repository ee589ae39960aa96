"""The processing task's result, as Celery writes it for its log line and the
``task-succeeded`` event (what Flower shows), is the outcome's fields as a dict."""

from __future__ import annotations

import ast

from celery.utils.saferepr import saferepr

from integration.messages.status import Status
from integration.worker.processor import Outcome


def test_celerys_text_of_the_result_is_the_outcome_as_a_dict() -> None:
    outcome = Outcome(status=Status.RETRYING, type="metric", channel="rest",
                      error="TimeoutError", attempt=2, waited=0.25, total=None)
    text = saferepr(outcome, 1024)  # what Celery's tracer computes for every result
    assert ast.literal_eval(text) == {
        "status": "retrying", "type": "metric", "channel": "rest", "error": "TimeoutError",
        "attempt": 2, "waited": 0.25, "total": None, "inline": [], "fenced": False}
    assert text == saferepr(outcome.to_json(), 1024)
