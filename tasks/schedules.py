"""The firing task beat sends for each due schedule: thin glue around ``integration.schedules``."""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from typing import Any

from celery import Task

from integration import logs, schedules
from integration.registry import default_registry
from integration.services import build_submitter
from integration.settings import get_settings
from integration.submission import Submitter
from tasks.app import app
from tasks.observability import metrics

log = logs.get_logger("integration.beat")


class FiringUnavailable(RuntimeError):
    """The store or the broker refused the firing's message for now; the task retries it
    (the same firing id, so a retry never makes a second message)."""


class FiringTask(Task):
    """One submitter per worker process; store and broker outages are retried with backoff."""

    autoretry_for = (FiringUnavailable,)
    retry_backoff = 1
    retry_backoff_max = 30
    retry_jitter = True
    max_retries = 8

    @cached_property
    def submitter(self) -> Submitter:
        return build_submitter(get_settings(), origin="beat")


@app.task(name=schedules.FIRE_TASK, base=FiringTask, bind=True, acks_late=True,
          reject_on_worker_lost=True, ignore_result=True)
def fire(self: FiringTask, schedule: str, scheduled_at: str) -> dict[str, Any]:
    """Submit one firing of ``schedule`` (its stored JSON) as an ordinary message."""
    stored = schedules.StoredSchedule.model_validate_json(schedule)
    moment = datetime.fromisoformat(scheduled_at)
    result = schedules.fire(stored, moment, self.submitter.submit_raw)
    outcome = schedules.outcome_of(result)
    kind = stored.type if stored.type in default_registry() else "unknown"
    metrics().received.labels(kind, schedules.CHANNEL, outcome).inc()
    message_id = schedules.firing_id(stored.name, moment)
    if outcome == "unavailable":
        raise FiringUnavailable(str(result))
    if outcome == "rejected":
        log.error("schedule firing rejected", schedule=stored.name, message_id=message_id,
                  problem=result.to_dict())
    else:
        log.info("schedule fired", schedule=stored.name, message_id=message_id,
                 outcome=outcome, scheduled_at=scheduled_at)
    return {"schedule": stored.name, "id": message_id, "outcome": outcome}
