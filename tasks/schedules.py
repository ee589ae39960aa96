"""The firing task beat sends for each due schedule: thin glue around ``integration.schedules``."""

from __future__ import annotations

import time
from datetime import datetime
from functools import cached_property
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject

from integration import logs, schedules
from integration.registry import default_registry
from integration.services import build_submitter
from integration.settings import get_settings
from integration.submission import Submitter
from tasks.app import app
from tasks.observability import metrics
from tasks.processing import OUTAGE_PAUSE_SECONDS, hand_back

log = logs.get_logger("integration.beat")


class FiringTask(Task):
    """One submitter per worker process; in a store or broker outage the firing goes back to
    the broker (the same firing id, so a second try never makes a second message)."""

    @cached_property
    def submitter(self) -> Submitter:
        return build_submitter(get_settings(), origin="beat")


@app.task(name=schedules.FIRE_TASK, base=FiringTask, bind=True, acks_late=True,
          reject_on_worker_lost=True, ignore_result=True)
def fire(self: FiringTask, schedule: str, scheduled_at: str) -> dict[str, Any]:
    """Submit one firing of ``schedule`` (its stored JSON) as an ordinary message."""
    stored = schedules.StoredSchedule.model_validate_json(schedule)
    moment = datetime.fromisoformat(scheduled_at)
    try:
        result = schedules.fire(stored, moment, self.submitter.submit_raw)
    except redis.RedisError as exc:
        raise hand_back(exc) from None
    outcome = schedules.outcome_of(result)
    kind = stored.type if stored.type in default_registry() else "unknown"
    metrics().received.labels(kind, schedules.CHANNEL, outcome).inc()
    message_id = schedules.firing_id(stored.name, moment)
    if outcome == "unavailable":
        log.warning("schedule firing unavailable; handed back to the broker",
                    schedule=stored.name, message_id=message_id)
        time.sleep(OUTAGE_PAUSE_SECONDS)
        raise Reject(f"firing unavailable: {result}", requeue=True)
    if outcome == "rejected":
        log.error("schedule firing rejected", schedule=stored.name, message_id=message_id,
                  problem=result.to_dict())
    else:
        log.info("schedule fired", schedule=stored.name, message_id=message_id,
                 outcome=outcome, scheduled_at=scheduled_at)
    return {"schedule": stored.name, "id": message_id, "outcome": outcome}
